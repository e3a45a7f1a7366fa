"""Benchmark: the fast QTHA circuit simulator against PennyLane, forward + backward.

Both backends run the same circuit (:func:`quantum_adapters.circuit.gates`) on ``rows`` input rows, as the
adapter does once per token: the fast exact simulator (``backend='fast'``) and PennyLane's
``default.qubit`` with the torch interface, backprop and parameter broadcasting over the rows (the
fastest PennyLane path for this workload). A step is one forward pass and one backward pass to the
inputs and the weights. Reported: median step time over ``repeats`` timed steps after one warm-up
step, the speed-up, the largest disagreement between the two (outputs, input gradients, weight
gradients) and each backend's peak memory. Where the fast simulator runs its compiled kernel, its torch
execution (``QTHA_KERNEL=torch``) is timed too, in alternation with it.

Against the limit: ``fast_gflops`` is the circuit's arithmetic (:func:`circuit_flops`, what the kernel
computes) per second of the fast step, next to ``matmul_gflops``, the rate of a float32 matmul
``(rows, d) @ (d, d)`` with ``d = max(2^n, 256)`` timed in the same process on the same threads.

    qtha-eval bench simulator --qubits 8 --layers 8 --rows 4096 [--repeats 3] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from quantum_adapters import _kernel
from quantum_adapters.backends import execute

from . import add_circuit_arguments, add_command, check_bounds

__all__ = ["circuit_flops", "register", "run"]

_Step = Callable[[], tuple[Tensor, Tensor, Tensor]]


def run(
    qubits: int = 8, layers: int = 8, rows: int = 4096, repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Time fast vs PennyLane forward + backward on one random batch; check they agree.

    Returns ``fast_s``/``pennylane_s`` (median seconds per forward + backward), ``speedup``,
    ``max_abs_diff`` (largest absolute difference over outputs, input gradients and weight gradients;
    the weight gradients are those of the row-mean loss, i.e. divided by ``rows``, the scale training
    sees: summed over thousands of rows, float32 rounding of the sum alone exceeds 1e-5),
    ``fast_peak_mb``/``pennylane_peak_mb`` (peak resident memory added by one step), and the sizes.
    """
    check_bounds(
        "simulator",
        {"--qubits": (qubits, 2), "--layers": (layers, 1), "--rows": (rows, 1), "--repeats": (repeats, 1)},
    )
    _check_memory_for_pennylane(qubits, layers, rows)
    gen = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(rows, qubits, generator=gen) * 2 - 1) * math.pi  # (rows, n) float32 angles
    weights = torch.rand(layers, 4, qubits, generator=gen) * 2 * math.pi  # (L, 4, n), as the layer inits
    grad_out = torch.randn(rows, qubits, generator=gen)  # dL/dz for a random linear loss

    def step(backend: str) -> _Step:
        def once() -> tuple[Tensor, Tensor, Tensor]:
            x, w = inputs.clone().requires_grad_(), weights.clone().requires_grad_()
            z = execute(x, w, backend=backend)
            gx, gw = torch.autograd.grad(z, (x, w), grad_out)
            return z.detach(), gx, gw

        return once

    fast, penny = step("fast"), step("pennylane")
    compiled = _kernel.load() is not None
    if compiled:  # the compiled kernel and the torch ops it replaces, alternately
        (fast_s, torch_s), (fast_out, _) = _median_times([fast, _torch_ops(fast)], repeats)
    else:
        (fast_s,), (fast_out,) = _median_times([fast], repeats)
        torch_s = fast_s
    penny_s, penny_out = _median_time(penny, repeats)
    diffs = [(a - b).abs().max().item() for a, b in zip(fast_out[:2], penny_out[:2], strict=True)]
    diffs.append(((fast_out[2] - penny_out[2]) / rows).abs().max().item())
    flops = circuit_flops(qubits, layers) * rows
    return {
        "qubits": float(qubits),
        "layers": float(layers),
        "rows": float(rows),
        "threads": float(torch.get_num_threads()),
        "kernel": float(compiled),
        "fast_s": fast_s,
        "torch_ops_s": torch_s,
        "kernel_speedup": torch_s / fast_s,
        "pennylane_s": penny_s,
        "speedup": penny_s / fast_s,
        "max_abs_diff": max(diffs),
        "fast_peak_mb": _peak_mb(fast),
        "pennylane_peak_mb": _peak_mb(penny),
        "gflop": flops / 1e9,
        "fast_gflops": flops / fast_s / 1e9,
        "matmul_gflops": _matmul_gflops(rows, max(2**qubits, 256), repeats),
    }


def circuit_flops(qubits: int, layers: int) -> int:
    """Floating-point operations of one row's forward + backward as the compiled kernel computes them.

    A state is two planes of D = 2^n floats. An RY on one wire touches D/2 pairs in both planes at 6 flops
    a pair (4 multiplies, 2 adds): 6D per wire; a ring phase is a complex multiply per amplitude, 6D.
    Forward: 2L RY layers (L - 1 per-row, L + 1 shared, the first per-row one being the product state,
    ~D) and 2L phases, so ``12 L (n + 1) D``. Backward un-computes psi and carries lambda (twice the
    forward's gates) and adds every RY angle's gradient (8 flops a pair per wire: 4 n D per layer,
    2L + 1 layers) and every phase's (4 D each, 2L of them).
    """
    d, n, ell = 2**qubits, qubits, layers
    forward = 12 * ell * (n + 1) * d
    return forward + 2 * forward + (2 * ell + 1) * 4 * n * d + 2 * ell * 4 * d


def _torch_ops(fast: _Step) -> _Step:
    """``fast`` run on the simulator's torch ops instead of its compiled kernel."""

    def once() -> tuple[Tensor, Tensor, Tensor]:
        saved = os.environ.get("QTHA_KERNEL")
        os.environ["QTHA_KERNEL"] = "torch"
        try:
            return fast()
        finally:
            if saved is None:
                del os.environ["QTHA_KERNEL"]
            else:
                os.environ["QTHA_KERNEL"] = saved

    return once


def _median_times(
    steps: list[_Step], repeats: int
) -> tuple[list[float], list[tuple[Tensor, Tensor, Tensor]]]:
    """Median seconds of each step, timed in alternation (one warm-up each), and each one's last output."""
    outs = [step() for step in steps]
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            outs[i] = step()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], outs


def _matmul_gflops(rows: int, d: int, repeats: int) -> float:
    """GFLOP/s of a float32 ``(rows, d) @ (d, d)`` matmul here, median over ``max(repeats, 5)`` timings."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(rows, d, generator=gen), torch.randn(d, d, generator=gen)
    out = a @ b
    times = []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * rows * d * d / statistics.median(times) / 1e9


# PennyLane's backprop keeps every intermediate state of the broadcast batch (complex128) for the
# backward pass: peak ~ this factor x gates x rows x 2^n x 16 bytes (measured 12.9-14.2 GB at 8 qubits,
# 8 layers, 4096 rows, i.e. a factor of 2.4-2.6).
_PENNYLANE_MEMORY_FACTOR = 2.6


def _check_memory_for_pennylane(qubits: int, layers: int, rows: int) -> None:
    """Refuse up front (instead of being OOM-killed mid-run) when PennyLane's run cannot fit in RAM."""
    need = _PENNYLANE_MEMORY_FACTOR * 5 * qubits * layers * rows * 2**qubits * 16
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:  # not Linux: nothing to check against
        return
    available = next(
        (int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")),
        None,
    )
    if available is not None and need > 0.9 * available:
        raise ValueError(
            f"bench simulator: PennyLane's backprop run needs about {need / 2**30:.1f} GB for {qubits} qubits x "
            f"{layers} layers x {rows} rows; only {available / 2**30:.1f} GB is available (MemAvailable). "
            "Use fewer --rows, or free memory"
        )


def _median_time(step: _Step, repeats: int) -> tuple[float, tuple[Tensor, Tensor, Tensor]]:
    out = step()  # warm-up: builds the simulator's constants / PennyLane's QNode
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _peak_mb(step: _Step) -> float:
    """Peak resident memory (MB) that one step adds on top of what the process holds before it.

    Measured as the kernel's resident-set high-water mark (``VmHWM``), reset just before the step by
    writing 5 to ``/proc/self/clear_refs``, minus the resident set (``VmRSS``) at that moment. RSS is used,
    not ``tracemalloc`` (which sees only Python-level allocations, not torch's tensors) nor torch's
    profiler (which sees only torch tensors, not PennyLane's other allocations): it counts everything the
    step makes resident. Free heap memory is handed back first (``malloc_trim``) so that memory a
    previous step left cached is not reused invisibly. Linux only; elsewhere ``ru_maxrss`` growth is a
    lower bound and NaN is reported if neither can be read.
    """
    gc.collect()
    _malloc_trim()
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb(status, "VmRSS")
        step()
        return (_status_kb(status, "VmHWM") - before) / 1024
    except OSError:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        return grown / 1024 if grown > 0 else float("nan")


def _status_kb(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{status}: no {field} line")


def _malloc_trim() -> None:
    """Return free glibc heap memory to the OS (no-op where glibc's malloc_trim is unavailable)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def profile_fast(
    qubits: int = 8, layers: int = 8, rows: int = 4096, seed: int = 0, row_limit: int = 15
) -> str:
    """torch.profiler table (self CPU time per op) of one fast forward + backward, after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(seed)
    x = ((torch.rand(rows, qubits, generator=gen) * 2 - 1) * math.pi).requires_grad_()
    w = (torch.rand(layers, 4, qubits, generator=gen) * 2 * math.pi).requires_grad_()
    grad_out = torch.randn(rows, qubits, generator=gen)

    def step() -> None:
        torch.autograd.grad(execute(x, w), (x, w), grad_out)

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=row_limit
    )


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.qubits, args.layers, args.rows, args.repeats)
    if args.profile:
        print(profile_fast(args.qubits, args.layers, args.rows))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"circuit simulator, {args.qubits} qubits x {args.layers} layers, {args.rows} rows, forward + backward, "
        f"median of {args.repeats} ({int(result['threads'])} torch threads)"
    )
    print(f"  {'backend':<34}{'time (s)':>10}{'peak (MB)':>12}")
    fast_name = "fast (compiled kernel)" if result["kernel"] else "fast (torch ops, no compiler)"
    print(f"  {fast_name:<34}{result['fast_s']:>10.4f}{result['fast_peak_mb']:>12.1f}")
    if result["kernel"]:
        print(f"  {'fast on torch ops (QTHA_KERNEL=torch)':<34}{result['torch_ops_s']:>10.4f}")
    print(
        f"  {'pennylane default.qubit (backprop)':<34}{result['pennylane_s']:>10.4f}{result['pennylane_peak_mb']:>12.1f}"
    )
    print(f"  speed-up {result['speedup']:.1f}x   max |fast - pennylane| {result['max_abs_diff']:.2e}")
    if result["kernel"]:
        print(f"  compiled kernel vs torch ops: {result['kernel_speedup']:.1f}x")
    print(
        f"  fast: {result['gflop']:.2f} GFLOP in {result['fast_s'] * 1000:.1f} ms = {result['fast_gflops']:.1f} GFLOP/s; "
        f"float32 matmul here: {result['matmul_gflops']:.1f} GFLOP/s"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``simulator`` sub-command to an argparse ``subparsers`` object."""
    p = add_command(
        subparsers,
        "simulator",
        "fast circuit simulator vs PennyLane default.qubit: forward+backward time, agreement, memory",
        _cmd,
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_circuit_arguments(p, qubits=8, layers=8, rows=4096, rows_help="circuits per batch, one per token")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed steps per backend; the median is reported (default 3)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also print a torch.profiler table of the fast forward + backward",
    )
