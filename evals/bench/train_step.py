"""``qtha-eval bench train-step``: one training step of QTHA against LoRA of the same rank.

Batch 4 x 256 tokens, q_proj + v_proj, AdamW, forward + backward + step. Each method runs in its own
fresh Python process so that its peak memory is its own: on CPU the peak resident set size
(``ru_maxrss``) of that process, on CUDA ``torch.cuda.max_memory_allocated``. ``memory_ratio`` compares
the peaks of the whole process (base model included, as a user sees it); ``increment_ratio`` compares
only what training adds on top of the loaded model (activations, adapter, optimiser state).

Time: a step's time on this 2-core machine scatters by +-10% between processes (where the heap
lands, the machine's drift over the minutes between them), more than the margins this benchmark is
about, so the time ratio comes from one process holding both models that steps them in turns, after
``--warmup`` steps of each: ``--pairs N`` pairs of steps (LoRA then QTHA, then QTHA then LoRA, ...),
each pair's two steps seconds apart; ``ratio`` is the median of the pairs' ratios (``ratio_min``,
``ratio_max``, ``ratios``). ``ratio_processes`` is the same ratio from the single-method processes, for
comparison. Both kinds of worker set the allocator as ``qtha-train`` does
(:func:`training.allocator.keep_freed_memory`) and count the minor page faults of their timed steps.

Memory: ``--repeats N`` pairs of single-method processes, alternating which goes first, and the medians
over the pairs of the memory ratios (``memory_ratio``, ``memory_ratio_min``, ``memory_ratio_max``).

The circuit's share: after the timed steps the QTHA worker runs one more step under ``torch.profiler``
and sums the wall time of the simulator's autograd function, forward and backward, over all adapted
modules (``circuit_s``, ``circuit_share`` of that step's time); and it reads off the autograd graph what
the circuits keep for backward (``circuit_saved_mb``, their saved tensors summed over modules, and
``circuit_saved_share`` of the QTHA increment).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from . import add_command, check_bounds

__all__ = ["register", "run"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build(method: str, args: argparse.Namespace, device: str) -> tuple[Any, Any]:
    """The base model with ``method``'s adapter on q_proj and v_proj, in train mode, and its AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model

    from quantum_adapters import QTHAConfig
    from quantum_adapters.config import DEFAULT_TARGET_MODULES
    from quantum_adapters.models import load_base_model

    model, _tok, _src = load_base_model(args.model, device=device)
    targets = list(DEFAULT_TARGET_MODULES)
    if method == "lora":
        config = LoraConfig(r=args.r, lora_alpha=16, target_modules=targets, lora_dropout=0.05)
    else:
        config = QTHAConfig(r=args.r, n_layers=args.layers, target_modules=targets, variant=args.variant)
    model = get_peft_model(model, config)
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def _step(model: Any, opt: Any, ids: Any) -> float:
    """Seconds of one training step: forward, backward, optimiser step."""
    import torch

    cuda = ids.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _setup() -> tuple[str, bool]:
    """Device, and the allocator set as qtha-train sets it (both methods step without page faults)."""
    import torch

    from training.allocator import keep_freed_memory

    kept = keep_freed_memory()
    torch.manual_seed(0)
    return ("cuda" if torch.cuda.is_available() else "cpu"), kept


def _batch(args: argparse.Namespace, vocab: int, device: str) -> Any:
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(device)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """One method alone in this process: its step times, peak memory and page faults per step."""
    import torch

    device, kept = _setup()
    model, opt = _build(args.method, args, device)
    ids = _batch(args, model.config.vocab_size, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_loaded = _rss_mb()
    for _ in range(args.warmup):
        _step(model, opt, ids)
    faults = _faults()
    times = [_step(model, opt, ids) for _ in range(args.steps)]
    faults = _faults() - faults
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    profiled = args.method == "qtha" and args.variant != "AB" and args.profile
    circuit = _circuit_share(model, ids, opt) if profiled else {}
    out = {
        "method": args.method,
        "step_s": statistics.median(times),
        "steps": len(times),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_mb": peak,
        "increment_mb": peak - rss_loaded,
        "device": device,
        "keep_freed_memory": kept,
        "minor_faults_per_step": faults / len(times),
    }
    if device == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["increment_mb"] = out["peak_mb"]
    return out | circuit


def _interleaved_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Both methods in this one process, stepping in turns: ``args.steps`` pairs of steps (LoRA then
    QTHA, then QTHA then LoRA, ...) after ``args.warmup`` steps of each; each pair's two steps are
    seconds apart on the same machine state, so the machine's drift cancels in their ratio."""
    device, _kept = _setup()
    models = {m: _build(m, args, device) for m in ("lora", "qtha")}
    ids = _batch(args, models["lora"][0].config.vocab_size, device)
    for _ in range(args.warmup):
        for model, opt in models.values():
            _step(model, opt, ids)
    pairs = []
    for i in range(args.steps):
        order = ("lora", "qtha") if i % 2 == 0 else ("qtha", "lora")
        pairs.append({m: _step(*models[m], ids) for m in order})
    return {"pairs": pairs}


# the simulator's autograd functions (compiled kernel, torch ops): their profiler events and graph nodes
_CIRCUIT_FUNCTIONS = ("_KernelFunction", "_CircuitFunction")


def _circuit_share(model: Any, ids: Any, opt: Any) -> dict[str, float]:
    """One more training step under torch.profiler: the wall seconds spent in the circuits (forward and
    backward of the simulator's autograd function, every module), and the bytes they save for backward."""
    from torch.profiler import ProfilerActivity, profile

    names = {*_CIRCUIT_FUNCTIONS, *(f"{f}Backward" for f in _CIRCUIT_FUNCTIONS)}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        saved = _circuit_saved_bytes(loss.grad_fn)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s = time.perf_counter() - t0
    circuit_s = sum(e.cpu_time_total for e in prof.key_averages() if e.key in names) / 1e6  # us -> s
    return {"circuit_s": circuit_s, "profiled_step_s": step_s, "circuit_saved_mb": saved / 2**20}


def _circuit_saved_bytes(root: Any) -> int:
    """Bytes of the tensors the circuit nodes of an autograd graph saved for backward."""
    backward_names = {f"{f}Backward" for f in _CIRCUIT_FUNCTIONS}
    seen, stack, total = set(), [root], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in backward_names:
            total += sum(t.numel() * t.element_size() for t in node.saved_tensors)
        stack.extend(fn for fn, _ in node.next_functions)
    return total


def _spawn(method: str, args: argparse.Namespace, *, profile: bool = False) -> dict[str, Any]:
    """One worker process for ``method`` (``both``: the interleaved one); ``profile``: it also measures
    the circuits' share (QTHA)."""
    cmd = [
        sys.executable,
        "-m",
        "evals.bench.train_step",
        "--worker",
        "--method",
        method,
        "--model",
        args.model,
        "--r",
        str(args.r),
        "--layers",
        str(args.layers),
        "--variant",
        args.variant,
        "--steps",
        str(args.pairs if method == "both" else args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        *(["--profile"] if profile else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker ({method}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    model: str = "smollm2-135m-instruct",
    r: int = 8,
    layers: int | None = None,
    variant: str = "ABC",
    steps: int = 3,
    warmup: int = 3,
    batch: int = 4,
    seq: int = 256,
    repeats: int = 4,
    pairs: int = 8,
) -> dict[str, Any]:
    """Step-time ratio of QTHA to LoRA over ``pairs`` interleaved pairs of steps in one process, and
    peak memory (and per-process step times) over ``repeats`` pairs of single-method processes.

    The circuits' share is measured in the first pair's QTHA worker only (one profiled step after its
    timed ones; profiling every worker would add a step to each and tell nothing new).
    """
    # checked here, before two worker processes load the model and fail in their own words
    check_bounds(
        "train-step",
        {
            "--r": (r, 2),
            "--layers": (layers if layers is not None else 1, 1),
            "--steps": (steps, 1),
            "--warmup": (warmup, 0),
            "--batch": (batch, 1),
            "--seq": (seq, 2),
            "--repeats": (repeats, 1),
            "--pairs": (pairs, 1),
        },
    )
    args = argparse.Namespace(
        model=model,
        r=r,
        layers=layers or r,
        variant=variant,
        steps=steps,
        warmup=warmup,
        batch=batch,
        seq=seq,
        pairs=pairs,
    )
    interleaved = _spawn("both", args)["pairs"]
    print(
        "bench train-step: interleaved: " + ", ".join(f"{p['qtha'] / p['lora']:.2f}" for p in interleaved),
        file=sys.stderr,
        flush=True,
    )
    processes = []
    for i in range(repeats):
        order = ("lora", "qtha") if i % 2 == 0 else ("qtha", "lora")
        pair = {m: _spawn(m, args, profile=(m == "qtha" and i == 0)) for m in order}
        processes.append(pair)
        q, lo = pair["qtha"], pair["lora"]
        print(  # progress on stderr (a run takes minutes); the result is what run returns
            f"bench train-step: pair {i + 1}/{repeats}: QTHA {q['step_s']:.2f} s, LoRA {lo['step_s']:.2f} s "
            f"(ratio {q['step_s'] / lo['step_s']:.2f}), peak {q['peak_mb']:.0f} vs {lo['peak_mb']:.0f} MB "
            f"(memory ratio {q['peak_mb'] / lo['peak_mb']:.2f})",
            file=sys.stderr,
            flush=True,
        )
    ratios = [p["qtha"] / p["lora"] for p in interleaved]
    process_ratios = [p["qtha"]["step_s"] / p["lora"]["step_s"] for p in processes]
    memory = [p["qtha"]["peak_mb"] / p["lora"]["peak_mb"] for p in processes]
    increments = [p["qtha"]["increment_mb"] / max(p["lora"]["increment_mb"], 1e-9) for p in processes]
    qtha, lora = processes[0]["qtha"], processes[0]["lora"]

    def median(method: str, key: str) -> float:
        return statistics.median(p[method][key] for p in processes)

    return {
        "model": model,
        "r": r,
        "layers": args.layers,
        "variant": variant,
        "batch": batch,
        "seq": seq,
        "steps": steps,
        "repeats": repeats,
        "pairs": pairs,
        "device": qtha["device"],
        "step_s_qtha": statistics.median(p["qtha"] for p in interleaved),
        "step_s_lora": statistics.median(p["lora"] for p in interleaved),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "ratio_processes": statistics.median(process_ratios),
        "ratios_processes": process_ratios,
        "peak_mb_qtha": median("qtha", "peak_mb"),
        "peak_mb_lora": median("lora", "peak_mb"),
        "memory_ratio": statistics.median(memory),
        "memory_ratio_min": min(memory),
        "memory_ratio_max": max(memory),
        "memory_ratios": memory,
        "increment_mb_qtha": median("qtha", "increment_mb"),
        "increment_mb_lora": median("lora", "increment_mb"),
        "increment_ratio": statistics.median(increments),
        "keep_freed_memory": qtha["keep_freed_memory"],
        "minor_faults_per_step_qtha": median("qtha", "minor_faults_per_step"),
        "minor_faults_per_step_lora": median("lora", "minor_faults_per_step"),
        "trainable_qtha": qtha["trainable"],
        "trainable_lora": lora["trainable"],
        **_circuit_figures(qtha),
    }


def _circuit_figures(qtha: dict[str, Any]) -> dict[str, float]:
    if "circuit_s" not in qtha:  # variant AB: no circuit
        return {}
    return {
        "circuit_s": qtha["circuit_s"],
        "circuit_share": qtha["circuit_s"] / qtha["profiled_step_s"],
        "circuit_saved_mb": qtha["circuit_saved_mb"],
        "circuit_saved_share": qtha["circuit_saved_mb"] / max(qtha["increment_mb"], 1e-9),
    }


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model (default: embedded SmolLM2-135M)"
    )
    p.add_argument("--r", type=int, default=8, help="rank = qubits (default 8)")
    p.add_argument("--layers", type=int, default=None, help="circuit layers (default r)")
    p.add_argument("--variant", default="ABC", choices=["ABC", "AB", "BC"])
    p.add_argument(
        "--pairs",
        type=int,
        default=8,
        help="interleaved pairs of steps (LoRA, QTHA in turns) in one process, for the time ratio (default 8)",
    )
    p.add_argument(
        "--steps", type=int, default=3, help="timed steps per single-method process (median; default 3)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed steps first, per method (default 3: the heap settles and page faults stop)",
    )
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="pairs of QTHA and LoRA processes, for peak memory; medians reported (default 4)",
    )


def _cmd(args: argparse.Namespace) -> int:
    result = run(
        args.model,
        args.r,
        args.layers,
        args.variant,
        args.steps,
        args.warmup,
        args.batch,
        args.seq,
        args.repeats,
        args.pairs,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"train step, {result['model']}, batch {args.batch}x{args.seq}, r={args.r}, L={result['layers']} ({result['device']})"
        )
        print(
            f"  QTHA  {result['step_s_qtha']:.3f} s/step  peak {result['peak_mb_qtha']:.0f} MB  (+{result['increment_mb_qtha']:.0f} MB)  {result['trainable_qtha']:,} params"
        )
        print(
            f"  LoRA  {result['step_s_lora']:.3f} s/step  peak {result['peak_mb_lora']:.0f} MB  (+{result['increment_mb_lora']:.0f} MB)  {result['trainable_lora']:,} params"
        )
        print(
            f"  time: median over {result['pairs']} interleaved pairs of steps in one process: "
            f"ratio {result['ratio']:.2f} ({result['ratio_min']:.2f}-{result['ratio_max']:.2f}); "
            f"over pairs of processes {result['ratio_processes']:.2f}"
        )
        print(
            f"  memory: medians over {result['repeats']} pairs of processes: "
            f"memory_ratio {result['memory_ratio']:.2f} ({result['memory_ratio_min']:.2f}-{result['memory_ratio_max']:.2f})   "
            f"increment_ratio {result['increment_ratio']:.2f}   minor page faults per step "
            f"{result['minor_faults_per_step_qtha']:.0f} QTHA, {result['minor_faults_per_step_lora']:.0f} LoRA"
        )
        if "circuit_s" in result:
            print(
                f"  circuits (forward + backward, {result['layers']} layers, all modules, one profiled step): "
                f"{result['circuit_s']:.3f} s = {result['circuit_share']:.0%} of the step; they keep "
                f"{result['circuit_saved_mb']:.0f} MB for backward = {result['circuit_saved_share']:.0%} of QTHA's increment"
            )
    return 0


def register(subparsers: Any) -> None:
    _add_args(
        add_command(subparsers, "train-step", "median training-step time and peak memory, QTHA vs LoRA", _cmd)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--method", default="qtha", choices=["qtha", "lora", "both"])
    parser.add_argument("--profile", action="store_true", help="also measure the circuits' share")
    _add_args(parser)
    ns = parser.parse_args()
    print(json.dumps(_interleaved_worker(ns) if ns.method == "both" else _worker(ns)))
