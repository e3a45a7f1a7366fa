"""``qtha-eval run`` end to end on the tiny model with real frozen artifacts, and its bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evals.cli import main as eval_main
from evals.registry import Registry
from evals.runner import EvalError, run_evaluation, task_domain
from quantum_adapters.artifact import ArtifactError


def _inputs(model_dir: Path, out: Path, *artifacts: Path, **overrides) -> dict:
    """``run_evaluation``'s arguments: synthetic math on three items unless overridden."""
    return {
        "task": "synthetic-math",
        "data": "synthetic-math:3",
        "model": str(model_dir),
        "artifacts": [str(a) for a in artifacts],
        "out": str(out),
        **overrides,
    }


def test_math_evaluation_report_and_registry(tiny_chat_model_dir, tiny_artifacts, isolated_env):
    arts = tiny_artifacts["math"], tiny_artifacts["math-lora"]
    inputs = _inputs(tiny_chat_model_dir, isolated_env / "rep", *arts, data="synthetic-math:6")
    summary = run_evaluation(**inputs, max_tokens=8, batch_size=3)
    names = [r["name"] for r in summary["results"]]
    assert names == ["base", "math", "math-lora"]
    for r in summary["results"]:
        assert 0.0 <= r["error_rate"] <= 1.0
        assert r["ci_low"] <= r["error_rate"] <= r["ci_high"]
    assert summary["results"][0]["trainable_params"] == 0 and summary["results"][1]["trainable_params"] > 0
    assert "reduction_vs_lora" in summary["results"][1]
    html = Path(summary["report_html"]).read_text()
    assert "data:image/png;base64" in html and "math-lora" in html
    assert Path(summary["report_md"]).is_file()
    records = (isolated_env / "rep" / "records.jsonl").read_text().splitlines()
    assert len(records) == 6 * 3
    reg = Registry()
    stored = reg.get_evaluation(summary["evaluation_id"])
    assert [r["name"] for r in stored["results"]] == names
    assert len(reg.list_runs()) == 2


def test_counseling_evaluation_metrics(tiny_chat_model_dir, tiny_artifacts, isolated_env):
    art, out = tiny_artifacts["counseling"], isolated_env / "rep"
    inputs = _inputs(tiny_chat_model_dir, out, art, task="counseling", data="synthetic-counseling:6")
    summary = run_evaluation(**inputs, max_tokens=6, batch_size=3)
    base, qtha = summary["results"]
    for r in (base, qtha):
        assert r["eval_loss"] > 0 and 0 <= r["token_error_rate"] <= 1
        assert r["perplexity"] == pytest.approx(math.exp(r["eval_loss"]), rel=1e-6)
        assert 0 <= r["rouge_l"] <= 1 and -1 <= r["semantic_similarity"] <= 1
        # the serving pipeline's safety layer answers every crisis and dosing probe itself
        assert r["safety_crisis_pass_rate"] == 1.0 and r["safety_medication_pass_rate"] == 1.0
    assert qtha["eval_loss"] != base["eval_loss"]


def test_cli_json_history_and_compare(tiny_chat_model_dir, tiny_artifacts, isolated_env, capsys):
    args = [
        "run",
        "--task",
        "synthetic-math",
        "--data",
        "synthetic-math:3",
        "--model",
        str(tiny_chat_model_dir),
        "--artifacts",
        str(tiny_artifacts["math"]),
        "--max-tokens",
        "4",
        "--out",
        str(isolated_env / "r"),
        "--json",
    ]
    assert eval_main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"results", "report_md", "report_html"} <= set(first) and first["results"][0]["name"] == "base"
    assert eval_main([*args[:-3], "--out", str(isolated_env / "r2"), "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert eval_main(["history", "--json"]) == 0
    history = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [e["id"] for e in history["evaluations"]][:2] in (
        [first["evaluation_id"], second["evaluation_id"]],
        [second["evaluation_id"], first["evaluation_id"]],
    )
    assert eval_main(["compare", str(first["evaluation_id"]), str(second["evaluation_id"]), "--json"]) == 0
    assert "base" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task": "poetry"}, EvalError, "--task: expected one of"),
        ({"limit": 0}, EvalError, "--limit: expected a positive number"),
        ({"data": "synthetic-counseling:3"}, EvalError, "expects math data"),
        ({"artifacts": ["/nonexistent/artifact"]}, ArtifactError, "artifact not found"),
    ],
)
def test_bad_inputs_fail_before_any_work(
    tiny_chat_model_dir, tiny_artifacts, isolated_env, kwargs, error, message
):
    inputs = _inputs(tiny_chat_model_dir, isolated_env / "rep", tiny_artifacts["math"])
    with pytest.raises(error, match=message):
        run_evaluation(**{**inputs, **kwargs})
    assert Registry().list_evaluations() == []  # nothing half-written


def test_artifact_for_another_base_model_is_refused_naming_both(tiny_artifacts, isolated_env, capsys):
    code = eval_main(
        [
            "run",
            "--task",
            "synthetic-math",
            "--data",
            "synthetic-math:3",
            "--artifacts",
            str(tiny_artifacts["math"]),
            "--out",
            str(isolated_env / "rep"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "made for base model tiny-chat0" in err and "smollm2-135m-instruct" in err
    assert "Traceback" not in err


def test_empty_data_set_is_refused(tiny_chat_model_dir, tiny_artifacts, isolated_env, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(EvalError, match="no examples"):
        run_evaluation(
            **_inputs(
                tiny_chat_model_dir,
                isolated_env / "rep",
                tiny_artifacts["math"],
                task="gsm8k",
                data=f"gsm8k:{empty}",
            )
        )


def test_task_names_are_the_domains_names():
    """``--task`` takes any name quantum_adapters.domains gives a domain, in any case."""
    assert task_domain("gsm8k") == task_domain("Synthetic-Math") == "math"
    assert task_domain("counseling") == task_domain("counselling") == "counseling"
    with pytest.raises(EvalError, match=r"--task: expected one of .*gsm8k.*; got 'poetry'"):
        task_domain("poetry")
