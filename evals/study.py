"""``qtha-eval study``: the reference paper's experiment at our scale, from one YAML file.

For each domain in the config, trains every method (QTHA, LoRA, the no-circuit ablation AB, ...) with
every seed at equal steps on the same data, then evaluates every artifact on held-out data with the
serving engine: teacher-forced eval loss and token error rate for both domains, and strict accuracy
on a few generated math answers. One Markdown + HTML report with every run's loss curve, mean ± std
over seeds, and a JSON summary. Finished runs are reused, so an interrupted study continues.

    qtha-eval study --config configs/study.yaml --out runs/study
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["register", "run_study"]


def _load(path: str) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config: file not found: {file}")
    cfg = yaml.safe_load(file.read_text()) or {}
    for key in ("model", "domains", "methods", "seeds", "train"):
        if key not in cfg:
            raise ValueError(f"--config {file}: missing key {key!r}")
    return cfg


def _train(
    cfg: dict[str, Any], domain: str, spec: dict[str, Any], method: dict[str, Any], seed: int, out: Path
) -> Path:
    from training.recipe import TrainConfig, train

    run = out / f"{domain}-{method['name']}-s{seed}"
    if (run / "artifact").is_dir():
        return run / "artifact"
    values = {**cfg["train"], "model": cfg["model"], "data": spec["train"], "seed": seed, "out": str(run)}
    values.update({k: v for k, v in method.items() if k != "name"})
    resume = (run / "config.json").is_file()
    train(TrainConfig(**values), resume=resume, progress=True)
    return run / "artifact"


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_study(config: str, out: str) -> dict[str, Any]:
    from serving.engine import BASE, Engine
    from training.data import load
    from training.tokenize import encode

    from . import math_eval
    from .report import build_report

    cfg = _load(config)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"config": cfg, "domains": {}}
    all_rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    for domain, spec in cfg["domains"].items():
        artifacts: dict[str, Path] = {}
        for method in cfg["methods"]:
            for seed in cfg["seeds"]:
                name = f"{method['name']}-s{seed}"
                artifacts[name] = _train(cfg, domain, spec, method, seed, root)
                curves[f"{domain}/{name}"] = _curve(artifacts[name].parent)
        examples, _ = load(spec["eval"], limit=spec.get("eval_limit", 64))
        engine = Engine(cfg["model"], artifacts)
        features = [
            f
            for f in (
                encode(engine.tokenizer, ex, cfg["train"].get("max_len", 256), trim_context=True)
                for ex in examples
            )
            if f is not None
        ]
        per_model: dict[str, dict[str, float]] = {}
        for name in [BASE, *artifacts]:
            scores = engine.score(features, name)
            n_tok = sum(s.n_tokens for s in scores)
            row = {
                "eval_loss": sum(s.nll_sum for s in scores) / n_tok,
                "token_error_rate": 1 - sum(s.n_correct for s in scores) / n_tok,
            }
            if domain == "math" and spec.get("accuracy_limit", 0) > 0:
                acc = math_eval.run(
                    engine, examples[: spec["accuracy_limit"]], name, max_tokens=spec.get("max_tokens", 192)
                )
                row["error_rate"] = acc["error_rate"]
            if name != BASE:
                run_dir = artifacts[name].parent
                loss = _curve(run_dir)
                row["train_loss_first"], row["train_loss_last"] = loss[0][1], loss[-1][1]
                row["trainable_params"] = engine.info(name)["trainable_params"]
            per_model[name] = row
        # aggregate over seeds
        aggregate: dict[str, dict[str, Any]] = {"base": per_model[BASE]}
        for method in cfg["methods"]:
            names = [f"{method['name']}-s{s}" for s in cfg["seeds"]]
            agg: dict[str, Any] = {}
            for key in per_model[names[0]]:
                mean, std = _mean_std([per_model[n][key] for n in names])
                agg[key], agg[f"{key}_std"] = mean, std
            aggregate[method["name"]] = agg
        for label, vals in aggregate.items():
            all_rows.append(
                {
                    "name": f"{domain}/{label}",
                    **{k: v for k, v in vals.items() if isinstance(v, (int, float))},
                }
            )
        summary["domains"][domain] = {"per_run": per_model, "aggregate": aggregate}
        del engine
    md, html = build_report(
        f"qtha study ({', '.join(cfg['domains'])})", all_rows, root / "report", curves=curves
    )
    summary["report_md"], summary["report_html"] = str(md), str(html)
    (root / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _cmd(args: argparse.Namespace) -> int:
    summary = run_study(args.config, args.out)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    for domain, d in summary["domains"].items():
        print(f"== {domain}")
        for label, vals in d["aggregate"].items():
            parts = [
                f"{k} {vals[k]:.4f}" + (f" ± {vals[k + '_std']:.4f}" if k + "_std" in vals else "")
                for k in ("train_loss_last", "eval_loss", "token_error_rate", "error_rate")
                if k in vals
            ]
            params = f"  params {int(vals['trainable_params']):,}" if "trainable_params" in vals else ""
            print(f"  {label:<10} " + "  ".join(parts) + params)
    print(f"report: {summary['report_html']}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study", help="QTHA vs LoRA vs the no-circuit ablation, several seeds, one report"
    )
    p.add_argument("--config", default="configs/study.yaml", help="study YAML (default configs/study.yaml)")
    p.add_argument("--out", default="runs/study", help="folder for the runs and the report")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_cmd)
