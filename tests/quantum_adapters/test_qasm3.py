"""The OpenQASM 3 export (``circuit.qasm`` of artifacts, ``qtha-adapters qasm``) in Qiskit's importer:
``qiskit.qasm3.loads`` must give a circuit whose statevector <Z_i> equal the fast simulator's.
Needs the ``quantum`` extra (pip install -e '.[quantum]'); skipped without it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evals.bench.device import _qasm3_gap
from quantum_adapters.circuit import weight_shape
from quantum_adapters.simulator import expvals
from tests.serving.conftest import tiny_artifacts  # noqa: F401  (a fixture)

pytest.importorskip("qiskit_qasm3_import")


@pytest.mark.parametrize(("n", "layers"), [(2, 1), (3, 2), (4, 3)])
def test_qasm3_export_loads_in_qiskit_and_gives_the_same_expectation_values(n, layers):
    generator = torch.Generator().manual_seed(n)
    weights = torch.rand(weight_shape(n, layers), generator=generator, dtype=torch.float64) * 2 * math.pi
    inputs = (torch.rand(5, n, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    assert _qasm3_gap(inputs, weights, expvals(inputs, weights)) < 1e-9
    # and the check can fail: other weights give other values
    assert _qasm3_gap(inputs, weights + 0.1, expvals(inputs, weights)) > 1e-3


def test_an_artifacts_circuit_qasm_loads_with_its_input_parameters(tiny_artifacts):  # noqa: F811
    import qiskit.qasm3

    folder = Path(tiny_artifacts["counseling"])
    text = (folder / "circuit.qasm").read_text()
    circuit = qiskit.qasm3.loads(text)
    state = load_file(folder / "adapter_model.safetensors")
    key = sorted(k for k in state if k.endswith("qtha_qnn.weights"))[0]
    weights = state[key].double()
    n = weights.shape[-1]
    assert circuit.num_qubits == n and sorted(p.name for p in circuit.parameters) == [
        f"c{i}" for i in range(n)
    ]
    inputs = torch.tensor([[0.3, -1.1], [2.0, 0.4]], dtype=torch.float64)[:, :n]
    assert _qasm3_gap(inputs, weights, expvals(inputs, weights)) < 1e-6
