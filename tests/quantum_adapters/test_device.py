"""The PennyLane device path: agreement with the fast simulator, jobs, the SQLite result cache, the
``max_circuits`` guard, and the errors a user meets before any circuit runs."""

from __future__ import annotations

import math
import sqlite3

import pytest
import torch

from quantum_adapters.circuit import weight_shape
from quantum_adapters.device import DeviceRunner, parameter_shift_circuits
from quantum_adapters.pennylane_backend import installed_devices
from quantum_adapters.simulator import expvals


def _circuit(n: int, layers: int, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(weight_shape(n, layers), generator=generator) * 2 * math.pi
    inputs = (torch.rand(rows, n, generator=generator) * 2 - 1) * math.pi
    return inputs, weights


def _cached_rows(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM circuit_results").fetchone()[0]


def test_cache_keys_are_sha256_of_device_shots_sizes_weights_and_angles(tmp_path):
    """The key format is what an existing cache file holds: it must not change."""
    import hashlib

    inputs, weights = _circuit(2, 1, rows=3)
    cache = tmp_path / "results.sqlite"
    with torch.no_grad(), DeviceRunner("default.qubit", shots=100, cache=cache, progress=False) as runner:
        runner(inputs, weights)
        angles, per_circuit = inputs[:, None, :].contiguous(), weights.expand(3, 1, 4, 2).contiguous()
        runner.run_circuits(angles, per_circuit)
    w = weights.numpy().tobytes()
    plain = [
        hashlib.sha256(b"default.qubit|100|2|1|" + w + row.numpy().tobytes()).hexdigest() for row in inputs
    ]
    whole = [
        hashlib.sha256(b"circuit|default.qubit|100|None|2|1|" + w + row.numpy().tobytes()).hexdigest()
        for row in inputs
    ]
    with sqlite3.connect(cache) as conn:
        stored = {key for (key,) in conn.execute("SELECT key FROM circuit_results")}
    assert stored == set(plain) | set(whole)


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit", "default.mixed"])
def test_exact_devices_agree_with_the_fast_simulator(device):
    inputs, weights = _circuit(3, 2, rows=12)
    with DeviceRunner(device, progress=False) as runner:
        got = runner(inputs.double(), weights.double())
    assert torch.allclose(got, expvals(inputs.double(), weights.double()), atol=1e-5, rtol=0)
    assert got.dtype == torch.float64 and runner.stats.circuits == 12


def test_rows_go_out_in_jobs_of_batch_size():
    inputs, weights = _circuit(2, 1, rows=45)
    with DeviceRunner("default.qubit", batch_size=10, progress=False) as runner:
        got = runner(inputs.view(5, 9, 2), weights)
    assert got.shape == (5, 9, 2) and got.dtype == torch.float32
    assert runner.summary() | {"seconds": 0} == {
        "device": "default.qubit",
        "shots": None,
        "noise_backend": None,
        "rows": 45,
        "hits": 0,
        "misses": 45,
        "circuits": 45,
        "jobs": 5,
        "seconds": 0,
    }
    assert runner.estimate(45) == {
        "device": "default.qubit",
        "shots": None,
        "circuits": 45,
        "jobs": 5,
        "shots_total": None,
    }
    assert DeviceRunner("default.qubit", shots=1000, progress=False).estimate(450)["shots_total"] == 450_000


def test_second_run_is_answered_by_the_cache(tmp_path):
    cache = tmp_path / "results.sqlite"
    inputs, weights = _circuit(3, 1, rows=20)
    inputs = torch.cat([inputs, inputs[:5]])  # 25 rows, 20 distinct circuits
    with DeviceRunner("default.qubit", shots=500, batch_size=8, cache=cache, progress=False) as runner:
        first = runner(inputs, weights)
        assert (runner.stats.circuits, runner.stats.jobs, runner.stats.hits) == (20, 3, 5)
        assert torch.equal(first[20:], first[:5])  # a repeated row runs once
        second = runner(inputs, weights)
        assert (runner.stats.circuits, runner.stats.jobs, runner.stats.hits) == (20, 3, 30)
    assert torch.equal(first, second)  # shot results too: the cache returns what the device returned
    assert _cached_rows(cache) == 20
    # a new runner (a new process, say) on the same file sends nothing
    with DeviceRunner("default.qubit", shots=500, cache=cache, progress=False) as again:
        assert torch.equal(again(inputs, weights), first)
        assert again.summary()["circuits"] == 0 and again.stats.hits == 25
    # the key holds the device, shots and weights: any change is a new circuit
    with DeviceRunner("default.qubit", shots=501, cache=cache, progress=False) as other:
        other(inputs[:4], weights)
        other(inputs[:4], weights + 0.5)
        assert other.stats.circuits == 8
    assert _cached_rows(cache) == 28
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_guard_refuses_before_any_circuit_runs(tmp_path):
    cache = tmp_path / "results.sqlite"
    inputs, weights = _circuit(2, 1, rows=30)
    with DeviceRunner("default.qubit", cache=cache, max_circuits=25, progress=False) as runner:
        with pytest.raises(ValueError) as err:
            runner(inputs, weights)
        assert "needs 30 new circuits" in str(err.value) and "max_circuits guard of 25" in str(err.value)
        assert runner.stats.circuits == 0 and runner.stats.jobs == 0
        assert _cached_rows(cache) == 0
        runner(inputs[:20], weights)  # within the guard
        with pytest.raises(
            ValueError, match="with 20 already sent that is 30, over the max_circuits guard of 25"
        ):
            runner(inputs[20:], weights)
        assert runner.stats.circuits == 20
    # cached rows cost nothing, so they pass a zero guard
    with DeviceRunner("default.qubit", cache=cache, max_circuits=0, progress=False) as cached:
        assert cached(inputs[:20], weights).shape == (20, 2)


def test_unknown_device_lists_the_installed_ones():
    with pytest.raises(ValueError) as err:
        DeviceRunner("origin.wukong")
    message = str(err.value)
    assert "'origin.wukong'" in message
    for name in ("default.qubit", "default.mixed", "lightning.qubit"):
        assert name in installed_devices() and name in message


def test_device_with_too_few_wires_is_refused_before_running():
    inputs, weights = _circuit(24, 1, rows=1)  # default.mixed simulates at most 23 wires
    runner = DeviceRunner("default.mixed", progress=False)
    with pytest.raises(ValueError, match=r"device 'default.mixed' cannot run the 24-qubit circuit"):
        runner.check(24)
    with pytest.raises(ValueError, match="24-qubit"):
        runner(inputs, weights)
    assert runner.stats.circuits == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shots": 0}, "DeviceRunner(shots): expected None or a positive integer; got 0"),
        ({"shots": -10}, "got -10"),
        ({"batch_size": 0}, "batch_size: expected a positive integer; got 0"),
        ({"max_circuits": -1}, "max_circuits: expected None or an integer >= 0; got -1"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError) as err:
        DeviceRunner("default.qubit", **kwargs)
    assert message in str(err.value)


def test_bad_cache_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-database.sqlite"
    bad.write_text("this is not SQLite\n" * 100)
    with pytest.raises(ValueError, match="not a usable SQLite file"):
        DeviceRunner("default.qubit", cache=bad)


# --- the parameter-shift rule on the device (training with the circuit on a device) -------------------


def _loss_grads(run, inputs, weights, mix):
    """Gradients of sum(mix * circuit(inputs, weights)) w.r.t. inputs and weights."""
    x, w = inputs.clone().requires_grad_(), weights.clone().requires_grad_()
    (run(x, w) * mix).sum().backward()
    return x.grad, w.grad


def test_parameter_shift_gradients_equal_the_fast_simulator_without_shots():
    inputs, weights = _circuit(3, 2, rows=5, seed=4)
    inputs, weights = inputs.double(), weights.double()
    mix = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want_x, want_w = _loss_grads(expvals, inputs, weights, mix)
    with DeviceRunner("default.qubit", progress=False) as runner:
        got_x, got_w = _loss_grads(runner, inputs, weights, mix)
        # forward + 2 per RY (trained and data, each data RY of each layer on its own) + 4 per CRZ
        assert runner.stats.circuits == 5 * parameter_shift_circuits(3, 2) == 5 * (1 + 14 * 3 * 2)
        assert runner.stats.jobs == 1 + math.ceil(5 * 14 * 3 * 2 / runner.batch_size)
    # the device runs float32 angles (its cache keys); the rule itself is exact
    assert torch.allclose(got_w, want_w, atol=1e-5, rtol=0) and torch.allclose(
        got_x, want_x, atol=1e-5, rtol=0
    )
    assert want_w.abs().max() > 0.1


def test_parameter_shift_gradients_agree_within_shot_noise():
    """With S shots each shifted value has variance <= 1/S; a gradient entry sums coef * (sum_i g_i z_i)
    over rows and shifts, so its standard deviation is at most sqrt(sum coef^2 (sum_i |g_i|)^2 / S).
    Every entry must lie within 5 of those of the exact gradient."""
    n, layers, rows, shots = 2, 1, 4, 4000
    inputs, weights = _circuit(n, layers, rows=rows, seed=6)
    inputs, weights = inputs.double(), weights.double()
    mix = torch.ones(rows, n, dtype=torch.float64)
    want_x, want_w = _loss_grads(expvals, inputs, weights, mix)
    with DeviceRunner("default.qubit", shots=shots, progress=False) as runner:
        got_x, got_w = _loss_grads(runner, inputs, weights, mix)
    per_row = float(mix.abs().sum(-1).max()) ** 2 / shots
    crz = 2 * (
        ((math.sqrt(2) + 1) / (4 * math.sqrt(2))) ** 2 + ((math.sqrt(2) - 1) / (4 * math.sqrt(2))) ** 2
    )
    sd_w = torch.full_like(want_w, math.sqrt(rows * 0.5 * per_row))  # RY: two shifts of coefficient 1/2
    sd_w[:, [0, 2]] = math.sqrt(rows * crz * per_row)
    sd_x = math.sqrt(layers * 0.5 * per_row)  # per row: L data RYs of that input
    assert ((got_w - want_w).abs() <= 5 * sd_w).all(), (got_w - want_w) / sd_w
    assert ((got_x - want_x).abs() <= 5 * sd_x).all(), (got_x - want_x) / sd_x
    assert not torch.allclose(got_w, want_w, atol=1e-6)  # the shots are real


def test_weights_only_gradients_skip_the_input_shifts_and_the_guard_holds(tmp_path):
    inputs, weights = _circuit(2, 1, rows=3, seed=8)
    inputs, weights = inputs.double(), weights.double()
    with DeviceRunner("default.qubit", progress=False) as runner:
        w = weights.clone().requires_grad_()
        runner(inputs, w).sum().backward()
        assert runner.stats.circuits == 3 * parameter_shift_circuits(2, 1, inputs=False) == 3 * 25
        assert runner.estimate(3, parameter_shift_circuits(2, 1, inputs=False))["circuits"] == 75
    # the guard covers the shifted circuits too: the forward fits, the backward does not, and sends nothing
    with DeviceRunner("default.qubit", max_circuits=10, progress=False) as runner:
        w = weights.clone().requires_grad_()
        out = runner(inputs, w)
        with pytest.raises(ValueError, match="over the max_circuits guard of 10; nothing was sent"):
            out.sum().backward()
        assert runner.stats.circuits == 3


# --- Qiskit Aer (optional extra 'quantum': pip install -e '.[quantum]') ------------------------------


def test_aer_device_agrees_within_shot_noise_and_fake_backend_noise_moves_it():
    pytest.importorskip("pennylane_qiskit")
    pytest.importorskip("qiskit_ibm_runtime")
    inputs, weights = _circuit(2, 1, rows=6, seed=9)
    inputs, weights = inputs.double(), weights.double()
    exact = expvals(inputs, weights)
    shots = 20000
    with DeviceRunner("qiskit.aer", shots=shots, progress=False) as runner:
        got = runner(inputs, weights)
    sd = torch.sqrt((1 - exact**2).clamp_min(1e-4) / shots)
    assert ((got - exact).abs() <= 5 * sd + 1e-3).all()
    with DeviceRunner("qiskit.aer", shots=shots, noise_backend="FakeManilaV2", progress=False) as runner:
        noisy = runner(inputs, weights)
    # the fake device's gate and readout errors pull <Z_i> towards 0, beyond what the shots can explain
    shrink = (exact.abs() - noisy.abs()).mean()
    assert shrink > 5 * float(sd.max()) / math.sqrt(exact.numel())


def test_noise_backend_is_checked_before_anything_runs():
    with pytest.raises(ValueError, match=r"applies to the qiskit\.aer device only"):
        DeviceRunner("default.qubit", noise_backend="FakeManilaV2")
    pytest.importorskip("qiskit_ibm_runtime")
    with pytest.raises(ValueError, match=r"expected a fake IBM backend .* got 'FakeNowhere'"):
        DeviceRunner("qiskit.aer", noise_backend="FakeNowhere")
