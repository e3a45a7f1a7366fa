"""``qtha-eval bench device``: a fixed set of inputs through the PennyLane device path vs the fast simulator.

The same seeded circuit (``qubits`` x ``layers``, weights uniform in [0, 2 pi)) and ``rows`` seeded input
rows (uniform in [-pi, pi)) go through :class:`quantum_adapters.device.DeviceRunner` on ``device`` and
through :func:`quantum_adapters.simulator.expvals`; ``max_abs_diff`` is the largest gap over every <Z_i>.
Exact devices should agree to float precision (``default.qubit`` within 1e-5); with S shots each value
carries a standard error of about ``sqrt(1 - z^2) / sqrt(S)`` (at 20,000 shots the largest gap over a
few hundred values stays well within 0.05).

With shots, ``max_z`` is the largest gap in standard errors (``|diff| / sqrt((1 - z^2) / S)``, z the exact
value): parity within shot noise means it stays near what the largest of ``rows x qubits`` standard normal
draws would be (about 3 to 4). ``--qasm3`` also loads the circuit's OpenQASM 3 export (the ``circuit.qasm``
of artifacts) with ``qiskit.qasm3.loads`` and compares its statevector <Z_i> on the same rows
(``qasm3_max_abs_diff``; needs the ``quantum`` extra).

    qtha-eval bench device --device default.qubit --json
    qtha-eval bench device --device default.mixed --shots 20000
    qtha-eval bench device --device qiskit.aer --shots 20000 --rows 32 --noise-backend FakeManilaV2 --qasm3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from . import add_circuit_arguments, add_command

__all__ = ["register", "run"]


def run(
    device: str = "default.qubit",
    shots: int | None = None,
    qubits: int = 4,
    layers: int = 2,
    rows: int = 64,
    seed: int = 0,
    noise_backend: str | None = None,
    qasm3: bool = False,
) -> dict[str, Any]:
    """Run the fixed inputs on ``device`` and the fast simulator; return the gap, circuits and seconds."""
    import torch

    from quantum_adapters.circuit import weight_shape
    from quantum_adapters.device import DeviceRunner
    from quantum_adapters.simulator import expvals

    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"--rows: expected a positive integer; got {rows!r}")
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(weight_shape(qubits, layers), generator=generator, dtype=torch.float64) * 2 * math.pi
    # float32 angles: what the device path sends (its cache keys are float32 bytes)
    inputs = ((torch.rand(rows, qubits, generator=generator) * 2 - 1) * math.pi).to(torch.float64)
    with DeviceRunner(device, shots, progress=False, noise_backend=noise_backend) as runner:
        runner.check(qubits)
        t0 = time.perf_counter()
        with torch.no_grad():
            got = runner(inputs, weights)
        seconds = time.perf_counter() - t0
        stats = runner.summary()
    reference = expvals(inputs.float().double(), weights.float().double())
    result: dict[str, Any] = {
        "device": device,
        "noise_backend": noise_backend,
        "shots": shots,
        "qubits": qubits,
        "layers": layers,
        "rows": rows,
        "max_abs_diff": float((got - reference).abs().max()),
        "mean_abs_diff": float((got - reference).abs().mean()),
        "circuits": stats["circuits"],
        "jobs": stats["jobs"],
        "seconds": seconds,
    }
    if shots is not None:
        standard_error = torch.sqrt((1 - reference**2).clamp_min(1e-12) / shots)
        result["max_z"] = float(((got - reference).abs() / standard_error).max())
    if qasm3:
        result["qasm3_max_abs_diff"] = _qasm3_gap(
            inputs.float().double(), weights.float().double(), reference
        )
    return result


def _qasm3_gap(inputs: Any, weights: Any, reference: Any) -> float:
    """Largest |<Z_i>| gap between qiskit's statevector of the loaded OpenQASM 3 export and ``reference``."""
    try:
        import qiskit.qasm3
        from qiskit.quantum_info import SparsePauliOp, Statevector
    except ImportError as err:
        raise ValueError("--qasm3 needs qiskit and qiskit-qasm3-import: pip install -e '.[quantum]'") from err
    from quantum_adapters.circuit import to_qasm

    circuit = qiskit.qasm3.loads(to_qasm(weights)).remove_final_measurements(inplace=False)
    n = weights.shape[-1]
    params = {p.name: p for p in circuit.parameters}  # the input angles c0 .. c{n-1}
    observables = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits=n) for i in range(n)]
    gap = 0.0
    for row, want in zip(inputs.tolist(), reference.tolist(), strict=True):
        bound = circuit.assign_parameters({params[f"c{i}"]: row[i] for i in range(n)})
        state = Statevector(bound)
        got = [float(state.expectation_value(obs).real) for obs in observables]
        gap = max(gap, max(abs(a - b) for a, b in zip(got, want, strict=True)))
    return gap


def _cmd(args: argparse.Namespace) -> int:
    result = run(
        args.device,
        args.shots,
        args.qubits,
        args.layers,
        args.rows,
        args.seed,
        args.noise_backend,
        args.qasm3,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    shots = "exact" if result["shots"] is None else f"{result['shots']:,} shots"
    noise = f", noise of {result['noise_backend']}" if result["noise_backend"] else ""
    print(
        f"device {result['device']} ({shots}{noise}), {result['qubits']} qubits x {result['layers']} layers, "
        f"{result['rows']} rows"
    )
    if "max_z" in result:
        print(f"  largest gap in standard errors of the shots: {result['max_z']:.2f}")
    if "qasm3_max_abs_diff" in result:
        print(
            f"  OpenQASM 3 export via qiskit.qasm3.loads, statevector: max gap {result['qasm3_max_abs_diff']:.3g}"
        )
    print(
        f"  max |device - fast simulator| {result['max_abs_diff']:.3g}  (mean {result['mean_abs_diff']:.3g})  "
        f"{result['circuits']} circuits in {result['jobs']} jobs, {result['seconds']:.2f} s"
    )
    return 0


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "device",
        "fixed inputs through a PennyLane device vs the fast simulator: max_abs_diff, circuits, seconds",
        _cmd,
    )
    p.add_argument("--device", default="default.qubit", help="PennyLane device name (default default.qubit)")
    p.add_argument("--shots", type=int, default=None, help="shots per circuit (default: exact)")
    add_circuit_arguments(p, qubits=4, layers=2, rows=64, rows_help="input rows = circuits")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    p.add_argument(
        "--noise-backend",
        dest="noise_backend",
        default=None,
        help="with qiskit.aer: a fake IBM backend whose noise model Aer applies (e.g. FakeManilaV2)",
    )
    p.add_argument(
        "--qasm3", action="store_true", help="also check the OpenQASM 3 export through qiskit.qasm3.loads"
    )
