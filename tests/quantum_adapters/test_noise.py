"""Shots and noise in the built-in simulator: exact against the fast simulator and against PennyLane's
``default.mixed`` with the same channels, shot statistics, seeding, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from quantum_adapters.circuit import weight_shape
from quantum_adapters.noise import NOISE_MODELS, NoiseModel, density_expvals, noise_model, noisy_expvals
from quantum_adapters.pennylane_backend import mixed_expvals
from quantum_adapters.simulator import expvals

DEPOLARIZING = NOISE_MODELS["depolarizing"]


def _circuit(n: int, layers: int, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(weight_shape(n, layers), generator=generator, dtype=torch.float64) * 2 * math.pi
    inputs = (torch.rand(rows, n, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    return inputs, weights


@pytest.mark.parametrize(("n", "layers"), [(2, 1), (3, 2), (4, 3), (5, 2), (6, 1)])
def test_noise_free_exact_equals_fast_simulator(n, layers):
    inputs, weights = _circuit(n, layers, rows=7, seed=n)
    reference = expvals(inputs, weights)
    assert torch.allclose(noisy_expvals(inputs, weights), reference, atol=1e-5, rtol=0)
    # the density-matrix path with (next to) no noise computes the same circuit
    faint = NoiseModel(p1=1e-12)
    assert torch.allclose(noisy_expvals(inputs, weights, noise=faint), reference, atol=1e-5, rtol=0)


def test_ten_qubits_run_in_bounded_chunks():
    inputs, weights = _circuit(10, 1, rows=1, seed=10)
    got = noisy_expvals(inputs, weights, noise=NoiseModel(p2=1e-12))  # 4^10 numbers per row
    assert torch.allclose(got, expvals(inputs, weights), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("n", "layers", "spec"),
    [
        (2, 1, "depolarizing"),
        (2, 2, "p1=0.2,p2=0.3,readout=0.05:0.15"),
        (3, 1, "p2=0.75"),  # lam = 0: the channel erases every Pauli component but I
        (3, 2, "p1=0.2,p2=0.3,readout=0.05:0.15"),
        (4, 2, "depolarizing"),
        (5, 1, "p1=0.05,p2=0.2,readout=0.02"),  # above the fusing threshold: gate by gate
    ],
)
def test_noise_matches_pennylane_default_mixed(n, layers, spec):
    inputs, weights = _circuit(n, layers, rows=3, seed=10 * n + layers)
    model = noise_model(spec)
    got = noisy_expvals(inputs, weights, noise=model)
    assert torch.allclose(got, mixed_expvals(inputs, weights, model), atol=1e-5, rtol=0)
    assert not torch.allclose(got, expvals(inputs, weights), atol=1e-3)  # the noise does something


def test_readout_error_alone_is_the_closed_form():
    inputs, weights = _circuit(3, 2, rows=5)
    readout = ((0.95, 0.05), (0.10, 0.90))
    z = expvals(inputs, weights)
    # P(measured 0) = 0.95 P(0) + 0.10 P(1), with P(0) = (1 + z) / 2
    expected = (0.95 - 0.05) * (1 + z) / 2 + (0.10 - 0.90) * (1 - z) / 2
    got = noisy_expvals(inputs, weights, noise=NoiseModel(readout=readout))
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("noise", [None, DEPOLARIZING])
def test_shot_estimates_are_unbiased_with_binomial_spread(noise):
    inputs, weights = _circuit(3, 2, rows=1, seed=3)
    exact = noisy_expvals(inputs, weights, noise=noise)[0]  # (n,)
    rows, shots = 4000, 100
    samples = noisy_expvals(inputs.expand(rows, 3), weights, noise=noise, shots=shots, seed=7)  # (rows, n)
    variance = (1 - exact**2) / shots  # of one row's estimate
    standard_error = torch.sqrt(variance / rows)
    assert ((samples.mean(0) - exact).abs() <= 4 * standard_error + 1e-12).all()
    spread = samples.var(0)
    assert torch.allclose(spread, variance, rtol=0.15, atol=1e-4)
    # an estimate from S shots is a multiple of 2/S
    assert torch.allclose(samples * shots / 2, (samples * shots / 2).round(), atol=1e-9)


def test_one_shot_returns_a_measured_bitstring():
    inputs, weights = _circuit(4, 1, rows=50)
    got = noisy_expvals(inputs, weights, noise=DEPOLARIZING, shots=1)
    assert set(got.unique().tolist()) <= {-1.0, 1.0}


def test_sampling_is_seeded_and_rows_differ():
    inputs, weights = _circuit(2, 1, rows=1)
    batch = inputs.expand(64, 2)
    first = noisy_expvals(batch, weights, shots=50, seed=1)
    assert torch.equal(first, noisy_expvals(batch, weights, shots=50, seed=1))
    assert not torch.equal(first, noisy_expvals(batch, weights, shots=50, seed=2))
    assert len({tuple(r) for r in first.tolist()}) > 1  # identical rows still get their own samples


def test_shapes_dtypes_and_empty_batches():
    inputs, weights = _circuit(3, 1, rows=6)
    got = noisy_expvals(inputs.float().view(2, 3, 3), weights.float(), noise="depolarizing", shots=10)
    assert got.shape == (2, 3, 3) and got.dtype == torch.float32
    assert noisy_expvals(torch.zeros(0, 3), weights).shape == (0, 3)


def test_noise_model_names_and_specs():
    assert NOISE_MODELS["none"] is None and noise_model("none") is None and noise_model(None) is None
    assert DEPOLARIZING == NoiseModel(0.01, 0.10, ((0.95, 0.05), (0.10, 0.90)))
    assert noise_model("depolarizing") is DEPOLARIZING
    model = noise_model("p1=0.01,p2=0.05,readout=0.02")
    assert (model.p1, model.p2) == (0.01, 0.05)
    assert [pytest.approx(row) for row in ((0.98, 0.02), (0.02, 0.98))] == list(model.readout)
    asymmetric = noise_model(" p2=0.1 , readout=0.05:0.1 ")
    assert asymmetric.p1 == 0.0
    assert [pytest.approx(row) for row in ((0.95, 0.05), (0.1, 0.9))] == list(asymmetric.readout)
    assert noise_model(asymmetric.spec()) == asymmetric
    assert noise_model(DEPOLARIZING.spec()) == DEPOLARIZING


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NoiseModel(p1=1.5), "NoiseModel.p1: expected a probability in [0, 1]; got 1.5"),
        (lambda: NoiseModel(p2=-0.1), "NoiseModel.p2: expected a probability in [0, 1]; got -0.1"),
        (lambda: NoiseModel(readout=((0.9, 0.2), (0.0, 1.0))), "NoiseModel.readout[0]: expected a row"),
        (lambda: NoiseModel(readout=((1.0, 0.0),)), "NoiseModel.readout: expected a 2x2 confusion matrix"),
        (lambda: noise_model("p1=2"), "NoiseModel.p1: expected a probability in [0, 1]; got 2.0"),
        (lambda: noise_model("readout=1.2"), "expected a probability in [0, 1]; got 1.2"),
        (lambda: noise_model("p3=0.1"), "unknown or malformed part 'p3=0.1'"),
        (lambda: noise_model("p1=0.1,p1=0.2"), "a repeated key"),
        (lambda: noise_model("p1=abc"), "p1='abc'"),
        (lambda: noise_model("thermal"), "expected a name in ['depolarizing', 'none']"),
    ],
)
def test_bad_noise_is_refused_naming_the_value(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


@pytest.mark.parametrize("shots", [0, -3, 1.5, True])
def test_bad_shots_are_refused(shots):
    inputs, weights = _circuit(2, 1, rows=1)
    with pytest.raises(
        ValueError, match=r"^noisy_expvals\(shots\): expected None or a positive integer; got"
    ):
        noisy_expvals(inputs, weights, shots=shots)


def test_shots_zero_message_is_exact():
    inputs, weights = _circuit(2, 1, rows=1)
    with pytest.raises(ValueError) as err:
        noisy_expvals(inputs, weights, shots=0)
    assert str(err.value) == "noisy_expvals(shots): expected None or a positive integer; got 0"


def test_shots_have_no_gradient_and_say_so():
    inputs, weights = _circuit(2, 1, rows=2)
    with pytest.raises(ValueError, match="shots=100 has no gradient; expected shots=None"):
        noisy_expvals(inputs, weights.clone().requires_grad_(), noise="depolarizing", shots=100)
    with torch.no_grad():
        noisy_expvals(inputs, weights.clone().requires_grad_(), noise="depolarizing", shots=100)


def _finite_difference(f, t: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """d sum(f(t)) / dt by central differences (float64; f has no gradients)."""
    grad = torch.zeros_like(t)
    flat = grad.view(-1)
    for k in range(t.numel()):
        step = torch.zeros_like(t).view(-1)
        step[k] = h
        flat[k] = (f(t + step.view_as(t)).sum() - f(t - step.view_as(t)).sum()) / (2 * h)
    return grad


@pytest.mark.parametrize(
    ("n", "layers", "spec"),
    [
        (2, 1, "depolarizing"),
        (3, 2, "p1=0.2,p2=0.3,readout=0.05:0.15"),
        (4, 2, "depolarizing"),  # the training size: fused 256 x 256 transfer matrices
        (5, 1, "p1=0.05,p2=0.2,readout=0.02"),  # above the fusing threshold: gate by gate
        (3, 1, None),
    ],
)
def test_training_path_equals_the_exact_density_matrix_values_and_gradients(n, layers, spec):
    """The differentiable path (noise-aware training) against the float64 density-matrix simulator and
    PennyLane's default.mixed (values), and against central differences of the former (gradients)."""
    inputs, weights = _circuit(n, layers, rows=3, seed=7 * n + layers)
    x, w = inputs.clone().requires_grad_(), weights.clone().requires_grad_()
    got = noisy_expvals(x, w, noise=spec)  # with gradients: the density_expvals path
    assert got.requires_grad
    with torch.no_grad():
        exact = noisy_expvals(inputs, weights, noise=spec)
    assert torch.allclose(got.detach(), exact, atol=1e-10, rtol=0)
    assert torch.allclose(got.detach(), mixed_expvals(inputs, weights, noise_model(spec)), atol=1e-5, rtol=0)
    # a weighted sum, so that every output's gradient counts with its own sign
    mix = torch.linspace(-1.0, 1.0, got.numel(), dtype=torch.float64).view_as(got)
    grad_x, grad_w = torch.autograd.grad((got * mix).sum(), (x, w))
    with torch.no_grad():
        fd_w = _finite_difference(lambda t: noisy_expvals(inputs, t, noise=spec) * mix, weights)
        fd_x = _finite_difference(lambda t: noisy_expvals(t, weights, noise=spec) * mix, inputs)
    assert torch.allclose(grad_w, fd_w, atol=1e-6, rtol=0)
    assert torch.allclose(grad_x, fd_x, atol=1e-6, rtol=0)
    assert grad_w.abs().max() > 1e-4  # the check has something to compare (strong noise flattens it)


def test_training_path_in_float32_and_batched_shapes():
    inputs, weights = _circuit(4, 3, rows=12, seed=5)
    exact = noisy_expvals(inputs, weights, noise="depolarizing")
    got = density_expvals(inputs.float().view(3, 4, 4), weights.float(), "depolarizing")
    assert got.dtype == torch.float32 and got.shape == (3, 4, 4)
    assert torch.allclose(got.reshape(12, 4).double(), exact, atol=1e-5, rtol=0)
    # noise pulls <Z_i> towards 0: the trained circuit must see a different function than the exact one
    assert not torch.allclose(exact, expvals(inputs, weights), atol=1e-2)


def test_bad_shapes_are_refused():
    inputs, weights = _circuit(3, 1, rows=2)
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 3\)"):
        noisy_expvals(inputs[:, :2], weights)
    with pytest.raises(TypeError, match="floating-point"):
        noisy_expvals(torch.zeros(2, 3, dtype=torch.long), weights)
