"""The circuit's single definition: gate list, weight shape, manifest description, OpenQASM text, the argument checks
every execution shares."""

from __future__ import annotations

import json
import re

import pytest
import torch

from quantum_adapters.circuit import (
    Gate,
    check_inputs,
    describe,
    gates,
    input_shape_error,
    to_qasm,
    weight_shape,
)


def test_gate_list_order_for_three_qubits_two_layers():
    n, n_layers = 3, 2
    gate_list = gates(n, n_layers)
    assert len(gate_list) == 5 * n * n_layers
    layer1 = gate_list[5 * n :]
    assert layer1[:n] == [Gate("RY", (i,), ("input", i)) for i in range(n)]
    assert layer1[n : 2 * n] == [
        Gate("CRZ", (0, 1), ("weight", 1, 0, 0)),
        Gate("CRZ", (1, 2), ("weight", 1, 0, 1)),
        Gate("CRZ", (2, 0), ("weight", 1, 0, 2)),
    ]
    assert layer1[2 * n : 3 * n] == [Gate("RY", (i,), ("weight", 1, 1, i)) for i in range(n)]
    assert layer1[3 * n : 4 * n] == [  # the reverse ring, walked backwards
        Gate("CRZ", (2, 1), ("weight", 1, 2, 2)),
        Gate("CRZ", (1, 0), ("weight", 1, 2, 1)),
        Gate("CRZ", (0, 2), ("weight", 1, 2, 0)),
    ]
    assert layer1[4 * n :] == [Gate("RY", (i,), ("weight", 1, 3, i)) for i in range(n)]


@pytest.mark.parametrize(("n", "n_layers"), [(2, 1), (2, 3), (5, 2), (8, 8)])
def test_gate_list_uses_every_weight_once_and_every_input_once_per_layer(n, n_layers):
    gate_list = gates(n, n_layers)
    weights = [g.param[1:] for g in gate_list if g.param[0] == "weight"]
    assert sorted(weights) == [(layer, k, i) for layer in range(n_layers) for k in range(4) for i in range(n)]
    inputs = [g.param[1] for g in gate_list if g.param[0] == "input"]
    assert sorted(inputs) == sorted(list(range(n)) * n_layers)
    for g in gate_list:
        assert all(0 <= w < n for w in g.wires)
        if g.name == "CRZ":
            control, target = g.wires
            step = 1 if g.param[2] == 0 else -1
            assert target == (control + step) % n and control == g.param[3]
        else:
            assert g.name == "RY" and len(g.wires) == 1


def test_two_qubit_rings_are_distinct_gates():
    crz = [g.wires for g in gates(2, 1) if g.name == "CRZ"]
    assert crz == [(0, 1), (1, 0), (1, 0), (0, 1)]


def test_weight_shape():
    assert weight_shape(4, 3) == (3, 4, 4)
    assert weight_shape(2, 1) == (1, 4, 2)


@pytest.mark.parametrize(
    ("n", "n_layers", "bad"),
    [(1, 2, "n_qubits"), (0, 2, "n_qubits"), (3, 0, "n_layers"), (3.0, 2, "n_qubits"), (True, 2, "n_qubits")],
)
def test_weight_shape_rejects_bad_sizes(n, n_layers, bad):
    with pytest.raises(
        ValueError,
        match=rf"{bad}: expected an integer >= \d+.*; got {re.escape(repr(n if bad == 'n_qubits' else n_layers))}",
    ):
        weight_shape(n, n_layers)
    with pytest.raises(ValueError, match=bad):
        gates(n, n_layers)


def test_describe_is_json_and_counts_gates():
    info = describe(4, 3)
    assert json.loads(json.dumps(info)) == info
    assert info["n_qubits"] == 4 and info["n_layers"] == 3
    assert info["gate_counts"] == {"RY": 3 * 4 * 3, "CRZ": 2 * 4 * 3}
    assert info["n_gates"] == 5 * 4 * 3
    assert info["n_parameters"] == 4 * 4 * 3 == torch.Size(info["weight_shape"]).numel()
    assert info["ansatz"]


_GATE_LINE = re.compile(r"^(ry|crz)\((?P<angle>[^)]*)\) (?P<wires>q\[\d+\](?:,q\[\d+\])?);$")


def _parse(text: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, angle text, wires) of every gate line of an OpenQASM program."""
    out = []
    for line in text.splitlines():
        m = _GATE_LINE.match(line)
        if m:
            wires = tuple(int(w) for w in re.findall(r"q\[(\d+)\]", m["wires"]))
            out.append((m.group(1).upper(), m["angle"], wires))
    return out


def test_qasm2_with_bound_inputs_matches_gate_list():
    n, n_layers = 3, 2
    weights = torch.rand(n_layers, 4, n, dtype=torch.float64) * 6.283
    inputs = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    text = to_qasm(weights, inputs)
    lines = text.splitlines()
    assert lines[:4] == ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[3];", "creg m[3];"]
    assert lines[-1] == "measure q -> m;"
    parsed = _parse(text)
    gate_list = gates(n, n_layers)
    assert len(parsed) == len(gate_list) == len(lines) - 5
    assert sum(1 for p in parsed if p[0] == "RY") == 3 * n * n_layers
    assert sum(1 for p in parsed if p[0] == "CRZ") == 2 * n * n_layers
    for (name, angle, wires), gate in zip(parsed, gate_list, strict=True):
        assert (name, wires) == (gate.name, gate.wires)
        expected = inputs[gate.param[1]] if gate.param[0] == "input" else weights[gate.param[1:]]
        assert float(angle) == expected.item()  # bound exactly (repr round-trips a float64)


def test_qasm3_leaves_inputs_as_parameters():
    n, n_layers = 2, 2
    weights = torch.rand(n_layers, 4, n)
    text = to_qasm(weights)
    lines = text.splitlines()
    assert lines[:2] == ["OPENQASM 3.0;", 'include "stdgates.inc";']
    assert [line for line in lines if line.startswith("input ")] == [
        "input angle[32] c0;",
        "input angle[32] c1;",
    ]
    assert "qubit[2] q;" in lines and lines[-1] == "m = measure q;"
    parsed = _parse(text)
    gate_list = gates(n, n_layers)
    assert len(parsed) == len(gate_list)
    for (name, angle, wires), gate in zip(parsed, gate_list, strict=True):
        assert (name, wires) == (gate.name, gate.wires)
        if gate.param[0] == "input":
            assert angle == f"c{gate.param[1]}"
        else:  # float32 weights are bound as the exact float64 value of the float32
            assert float(angle) == weights[gate.param[1:]].double().item()


def test_qasm_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(3,\) or None; got \(2,\)"):
        to_qasm(torch.zeros(1, 4, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"expected shape \(L, 4, n\).*got \(1, 3, 3\)"):
        to_qasm(torch.zeros(1, 3, 3))
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        to_qasm([[0.0]])


def test_every_execution_checks_its_arguments_with_one_message():
    """The executions share check_inputs: the same "expected ...; got ..." for the same mistake."""
    from quantum_adapters.device import DeviceRunner
    from quantum_adapters.noise import density_expvals, noisy_expvals
    from quantum_adapters.pennylane_backend import expvals as pennylane_expvals
    from quantum_adapters.pennylane_backend import mixed_expvals
    from quantum_adapters.simulator import FrozenCircuit
    from quantum_adapters.simulator import expvals as fast_expvals

    w = torch.zeros(2, 4, 3)
    assert check_inputs(torch.zeros(5, 3), w, "f") == (2, 3)
    executions = {
        "simulator.expvals": lambda x: fast_expvals(x, w),
        "pennylane_backend.expvals": lambda x: pennylane_expvals(x, w),
        "pennylane_backend.mixed_expvals": lambda x: mixed_expvals(x, w),
        "noisy_expvals": lambda x: noisy_expvals(x, w),
        "density_expvals": lambda x: density_expvals(x, w, None),
        "DeviceRunner": lambda x: DeviceRunner(progress=False)(x, w),
        "FrozenCircuit": FrozenCircuit(w),
    }
    for where, run in executions.items():
        with pytest.raises(
            ValueError, match=rf"^{re.escape(where)}\(inputs\): expected shape \(\.\.\., 3\); got \(2, 4\)$"
        ):
            run(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^f\(inputs\): expected shape \(\.\.\., 3\); got list$"):
        check_inputs([0.0, 0.0, 0.0], w, "f")
    with pytest.raises(ValueError, match=r"^f\(weights\): expected shape \(L, 4, n\)"):
        check_inputs(torch.zeros(2, 3), torch.zeros(2, 3, 3), "f")
    with pytest.raises(
        TypeError, match=r"^f\(inputs\): expected a floating-point tensor; got dtype torch\.int64$"
    ):
        check_inputs(torch.zeros(2, 3, dtype=torch.long), w, "f", floating=True)
    assert str(input_shape_error(torch.zeros(1), 3, "g")) == "g(inputs): expected shape (..., 3); got (1,)"
