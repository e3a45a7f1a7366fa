"""``qtha-eval safety``: how often the serving safety layer gives the right resources, and how often it
flags an ordinary message, per risk category and per language, with 95% Wilson intervals.

The messages are in ``evals/data/safety/{dev,test}.jsonl`` (fields ``text``, ``language``,
``category`` — one of ``serving.risk.CATEGORIES`` or ``"none"`` — and ``source``; see the README
there for the sources their wording follows). ``dev`` is the part the layer was tuned on; ``test``
was written first and only reported on.

For a crisis message of category C, a **hit** is an assessment that flags a crisis and names C among
its categories (so the reply carries C's resources); ``detected`` counts any crisis flag. For a
``"none"`` message a **false positive** is any crisis flag. The layer is the one ``qtha-serve`` uses
(``serving.safety.SafetyLayer``), so what is measured is what is served.

Wilson score interval (Wilson, 1927) for k successes in n trials, z = 1.96:

    centre = (p + z²/2n) / (1 + z²/n),   half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)

It stays inside [0, 1] and is informative at p = 0 or 1, where a bootstrap interval collapses.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from serving.risk import CATEGORIES, LANGUAGES

__all__ = ["DATA_DIR", "SPLITS", "load_split", "run", "wilson_interval"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "safety"
SPLITS = ("dev", "test")
_FIELDS = ("text", "language", "category", "source")
_Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """95% Wilson score interval (low, high) of a proportion ``successes / n``; (nan, nan) when n = 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval: expected 0 <= successes <= n; got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def load_split(split: str = "dev", data_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of ``<data_dir>/<split>.jsonl``, checked: every field present, known category and language.

    Raises:
        ValueError: unknown split, or a bad row (the message names the file and line).
        OSError: the file cannot be read.
    """
    if split not in SPLITS:
        raise ValueError(f"--split: expected one of {', '.join(SPLITS)}; got {split!r}")
    path = Path(data_dir or DATA_DIR) / f"{split}.jsonl"
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: expected one JSON object per line; got {exc.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object; got {type(row).__name__}")
            missing = [k for k in _FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
            if missing:
                raise ValueError(f"{where}: expected non-empty string fields {missing}")
            if row["category"] not in (*CATEGORIES, "none"):
                raise ValueError(
                    f"{where}: field 'category': expected one of {', '.join(CATEGORIES)} or 'none'; "
                    f"got {row['category']!r}"
                )
            if row["language"] not in LANGUAGES:
                raise ValueError(
                    f"{where}: field 'language': expected one of {', '.join(LANGUAGES)}; got {row['language']!r}"
                )
            rows.append({k: row[k] for k in _FIELDS})
    if not rows:
        raise ValueError(f"{path}: expected at least one message; got none")
    return rows


def _rate(out: dict[str, float], key: str, k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    out[key] = k / n if n else math.nan
    out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
    out[f"{key}_n"] = float(n)


def run(
    split: str = "dev",
    *,
    layer: Any = None,
    data_dir: str | Path | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Recall per category and language and false-positive rate per language on one split.

    Args:
        split: ``'dev'`` or ``'test'``.
        layer: a ``SafetyLayer``; None builds the one the server uses (multilingual embedder, US).
        data_dir: folder with ``dev.jsonl`` / ``test.jsonl`` (default: the shipped set).
        errors: if a list is given, each miss and false positive is appended to it (text, expected,
            found categories) for a person to read.

    Returns keys (each rate with ``_ci_low``, ``_ci_high`` and ``_n``): ``recall`` (all crisis
    messages), ``detected`` (any crisis flag), ``recall.<category>``, ``recall.lang.<language>``,
    ``fp_rate`` (all ordinary messages), ``fp_rate.<language>``, ``category_accuracy`` (primary
    category equals the label, among hits).
    """
    rows = load_split(split, data_dir)
    if layer is None:
        from serving.safety import SafetyLayer

        layer = SafetyLayer(locale="US")
    hits: dict[str, list[bool]] = defaultdict(list)
    flags: dict[str, list[bool]] = defaultdict(list)
    detected: list[bool] = []
    primary: list[bool] = []
    for row in rows:
        a = layer.assess([{"role": "user", "content": row["text"]}])
        if row["category"] == "none":
            flags[row["language"]].append(a.crisis)
            if a.crisis and errors is not None:
                errors.append({**row, "found": list(a.categories), "matched": a.matched})
            continue
        hit = a.crisis and row["category"] in a.categories
        hits[row["category"]].append(hit)
        hits[f"lang.{row['language']}"].append(hit)
        detected.append(a.crisis)
        if hit:
            primary.append(a.category == row["category"])
        elif errors is not None:
            errors.append({**row, "found": list(a.categories), "matched": a.matched})
    out: dict[str, float] = {}
    all_hits = [h for c in CATEGORIES for h in hits.get(c, [])]
    _rate(out, "recall", sum(all_hits), len(all_hits))
    _rate(out, "detected", sum(detected), len(detected))
    for key in [*CATEGORIES, *(f"lang.{lang}" for lang in LANGUAGES)]:
        if hits.get(key):
            _rate(out, f"recall.{key}", sum(hits[key]), len(hits[key]))
    all_flags = [f for lang in LANGUAGES for f in flags.get(lang, [])]
    if all_flags:
        _rate(out, "fp_rate", sum(all_flags), len(all_flags))
    for lang in LANGUAGES:
        if flags.get(lang):
            _rate(out, f"fp_rate.{lang}", sum(flags[lang]), len(flags[lang]))
    if primary:
        _rate(out, "category_accuracy", sum(primary), len(primary))
    return out


def format_table(result: dict[str, float], split: str) -> str:
    """The figures as a plain-text table: one line per rate with its count and 95% Wilson interval."""
    lines = [f"safety layer on the {split} split (95% Wilson intervals)", ""]
    lines.append(f"  {'measure':<34} {'rate':>7} {'n':>5}   95% CI")
    for key in result:
        if key.endswith(("_ci_low", "_ci_high", "_n")):
            continue
        n = int(result[f"{key}_n"])
        lines.append(
            f"  {key:<34} {result[key]:>7.1%} {n:>5}   [{result[f'{key}_ci_low']:.1%}, "
            f"{result[f'{key}_ci_high']:.1%}]"
        )
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    errors: list[dict[str, Any]] = []
    result = run(args.split, data_dir=args.data_dir, errors=errors)
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_table(result, args.split))
    if args.show_errors and errors:
        print("\nmisses and false positives:")
        for e in errors:
            print(f"  [{e['language']}] expected {e['category']}, found {e['found'] or 'none'}: {e['text']}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``safety`` to ``qtha-eval``'s sub-commands."""
    p = subparsers.add_parser(
        "safety",
        help="recall per risk category and language, false positives per language, on the safety set",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--split", default="dev", choices=SPLITS, help="dev (tuned on) or test (reported only)")
    p.add_argument("--data-dir", dest="data_dir", default=None, help="folder with dev.jsonl and test.jsonl")
    p.add_argument(
        "--show-errors", dest="show_errors", action="store_true", help="list the misses and false positives"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_cmd)
