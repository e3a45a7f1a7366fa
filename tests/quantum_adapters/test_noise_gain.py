"""noise_gain: how much of the circuit's input-dependent signal survives a noise model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from quantum_adapters.circuit import weight_shape
from quantum_adapters.noise import noise_gain, noisy_expvals


def _weights(n: int, layers: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(weight_shape(n, layers), generator=generator, dtype=torch.float64) * 2 * math.pi


@pytest.mark.parametrize(("flip0", "flip1"), [(0.1, 0.1), (0.05, 0.10), (0.2, 0.0)])
def test_readout_error_alone_scales_the_signal_by_its_closed_form(flip0, flip1):
    # readout acts on each marginal as a + b <Z_i>, b = 1 - P(1|0) - P(0|1): the spread scales by |b|
    gain = noise_gain(_weights(3, 2), f"readout={flip0}:{flip1}")
    assert gain == pytest.approx(1 - flip0 - flip1, rel=1e-9)


def test_no_noise_has_gain_one_and_depolarising_shrinks_the_signal_with_depth_and_strength():
    w = _weights(4, 4)
    assert noise_gain(w, None) == 1.0
    assert noise_gain(w, "p1=0,p2=0") == pytest.approx(1.0, rel=1e-9)
    gains = [noise_gain(w, f"p1=0.01,p2={p2}") for p2 in (0.0, 0.02, 0.05, 0.10)]
    assert all(a > b for a, b in itertools.pairwise(gains)), gains
    shallow, deep = noise_gain(_weights(4, 1), "depolarizing"), noise_gain(w, "depolarizing")
    assert 0 < deep < shallow < 1
    assert deep < 0.1  # the reference's model at r = 4, L = 4 keeps a few per cent of the signal


def test_gain_is_the_ratio_of_the_centred_spreads_on_seeded_rows():
    w = _weights(3, 2, seed=1)
    generator = torch.Generator().manual_seed(7)
    x = torch.rand(64, 3, generator=generator, dtype=torch.float64) * (2 * math.pi)
    exact, noisy = noisy_expvals(x, w), noisy_expvals(x, w, noise="depolarizing")
    expected = ((noisy - noisy.mean(0)).square().sum() / (exact - exact.mean(0)).square().sum()).sqrt()
    assert noise_gain(w, "depolarizing", rows=64, seed=7) == pytest.approx(float(expected), rel=1e-12)
    assert noise_gain(w.float(), "depolarizing", rows=64, seed=7) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("rows", [1, 0, 2.5, True])
def test_bad_row_counts_are_refused(rows):
    with pytest.raises(ValueError, match=r"noise_gain\(rows\): expected an integer >= 2; got"):
        noise_gain(_weights(2, 1), "depolarizing", rows=rows)
