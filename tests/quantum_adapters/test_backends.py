"""Running the circuit by name: ``backends.execute`` dispatches to each execution and checks its options."""

from __future__ import annotations

import pytest
import torch

from quantum_adapters.backends import BACKENDS, execute


def test_execute_dispatches_and_rejects_unknown_backend():
    x, w = torch.rand(4, 3), torch.rand(2, 4, 3)
    fast = execute(x, w)
    assert fast.shape == (4, 3) and torch.all(fast.abs() <= 1)
    assert torch.equal(execute(x, w, backend="fast", device="default.qubit"), fast)
    assert torch.allclose(execute(x, w, backend="pennylane"), fast, atol=1e-5)
    assert BACKENDS == ("fast", "pennylane", "noisy", "device")
    with pytest.raises(
        ValueError, match=r"expected one of \['fast', 'pennylane', 'noisy', 'device'\]; got 'qiskit'"
    ):
        execute(x, w, backend="qiskit")
    with pytest.raises(ValueError, match="expected device=None and shots=None"):
        execute(x, w, backend="fast", device="lightning.qubit")
    with pytest.raises(ValueError, match="expected device=None and shots=None"):
        execute(x, w, shots=100)
    with pytest.raises(ValueError, match=r"expected options among \[\]; got \['noise'\]"):
        execute(x, w, backend="pennylane", noise="depolarizing")


def test_execute_evaluation_backends():
    """The noise-free, exact 'noisy' simulator and a device runner give the fast simulator's values."""
    from quantum_adapters.device import DeviceRunner

    x, w = torch.rand(4, 3), torch.rand(2, 4, 3)
    fast = execute(x, w)
    with torch.no_grad():
        assert torch.allclose(execute(x, w, backend="noisy", noise=None, seed=0), fast, atol=1e-5)
        sampled = execute(x, w, backend="noisy", shots=4000, noise="depolarizing", seed=1)
        assert sampled.shape == (4, 3) and not torch.allclose(sampled, fast, atol=1e-3)
        runner = DeviceRunner("default.qubit", progress=False)
        assert torch.allclose(
            execute(x, w, backend="device", device="default.qubit", runner=runner), fast, atol=1e-5
        )
        assert runner.stats.circuits == 4
        assert torch.allclose(execute(x, w, backend="device"), fast, atol=1e-5)
    with pytest.raises(ValueError, match="expected device and shots to match the runner's"):
        execute(x, w, backend="device", shots=10, runner=runner)
