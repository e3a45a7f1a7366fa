"""``qtha-eval``: evaluate frozen adapters against the base model, browse the registry, benchmark.

qtha-eval run --task gsm8k --data gsm8k:test.jsonl --artifacts runs/math-qtha/artifact runs/math-lora/artifact --out reports/math
qtha-eval run --task counseling --data esconv:test.jsonl --artifacts runs/counsel-qtha/artifact --limit 50 --out reports/c
qtha-eval history [--json]          qtha-eval compare 3 4
qtha-eval bench simulator|train-step|serve|device ...
qtha-eval safety --split dev|test [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

__all__ = ["add_task_arguments", "build_parser", "main", "task_arguments"]

# bench modules, each with register(subparsers) adding its own sub-command
BENCHES = ("simulator", "train_step", "serve", "device")


def add_task_arguments(
    p: argparse.ArgumentParser, *, data_help: str, model_help: str, max_tokens_help: str, batch_help: str
) -> None:
    """The flags every evaluation command shares (``run``, ``robustness``): which task on which data
    with which base model, how many items, generation length, batch size, report folder, ``--json``."""
    p.add_argument(
        "--task", required=True, help="gsm8k | synthetic-math | counseling (or another name of the domain)"
    )
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--model", default="smollm2-135m-instruct", help=model_help)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=None, help=max_tokens_help)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help=batch_help)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def task_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``add_task_arguments``' flags (but ``--json``), as keyword arguments."""
    return {
        key: getattr(args, key)
        for key in ("task", "data", "model", "limit", "max_tokens", "batch_size", "out")
    }


def _print_results(summary: dict[str, Any]) -> None:
    print(summary.get("headline") or "")
    for r in summary["results"]:
        main = "error_rate" if "error_rate" in r else "eval_loss"
        extra = ""
        if "flexible_error_rate_ci" in r:
            lo, hi = r["flexible_error_rate_ci"]
            extra += f"  flexible_error {r['flexible_error_rate']:.4f} [{lo:.4f}, {hi:.4f}]"
        if "token_error_rate" in r:
            extra += f"  token_err {r['token_error_rate']:.3f}"
        if r.get("safety_pass_rate") is not None:
            extra += f"  safety {r['safety_pass_rate']:.0%}"
        print(
            f"  {r['name']:<28} {main} {r[main]:.4f}  [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            f"  params {r['trainable_params']:>9,}{extra}"
        )
    print(f"report: {summary['report_html']}  (markdown: {summary['report_md']})")
    print(f"registry evaluation id: {summary['evaluation_id']}")


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_evaluation

    summary = run_evaluation(
        **task_arguments(args),
        artifacts=args.artifacts,
        registry=args.registry,
        safety_probes=not args.no_safety,
        fewshot=args.fewshot,
        fewshot_data=args.fewshot_data,
    )
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_results(summary)
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from .registry import Registry

    evaluations = Registry(args.registry).list_evaluations()
    if args.json:
        print(json.dumps({"evaluations": evaluations}, default=str))
        return 0
    if not evaluations:
        print("no evaluations recorded yet")
    for e in evaluations:
        print(f"{e['id']:>4}  {e['created']}  {e['task']:<12} {e['data']}  ({e.get('model')})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .registry import Registry

    result = Registry(args.registry).compare(args.a, args.b)
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtha-eval",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n", 2)[-1],
    )
    parser.add_argument(
        "--registry",
        default=None,
        help="registry SQLite file (default: $QTHA_REGISTRY or ~/.local/share/qtha/registry.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="evaluate the base model and frozen artifacts on a task, with a report")
    add_task_arguments(
        p,
        data_help="data spec, e.g. gsm8k:/data/gsm8k/test.jsonl or esconv:/data/esconv/test.jsonl",
        model_help="base model (default: the embedded SmolLM2-135M-Instruct)",
        max_tokens_help="generation length (math 256, counselling 96)",
        batch_help="generation/scoring batch size",
    )
    p.add_argument(
        "--artifacts", nargs="*", default=[], help="frozen artifact folders (LoRA and QTHA side by side)"
    )
    p.add_argument(
        "--fewshot", type=int, default=0, help="math: solved examples shown before each question (default 0)"
    )
    p.add_argument(
        "--fewshot-data",
        dest="fewshot_data",
        default=None,
        help="data spec the few-shot examples come from (its first N), e.g. gsm8k:train.jsonl@:8",
    )
    p.add_argument(
        "--no-safety", dest="no_safety", action="store_true", help="skip the safety probe set (counselling)"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("history", help="list recorded evaluations")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("compare", help="two recorded evaluations side by side")
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_compare)

    bench = sub.add_parser("bench", help="performance benchmarks (print figures; --json for machines)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in BENCHES:
        try:
            module = importlib.import_module(f"evals.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"evals.bench.{name}":
                raise
            continue
        module.register(bench_sub)

    for name in ("evals.robustness", "evals.study", "evals.safety_eval"):
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as exc:  # the user's input: a clear line, no traceback
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"qtha-eval {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
