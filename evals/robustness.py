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

``--compare B`` (:func:`compare`) puts a second adapter of the same budget next to the first, typically
an exact-trained ``A`` and a noise-trained ``B`` (``qtha-train --train-noise``), on held-out data, and
asks how much of what noise takes from ``A`` the other one keeps::

    lost(A)      = metric_noise(A) - metric_exact(A)            what the noise costs the exact-trained one
    recovered(B) = [metric_noise(A) - metric_noise(B)] / lost(A)   the share of it B wins back (goal >= 0.5)

with the base model's metric for the gains, and paired 95% bootstrap intervals over the examples (every
replicate resamples the same examples for every model and condition).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantum_adapters.domains import COUNSELING, MATH
from quantum_adapters.files import atomic_write, atomic_write_json
from quantum_adapters.models import cache_dir, resolve_model
from quantum_adapters.noise import NoiseModel, noise_model

from .cli import add_task_arguments, task_arguments
from .report import build_report
from .runner import MAIN_METRIC, EvalError, artifact_label, task_domain, task_examples, verified_manifest

__all__ = ["TOLERANCE", "compare", "parse_noise", "parse_shots", "register", "run"]

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
    domain = task_domain(task)
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
    metric_name = MAIN_METRIC[domain]
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
    atomic_write_json(out_dir / "robustness.json", summary, indent=2, default=str)
    return summary


def compare(
    artifacts: Sequence[str | Path],
    task: str,
    data: str,
    *,
    model: str = "smollm2-135m-instruct",
    limit: int | None = None,
    shots: Sequence[int | None] = (None,),
    noise: Sequence[str] = ("depolarizing",),
    out: str | Path,
    seed: int = 0,
    max_tokens: int | None = None,
    batch_size: int = 8,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Several adapters of one budget under the same noise, against the first (the reference).

    Args:
        artifacts: two or more frozen QTHA artifacts made for ``model``; the first is the reference
            (exact-trained), the others are compared with it (e.g. noise-trained).
        task, data, model, limit, max_tokens, batch_size: as :func:`run` (use held-out data).
        shots, noise: the noisy conditions, every (noise, shots) pair with noise other than 'none'
            (``None`` shots: the exact expectation values under the noise).
        out: folder for ``compare.json`` and ``report.md``.
        seed: seeds the shot sampling and the bootstrap.
        n_boot: bootstrap replicates.

    Returns:
        ``{"metric_name", "n", "base", "models": {name: {"exact", "<condition>": ...}}, "conditions": [...],
        "comparisons": [{"condition", "reference", "candidate", "lost", "recovered", ...}]}`` where every
        figure is ``{"value", "ci95": [low, high]}``.
    """
    import numpy as np

    from serving.engine import BASE, Engine

    domain = task_domain(task)
    if len(artifacts) < 2:
        raise EvalError("--compare: expected at least one artifact to compare with --artifact")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise EvalError(f"--limit: expected a positive number of examples; got {limit!r}")
    shot_list = _check_shots(list(shots))
    settings = [(label, m) for label, m in _noise_settings(list(noise), None) if m is not None]
    if not settings:
        raise EvalError("--compare: expected a noise setting other than 'none' (e.g. --noise depolarizing)")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise EvalError(f"n_boot: expected a positive integer; got {n_boot!r}")
    source = resolve_model(model)
    paths = [Path(a) for a in artifacts]
    names: list[str] = []
    for path in paths:
        manifest = verified_manifest(path, source)
        if not manifest.get("circuit"):
            raise EvalError(f"{path}: this adapter has no quantum circuit: noise changes nothing")
        name = artifact_label(path, manifest)
        while name in names:
            name += "'"
        names.append(name)
    examples = task_examples(task, data, limit)
    engine = Engine(source, dict(zip(names, paths, strict=True)))
    tokens = max_tokens or 256
    conditions = [(label, setting, s) for label, setting in settings for s in shot_list]

    def per_example(name: str) -> tuple[np.ndarray, np.ndarray]:
        """(numerators, denominators) per example: NLL sums and reply tokens, or 0/1 errors and ones."""
        if domain == MATH.name:
            from . import math_eval

            values: dict[str, list[float]] = {}
            math_eval.run(
                engine, examples, name, max_tokens=tokens, batch_size=batch_size, per_example=values
            )
            errors = np.asarray(values["error_rate"], dtype=float)
            return errors, np.ones_like(errors)
        from training.tokenize import encode

        features = [f for ex in examples if (f := encode(engine.tokenizer, ex, 512, trim_context=True))]
        scores = engine.score(features, name, batch_size=batch_size)
        return (
            np.asarray([x.nll_sum for x in scores], dtype=float),
            np.asarray([x.n_tokens for x in scores], dtype=float),
        )

    # every (model, condition) as per-example sums: (name, condition label) -> (num, den)
    table: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    try:
        engine.set_circuit_execution(backend="fast")
        table[(BASE, "exact")] = per_example(BASE)
        for name in names:
            table[(name, "exact")] = per_example(name)
        for label, setting, s in conditions:
            engine.set_circuit_execution(backend="noisy", shots=s, noise=setting, seed=seed)
            for name in names:
                table[(name, _condition_name({"noise": label, "shots": s}))] = per_example(name)
    finally:
        engine.set_circuit_execution(backend="fast")

    n = len(next(iter(table.values()))[0])
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))  # the same resampled examples for every cell

    def metric(key: tuple[str, str]) -> tuple[float, np.ndarray]:
        num, den = table[key]
        return float(num.sum() / den.sum()), num[index].sum(1) / den[index].sum(1)

    def figure(value: float, replicates: np.ndarray) -> dict[str, Any]:
        finite = replicates[np.isfinite(replicates)]
        low, high = np.quantile(finite, [0.025, 0.975]) if finite.size else (float("nan"),) * 2
        return {"value": value, "ci95": [float(low), float(high)]}

    base, base_boot = metric((BASE, "exact"))
    models: dict[str, dict[str, Any]] = {}
    for name in names:
        models[name] = {}
        for key in [k for k in table if k[0] == name]:
            models[name][key[1]] = figure(*metric(key))
    comparisons = []
    reference = names[0]
    ref_exact, ref_exact_boot = metric((reference, "exact"))
    for label, _, s in conditions:
        cond = _condition_name({"noise": label, "shots": s})
        ref_noisy, ref_noisy_boot = metric((reference, cond))
        lost, lost_boot = ref_noisy - ref_exact, ref_noisy_boot - ref_exact_boot
        for name in names[1:]:
            cand_noisy, cand_noisy_boot = metric((name, cond))
            cand_exact, cand_exact_boot = metric((name, "exact"))
            with np.errstate(divide="ignore", invalid="ignore"):
                recovered_boot = (ref_noisy_boot - cand_noisy_boot) / lost_boot
            comparisons.append(
                {
                    "condition": cond,
                    "reference": reference,
                    "candidate": name,
                    "lost": figure(lost, lost_boot),
                    "won_back": figure(ref_noisy - cand_noisy, ref_noisy_boot - cand_noisy_boot),
                    "recovered": figure(
                        (ref_noisy - cand_noisy) / lost if lost else float("nan"), recovered_boot
                    ),
                    "reference_gain_exact": figure(base - ref_exact, base_boot - ref_exact_boot),
                    "reference_gain_noise": figure(base - ref_noisy, base_boot - ref_noisy_boot),
                    "candidate_gain_exact": figure(base - cand_exact, base_boot - cand_exact_boot),
                    "candidate_gain_noise": figure(base - cand_noisy, base_boot - cand_noisy_boot),
                }
            )
    metric_name = MAIN_METRIC[domain]
    summary: dict[str, Any] = {
        "artifacts": [str(p) for p in paths],
        "names": names,
        "task": task,
        "data": data,
        "model": source.name,
        "n": n,
        "metric_name": metric_name,
        "base": figure(base, base_boot),
        "models": models,
        "conditions": [_condition_name({"noise": label, "shots": s}) for label, _, s in conditions],
        "comparisons": comparisons,
        "n_boot": n_boot,
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "compare.json", summary, indent=2)
    atomic_write(out_dir / "report.md", _compare_markdown(summary))
    summary["report_md"] = str(out_dir / "report.md")
    return summary


def _fmt(fig: dict[str, Any], pct: bool = False) -> str:
    low, high = fig["ci95"]
    if pct:
        return f"{fig['value']:.0%} [{low:.0%}, {high:.0%}]"
    return f"{fig['value']:.4f} [{low:.4f}, {high:.4f}]"


def _compare_markdown(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown report: metric per model and condition, then the recovery."""
    label = summary["metric_name"].replace("_", " ")
    lines = [
        f"# qtha robustness comparison on {summary['task']} ({summary['data']}), n = {summary['n']}",
        "",
        f"{label} with 95% paired bootstrap intervals ({summary['n_boot']} replicates); base model "
        f"{_fmt(summary['base'])}.",
        "",
        "| model | " + " | ".join(["exact", *summary["conditions"]]) + " |",
        "|---|" + "---|" * (1 + len(summary["conditions"])),
    ]
    for name, cells in summary["models"].items():
        lines.append(
            f"| {name} | " + " | ".join(_fmt(cells[c]) for c in ["exact", *summary["conditions"]]) + " |"
        )
    lines += [
        "",
        "| condition | candidate | lost by reference | won back | recovered (goal >= 50%) |",
        "|---|---|---|---|---|",
    ]
    for c in summary["comparisons"]:
        lines.append(
            f"| {c['condition']} | {c['candidate']} | {_fmt(c['lost'])} | {_fmt(c['won_back'])} | "
            f"{_fmt(c['recovered'], pct=True)} |"
        )
    return "\n".join(lines) + "\n"


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
    if domain == COUNSELING.name:
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

    if domain == MATH.name:
        metrics = math_eval.run(engine, examples, name, max_tokens=max_tokens, batch_size=batch_size)
    else:
        metrics = counseling_eval.run(engine, examples, name, generate_limit=0, batch_size=batch_size)
    return metrics[MAIN_METRIC[domain]]


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
    if args.compare:
        return _cmd_compare(args)
    noise = args.noise if args.noise is not None else ("none" if args.device else "none,depolarizing")
    summary = run(
        args.artifact,
        **task_arguments(args),
        shots=parse_shots(args.shots),
        noise=parse_noise(noise),
        device=args.device,
        seed=args.seed,
        max_circuits=args.max_circuits,
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


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.device is not None:
        raise EvalError("--compare with --device: expected the simulated noise models (drop --device)")
    summary = compare(
        [args.artifact, *args.compare],
        **task_arguments(args),
        shots=parse_shots(args.shots if args.shots_given else "exact"),
        noise=parse_noise(args.noise or "depolarizing"),
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    print(Path(summary["report_md"]).read_text(), end="")
    return 0


class _Given(argparse.Action):
    """Stores the value and records that the flag was given (the default differs with --compare)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def register(subparsers: Any) -> None:
    """Add ``robustness`` to ``qtha-eval``'s sub-commands."""
    p = subparsers.add_parser(
        "robustness",
        help="evaluate one artifact exactly and under shots / noise / a PennyLane device, with a report",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--artifact", required=True, help="frozen QTHA artifact folder")
    add_task_arguments(
        p,
        data_help="data spec, e.g. synthetic-math:50 or gsm8k:/data/gsm8k/test.jsonl",
        model_help="base model the artifact was made for",
        max_tokens_help="math generation length (256)",
        batch_help="examples per batch",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="ARTIFACT",
        help="compare this artifact (e.g. noise-trained) with --artifact (exact-trained) under --noise "
        "(default depolarizing, shots exact): metric, lost and recovered share with bootstrap intervals",
    )
    p.add_argument(
        "--shots",
        default="100,1000,10000",
        action=_Given,
        help="comma-separated shots per circuit; 'exact' = no sampling (default with --compare: exact)",
    )
    p.set_defaults(shots_given=False)
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
        "--device-batch-size", dest="device_batch_size", type=int, default=200, help="circuits per device job"
    )
    p.add_argument(
        "--cache", default=None, help="device result cache (default $QTHA_CACHE/device-results.sqlite)"
    )
    p.set_defaults(func=_cmd)
