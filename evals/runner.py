"""``qtha-eval run``: the base model and frozen adapters side by side on one task, with a report.

Every artifact is checked before any model is loaded (exists, hashes match, made for this base model);
the base model is always evaluated too, with the same prompts and decoding. Results get 95% bootstrap
intervals, relative error reductions against the base and against LoRA, trainable parameters from the
manifests, a Markdown + HTML report, and one registry entry (written in a single transaction).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from quantum_adapters.artifact import check_base_model, verify
from quantum_adapters.domains import COUNSELING, DOMAINS, MATH, canonical
from quantum_adapters.files import atomic_write
from quantum_adapters.models import resolve_model

from .metrics import item_ci, relative_reduction

__all__ = ["MAIN_METRIC", "TASKS", "EvalError", "artifact_label", "run_evaluation", "task_domain"]

# Built-in generators are drawn with this seed for evaluation, so that evaluation items differ from the
# training items (qtha-train's default seed is 0). Real data files ignore it.
EVAL_SEED = 1_000_003

TASKS: dict[str, str] = {alias: d.name for d in DOMAINS.values() for alias in d.aliases}
"""``--task`` names -> the domain they evaluate: every name of every domain in ``quantum_adapters.domains``."""

MAIN_METRIC = {MATH.name: "error_rate", COUNSELING.name: "eval_loss"}
"""Each domain's headline metric (lower is better): the one with intervals, reductions and plots."""


class EvalError(ValueError):
    """A problem with the evaluation's inputs; the message says which and why."""


def task_domain(task: str) -> str:
    """The domain ``--task`` names (any of its names, any case); refuses a name of no domain."""
    domain = canonical(task)
    if domain is None:
        raise EvalError(f"--task: expected one of {', '.join(TASKS)}; got {task!r}")
    return domain


def artifact_label(path: Path, manifest: dict[str, Any]) -> str:
    """A readable name: the run folder's name (artifacts live in RUN/artifact), else the folder's."""
    folder = path.resolve()
    return folder.parent.name if folder.name == "artifact" else folder.name


def _labels(paths: list[Path], manifests: list[dict]) -> list[str]:
    labels = [artifact_label(p, m) for p, m in zip(paths, manifests, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label}-{seen[label]}")
    return out


def _curve(manifest: dict[str, Any]) -> list[tuple[int, float]]:
    """The training-loss curve of the run that made an artifact, if its run folder is still there."""
    from training.metrics import read_metrics

    run_dir = (manifest.get("training") or {}).get("run_dir")
    return read_metrics(run_dir).train if run_dir else []


def verified_manifest(path: Path, source: Any) -> dict[str, Any]:
    """The artifact's manifest after verifying every hash; refuses one made for another base model."""
    manifest, _ = verify(path)
    check_base_model(manifest, source, path, base_is="--model")
    return manifest


def task_examples(task: str, data: str, limit: int | None) -> list[Any]:
    """The evaluation items of ``data`` for ``task``: refuses an empty set or data of another domain."""
    from training.data import load

    domain = task_domain(task)
    examples, report = load(data, limit=limit, seed=EVAL_SEED)
    if not examples:
        raise EvalError(f"--data {data}: no examples ({report.as_dict()})")
    wrong = [ex for ex in examples if ex.domain != domain]
    if wrong:
        raise EvalError(
            f"--task {task} expects {domain} data, but --data {data} holds {wrong[0].domain} examples "
            f"(first: {wrong[0].source})"
        )
    return examples[:limit] if limit else examples


def run_evaluation(
    *,
    task: str,
    data: str,
    model: str,
    artifacts: list[str],
    out: str,
    limit: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 8,
    registry: str | None = None,
    safety_probes: bool = True,
    fewshot: int = 0,
    fewshot_data: str | None = None,
) -> dict[str, Any]:
    from serving.engine import BASE, Engine

    from . import counseling_eval, math_eval
    from .registry import Registry
    from .report import build_report, headline

    domain = task_domain(task)
    if limit is not None and limit < 1:
        raise EvalError(f"--limit: expected a positive number of examples; got {limit}")
    if fewshot < 0:
        raise EvalError(f"--fewshot: expected 0 or a positive number of solved examples; got {fewshot}")
    if fewshot and domain != MATH.name:
        raise EvalError(f"--fewshot: only math tasks take few-shot examples; --task is {task!r}")
    if fewshot and not fewshot_data:
        raise EvalError("--fewshot: needs --fewshot-data, e.g. gsm8k:train.jsonl@:8 (rows outside --data)")

    # 1. artifacts and base model identity, before anything heavy
    source = resolve_model(model)
    paths = [Path(a) for a in artifacts]
    manifests = []
    for p in paths:
        manifests.append(verified_manifest(p, source))
    labels = _labels(paths, manifests)

    # 2. data
    examples = task_examples(task, data, limit)
    shots = task_examples(task, fewshot_data, fewshot) if fewshot else []
    if len(shots) < fewshot:
        raise EvalError(f"--fewshot-data {fewshot_data}: {len(shots)} examples, --fewshot asks for {fewshot}")

    # 3. evaluate
    t0 = time.time()
    engine = Engine(source, dict(zip(labels, paths, strict=True)))
    embed = None
    reply_fn = None
    if domain == COUNSELING.name:
        from serving.embeddings import load_embedder

        embedder = load_embedder()

        def embed(texts: list[str]):
            return embedder.encode(texts, normalize_embeddings=True, convert_to_tensor=True)

        if safety_probes:
            reply_fn = counseling_eval.served_replies(engine, embedder)

    if domain == MATH.name:
        evaluate, options = math_eval.run, {"max_tokens": max_tokens or 256, "fewshot": shots}
    else:
        evaluate, options = (
            counseling_eval.run,
            {"max_tokens": max_tokens or 96, "embed": embed, "reply_fn": reply_fn},
        )
    main_key = MAIN_METRIC[domain]
    results: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    names = [BASE, *labels]
    for name in names:
        per: dict[str, list[float]] = {}
        metrics = evaluate(
            engine, examples, name, batch_size=batch_size, records=records, per_example=per, **options
        )
        low, high = item_ci(per, main_key)
        row: dict[str, Any] = {"name": name, **metrics, "ci_low": low, "ci_high": high}
        for key in ("token_error_rate", "flexible_error_rate"):
            if key in per:
                row[f"{key}_ci"] = list(item_ci(per, key))
        info = engine.info(name)
        row["trainable_params"] = info["trainable_params"]
        row["method"] = info["method"]
        row["variant"] = info.get("variant")
        row["artifact"] = info.get("path")
        results.append(row)

    # 4. comparisons
    base_row = results[0]
    lora_rows = [r for r in results if r["method"] == "lora"]
    for r in results[1:]:
        r["reduction_vs_base"] = relative_reduction(r[main_key], base_row[main_key])
        if lora_rows and r["method"] != "lora":
            r["reduction_vs_lora"] = relative_reduction(r[main_key], lora_rows[0][main_key])
            r["params_vs_lora"] = r["trainable_params"] / max(lora_rows[0]["trainable_params"], 1)

    qtha_rows = [r for r in results if r["method"] == "qtha" and r.get("variant") == "ABC"] or [
        r for r in results if r["method"] == "qtha"
    ]
    head = headline(
        {"base_error_rate": base_row[main_key], "qtha_error_rate": qtha_rows[0][main_key]}
        if domain == MATH.name and qtha_rows
        else None,
        {"qtha_eval_loss": qtha_rows[0][main_key], "lora_eval_loss": lora_rows[0][main_key]}
        if domain == COUNSELING.name and qtha_rows and lora_rows
        else None,
        {
            "qtha_trainable_params": qtha_rows[0]["trainable_params"],
            "lora_trainable_params": lora_rows[0]["trainable_params"],
        }
        if qtha_rows and lora_rows
        else None,
    )
    curves = {label: _curve(m) for label, m in zip(labels, manifests, strict=True)}
    samples = _samples(records, names)
    out_dir = Path(out)
    shown = [
        {
            k: v
            for k, v in r.items()
            if k not in ("artifact", "method", "token_error_rate_ci", "flexible_error_rate_ci")
        }
        for r in results
    ]
    md, html = build_report(
        f"qtha evaluation: {task} on {data}",
        shown,
        out_dir,
        curves={k: v for k, v in curves.items() if v},
        samples=samples,
        headline=head,
    )
    atomic_write(out_dir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    seconds = round(time.time() - t0, 1)

    # 5. registry: training runs of the artifacts, then the evaluation, each in one transaction
    reg = Registry(registry)
    for label, m in zip(labels, manifests, strict=True):
        training = m.get("training") or {}
        cfg = training.get("config") or {}
        run_metrics = m.get("metrics") or {}
        reg.record_run(
            {
                "id": f"{label}:{m['files']['adapter_model.safetensors'][:12]}",
                "method": m["adapter"]["method"],
                "variant": m["adapter"].get("variant"),
                "model": m["base_model"].get("name"),
                "data": str(cfg.get("data")) if cfg.get("data") is not None else None,
                "steps": training.get("steps"),
                "loss_first": run_metrics.get("loss_first"),
                "loss_last": run_metrics.get("loss_last"),
                "trainable_params": m["parameters"]["trainable"],
                "artifact": str(paths[labels.index(label)].resolve()),
                "config_json": cfg,
                "metrics_path": str(Path(training["run_dir"]) / "metrics.jsonl")
                if training.get("run_dir")
                else None,
            }
        )
    summary = {
        "task": task,
        "data": data,
        "model": source.name,
        "limit": limit,
        "fewshot": fewshot,
        "fewshot_data": fewshot_data,
        "max_tokens": max_tokens,
        "n": len(examples),
        "seconds": seconds,
        "headline": head,
        "results": results,
        "report_md": str(md),
        "report_html": str(html),
    }
    summary["evaluation_id"] = reg.record_evaluation(
        {
            "task": task,
            "data": data,
            "model": source.name,
            "limit": limit,
            "report_md": str(md),
            "report_html": str(html),
            "json": summary,
        },
        [
            {
                "name": r["name"],
                "artifact": r.get("artifact"),
                "error_rate": r.get("error_rate"),
                "eval_loss": r.get("eval_loss"),
                "token_error_rate": r.get("token_error_rate"),
                "safety_pass_rate": r.get("safety_pass_rate"),
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "trainable_params": r["trainable_params"],
                "metrics": r,
            }
            for r in results
        ],
    )
    return summary


def _samples(records: list[dict[str, Any]], names: list[str], k: int = 4) -> list[dict[str, Any]]:
    """The first ``k`` items with every model's answer side by side."""
    by_source: dict[str, dict[str, Any]] = {}
    for r in records:
        item = by_source.setdefault(
            r["source"], {"prompt": r["prompt"], "reference": r["reference"], "answers": {}}
        )
        item["answers"][r["model"]] = r["output"]
    full = [v for v in by_source.values() if all(n in v["answers"] for n in names)]
    return full[:k]
