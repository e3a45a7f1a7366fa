"""``qtha-eval robustness`` on the tiny model's frozen artifacts, its bad inputs, and ``bench device``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evals.bench import device as device_bench
from evals.cli import main as eval_main
from evals.robustness import _shots_needed, parse_noise, parse_shots, run
from evals.runner import EvalError


def test_counseling_robustness_rows_report_and_json(tiny_chat_model_dir, tiny_artifacts, isolated_env):
    summary = run(
        tiny_artifacts["counseling"],
        "counseling",
        "synthetic-counseling:3",
        model=str(tiny_chat_model_dir),
        limit=3,
        shots=[100, 1000],
        noise=["none", "depolarizing"],
        out=isolated_env / "rep",
    )
    rows = summary["rows"]
    assert summary["metric_name"] == "eval_loss" and summary["n"] == 3
    assert [(r["noise"], r["shots"]) for r in rows] == [
        ("none", None),
        ("none", 100),
        ("none", 1000),
        ("depolarizing", 100),
        ("depolarizing", 1000),
    ]
    exact = summary["exact"]
    assert rows[0]["metric"] == exact and exact > 0
    for r in rows:
        assert math.isfinite(r["metric"])
        assert r["delta_vs_exact"] == pytest.approx(r["metric"] - exact, abs=1e-12)
        assert r["relative_delta"] == pytest.approx(r["delta_vs_exact"] / exact, abs=1e-12)
    assert any(r["delta_vs_exact"] != 0 for r in rows[1:])  # sampling and noise reach the metric
    assert set(summary["shots_needed_within_1pct"]) == {"none", "depolarizing"}
    for label, needed in summary["shots_needed_within_1pct"].items():
        # the fewest shots from which on every larger shot count is within 1% (None: not even the largest)
        tried = sorted((r for r in rows[1:] if r["noise"] == label), key=lambda r: r["shots"])
        within = [abs(r["relative_delta"]) <= 0.01 for r in tried]
        assert needed == next((r["shots"] for i, r in enumerate(tried) if all(within[i:])), None)
    html = Path(summary["report_html"]).read_text()
    assert "Robustness to shots and noise" in html and "data:image/png;base64" in html
    assert (isolated_env / "rep" / "robustness.png").is_file()
    saved = json.loads((isolated_env / "rep" / "robustness.json").read_text())
    assert saved["rows"] == rows and saved["headline"].startswith(
        "shots to stay within 1% of the exact eval loss"
    )


def test_cli_math_json_and_the_device_path_with_its_cache(
    tiny_chat_model_dir, tiny_artifacts, isolated_env, capsys
):
    base = ["robustness", "--artifact", str(tiny_artifacts["math"]), "--task", "synthetic-math"]
    base += ["--data", "synthetic-math:2", "--model", str(tiny_chat_model_dir), "--limit", "2"]
    base += ["--max-tokens", "3", "--json"]
    assert (
        eval_main([*base, "--shots", "100,exact", "--noise", "none", "--out", str(isolated_env / "a")]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["metric_name"] == "error_rate" and 0 <= summary["exact"] <= 1
    # noise-free 'exact' is the exact row itself, not run twice
    assert [(r["noise"], r["shots"]) for r in summary["rows"]] == [("none", None), ("none", 100)]

    device = [*base, "--device", "default.qubit", "--shots", "exact,1000"]
    assert eval_main([*device, "--out", str(isolated_env / "b")]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    exact_row, device_exact, device_1000 = first["rows"]
    assert device_exact["noise"] == "device:default.qubit" and device_exact["circuits"] > 0
    assert device_exact["metric"] == exact_row["metric"]  # an exact device computes the same circuits
    assert device_1000["circuits"] > 0
    assert first["circuits_estimate"] >= device_exact["circuits"] + device_1000["circuits"]
    # re-running the evaluation costs no device circuit
    assert eval_main([*device, "--out", str(isolated_env / "c")]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r.get("circuits") for r in again["rows"][1:]] == [0, 0]
    assert [r["metric"] for r in again["rows"]] == [r["metric"] for r in first["rows"]]
    assert (isolated_env / "cache" / "device-results.sqlite").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "origin.wukong"], "default.qubit"),
        (["--shots", "0"], "--shots: expected positive integers"),
        (["--shots", "100,ten"], "--shots: expected comma-separated positive integers"),
        (["--noise", "p1=1.5"], "NoiseModel.p1: expected a probability in [0, 1]; got 1.5"),
        (["--noise", "thermal"], "expected a name in ['depolarizing', 'none']"),
        (["--device", "default.qubit", "--noise", "depolarizing"], "a device brings its own noise"),
        (["--task", "poetry"], "--task: expected one of"),
    ],
)
def test_bad_input_is_refused_before_any_work(extra, message, tmp_path, capsys):
    args = ["robustness", "--artifact", str(tmp_path / "no-artifact"), "--task", "counseling"]
    args += ["--data", "synthetic-counseling:2", "--out", str(tmp_path / "r"), *extra]
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_guard_and_circuitless_artifacts_are_refused(tiny_chat_model_dir, tiny_artifacts, isolated_env):
    common = dict(model=str(tiny_chat_model_dir), limit=2, shots=[100, 1000], out=isolated_env / "r")
    with pytest.raises(
        EvalError, match=r"--max-circuits 10: this run needs up to [\d,]+ circuits .* nothing was run"
    ):
        run(tiny_artifacts["counseling"], "counseling", "synthetic-counseling:2", max_circuits=10, **common)
    with pytest.raises(EvalError, match="has no quantum circuit"):
        run(tiny_artifacts["math-lora"], "synthetic-math", "synthetic-math:2", **common)
    assert not (isolated_env / "r").exists()


def test_shots_needed_is_where_the_metric_stays_within_one_percent():
    def rows(*metrics: float) -> list[dict]:
        return [{"shots": s, "metric": m} for s, m in zip((100, 1000, 10000), metrics, strict=True)]

    assert _shots_needed(rows(1.05, 1.005, 0.998), exact=1.0) == 1000
    assert _shots_needed(rows(1.001, 1.02, 1.002), exact=1.0) == 10000  # 100 is within, 1000 is not
    assert _shots_needed(rows(1.001, 1.002, 1.03), exact=1.0) is None
    assert _shots_needed(rows(2.01, 1.5, 2.0), exact=2.0) == 10000


def test_parse_shots_and_noise_lists():
    assert parse_shots("100, 1000,exact") == [100, 1000, None]
    assert parse_noise("none,depolarizing") == ["none", "depolarizing"]
    assert parse_noise("none,p1=0.01,p2=0.05,readout=0.02,depolarizing") == [
        "none",
        "p1=0.01,p2=0.05,readout=0.02",
        "depolarizing",
    ]
    assert parse_noise("p1=0.01,p1=0.02") == ["p1=0.01", "p1=0.02"]
    assert parse_noise("p1=0.01,p2=0.1;none") == ["p1=0.01,p2=0.1", "none"]
    with pytest.raises(EvalError, match="distinct"):
        parse_shots("100,100")


def test_bench_device_exact_and_sampled(capsys):
    exact = device_bench.run("default.qubit", rows=16)
    assert exact["max_abs_diff"] < 1e-5 and exact["circuits"] == 16 and exact["seconds"] > 0
    sampled = device_bench.run("default.mixed", shots=20_000, rows=16)
    assert 0 < sampled["max_abs_diff"] < 0.05
    assert eval_main(["bench", "device", "--device", "default.qubit", "--rows", "8", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"max_abs_diff", "circuits", "seconds"} <= set(printed) and printed["circuits"] == 8


def test_compare_an_exact_and_a_noise_trained_adapter(
    tiny_chat_model_dir, tiny_train_config, tiny_artifacts, isolated_env, capsys
):
    """qtha-train --train-noise on the tiny model, then --compare against the exact-trained artifact."""
    from training.recipe import train

    cfg = tiny_train_config(
        isolated_env / "noise-trained", data="synthetic-counseling:24", train_noise="depolarizing"
    )
    summary = train(cfg, progress=False)
    manifest = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())
    assert manifest["training"]["config"]["train_noise"] == "depolarizing"
    args = ["robustness", "--artifact", str(tiny_artifacts["counseling"]), "--compare", summary["artifact"]]
    args += ["--task", "counseling", "--data", "synthetic-counseling:4", "--model", str(tiny_chat_model_dir)]
    args += ["--out", str(isolated_env / "cmp"), "--json"]
    assert eval_main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["conditions"] == ["depolarizing, exact"] and result["n"] == 4
    (row,) = result["comparisons"]
    ref, cand = result["names"]
    cells = result["models"]
    lost = cells[ref]["depolarizing, exact"]["value"] - cells[ref]["exact"]["value"]
    assert row["lost"]["value"] == pytest.approx(lost, abs=1e-9) and lost != 0
    won = cells[ref]["depolarizing, exact"]["value"] - cells[cand]["depolarizing, exact"]["value"]
    assert row["recovered"]["value"] == pytest.approx(won / lost, rel=1e-9)
    for fig in (row["lost"], row["won_back"], result["base"]):
        low, high = fig["ci95"]
        assert low <= fig["value"] <= high and low < high
    assert "recovered (goal >= 50%)" in (isolated_env / "cmp" / "report.md").read_text()


def test_compare_refuses_bad_input_before_any_work(tmp_path, capsys):
    args = ["robustness", "--artifact", str(tmp_path / "a"), "--compare", str(tmp_path / "b")]
    args += ["--task", "counseling", "--data", "synthetic-counseling:2", "--out", str(tmp_path / "r")]
    assert eval_main([*args, "--noise", "none"]) == 2
    assert "expected a noise setting other than 'none'" in capsys.readouterr().err
    assert eval_main([*args, "--shots", "0"]) == 2
    assert "--shots: expected" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
