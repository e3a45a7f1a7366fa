"""The QTHA circuit as a PennyLane QNode: the reference execution, and the way onto real devices.

This is the only module of the project that imports PennyLane. The QNode is built by looping over
:func:`quantum_adapters.circuit.gates`, the circuit's single definition, so whatever device runs it
(``default.qubit``, ``lightning.qubit``, a hardware plugin) runs the same circuit the fast simulator
computes. Rows are sent as one parameter-broadcast batch: ``qml.RY(inputs[:, i], wires=i)`` with
``inputs`` of shape ``(B, n)``. On ``default.qubit`` the QNode differentiates by torch backprop; on other
devices PennyLane picks its best method (``diff_method='best'``), and with finite ``shots`` it samples.

Two more forms serve the device path (:mod:`.device`): :func:`expvals_circuits` broadcasts whole
circuits, each row with its own per-layer input angles and its own weights (the shifted circuits of the
parameter-shift rule go out as one batch), and ``noise_backend`` gives ``qiskit.aer`` the noise model
of one of Qiskit's fake IBM backends (``qiskit_ibm_runtime.fake_provider``, e.g. ``FakeManilaV2``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from importlib import metadata

import torch
from torch import Tensor

from .circuit import check_inputs, check_shots, gates
from .noise import NoiseModel

try:
    import pennylane as qml
    from pennylane.exceptions import DeviceError, WireError
except ImportError as err:  # pennylane is a core dependency; a broken install should say how to fix it
    raise ImportError(
        "quantum_adapters.pennylane_backend needs PennyLane: pip install 'pennylane>=0.38' "
        "(or use backend='fast', the built-in simulator)"
    ) from err

__all__ = [
    "check_device",
    "expvals",
    "expvals_circuits",
    "fake_backend_noise",
    "installed_devices",
    "mixed_expvals",
]


def installed_devices() -> list[str]:
    """Names of the PennyLane devices installed here (PennyLane's ``pennylane.plugins`` entry points)."""
    return sorted({entry.name for entry in metadata.entry_points(group="pennylane.plugins")})


def check_device(
    device: str, n_qubits: int, shots: int | None = None, noise_backend: str | None = None
) -> None:
    """Raise ``ValueError`` unless ``device`` is installed and can run an ``n_qubits``-qubit circuit
    (with ``shots`` and ``noise_backend``); builds the device (and caches its QNode) but runs nothing."""
    _require_installed(device)
    try:
        _qnode(device, n_qubits, 1, shots, noise_backend)
    except ValueError as err:
        raise ValueError(f"device {device!r} cannot run the {n_qubits}-qubit circuit: {err}") from err


def _require_installed(device: str) -> None:
    available = installed_devices()
    if device not in available:
        raise ValueError(f"pennylane_backend: expected a device in {available}; got {device!r}")


@functools.lru_cache(maxsize=8)
def fake_backend_noise(name: str) -> object:
    """The ``qiskit_aer.noise.NoiseModel`` of Qiskit's fake IBM backend ``name`` (e.g. ``FakeManilaV2``):
    its calibrated gate errors, T1/T2 relaxation and readout errors, for ``qiskit.aer``."""
    try:
        from qiskit_aer.noise import NoiseModel
        from qiskit_ibm_runtime import fake_provider
    except ImportError as err:
        raise ValueError(
            f"noise backend {name!r} needs qiskit-aer and qiskit-ibm-runtime: pip install -e '.[quantum]' "
            "(or make quantum)"
        ) from err
    backend_cls = getattr(fake_provider, name, None)
    if not isinstance(backend_cls, type) or not name.startswith("Fake"):
        known = sorted(n for n in dir(fake_provider) if n.startswith("Fake") and n.endswith("V2"))
        raise ValueError(
            f"noise backend: expected a fake IBM backend of qiskit_ibm_runtime.fake_provider "
            f"({', '.join(known[:8])}, ...); got {name!r}"
        )
    return NoiseModel.from_backend(backend_cls())


def expvals(
    inputs: Tensor,
    weights: Tensor,
    device: str = "default.qubit",
    shots: int | None = None,
    noise_backend: str | None = None,
) -> Tensor:
    """<Z_i> of the circuit for every row, computed by PennyLane on ``device``.

    Args:
        inputs: ``(..., n)`` input angles (any leading batch shape; rows are broadcast in one QNode call).
        weights: ``(L, 4, n)`` trainable angles.
        device: a PennyLane device name from :func:`installed_devices`.
        shots: ``None`` for exact expectation values, else the number of measurement shots.
        noise_backend: for ``qiskit.aer``, the name of a fake IBM backend whose noise model Aer applies
            (:func:`fake_backend_noise`); ``None``: no noise model.

    Returns:
        ``(..., n)`` tensor in ``inputs``' dtype, differentiable w.r.t. inputs and weights.
    """
    n_layers, n = check_inputs(inputs, weights, "pennylane_backend.expvals")
    check_shots(shots, "pennylane_backend.expvals(shots)")
    qnode = _qnode(device, n, n_layers, shots, noise_backend)
    batch_shape = inputs.shape[:-1]
    rows = math.prod(batch_shape)
    if rows == 0:
        return inputs.new_zeros(inputs.shape)
    # float64 in PennyLane (its torch state is complex128); the result comes back in the caller's dtype.
    x = inputs.reshape(rows, n).to(torch.float64)
    out = torch.stack(list(qnode(x, weights.to(torch.float64))), dim=-1)  # (rows, n)
    return out.to(inputs.dtype).reshape(inputs.shape)


def expvals_circuits(
    angles: Tensor,
    weights: Tensor,
    device: str = "default.qubit",
    shots: int | None = None,
    noise_backend: str | None = None,
) -> Tensor:
    """<Z_i> of B whole circuits, each with its own parameters, in one broadcast execution.

    Args:
        angles: ``(B, L, n)`` input angles per circuit and layer (the data RYs of layer l use
            ``angles[:, l]``; the plain circuit repeats one row's ``c`` in every layer).
        weights: ``(B, L, 4, n)`` trained angles per circuit.
        device, shots: as :func:`expvals`; ``noise_backend``: a fake IBM backend's noise for ``qiskit.aer``.

    Returns:
        ``(B, n)`` float64 values, no gradients (the parameter-shift rule differentiates by running these).
    """
    if not isinstance(angles, Tensor) or angles.ndim != 3:
        raise ValueError(
            f"expvals_circuits(angles): expected shape (B, L, n); got {getattr(angles, 'shape', angles)}"
        )
    b, n_layers, n = angles.shape
    if not isinstance(weights, Tensor) or tuple(weights.shape) != (b, n_layers, 4, n):
        got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"expvals_circuits(weights): expected shape {(b, n_layers, 4, n)}; got {got}")
    if b == 0:
        return torch.zeros(0, n, dtype=torch.float64)
    qnode = _qnode(device, n, n_layers, shots, noise_backend, per_circuit=True)
    with torch.no_grad():
        out = qnode(angles.to(torch.float64), weights.to(torch.float64))
    return torch.stack([torch.as_tensor(v).reshape(b) for v in out], dim=-1).to(torch.float64)


@functools.lru_cache(maxsize=32)
def _qnode(
    device: str,
    n: int,
    n_layers: int,
    shots: int | None,
    noise_backend: str | None = None,
    per_circuit: bool = False,
) -> Callable[[Tensor, Tensor], tuple]:
    """Build (once per device, size, shots and noise) the QNode ``(inputs (B, n), weights) -> n tensors
    (B,)``, or with ``per_circuit`` ``(angles (B, L, n), weights (B, L, 4, n)) -> n tensors (B,)``."""
    _require_installed(device)
    options = {}
    if noise_backend is not None:
        if not device.startswith("qiskit.aer"):
            raise ValueError(
                f"noise backend {noise_backend!r}: applies to the qiskit.aer device only; got device {device!r}"
            )
        options["noise_model"] = fake_backend_noise(noise_backend)
    try:
        dev = qml.device(device, wires=n, **options)
    except (DeviceError, WireError) as err:
        raise ValueError(
            f"pennylane_backend: device {device!r} cannot provide the {n} wires the circuit needs: {err}"
        ) from err
    if dev.wires is not None and len(dev.wires) < n:
        raise ValueError(
            f"pennylane_backend: device {device!r} has {len(dev.wires)} wires; expected at least {n} "
            f"(one per qubit of the {n}-qubit circuit)"
        )
    gate_list = gates(n, n_layers)

    def circuit(inputs: Tensor, weights: Tensor) -> list:
        data_gates = 0  # the data RYs seen so far: layer = data_gates // n
        for gate in gate_list:
            if per_circuit and gate.param[0] == "input":
                angle = inputs[:, data_gates // n, gate.param[1]]
                data_gates += 1
            elif per_circuit:
                angle = weights[(slice(None), *gate.param[1:])]
            else:
                angle = inputs[:, gate.param[1]] if gate.param[0] == "input" else weights[gate.param[1:]]
            if gate.name == "RY":
                qml.RY(angle, wires=gate.wires[0])
            else:
                qml.CRZ(angle, wires=list(gate.wires))
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    # Backprop through default.qubit's torch state is exact and the fastest PennyLane path for broadcast
    # batches; sampling (shots) and other devices use PennyLane's own choice.
    diff_method = "backprop" if device == "default.qubit" and shots is None else "best"
    if per_circuit:
        diff_method = None  # executed under no_grad; the parameter-shift rule is applied by the caller
    return qml.QNode(circuit, dev, interface="torch", diff_method=diff_method, shots=shots)


def mixed_expvals(inputs: Tensor, weights: Tensor, noise: NoiseModel | None = None) -> Tensor:
    """<Z_i> under gate and readout noise, by PennyLane's ``default.mixed``: the reference that
    :func:`quantum_adapters.noise.noisy_expvals` is tested against.

    ``qml.DepolarizingChannel(noise.p1)`` follows every RY on its wire, and
    ``qml.DepolarizingChannel(noise.p2)`` every CRZ on each of its two wires; ``qml.probs`` of all wires
    then goes through the ``2^n x 2^n`` readout confusion matrix ``M x M x ... x M`` (one factor per
    wire, wire 0 first) before ``<Z_i> = sum_m P(m) (1 - 2 m_i)``.

    Args:
        inputs: ``(..., n)`` input angles (rows broadcast in one QNode call).
        weights: ``(L, 4, n)`` trainable angles.
        noise: a :class:`quantum_adapters.noise.NoiseModel`, or ``None`` for the noise-free circuit.

    Returns:
        ``(..., n)`` float64 exact expectation values (no shots).
    """
    n_layers, n = check_inputs(inputs, weights, "pennylane_backend.mixed_expvals")
    p1, p2 = (noise.p1, noise.p2) if noise is not None else (0.0, 0.0)
    readout = noise.readout if noise is not None else ((1.0, 0.0), (0.0, 1.0))
    gate_list = gates(n, n_layers)

    @qml.qnode(qml.device("default.mixed", wires=n), interface="torch", diff_method=None)
    def circuit(x: Tensor, w: Tensor):
        for gate in gate_list:
            angle = x[:, gate.param[1]] if gate.param[0] == "input" else w[gate.param[1:]]
            if gate.name == "RY":
                qml.RY(angle, wires=gate.wires[0])
                if p1 > 0:
                    qml.DepolarizingChannel(p1, wires=gate.wires[0])
            else:
                qml.CRZ(angle, wires=list(gate.wires))
                if p2 > 0:
                    for wire in gate.wires:
                        qml.DepolarizingChannel(p2, wires=wire)
        return qml.probs(wires=range(n))

    batch_shape = inputs.shape[:-1]
    x = inputs.detach().reshape(-1, n).to(torch.float64)
    probs = torch.as_tensor(circuit(x, weights.detach().to(torch.float64))).reshape(-1, 2**n)  # (rows, 2^n)
    confusion = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(n):
        confusion = torch.kron(confusion, torch.tensor(readout, dtype=torch.float64))
    measured = probs @ confusion  # P(m) = sum_t P(t) prod_i M[t_i][m_i]
    states = torch.arange(2**n)
    z_sign = 1.0 - 2.0 * ((states[:, None] >> torch.arange(n - 1, -1, -1)) & 1).to(torch.float64)
    return (measured @ z_sign).reshape(*batch_shape, n)
