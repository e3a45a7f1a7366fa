"""The PennyLane device path: agreement with the fast simulator, jobs, the SQLite result cache, the
``max_circuits`` guard, and the errors a user meets before any circuit runs."""

from __future__ import annotations

import math
import sqlite3

import pytest
import torch

from quantum_adapters.circuit import weight_shape
from quantum_adapters.device import DeviceRunner
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
        ({"shots": 0}, "shots: expected a positive integer or None (exact); got 0"),
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
