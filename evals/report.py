"""Reports people can read: one Markdown file and one self-contained HTML file per evaluation.

A report is built from the result dicts the evaluation tasks return (never by re-parsing logs):

- a headline in the reference's form (Origin Quantum's QTHA, arXiv 2503.12790): "math accuracy base
  X% -> QTHA Y%; counselling eval loss vs LoRA -Z%; trainable parameters -W% vs LoRA";
- a table of results, one row per model (``base``, ``qtha-...``, ``lora-...``);
- plots: the error rate or eval loss per model with its 95% interval, trainable parameters against
  that metric (log x), the training-loss curves of the compared runs, and, for shot/noise studies,
  the metric against shots per noise setting;
- a few samples side by side: prompt, reference and each model's answer.

``report.html`` carries its plots as ``data:image/png;base64`` images and its style inline, so it can
be mailed or archived as one file; ``report.md`` links the same plots as PNG files written beside it.
Every file is written to a temporary name and renamed, so a crash never leaves a half-written report.
Plots use matplotlib's ``Figure`` directly (the Agg renderer), never pyplot, so building a report
changes no global state and needs no display.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from math import isfinite
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from evals.metrics import relative_reduction
from quantum_adapters.files import atomic_write

__all__ = ["build_report", "headline", "headline_from_results"]

_PRIMARY = ("error_rate", "eval_loss")
# Columns shown first, in this order, when any row has them; other scalar keys follow as first seen.
_COLUMN_ORDER = (
    "error_rate",
    "eval_loss",
    "perplexity",
    "token_error_rate",
    "rouge_l",
    "semantic_similarity",
    "safety_pass_rate",
    "trainable_params",
)
_LABELS = {
    "error_rate": "error rate",
    "eval_loss": "eval loss",
    "token_error_rate": "token error rate",
    "safety_pass_rate": "safety pass rate",
    "trainable_params": "trainable params",
    "rouge_l": "ROUGE-L",
    "semantic_similarity": "semantic similarity",
}
_FAMILY_COLOURS = {"base": "#7f7f7f", "qtha": "#1f77b4", "lora": "#ff7f0e"}
_OTHER_COLOUR = "#2ca02c"


# --- headline ---------------------------------------------------------------------------------------


def _number(d: Mapping[str, Any] | None, key: str) -> float | None:
    if d is None:
        return None
    value = d.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not isfinite(value):
        return None
    return float(value)


def _signed_percent(reduction: float) -> str:
    return f"{-reduction * 100:+.1f}%"


_HEADLINE_KEYS = {
    "math": ("base_error_rate", "qtha_error_rate"),
    "counseling": ("lora_eval_loss", "qtha_eval_loss"),
    "params": ("lora_trainable_params", "qtha_trainable_params"),
}


def headline(math: dict | None, counseling: dict | None, params: dict | None) -> str:
    """One line in the reference's form; a part whose numbers are missing is left out.

    - ``math``: ``{'base_error_rate', 'qtha_error_rate'}``, error rates in [0, 1], printed as
      accuracy: "math accuracy base 68.0% -> QTHA 82.0%".
    - ``counseling``: ``{'lora_eval_loss', 'qtha_eval_loss'}``: "counselling eval loss vs LoRA -15.0%"
      (the relative change of QTHA's loss against LoRA's; "+" when QTHA's is higher).
    - ``params``: ``{'lora_trainable_params', 'qtha_trainable_params'}``: "trainable parameters -76.0%
      vs LoRA".

    Returns "" when no part has its numbers (a value of None counts as missing). Any other key is an
    error, so that a dict of accuracies under other names cannot silently drop a part.
    """
    for arg, value, keys in (
        ("math", math, _HEADLINE_KEYS["math"]),
        ("counseling", counseling, _HEADLINE_KEYS["counseling"]),
        ("params", params, _HEADLINE_KEYS["params"]),
    ):
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise TypeError(f"headline: expected {arg} to be a dict or None; got {type(value).__name__}")
        if unknown := sorted(set(value) - set(keys)):
            raise ValueError(f"headline: {arg} has unknown keys {unknown}; expected keys among {list(keys)}")
    parts: list[str] = []
    base_err, qtha_err = _number(math, "base_error_rate"), _number(math, "qtha_error_rate")
    if base_err is not None and qtha_err is not None:
        for key, value in (("base_error_rate", base_err), ("qtha_error_rate", qtha_err)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"headline: expected math[{key!r}] in [0, 1]; got {value}")
        parts.append(f"math accuracy base {(1 - base_err) * 100:.1f}% -> QTHA {(1 - qtha_err) * 100:.1f}%")
    lora_loss, qtha_loss = _number(counseling, "lora_eval_loss"), _number(counseling, "qtha_eval_loss")
    if lora_loss is not None and qtha_loss is not None and lora_loss != 0:
        parts.append(
            f"counselling eval loss vs LoRA {_signed_percent(relative_reduction(qtha_loss, lora_loss))}"
        )
    lora_p, qtha_p = _number(params, "lora_trainable_params"), _number(params, "qtha_trainable_params")
    if lora_p is not None and qtha_p is not None and lora_p != 0:
        parts.append(f"trainable parameters {_signed_percent(relative_reduction(qtha_p, lora_p))} vs LoRA")
    return "; ".join(parts)


def _family(name: str) -> str:
    lowered = name.lower()
    for family in ("base", "qtha", "lora"):
        if lowered == family or lowered.startswith((f"{family}-", f"{family}_")):
            return family
    return "other"


def headline_from_results(results: Sequence[Mapping[str, Any]]) -> str:
    """The headline from result rows named ``base``, ``qtha-...`` and ``lora-...``.

    Uses the ``base`` row and the single ``qtha*`` and ``lora*`` rows. When a family has several rows
    (seeds, ranks) there is no one number to quote, so the parts that need it are left out: pass
    ``headline=`` to ``build_report`` with the numbers you mean.
    """
    by_family: dict[str, list[Mapping[str, Any]]] = {}
    for row in results:
        by_family.setdefault(_family(str(row.get("name", ""))), []).append(row)

    def single(family: str) -> Mapping[str, Any] | None:
        rows = by_family.get(family, [])
        return rows[0] if len(rows) == 1 else None

    base, qtha, lora = single("base"), single("qtha"), single("lora")
    return headline(
        {"base_error_rate": _number(base, "error_rate"), "qtha_error_rate": _number(qtha, "error_rate")},
        {"lora_eval_loss": _number(lora, "eval_loss"), "qtha_eval_loss": _number(qtha, "eval_loss")},
        {
            "lora_trainable_params": _number(lora, "trainable_params"),
            "qtha_trainable_params": _number(qtha, "trainable_params"),
        },
    )


# --- validation -------------------------------------------------------------------------------------


def _check_results(results: Any) -> list[Mapping[str, Any]]:
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)) or not results:
        raise ValueError(f"build_report: expected a non-empty list of result dicts; got {results!r:.200}")
    for i, row in enumerate(results):
        if not isinstance(row, Mapping):
            raise TypeError(f"build_report: results[{i}]: expected a dict; got {type(row).__name__}")
        if not isinstance(row.get("name"), str) or not row["name"]:
            raise ValueError(
                f"build_report: results[{i}]['name']: expected a non-empty str; got {row.get('name')!r}"
            )
    names = [row["name"] for row in results]
    if len(set(names)) != len(names):
        raise ValueError(f"build_report: expected unique result names; got {names}")
    return list(results)


def _check_samples(samples: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise TypeError(f"build_report: samples[{i}]: expected a dict; got {type(sample).__name__}")
        for key in ("prompt", "reference"):
            if not isinstance(sample.get(key), str):
                raise ValueError(
                    f"build_report: samples[{i}][{key!r}]: expected a str; got {sample.get(key)!r:.80}"
                )
        answers = sample.get("answers")
        if not isinstance(answers, Mapping) or not all(isinstance(a, str) for a in answers.values()):
            raise ValueError(
                f"build_report: samples[{i}]['answers']: expected a dict of model name -> answer text; "
                f"got {answers!r:.80}"
            )
    return list(samples)


def _check_curves(curves: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for name, points in curves.items():
        try:
            pairs = [(float(step), float(loss)) for step, loss in points]
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"build_report: curves[{name!r}]: expected a list of (step, loss) pairs; got {points!r:.120}"
            ) from exc
        if pairs:
            out[str(name)] = pairs
    return out


def _check_robustness(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not {"shots", "noise", "metric"} <= set(row):
            raise ValueError(
                f"build_report: robustness[{i}]: expected a dict with 'shots', 'noise', 'metric' "
                f"(and 'delta_vs_exact'); got {row!r:.120}"
            )
        if _number(row, "metric") is None:
            raise ValueError(
                f"build_report: robustness[{i}]['metric']: expected a finite number; got {row['metric']!r}"
            )
    return list(rows)


# --- formatting -------------------------------------------------------------------------------------


def _is_rate(key: str) -> bool:
    """Rates and relative reductions are fractions, shown as percentages."""
    return key.endswith("_rate") or "reduction" in key


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not isfinite(value):
        return "–" if value != value else str(value)  # NaN (e.g. a reduction against 0) shows as a gap
    if _is_rate(key):
        return f"{value * 100:.1f}%"
    if isinstance(value, int) or key == "trainable_params" or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _primary(row: Mapping[str, Any]) -> str | None:
    return next((k for k in _PRIMARY if _number(row, k) is not None), None)


def _ci_text(row: Mapping[str, Any]) -> str:
    low, high, key = _number(row, "ci_low"), _number(row, "ci_high"), _primary(row)
    if low is None or high is None or key is None:
        return "–"
    return f"[{_fmt(key, low)}, {_fmt(key, high)}]"


def _columns(results: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in results:
        for key, value in row.items():
            scalar = value is None or isinstance(value, (str, int, float, bool))
            if key not in seen and key not in ("name", "ci_low", "ci_high") and scalar:
                seen.append(key)
    ordered = [k for k in _COLUMN_ORDER if k in seen]
    return ordered + [k for k in seen if k not in ordered]


def _table(results: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table as display strings (not yet escaped)."""
    columns = _columns(results)
    has_ci = any(_number(r, "ci_low") is not None for r in results)
    header = ["model"]
    rows: list[list[str]] = [[str(r["name"])] for r in results]
    for key in columns:
        header.append(_LABELS.get(key, key))
        for cells, row in zip(rows, results, strict=True):
            cells.append(_fmt(key, row.get(key)))
        if has_ci and key in _PRIMARY:
            header.append("95% CI")
            for cells, row in zip(rows, results, strict=True):
                cells.append(_ci_text(row) if _primary(row) == key else "–")
    return header, rows


def _md_text(text: str) -> str:
    """Text outside code blocks with ``&`` and ``<`` as entities, so no renderer reads a tag in it.

    ``>`` is left alone: outside a tag it only matters at the start of a line, and headlines use "->".
    """
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_block(text: str) -> str:
    """``text`` in a fenced block longer than any backtick run inside it, so nothing is interpreted."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


# --- plots ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plot:
    filename: str
    caption: str
    png: bytes


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _colour(name: str) -> str:
    return _FAMILY_COLOURS.get(_family(name), _OTHER_COLOUR)


def _metric_plot(results: Sequence[Mapping[str, Any]], metric: str) -> _Plot | None:
    rows = [r for r in results if _number(r, metric) is not None]
    if not rows:
        return None
    scale = 100.0 if _is_rate(metric) else 1.0
    names = [str(r["name"]) for r in rows]
    values = [_number(r, metric) * scale for r in rows]
    lows, highs = [], []
    for r, v in zip(rows, values, strict=True):
        low, high = _number(r, "ci_low"), _number(r, "ci_high")
        has_ci = _primary(r) == metric and low is not None and high is not None
        lows.append(max(0.0, v - low * scale) if has_ci else 0.0)
        highs.append(max(0.0, high * scale - v) if has_ci else 0.0)
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 2), 3.6))
    ax = fig.subplots()
    ax.bar(names, values, color=[_colour(n) for n in names], yerr=[lows, highs], capsize=5)
    label = _LABELS.get(metric, metric) + (" (%)" if scale != 1.0 else "")
    ax.set_ylabel(label)
    ax.set_title(f"{_LABELS.get(metric, metric)} per model, 95% bootstrap CI")
    ax.tick_params(axis="x", labelrotation=20 if len(rows) > 3 else 0)
    ax.grid(axis="y", alpha=0.3)
    return _Plot(
        f"{metric}.png", f"{_LABELS.get(metric, metric)} per model with 95% bootstrap intervals", _png(fig)
    )


def _params_plot(results: Sequence[Mapping[str, Any]], metric: str) -> _Plot | None:
    points = [
        (_number(r, "trainable_params"), _number(r, metric), str(r["name"]))
        for r in results
        if (_number(r, "trainable_params") or 0) > 0 and _number(r, metric) is not None
    ]
    if not points:
        return None
    scale = 100.0 if _is_rate(metric) else 1.0
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    for params, value, name in points:
        ax.scatter([params], [value * scale], color=_colour(name), s=45, zorder=3)
        ax.annotate(name, (params, value * scale), textcoords="offset points", xytext=(5, 4), fontsize=8)
    base = next((r for r in results if r["name"] == "base" and _number(r, metric) is not None), None)
    if base is not None:
        ax.axhline(_number(base, metric) * scale, color=_FAMILY_COLOURS["base"], linestyle="--", label="base")
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(_LABELS.get(metric, metric) + (" (%)" if scale != 1.0 else ""))
    ax.set_title(f"trainable parameters vs {_LABELS.get(metric, metric)}")
    ax.grid(alpha=0.3, which="both")
    return _Plot(
        f"params_vs_{metric}.png", f"Trainable parameters against {_LABELS.get(metric, metric)}", _png(fig)
    )


def _curves_plot(curves: Mapping[str, list[tuple[float, float]]]) -> _Plot | None:
    if not curves:
        return None
    families = [_family(name) for name in curves]
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for (name, pairs), family in zip(curves.items(), families, strict=True):
        steps, losses = zip(*pairs, strict=True)
        # Family colours only where they tell runs apart (one run per family); else the default cycle.
        distinct = family != "other" and families.count(family) == 1
        ax.plot(steps, losses, label=name, color=_colour(name) if distinct else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss of the compared runs")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _Plot("training_loss.png", "Training-loss curves of the compared runs", _png(fig))


def _shots(row: Mapping[str, Any]) -> float | None:
    """A robustness row's shot count, or None for the exact (infinite-shot) row."""
    shots = row.get("shots")
    if isinstance(shots, (int, float)) and not isinstance(shots, bool) and isfinite(shots) and shots > 0:
        return float(shots)
    return None


def _robustness_plot(rows: Sequence[Mapping[str, Any]]) -> _Plot | None:
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        shots = _shots(row)
        if shots is not None:
            series.setdefault(str(row["noise"]), []).append((shots, _number(row, "metric")))
    if not series:
        return None
    exact_row = next((r for r in rows if _shots(r) is None), None)
    if exact_row is not None:
        exact = _number(exact_row, "metric")
    else:
        with_delta = next((r for r in rows if _number(r, "delta_vs_exact") is not None), None)
        exact = (
            None
            if with_delta is None
            else _number(with_delta, "metric") - _number(with_delta, "delta_vs_exact")
        )
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for noise, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"noise: {noise}")
    if exact is not None:
        ax.axhline(exact, color="black", linestyle="--", linewidth=1, label="exact")
    ax.set_xscale("log")
    ax.set_xlabel("shots per expectation value (log scale)")
    ax.set_ylabel("metric")
    ax.set_title("metric against shots, per noise setting")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _Plot(
        "robustness.png", "Metric against shots per noise setting (dashed: exact simulation)", _png(fig)
    )


# --- documents --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
.headline { font-size: 1.15rem; font-weight: 600; background: #eef5fb; border-left: 4px solid #1f77b4;
            padding: 0.6rem 0.9rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.6rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.samples td { white-space: pre-wrap; max-width: 28rem; font-family: ui-monospace, monospace;
                   font-size: 0.82rem; }
figure { margin: 1rem 0 1.8rem; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9rem; }
footer { color: #888; font-size: 0.8rem; margin-top: 2rem; }
"""


def _sample_models(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    models: list[str] = []
    for sample in samples:
        models += [m for m in sample["answers"] if m not in models]
    return models


@dataclass(frozen=True)
class _Page:
    """What one report shows, checked and formatted; written out once as Markdown and once as HTML."""

    title: str
    headline: str
    """The top line ("" for none)."""
    table: tuple[list[str], list[list[str]]]
    """The results table: header, rows of display strings."""
    plots: list[_Plot]
    robustness: tuple[list[str], list[list[str]]] | None
    """The shots/noise table, when there is one."""
    samples: list[Mapping[str, Any]]
    generated: str
    """When the report was built (UTC, to the minute)."""


def _markdown(page: _Page) -> str:
    title, headline_text, table, plots = page.title, page.headline, page.table, page.plots
    robustness, samples, generated = page.robustness, page.samples, page.generated
    out = [f"# {_md_text(title)}", ""]
    if headline_text:
        out += [f"**{_md_text(headline_text)}**", ""]
    out += ["## Results", "", _md_table(*table), ""]
    if plots:
        out += ["## Plots", ""]
        for plot in plots:
            out += [f"![{plot.caption}]({plot.filename})", "", f"*{plot.caption}*", ""]
    if robustness is not None:
        out += ["## Robustness to shots and noise", "", _md_table(*robustness), ""]
    if samples:
        out += ["## Samples", ""]
        for i, sample in enumerate(samples, start=1):
            out += [f"### Sample {i}", "", "**Prompt**", "", _md_block(sample["prompt"]), ""]
            out += ["**Reference**", "", _md_block(sample["reference"]), ""]
            for model, answer in sample["answers"].items():
                out += [f"**{_md_cell(model)}**", "", _md_block(answer), ""]
    out += [f"*Generated {generated} by qtha.*", ""]
    return "\n".join(out)


def _html(page: _Page) -> str:
    title, headline_text, table, plots = page.title, page.headline, page.table, page.plots
    robustness, samples, generated = page.robustness, page.samples, page.generated
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    if headline_text:
        body.append(f'<p class="headline">{e(headline_text)}</p>')
    body += ["<h2>Results</h2>", _html_table(*table)]
    if plots:
        body.append("<h2>Plots</h2>")
        for plot in plots:
            data = base64.b64encode(plot.png).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(plot.caption)}">'
                f"<figcaption>{e(plot.caption)}</figcaption></figure>"
            )
    if robustness is not None:
        body += ["<h2>Robustness to shots and noise</h2>", _html_table(*robustness)]
    if samples:
        models = _sample_models(samples)
        header = ["prompt", "reference", *models]
        rows = [[s["prompt"], s["reference"], *(s["answers"].get(m, "–") for m in models)] for s in samples]
        body += ["<h2>Samples</h2>", _html_table(header, rows, css_class="samples")]
    body.append(f"<footer>Generated {e(generated)} by qtha.</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _robustness_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    keys = ["shots", "noise", "metric", "delta_vs_exact"]
    for row in rows:
        keys += [k for k in row if k not in keys]
    table_rows = []
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            if key == "shots" and _shots(row) is None:
                cells.append("exact")
            elif key == "delta_vs_exact" and _number(row, key) is not None:
                cells.append(f"{row[key]:+.4g}")
            else:
                cells.append(_fmt(key, value))
        table_rows.append(cells)
    return keys, table_rows


def build_report(
    title: str,
    results: list[dict],
    out_dir: Path,
    *,
    curves: dict[str, list[tuple[int, float]]] | None = None,
    samples: list[dict] | None = None,
    headline: str | None = None,
    robustness: list[dict] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` (with its PNG plots) and ``report.html`` into ``out_dir``; return both paths.

    - ``results``: one dict per model, ``name`` required and unique (``base`` for the base model),
      with ``error_rate`` (math) or ``eval_loss`` (counselling), ``ci_low``/``ci_high`` (the 95%
      interval of that metric), ``token_error_rate``, ``safety_pass_rate``, ``trainable_params`` and any
      other scalar metrics, which become table columns.
    - ``curves``: run name -> [(step, training loss), ...].
    - ``samples``: ``{'prompt', 'reference', 'answers': {model name: answer}}`` each; all text is
      escaped in HTML and fenced in Markdown.
    - ``headline``: the line at the top; ``None`` derives it with ``headline_from_results``.
    - ``robustness``: ``{'shots', 'noise', 'metric', 'delta_vs_exact'}`` rows; ``shots`` None (or 0)
      marks the exact row.
    """
    rows = _check_results(results)
    checked_samples = _check_samples(samples or [])
    checked_curves = _check_curves(curves or {})
    checked_robustness = _check_robustness(robustness) if robustness else None
    headline_text = headline_from_results(rows) if headline is None else headline
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    plots: list[_Plot | None] = []
    for metric in _PRIMARY:
        plots.append(_metric_plot(rows, metric))
    for metric in _PRIMARY:
        plots.append(_params_plot(rows, metric))
    plots.append(_curves_plot(checked_curves))
    if checked_robustness:
        plots.append(_robustness_plot(checked_robustness))
    made = [p for p in plots if p is not None]

    table = _table(rows)
    robustness_table = _robustness_table(checked_robustness) if checked_robustness else None
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = _Page(title, headline_text, table, made, robustness_table, checked_samples, generated)

    for plot in made:
        atomic_write(out_dir / plot.filename, plot.png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write(md_path, _markdown(page).encode("utf-8"))
    atomic_write(html_path, _html(page).encode("utf-8"))
    return md_path, html_path
