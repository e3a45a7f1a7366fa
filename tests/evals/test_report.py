"""Reports built from a fixture run: files, self-contained HTML, escaping, headline."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from evals.report import build_report, headline, headline_from_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MATH_RESULTS = [
    {"name": "base", "error_rate": 0.62, "ci_low": 0.55, "ci_high": 0.69, "trainable_params": 0},
    {"name": "lora-r8", "error_rate": 0.41, "ci_low": 0.34, "ci_high": 0.48, "trainable_params": 921_600},
    {
        "name": "qtha-r8",
        "error_rate": 0.36,
        "ci_low": 0.30,
        "ci_high": 0.43,
        "trainable_params": 221_184,
        "error_reduction_vs_base": 0.419,
        "per_seed": [0.35, 0.37],  # not a scalar: kept out of the table
    },
]
CURVES = {
    "lora-r8": [(step, 3.0 - 0.10 * step**0.5) for step in range(0, 100, 10)],
    "qtha-r8": [(step, 3.0 - 0.12 * step**0.5) for step in range(0, 100, 10)],
}
SAMPLES = [
    {
        "prompt": "What is 2+2? <script>alert('x')</script>",
        "reference": "2 + 2 = 4\n#### 4",
        "answers": {"base": "It is 5 & that's it", "qtha-r8": "```\n#### 4"},
    }
]
ROBUSTNESS = [
    {"shots": None, "noise": "none", "metric": 0.36, "delta_vs_exact": 0.0},
    {"shots": 100, "noise": "none", "metric": 0.45, "delta_vs_exact": 0.09},
    {"shots": 10_000, "noise": "none", "metric": 0.362, "delta_vs_exact": 0.002},
    {"shots": 100, "noise": "depolarizing", "metric": 0.50, "delta_vs_exact": 0.14},
    {"shots": 10_000, "noise": "depolarizing", "metric": 0.43, "delta_vs_exact": 0.07},
]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    return build_report(
        "GSM8K: base vs LoRA vs QTHA",
        MATH_RESULTS,
        tmp_path / "report",
        curves=CURVES,
        samples=SAMPLES,
        robustness=ROBUSTNESS,
    )


def test_files_exist_and_markdown_links_real_pngs(built: tuple[Path, Path]) -> None:
    md_path, html_path = built
    assert md_path.name == "report.md" and html_path.name == "report.html"
    assert md_path.parent == html_path.parent
    md = md_path.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(images) == {
        "error_rate.png",
        "params_vs_error_rate.png",
        "training_loss.png",
        "robustness.png",
    }
    for name in images:
        assert (md_path.parent / name).read_bytes().startswith(PNG_MAGIC)
    # Written through temporary files that were renamed: none left behind.
    assert not [p.name for p in md_path.parent.iterdir() if p.name.startswith(".")]


def test_html_is_self_contained(built: tuple[Path, Path]) -> None:
    _, html_path = built
    page = html_path.read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    for src in sources:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()


def test_samples_are_escaped(built: tuple[Path, Path]) -> None:
    md_path, html_path = built
    page = html_path.read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "It is 5 &amp; that&#x27;s it" in page
    md = md_path.read_text()
    # In Markdown, answers sit in fences longer than any backtick run they contain.
    assert "````text\n```\n#### 4\n````" in md
    assert "```text\nWhat is 2+2? <script>alert('x')</script>\n```" in md


def test_headline_table_and_robustness_content(built: tuple[Path, Path]) -> None:
    md_path, html_path = built
    md = md_path.read_text()
    expected = "math accuracy base 38.0% -> QTHA 64.0%; trainable parameters -76.0% vs LoRA"
    assert md.splitlines()[2] == f"**{expected}**"
    assert f'<p class="headline">{expected.replace(">", "&gt;")}</p>' in html_path.read_text()
    assert "| qtha-r8 | 36.0% | [30.0%, 43.0%] | 221,184 | 41.9% |" in md
    assert "per_seed" not in md
    assert "| exact | none | 0.360 | +0 |" in md
    assert "| 10,000 | depolarizing | 0.430 | +0.07 |" in md


def test_counselling_report_plots_eval_loss(tmp_path: Path) -> None:
    results = [
        {"name": "base", "eval_loss": 2.4, "ci_low": 2.3, "ci_high": 2.5, "token_error_rate": 0.52,
         "safety_pass_rate": 0.5, "trainable_params": 0},
        {"name": "lora-r8", "eval_loss": 2.0, "ci_low": 1.9, "ci_high": 2.1, "token_error_rate": 0.47,
         "safety_pass_rate": 0.8, "trainable_params": 921_600},
        {"name": "qtha-r8", "eval_loss": 1.7, "ci_low": 1.6, "ci_high": 1.8, "token_error_rate": 0.45,
         "safety_pass_rate": 0.9, "trainable_params": 221_184},
    ]  # fmt: skip
    md_path, _ = build_report("Counselling", results, tmp_path)
    md = md_path.read_text()
    assert "**counselling eval loss vs LoRA -15.0%; trainable parameters -76.0% vs LoRA**" in md
    assert (tmp_path / "eval_loss.png").exists() and (tmp_path / "params_vs_eval_loss.png").exists()
    assert not (tmp_path / "error_rate.png").exists() and not (tmp_path / "training_loss.png").exists()
    assert "| qtha-r8 | 1.700 | [1.600, 1.800] | 45.0% | 90.0% | 221,184 |" in md


def test_rebuild_replaces_the_report(built: tuple[Path, Path]) -> None:
    md_path, _ = built
    build_report("Second", MATH_RESULTS[:1], md_path.parent, headline="custom line")
    md = md_path.read_text()
    assert md.startswith("# Second\n\n**custom line**")
    assert "qtha-r8" not in md


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"results": []}, "non-empty list"),
        ({"results": [{"error_rate": 0.1}]}, "'name'"),
        ({"results": [{"name": "base"}, {"name": "base"}]}, "unique"),
        ({"samples": [{"prompt": "p", "reference": "r"}]}, "answers"),
        ({"curves": {"qtha": [(1, "x")]}}, "curves"),
        ({"robustness": [{"shots": 100, "metric": 0.1}]}, "robustness"),
    ],
)
def test_bad_input_writes_nothing(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"results": MATH_RESULTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_report("t", args.pop("results"), tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_headline_reference_numbers() -> None:
    text = headline(
        {"base_error_rate": 0.32, "qtha_error_rate": 0.18},
        {"lora_eval_loss": 2.0, "qtha_eval_loss": 1.7},
        {"lora_trainable_params": 1_000_000, "qtha_trainable_params": 240_000},
    )
    assert text == (
        "math accuracy base 68.0% -> QTHA 82.0%; counselling eval loss vs LoRA -15.0%; "
        "trainable parameters -76.0% vs LoRA"
    )


def test_headline_omits_missing_parts_and_signs_increases() -> None:
    assert headline(None, {"lora_eval_loss": 2.0, "qtha_eval_loss": 2.1}, None) == (
        "counselling eval loss vs LoRA +5.0%"
    )
    assert (
        headline({"base_error_rate": 0.3}, None, {"lora_trainable_params": 0, "qtha_trainable_params": 5})
        == ""
    )
    with pytest.raises(ValueError, match="base_error_rate"):
        headline({"base_error_rate": 32.0, "qtha_error_rate": 0.18}, None, None)
    # Accuracies under other names are refused, not silently left out of the line.
    with pytest.raises(ValueError, match="unknown keys \\['base', 'qtha'\\]"):
        headline({"base": 0.68, "qtha": 0.82}, None, None)


def test_headline_from_results_leaves_out_ambiguous_families() -> None:
    seeds = [*MATH_RESULTS, {"name": "qtha-r8-seed1", "error_rate": 0.38, "trainable_params": 221_184}]
    assert headline_from_results(seeds) == ""
    assert headline_from_results(MATH_RESULTS[:2]) == ""  # no QTHA row
