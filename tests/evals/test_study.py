"""The study machinery on the tiny real model: arms, lr sweep, resume after a kill, report from the registry.

Runs are a few optimiser steps on the tiny 2-layer model with built-in data, so the whole study takes
seconds of training; what is checked is the machinery (which runs exist, which lr is chosen, what is
redone after a kill, where the report's numbers come from), not the figures.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

import training.recipe as recipe
from evals import study
from evals.cli import main as eval_main
from evals.registry import Registry
from evals.study import MARKER, StudyError, load_config, plan, run_study


def _config(model_dir: Path, **over) -> dict:
    cfg = {
        "model": str(model_dir),
        "train": {
            "r": 2,
            "layers": 1,
            "steps": 4,
            "batch_size": 2,
            "max_len": 192,
            "eval_every": 2,
            "save_every": 1,
            "dev_fraction": 0.2,
            "dev_limit": 4,
        },
        "step_seconds": {str(model_dir): {"qtha": 0.5, "lora": 0.25}},
        "arms": {
            "qtha": {"method": "qtha", "variant": "ABC"},
            "qtha-AB": {"method": "qtha", "variant": "AB"},
            "lora": {"method": "lora"},
        },
        "protocols": {
            "reference": {"lrs": [5.0e-5], "seeds": [0, 1]},
            "tuned": {"lrs": [5.0e-5, 1.0e-2, 1.0e-1], "seeds": [0, 1], "sweep_seed": 0},
        },
        "pairs": [["qtha", "lora"]],
        "domains": {
            "counseling": {
                "train": "synthetic-counseling:30",
                "evals": {"synth-test": {"data": "synthetic-counseling:6", "limit": 6}},
                "generate_limit": 2,
                "safety_probes": False,
                "protocols": {
                    "reference": {"arms": ["qtha", "qtha-AB", "lora"], "arm_seeds": {"qtha-AB": [0]}},
                },
            },
            "math": {
                "train": "synthetic-math:30",
                "evals": {"synth-dev": {"data": "synthetic-math:6", "limit": 6}},
                "protocols": {"tuned": {"arms": ["lora"]}},
                "accuracy": {
                    "model": str(model_dir),
                    "arms": ["lora"],
                    "lr_from": "tuned",
                    "seeds": [0],
                    "data": "synthetic-math:4",
                    "limit": 4,
                    "max_tokens": 8,
                },
            },
        },
    }
    cfg.update(over)
    return cfg


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _dev_loss(folder: Path) -> float:
    return json.loads((folder / "summary.json").read_text())["dev_loss_last"]


@pytest.fixture
def trained_folders(monkeypatch) -> list[str]:
    """Records the run folder of every training call the study makes (the real recipe still runs)."""
    calls: list[str] = []
    real = recipe.train

    def counting(cfg, **kw):
        calls.append(Path(cfg.out).name)
        return real(cfg, **kw)

    monkeypatch.setattr(recipe, "train", counting)
    return calls


# --- bad input: refused before anything trains ------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["arms"]["qtha"].update(qubitz=3), "arms.qtha.qubitz: unknown arm key"),
        (lambda c: c["protocols"]["tuned"].update(lrs=[]), "protocols.tuned.lrs: expected a non-empty list"),
        (lambda c: c["protocols"]["tuned"].update(lrs=[1e-3, 0.0]), "protocols.tuned.lrs: expected positive"),
        (lambda c: c["protocols"]["reference"].update(lrs=[-1e-4]), "protocols.reference.lrs"),
        (
            lambda c: c["domains"]["math"].update(train="gsm8k:/no/such/train.jsonl"),
            "domains.math.train",
        ),
        (
            lambda c: c["domains"]["counseling"]["evals"]["synth-test"].update(data="nosuchset:x"),
            "domains.counseling.evals.synth-test.data",
        ),
        (
            lambda c: c["domains"]["counseling"]["protocols"]["reference"].update(arms=["qtha", "dora"]),
            "unknown arm 'dora'",
        ),
        (lambda c: c.update(methods=[]), "unknown key 'methods'"),
        (
            lambda c: c["domains"]["math"]["accuracy"].update(extra_lrs={"qtha": [1e-3]}),
            "accuracy.extra_lrs: 'qtha' is not one of accuracy.arms",
        ),
        (
            lambda c: c["domains"]["math"]["accuracy"].update(extra_lrs={"lora": [0.0]}),
            "accuracy.extra_lrs.lora: expected positive",
        ),
    ],
)
def test_bad_config_fails_before_training(
    tiny_chat_model_dir, tmp_path, isolated_env, trained_folders, capsys, change, message
):
    cfg = _config(tiny_chat_model_dir)
    change(cfg)
    path = _write(tmp_path, cfg)
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(path)
    assert eval_main(["study", "--config", path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qtha-eval study: error:") and "\n" not in err and "Traceback" not in err
    assert trained_folders == [] and not (tmp_path / "out").exists()


def test_dry_run_prints_plan_and_budget(tiny_chat_model_dir, tmp_path, isolated_env, trained_folders, capsys):
    path = _write(tmp_path, _config(tiny_chat_model_dir))
    assert eval_main(["study", "--config", path, "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # counselling reference: qtha and lora x 2 seeds + qtha-AB x 1; math tuned sweep 3 lrs + seed 1;
    # the accuracy run waits for the sweep's best lr; two base evaluations and one base accuracy
    assert "counseling final" in out and " 5 runs (5 to do) x 4 steps" in out
    assert "math       sweep" in out and "best not known yet" in out
    assert "estimated time left" in out and "hours at the step times above" in out
    assert trained_folders == [] and not (tmp_path / "out").exists()


# --- a whole tiny study ------------------------------------------------------------------------------


def test_study_arms_sweep_resume_and_report(
    tiny_chat_model_dir, tmp_path, isolated_env, trained_folders, monkeypatch
):
    path = _write(tmp_path, _config(tiny_chat_model_dir))
    out = tmp_path / "out"
    cfg = load_config(path)

    # 1. killed during its third training run
    started: list[int] = []

    def kill_third_run(info: recipe.StepInfo) -> None:
        if info.step == 1:
            started.append(1)
        if len(started) == 3 and info.step == 2:
            raise KeyboardInterrupt

    counting = recipe.train  # the trained_folders wrapper; the study calls it through training.recipe
    monkeypatch.setattr(recipe, "train", lambda cfg, **kw: counting(cfg, **kw, callbacks=[kill_third_run]))
    with pytest.raises(KeyboardInterrupt):
        run_study(path, str(out), progress=False)
    monkeypatch.setattr(recipe, "train", counting)
    killed = trained_folders[-1]
    first_three = list(trained_folders)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"runs/*/{MARKER}")}
    assert len(trained_folders) == 3 and len(finished) >= 2 and killed not in finished
    assert (out / "runs" / killed / "checkpoints").is_dir()

    # 2. started again: finished runs are not redone, the killed one resumes, the rest run once
    del trained_folders[:]
    summary = run_study(path, str(out), progress=False)
    assert not set(trained_folders) & set(finished)
    assert trained_folders[0] == killed and len(trained_folders) == len(set(trained_folders))
    for name, mtime in finished.items():
        assert (out / "runs" / name / MARKER).stat().st_mtime_ns == mtime
    # every arm's first seed is trained before any other seed (a part-way study has one full table)
    order = [int(re.search(r"-s(\d+)-", f).group(1)) for f in first_three + trained_folders[1:]]
    assert 1 in order and order == sorted(order)
    rows = [json.loads(x) for x in (out / "runs" / killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # resumed at step 2, not restarted

    # 3. arms: every planned run finished, in the registry, with the arm's training options
    runs, best = plan(cfg, out)
    assert all(study._done(out, r) for r in runs)
    recorded = {r["id"]: r for r in Registry().list_runs()}
    for r in runs:
        if r.values:
            rec = recorded[f"study:{r.folder}"]
            assert rec["config_json"]["method"] == cfg["arms"][r.arm]["method"]
            assert rec["config_json"].get("variant") == cfg["arms"][r.arm].get("variant")
    reference = [r for r in runs if "final" in r.roles.get("reference", ())]
    assert sorted((r.arm, r.seed) for r in reference) == [
        ("lora", 0),
        ("lora", 1),
        ("qtha", 0),
        ("qtha", 1),
        ("qtha-AB", 0),
    ]
    assert {r.lr for r in reference} == {5.0e-5}

    # 4. sweep: the best lr is the one with the lowest final dev loss, used by the final and accuracy runs
    sweep = {r.lr: r for r in runs if r.domain == "math" and "sweep" in r.roles.get("tuned", ())}
    assert sorted(sweep) == [5.0e-5, 1.0e-2, 1.0e-1]
    losses = {lr: _dev_loss(out / "runs" / r.folder) for lr, r in sweep.items()}
    chosen = min(losses, key=losses.get)
    assert best[("math", "tuned", "lora")] == chosen
    finals = [r for r in runs if r.domain == "math" and "final" in r.roles.get("tuned", ())]
    assert sorted(r.seed for r in finals) == [0, 1] and {r.lr for r in finals} == {chosen}
    accuracy = [r for r in runs if r.stage == "accuracy"]
    assert len(accuracy) == 1 and accuracy[0].lr == chosen
    # the seed-0 final run is the sweep run itself, trained once
    assert sweep[chosen].folder in {r.folder for r in finals}
    assert len([f for f in trained_folders if f.startswith("math-lora-lr")]) <= 4

    # 5. the report: one table per domain and protocol, from the registry
    md = summary["markdown"]
    assert "## counseling / reference" in md and "## math / tuned" in md and "## math / accuracy" in md
    assert "Paired difference qtha - lora" in md and "Dev loss by step" in md
    assert f"lora {chosen:g}" in md  # the chosen lr is stated
    assert (out / "report" / "report.md").is_file()
    table = summary["tables"]["counseling/reference"]
    assert table["qtha/synth-test/eval_loss"]["n"] == 2 and table["qtha-AB/synth-test/eval_loss"]["n"] == 1
    # each domain's tables hold that domain's runs only
    assert not any(k.startswith("qtha") for k in summary["tables"]["math/tuned"])
    # a one-seed figure's interval is over items, token-weighted like the figure: it holds the figure
    one_seed = table["qtha-AB/synth-test/eval_loss"]
    low, high = one_seed["ci"]
    assert low <= one_seed["mean"] <= high
    marker = json.loads(next(out.glob(f"runs/counseling-qtha-AB-*/{MARKER}")).read_text())
    m = marker["sets"]["synth-test"]
    weighted = sum(w * v for w, v in zip(m["n_tokens_items"], m["eval_loss_items"], strict=True))
    assert weighted / sum(m["n_tokens_items"]) == pytest.approx(m["eval_loss"], rel=1e-9)

    # change one recorded figure in the registry: the rebuilt report shows it (no log is re-read)
    db = sqlite3.connect(Registry().path)
    row_id, payload = next(
        (i, json.loads(j))
        for i, j in db.execute("SELECT id, json FROM evaluations WHERE task = 'study'")
        if json.loads(j)["arm"] == "qtha-AB" and json.loads(j)["domain"] == "counseling"
    )
    payload["sets"]["synth-test"]["eval_loss"] = 123.25
    # an evaluation recorded before token counts were stored: the report counts them from the data
    del payload["sets"]["synth-test"]["n_tokens_items"]
    db.execute("UPDATE evaluations SET json = ? WHERE id = ?", [json.dumps(payload), row_id])
    db.commit()
    db.close()
    with Registry() as reg:
        rebuilt = study.study_report(cfg, out, reg)
    again = rebuilt["tables"]["counseling/reference"]["qtha-AB/synth-test/eval_loss"]
    assert again["mean"] == 123.25
    assert again["ci"] == pytest.approx(one_seed["ci"], rel=1e-12)  # the same weights, recounted

    # 6. a deleted evaluation marker: only that run is evaluated again (its artifact is reused)
    del trained_folders[:]
    one = reference[0]
    (out / "runs" / one.folder / MARKER).unlink()
    run_study(path, str(out), progress=False)
    assert trained_folders == [] and (out / "runs" / one.folder / MARKER).is_file()


def test_accuracy_extra_lrs_planned_and_chosen_by_dev_loss(tiny_chat_model_dir, tmp_path):
    """``accuracy.extra_lrs``: the arm also runs at those lrs on the accuracy model; the report keeps,
    under the arm's name, the lr with the lowest final dev loss and shows the others apart."""
    cfg = _config(tiny_chat_model_dir)
    cfg["domains"]["math"]["accuracy"]["extra_lrs"] = {"lora": [1.0e-3]}
    cfg = load_config(_write(tmp_path, cfg), check_data=False)
    runs, _ = plan(cfg, tmp_path / "out")
    accuracy = [r for r in runs if r.stage == "accuracy"]
    # the tuned sweep's best lr is not known yet (None); the extra lr is runnable at once
    assert sorted((r.arm, r.lr or 0.0) for r in accuracy) == [("lora", 0.0), ("lora", 1.0e-3)]
    assert len({r.folder for r in accuracy}) == 2

    def payload(lr: float, dev: float, err: float) -> dict:
        return {"lr": lr, "seed": 0, "train": {"dev_loss_last": dev}, "sets": {"acc": {"error_rate": err}}}

    diverged, fine, other = payload(5e-3, 2.21, 0.98), payload(5e-4, 0.80, 0.80), payload(5e-3, 0.79, 0.85)
    by_arm, note = study._choose_lrs({"lora": [diverged, fine], "qtha": [other]})
    assert by_arm["lora"] == [fine] and by_arm["lora @ 0.005"] == [diverged] and by_arm["qtha"] == [other]
    assert note[0] == (
        "Several lrs on this model: lora: lr 0.0005 chosen by final dev loss on the training data's dev "
        "split (0.0005: 0.800, 0.005: 2.210)."
    )
    # a run without a finite dev loss ranks last
    nan = payload(1e-3, float("nan"), 0.5)
    assert study._choose_lrs({"lora": [nan, diverged]})[0]["lora"] == [diverged]


def test_second_process_on_one_study_folder_is_refused(
    tiny_chat_model_dir, tmp_path, isolated_env, trained_folders, capsys
):
    path = _write(tmp_path, _config(tiny_chat_model_dir))
    out = tmp_path / "out"
    out.mkdir()
    held = study._lock(out)  # as a running study holds it
    try:
        assert eval_main(["study", "--config", path, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "a study is already running on this folder (pid " in err and "\n" not in err
        assert trained_folders == []
        # the report of a study still running is not refused
        assert eval_main(["study", "--config", path, "--out", str(out), "--report-only", "--json"]) == 0
    finally:
        held.close()
    study._lock(out).close()  # released: the next process takes it


def test_math_fewshot_prompt_and_overlap():
    from evals import math_eval
    from training.data import load

    shots, _ = load("synthetic-math:2")
    items, _ = load("synthetic-math:3", seed=7)
    prompt = math_eval.fewshot_prompt(items[0], shots)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[2]["content"] == shots[0].target and "####" in prompt[2]["content"]
    assert prompt[-1] == items[0].prompt[-1] and prompt[0] == items[0].prompt[0]
    with pytest.raises(ValueError, match="also an evaluation item"):
        math_eval.run(None, [items[0], shots[1]], "base", fewshot=shots)


def test_eval_run_fewshot_option(tiny_chat_model_dir, isolated_env):
    """``qtha-eval run --fewshot N --fewshot-data SPEC``: strict and flexible side by side, bad input refused."""
    from evals.runner import EvalError, run_evaluation
    from tests.conftest import DATA_DIR

    gsm8k = DATA_DIR / "gsm8k" / "train.jsonl"
    if not gsm8k.is_file():
        pytest.skip(f"real data sets not found at {DATA_DIR} (set QTHA_SHARED_DATA)")
    common = dict(task="gsm8k", model=str(tiny_chat_model_dir), artifacts=[], max_tokens=4, batch_size=2)
    summary = run_evaluation(
        data=f"gsm8k:{gsm8k}@-3:",
        fewshot=2,
        fewshot_data=f"gsm8k:{gsm8k}@:2",
        out=str(isolated_env / "rep"),
        **common,
    )
    (base,) = summary["results"]
    assert summary["fewshot"] == 2 and base["shots"] == 2.0 and base["n"] == 3.0
    low, high = base["flexible_error_rate_ci"]
    assert (
        low <= base["flexible_error_rate"] <= high and base["ci_low"] <= base["error_rate"] <= base["ci_high"]
    )
    with pytest.raises(EvalError, match="--fewshot: needs --fewshot-data"):
        run_evaluation(data=f"gsm8k:{gsm8k}@-3:", fewshot=2, out=str(isolated_env / "x"), **common)
    with pytest.raises(EvalError, match="only math tasks"):
        run_evaluation(
            **{**common, "task": "counseling"},
            data="synthetic-counseling:2",
            fewshot=1,
            fewshot_data="synthetic-counseling:1",
            out=str(isolated_env / "x"),
        )
    with pytest.raises(ValueError, match="also an evaluation item"):
        run_evaluation(
            data=f"gsm8k:{gsm8k}@-3:",
            fewshot=1,
            fewshot_data=f"gsm8k:{gsm8k}@-1:",
            out=str(isolated_env / "x"),
            **common,
        )


def test_shipped_study_configs_plan(tmp_path):
    """Every shipped study YAML (CPU and GPU) validates and plans; the CPU one fits its budget."""
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("study*.yaml"))
    assert {f.name for f in files} >= {"study.yaml", "study-qwen2.5-1.5b.yaml"}
    for file in files:
        cfg = load_config(str(file), check_data=False)
        runs, _ = plan(cfg, tmp_path)
        assert all(r.values.get("steps", 200) >= 200 for r in runs), file
        assert not [r.folder for r in runs if r.needs], file
        assert "estimated time left" in study.budget(cfg, tmp_path)
