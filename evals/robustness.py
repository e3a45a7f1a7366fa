"""``qtha-eval robustness``: one frozen adapter evaluated exactly and as quantum hardware would run it.

The reference (Origin Quantum's QTHA, arXiv 2503.12790) ran its adapter circuits on a 72-qubit
superconducting machine, where each <Z_i> comes from a finite number of shots and every gate is noisy.
Before paying for device time one wants to know how the task metric moves under those conditions:

    metric(exact)                            the 'fast' simulator, as training and serving run it
    metric(shots = S, noise = N)             every circuit of every token sampled S times under noise N
    delta_vs_exact = metric - metric(exact),     relative_delta = delta_vs_exact / |metric(exact)|

and, per noise setting, the fewest shots (of those tried) from which on the metric stays within 1% of
exact. The evaluation goes through the serving :class:`~serving.engine.Engine` (what is evaluated is what
is served), with the circuits switched by ``Engine.set_circuit_execution``: the built-in noisy simulator
(``backend='noisy'``, :func:`quantum_adapters.noise.noisy_expvals`) or a PennyLane device
(``backend='device'``, :class:`quantum_adapters.device.DeviceRunner`, with a result cache and a
``--max-circuits`` guard checked against an estimate before anything runs).

Metrics: math (``gsm8k``, ``synthetic-math``) the strict ``error_rate`` of greedy answers; counselling
the teacher-forced ``eval_loss`` on the reference replies (no generation).

    qtha-eval robustness --artifact runs/math-qtha/artifact --task synthetic-math --data synthetic-math:50 \\
        --limit 50 --shots 100,1000,10000 --noise none,depolarizing --out reports/robustness --json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantum_adapters.models import cache_dir, resolve_model
from quantum_adapters.noise import NoiseModel, noise_model

from .report import build_report
from .runner import TASKS, EvalError, artifact_label, task_examples, verified_manifest

__all__ = ["TOLERANCE", "parse_noise", "parse_shots", "register", "run"]

TOLERANCE = 0.01
"""The relative shift from the exact metric that counts as "within" (1%)."""


def parse_shots(text: str) -> list[int | None]:
    """``'100,1000,10000'`` -> ``[100, 1000, 10000]``; ``exact`` stands for no sampling (``None``)."""
    values: list[int | None] = []
    for part in text.split(","):
        token = part.strip().lower()
        if token == "exact":
            values.append(None)
            continue
        try:
            value = int(token)
        except ValueError:
            raise ValueError(
                f"--shots: expected comma-separated positive integers (or 'exact'); got {part.strip()!r} in {text!r}"
            ) from None
        values.append(value)
    return _check_shots(values)


def parse_noise(text: str) -> list[str]:
    """Split a ``--noise`` list into noise specs.

    Names and specs are separated by commas; a spec's own ``key=value`` parts are commas too, so
    consecutive ``key=value`` parts form one spec until a key repeats: ``none,depolarizing,p1=0.01,p2=0.05``
    is three settings. A ``;`` anywhere makes ``;`` the only separator.
    """
    if ";" in text:
        return [part.strip() for part in text.split(";") if part.strip()]
    specs: list[str] = []
    keys: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key = part.partition("=")[0].strip() if "=" in part else None
        if key is not None and specs and "=" in specs[-1] and key not in keys:
            specs[-1] += f",{part}"
            keys.add(key)
        else:
            specs.append(part)
            keys = {key} if key is not None else set()
    return specs


def run(
    artifact: str | Path,
    task: str,
    data: str,
    *,
    model: str = "smollm2-135m-instruct",
    limit: int | None = None,
    shots: Sequence[int | None] = (100, 1000, 10000),
    noise: Sequence[str] = ("none", "depolarizing"),
    device: str | None = None,
    out: str | Path,
    seed: int = 0,
    max_circuits: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 8,
    device_batch_size: int = 200,
    cache: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``artifact`` on ``task`` exactly, then under every (noise, shots) condition.

    Args:
        artifact: a frozen QTHA artifact folder (with a circuit).
        task, data, model, limit: as ``qtha-eval run`` (the artifact must be made for ``model``).
        shots: shots per circuit to try; ``None`` in the list means exact expectation values under the noise.
        noise: noise settings (names or specs of :func:`quantum_adapters.noise.noise_model`); with
            ``device`` only ``'none'`` (the device brings its own noise).
        device: a PennyLane device name; the circuits then run there through a
            :class:`~quantum_adapters.device.DeviceRunner` per shots value.
        out: report folder (``report.md``, ``report.html``, ``robustness.json``).
        seed: seeds the shot sampling of the simulator.
        max_circuits: refuse (before any evaluation) a run whose circuit estimate over all conditions
            (the exact run excluded) exceeds this; with a device, also the most circuits sent.
        max_tokens: generation length for math (default 256).
        batch_size: examples per generation/scoring batch.
        device_batch_size: circuits per device job.
        cache: the device result cache (default ``$QTHA_CACHE/device-results.sqlite``).
        progress: show the device progress bar.

    Returns:
        ``{"rows": [{"shots", "noise", "metric", "delta_vs_exact", "relative_delta", ...}], "metric_name",
        "exact", "shots_needed_within_1pct": {noise: shots or None}, "report_md", "report_html", ...}``;
        the first row is the exact run (``shots`` None, ``noise`` 'none').
    """
    from serving.engine import Engine

    # 1. every argument, before anything heavy
    if task not in TASKS:
        raise EvalError(f"--task: expected one of {', '.join(TASKS)}; got {task!r}")
    domain = TASKS[task]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise EvalError(f"--limit: expected a positive number of examples; got {limit!r}")
    shot_list = _check_shots(list(shots))
    settings = _noise_settings(list(noise), device)
    if max_circuits is not None and (not isinstance(max_circuits, int) or max_circuits < 0):
        raise EvalError(f"--max-circuits: expected an integer >= 0; got {max_circuits!r}")
    if max_tokens is not None and max_tokens < 1:
        raise EvalError(f"--max-tokens: expected a positive integer; got {max_tokens!r}")
    runners: dict[int | None, Any] = {}
    if device is not None:
        from quantum_adapters.device import DeviceRunner

        cache_path = Path(cache) if cache is not None else cache_dir() / "device-results.sqlite"
        for s in shot_list:
            runners[s] = DeviceRunner(
                device, s, batch_size=device_batch_size, cache=cache_path, progress=progress
            )

    try:
        # 2. the artifact: verified, made for this model, with a circuit
        source = resolve_model(model)
        path = Path(artifact)
        manifest = verified_manifest(path, source)
        circuit = manifest.get("circuit")
        if not circuit:
            raise EvalError(
                f"{path}: this adapter has no quantum circuit ({manifest['adapter']['method']}, variant "
                f"{manifest['adapter'].get('variant')}): shots and noise change nothing"
            )
        for runner in runners.values():
            runner.check(int(circuit["n_qubits"]))
        n_modules = len(circuit["modules"])

        # 3. data
        examples = task_examples(task, data, limit)

        # 4. the engine, and the circuit estimate against the guard
        name = artifact_label(path, manifest)
        engine = Engine(source, {name: path})
        tokens = max_tokens or 256
        rows_per_run = n_modules * _token_rows(engine, examples, name, domain, tokens, batch_size)
        conditions = [
            (label, setting, s)
            for label, setting in settings
            for s in shot_list
            if device is not None or setting is not None or s is not None  # (none, exact) is the exact row
        ]
        estimate = rows_per_run * len(conditions)
        if max_circuits is not None and estimate > max_circuits:
            raise EvalError(
                f"--max-circuits {max_circuits}: this run needs up to {estimate:,} circuits "
                f"({len(conditions)} conditions x {rows_per_run:,} per evaluation = {n_modules} circuits per "
                f"token x tokens of {len(examples)} examples); nothing was run"
            )

        # 5. exact, then every condition
        def evaluate() -> tuple[float, float]:
            t0 = time.perf_counter()
            value = _metric(engine, examples, name, domain, tokens, batch_size)
            return value, time.perf_counter() - t0

        engine.set_circuit_execution(backend="fast")
        exact, exact_seconds = evaluate()
        rows: list[dict[str, Any]] = [
            {
                "shots": None,
                "noise": "none",
                "metric": exact,
                "delta_vs_exact": 0.0,
                "relative_delta": 0.0,
                "seconds": round(exact_seconds, 2),
            }
        ]
        sent = 0
        try:
            for label, setting, s in conditions:
                row: dict[str, Any] = {"shots": s, "noise": label}
                if device is None:
                    engine.set_circuit_execution(backend="noisy", shots=s, noise=setting, seed=seed)
                else:
                    runner = runners[s]
                    runner.max_circuits = None if max_circuits is None else max_circuits - sent
                    before = runner.stats.circuits, runner.stats.hits
                    engine.set_circuit_execution(backend="device", device=device, shots=s, runner=runner)
                value, seconds = evaluate()
                delta = value - exact
                row.update(
                    metric=value,
                    delta_vs_exact=delta,
                    relative_delta=delta / abs(exact) if exact else None,
                    seconds=round(seconds, 2),
                )
                if device is not None:
                    row["circuits"] = runner.stats.circuits - before[0]
                    row["cache_hits"] = runner.stats.hits - before[1]
                    sent += row["circuits"]
                rows.append(row)
        finally:
            engine.set_circuit_execution(backend="fast")
    finally:
        for runner in runners.values():
            runner.close()

    # 6. summary and report
    metric_name = "error_rate" if domain == "math" else "eval_loss"
    labels = [label for label, _ in settings]
    needed = {label: _shots_needed([r for r in rows[1:] if r["noise"] == label], exact) for label in labels}
    summary: dict[str, Any] = {
        "artifact": str(path),
        "task": task,
        "data": data,
        "model": source.name,
        "n": len(examples),
        "device": device,
        "metric_name": metric_name,
        "exact": exact,
        "rows": rows,
        "shots_needed_within_1pct": needed,
        "circuits_per_evaluation": rows_per_run,
        "circuits_estimate": estimate,
        "circuit": {"n_qubits": circuit["n_qubits"], "n_layers": circuit["n_layers"], "modules": n_modules},
    }
    head = _headline(metric_name, exact, needed, shot_list)
    out_dir = Path(out)
    results = [{"name": _condition_name(r), metric_name: r["metric"]} for r in rows]
    md, html = build_report(
        f"qtha robustness: {name} on {task} ({data})", results, out_dir, headline=head, robustness=rows
    )
    summary.update(headline=head, report_md=str(md), report_html=str(html))
    (out_dir / "robustness.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _check_shots(values: list[int | None]) -> list[int | None]:
    if not values:
        raise EvalError("--shots: expected at least one value")
    for value in values:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise EvalError(f"--shots: expected positive integers (or 'exact'); got {value!r}")
    if len(set(values)) != len(values):
        raise EvalError(f"--shots: expected distinct values; got {values}")
    return values


def _noise_settings(specs: list[str], device: str | None) -> list[tuple[str, NoiseModel | None]]:
    """``(label, model)`` per noise spec (a bad probability or name raises before any work)."""
    if not specs:
        raise EvalError("--noise: expected at least one setting (e.g. none,depolarizing)")
    settings: list[tuple[str, NoiseModel | None]] = []
    for spec in specs:
        try:
            parsed = noise_model(spec)
        except (TypeError, ValueError) as exc:
            raise EvalError(f"--noise: {exc}") from None
        if device is not None and parsed is not None:
            raise EvalError(
                f"--noise {spec!r} with --device {device}: a device brings its own noise; "
                "use --noise none (the simulated noise models are for runs without --device)"
            )
        label = f"device:{device}" if device is not None else spec.strip()
        if label in [s[0] for s in settings]:
            raise EvalError(f"--noise: {spec!r} is listed twice")
        settings.append((label, parsed))
    return settings


def _token_rows(
    engine: Any, examples: list[Any], name: str, domain: str, max_tokens: int, batch_size: int
) -> int:
    """Upper bound of the token positions one evaluation pushes through each adapted module.

    Batches are padded to their longest member, and the padding runs the circuits too. Counselling
    scores each batch once; math generation runs the prompt batch, then one position per sequence per
    new token (at most ``max_tokens``).
    """
    if domain == "counseling":
        from training.tokenize import encode

        lengths = [
            len(f["input_ids"])
            for ex in examples
            if (f := encode(engine.tokenizer, ex, 512, trim_context=True))
        ]
        extra = 0
    else:
        lengths = [len(engine.prompt_ids(ex.prompt, name)) for ex in examples]
        extra = max_tokens
    total = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        total += len(batch) * (max(batch) + extra)
    return total


def _metric(
    engine: Any, examples: list[Any], name: str, domain: str, max_tokens: int, batch_size: int
) -> float:
    from . import counseling_eval, math_eval

    if domain == "math":
        return math_eval.run(engine, examples, name, max_tokens=max_tokens, batch_size=batch_size)[
            "error_rate"
        ]
    metrics = counseling_eval.run(
        engine, examples, name, generate_limit=0, reply_fn=None, embed=None, batch_size=batch_size
    )
    return metrics["eval_loss"]


def _shots_needed(rows: list[dict[str, Any]], exact: float) -> int | None:
    """The fewest shots tried from which on every larger shot count stays within :data:`TOLERANCE`."""
    finite = sorted((r for r in rows if r["shots"] is not None), key=lambda r: r["shots"])
    needed = None
    for row in reversed(finite):
        if abs(row["metric"] - exact) > TOLERANCE * abs(exact):
            break
        needed = row["shots"]
    return needed


def _condition_name(row: dict[str, Any]) -> str:
    if row["shots"] is None and row["noise"] == "none":
        return "exact"
    shots = "exact" if row["shots"] is None else f"{row['shots']:,} shots"
    return f"{row['noise']}, {shots}"


def _headline(metric_name: str, exact: float, needed: dict[str, int | None], shots: list[int | None]) -> str:
    tried = max((s for s in shots if s is not None), default=None)
    parts = []
    for label, value in needed.items():
        if value is not None:
            parts.append(f"{label}: {value:,} shots")
        elif tried is not None:
            parts.append(f"{label}: not within 1% up to {tried:,} shots")
    label = metric_name.replace("_", " ")
    return f"shots to stay within 1% of the exact {label} ({exact:.4g}): " + "; ".join(parts)


# --- command line -----------------------------------------------------------------------------------


def _cmd(args: argparse.Namespace) -> int:
    noise = args.noise if args.noise is not None else ("none" if args.device else "none,depolarizing")
    summary = run(
        args.artifact,
        args.task,
        args.data,
        model=args.model,
        limit=args.limit,
        shots=parse_shots(args.shots),
        noise=parse_noise(noise),
        device=args.device,
        out=args.out,
        seed=args.seed,
        max_circuits=args.max_circuits,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        device_batch_size=args.device_batch_size,
        cache=args.cache,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    print(summary["headline"])
    print(f"  {'noise':<28} {'shots':>8}  {summary['metric_name']:>12}  {'delta':>9}  {'relative':>8}")
    for r in summary["rows"]:
        shots = "exact" if r["shots"] is None else f"{r['shots']:,}"
        relative = "–" if r["relative_delta"] is None else f"{r['relative_delta']:+.2%}"
        print(
            f"  {r['noise']:<28} {shots:>8}  {r['metric']:>12.4f}  {r['delta_vs_exact']:>+9.4f}  {relative:>8}"
        )
    print(f"report: {summary['report_html']}  (markdown: {summary['report_md']})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``robustness`` to ``qtha-eval``'s sub-commands."""
    p = subparsers.add_parser(
        "robustness",
        help="evaluate one artifact exactly and under shots / noise / a PennyLane device, with a report",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--artifact", required=True, help="frozen QTHA artifact folder")
    p.add_argument("--task", required=True, help="gsm8k | synthetic-math | counseling")
    p.add_argument(
        "--data", required=True, help="data spec, e.g. synthetic-math:50 or gsm8k:/data/gsm8k/test.jsonl"
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="base model the artifact was made for")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples")
    p.add_argument(
        "--shots", default="100,1000,10000", help="comma-separated shots per circuit; 'exact' = no sampling"
    )
    p.add_argument(
        "--noise",
        default=None,
        help="comma-separated noise settings: none, depolarizing (1%%/10%%, readout [[.95,.05],[.1,.9]]), or "
        "p1=P,p2=P,readout=E[:E1] (default none,depolarizing; none with --device)",
    )
    p.add_argument("--device", default=None, help="run the circuits on this PennyLane device instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated shot sampling")
    p.add_argument(
        "--max-circuits",
        dest="max_circuits",
        type=int,
        default=None,
        help="refuse a run whose circuit estimate exceeds N (checked before anything runs)",
    )
    p.add_argument(
        "--max-tokens", dest="max_tokens", type=int, default=None, help="math generation length (256)"
    )
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="examples per batch")
    p.add_argument(
        "--device-batch-size", dest="device_batch_size", type=int, default=200, help="circuits per device job"
    )
    p.add_argument(
        "--cache", default=None, help="device result cache (default $QTHA_CACHE/device-results.sqlite)"
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=_cmd)
