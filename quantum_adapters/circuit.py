"""The QTHA quantum circuit, defined once.

The circuit is the quantum neural network (QNN) of the quantum tensor hybrid adapter (QTHA, Origin
Quantum, arXiv 2503.12790): ``n`` qubits (one per adapter rank), ``L`` layers with data re-uploading,
and a Pauli-Z readout on every qubit::

    |psi(c)> = prod_{l = L-1 .. 0} [ R(w[l,3]) D_rev(w[l,2]) R(w[l,1]) D_fwd(w[l,0]) R(c) ] |0...0>
    z_i(c)   = <psi(c)| Z_i |psi(c)>,     i = 0 .. n-1

with ``R(a) = RY(a_0) x ... x RY(a_{n-1})`` and ``D_fwd``/``D_rev`` the (diagonal) CRZ rings. Per layer ``l``,
in gate order: RY(c_i) on every qubit (``c`` = the input angles, one row per token); the forward ring
CRZ(i -> i+1 mod n) with angles ``w[l,0,i]``; RY(``w[l,1,i]``) on every qubit; the reverse ring
CRZ(i -> i-1 mod n) with angles ``w[l,2,i]``; RY(``w[l,3,i]``) on every qubit. After the last layer the
circuit outputs ``z_i = <Z_i>`` for every qubit, a vector in [-1, 1]^n.

Conventions are PennyLane's: wire 0 is the most significant bit of a basis-state index,
``RY(t) = [[cos t/2, -sin t/2], [sin t/2, cos t/2]]`` and ``CRZ(t) = diag(1, 1, e^{-it/2}, e^{it/2})``
(control first). The weights tensor has shape ``(L, 4, n)`` (see :func:`weight_shape`), 4·n·L angles.

:func:`gates` is the single definition. The PennyLane QNode (``pennylane_backend``) loops over it; the
fast simulator (``simulator``) fuses it into a few tensor operations and is tested equal to it;
:func:`to_qasm` prints it. The executions import this module, never the reverse: :func:`check_inputs`,
:func:`check_weights` and :func:`check_shots` are the argument checks they share, and
:func:`.backends.execute` picks one of them by name (exact and fast, PennyLane, or the evaluation-only
noisy simulator and device runner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "ANSATZ",
    "Gate",
    "check_inputs",
    "check_shots",
    "check_weights",
    "describe",
    "gates",
    "input_shape_error",
    "to_qasm",
    "weight_shape",
]

ANSATZ = "qtha-reupload-crz-ring"

# Rows of the weights tensor: which gate block of a layer each angle belongs to.
_W_CRZ_FORWARD, _W_RY_FIRST, _W_CRZ_REVERSE, _W_RY_SECOND = 0, 1, 2, 3


@dataclass(frozen=True)
class Gate:
    """One gate of the circuit.

    ``param`` says where the gate's angle comes from: ``('input', i)`` is input angle ``c_i`` of the
    current row; ``('weight', l, k, i)`` is ``weights[l, k, i]``.
    """

    name: Literal["RY", "CRZ"]
    """Gate name in PennyLane's spelling."""
    wires: tuple[int, ...]
    """Wires it acts on; for CRZ ``(control, target)``."""
    param: tuple
    """``('input', i)`` or ``('weight', l, k, i)``."""


def weight_shape(n_qubits: int, n_layers: int) -> tuple[int, int, int]:
    """Shape ``(L, 4, n)`` of the circuit's weights, without building anything.

    ``weights[l, 0, i]``: CRZ(i -> i+1) angle; ``weights[l, 1, i]``: first trainable RY on qubit i;
    ``weights[l, 2, i]``: CRZ(i -> i-1) angle; ``weights[l, 3, i]``: second trainable RY on qubit i.
    """
    _check_int("n_qubits", n_qubits, 2, "the CRZ rings need two wires")
    _check_int("n_layers", n_layers, 1, "the circuit needs a layer")
    return (n_layers, 4, n_qubits)


def gates(n_qubits: int, n_layers: int) -> list[Gate]:
    """The circuit as an ordered gate list: THE definition both executions derive from.

    Per layer, in order: n data RY, n forward-ring CRZ (control i = 0..n-1), n trainable RY,
    n reverse-ring CRZ (control i = n-1..0, walking the ring backwards), n trainable RY.
    5·n·L gates; the readout (<Z_i> on every wire) follows the last one.
    """
    n, n_l = n_qubits, n_layers
    weight_shape(n, n_l)
    out: list[Gate] = []
    for layer in range(n_l):
        out += [Gate("RY", (i,), ("input", i)) for i in range(n)]
        out += [Gate("CRZ", (i, (i + 1) % n), ("weight", layer, _W_CRZ_FORWARD, i)) for i in range(n)]
        out += [Gate("RY", (i,), ("weight", layer, _W_RY_FIRST, i)) for i in range(n)]
        out += [
            Gate("CRZ", (i, (i - 1) % n), ("weight", layer, _W_CRZ_REVERSE, i)) for i in reversed(range(n))
        ]
        out += [Gate("RY", (i,), ("weight", layer, _W_RY_SECOND, i)) for i in range(n)]
    return out


def describe(n_qubits: int, n_layers: int) -> dict:
    """A JSON-able description of the circuit for an artifact's manifest."""
    gate_list = gates(n_qubits, n_layers)
    counts: dict[str, int] = {}
    for gate in gate_list:
        counts[gate.name] = counts.get(gate.name, 0) + 1
    return {
        "ansatz": ANSATZ,
        "n_qubits": n_qubits,
        "n_layers": n_layers,
        "n_gates": len(gate_list),
        "gate_counts": counts,
        "n_parameters": 4 * n_qubits * n_layers,
        "weight_shape": list(weight_shape(n_qubits, n_layers)),
        "n_inputs": n_qubits,
        "readout": "expval PauliZ on every wire",
        "conventions": "PennyLane: wire 0 is the most significant bit; RY(t)=exp(-i t Y/2); "
        "CRZ(t)=diag(1, 1, exp(-i t/2), exp(i t/2)) with wires (control, target)",
    }


def to_qasm(weights: Tensor, inputs: Tensor | None = None) -> str:
    """The circuit as OpenQASM text, trained weights bound as numbers.

    Args:
        weights: ``(L, 4, n)`` trained angles; printed with ``repr`` (round-trip exact).
        inputs: ``(n,)`` input angles of one row, bound as numbers in an OpenQASM 2.0 program
            (``qelib1.inc``); ``None`` leaves them as ``input angle[32] c0; ...`` parameters of an
            OpenQASM 3.0 program (``stdgates.inc``), the form a device runs once per token.

    Every qubit is measured into a classical register at the end.
    """
    check_weights(weights, "to_qasm(weights)")
    n_layers, _, n = weights.shape
    w = weights.detach().to("cpu", torch.float64)
    qasm3 = inputs is None
    if inputs is not None:
        if not isinstance(inputs, Tensor) or tuple(inputs.shape) != (n,):
            got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"to_qasm(inputs): expected a tensor of shape ({n},) or None; got {got}")
        x = inputs.detach().to("cpu", torch.float64)

    def angle(param: tuple) -> str:
        if param[0] == "input":
            return f"c{param[1]}" if qasm3 else repr(float(x[param[1]]))
        _, layer, k, i = param
        return repr(float(w[layer, k, i]))

    if qasm3:
        lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
        lines += [f"input angle[32] c{i};" for i in range(n)]
        lines += [f"qubit[{n}] q;", f"bit[{n}] m;"]
    else:
        lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg m[{n}];"]
    for gate in gates(n, n_layers):
        wires = ",".join(f"q[{i}]" for i in gate.wires)
        lines.append(f"{gate.name.lower()}({angle(gate.param)}) {wires};")
    lines.append("m = measure q;" if qasm3 else "measure q -> m;")
    return "\n".join(lines) + "\n"


def _check_int(name: str, value: object, minimum: int, why: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum} ({why}); got {value!r}")


def check_weights(weights: object, where: str) -> None:
    """Raise unless ``weights`` is a float tensor of shape ``(L, 4, n)`` with L >= 1, n >= 2; ``where``
    names the argument in the message (e.g. ``'simulator.expvals(weights)'``)."""
    if not isinstance(weights, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor of shape (L, 4, n); got {type(weights).__name__}")
    shape = tuple(weights.shape)
    if len(shape) != 3 or shape[1] != 4 or shape[0] < 1 or shape[2] < 2:
        raise ValueError(f"{where}: expected shape (L, 4, n) with L >= 1 and n >= 2; got {shape}")
    if not weights.is_floating_point():
        raise TypeError(f"{where}: expected a floating-point tensor; got dtype {weights.dtype}")


def check_inputs(inputs: object, weights: object, where: str, floating: bool = False) -> tuple[int, int]:
    """Check the arguments of an execution, ``where(inputs, weights)``; return ``(L, n)``.

    ``weights`` as :func:`check_weights`; ``inputs`` a tensor of shape ``(..., n)`` (floating-point
    too with ``floating``). Every execution calls this once per call, so the messages are the same.
    """
    check_weights(weights, f"{where}(weights)")
    n_layers, _, n = weights.shape
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[-1] != n:
        raise input_shape_error(inputs, n, where)
    if floating and not inputs.is_floating_point():
        raise TypeError(f"{where}(inputs): expected a floating-point tensor; got dtype {inputs.dtype}")
    return n_layers, n


def check_shots(shots: object, where: str) -> None:
    """Raise unless ``shots`` is None (exact expectation values) or a positive integer."""
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
        raise ValueError(f"{where}: expected None or a positive integer; got {shots!r}")


def input_shape_error(inputs: object, n: int, where: str) -> ValueError:
    """The error for inputs that are not an ``(..., n)`` tensor (for callers that test the shape inline)."""
    got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
    return ValueError(f"{where}(inputs): expected shape (..., {n}); got {got}")
