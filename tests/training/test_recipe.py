"""The training recipe end to end on a tiny real model: loss, resume, data parallel, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import training.recipe as recipe
from training.cli import main as train_main
from training.recipe import ConfigMismatch, StepInfo, TrainConfig, TrainError, train

ROOT = Path(__file__).resolve().parents[2]


def _first_batch_loss(cfg: TrainConfig) -> float:
    """The first step's loss recomputed independently of the recipe's loop."""
    from peft import get_peft_model

    from quantum_adapters.models import load_base_model
    from training.data import load_many, split
    from training.tokenize import collate, encode_all

    examples, report = load_many(cfg.data, seed=cfg.seed)
    train_ex, _ = split(examples, dev_fraction=cfg.dev_fraction, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tok, _ = load_base_model(cfg.model)
    feats = encode_all(tok, train_ex, cfg.max_len, report)
    model = get_peft_model(model, recipe._peft_config(cfg))
    order = recipe._batches_for_epoch(len(feats), cfg.batch_size, cfg.seed, 0)[0]
    batch = collate([feats[i] for i in order], tok.pad_token_id)
    model.train()
    return float(model(**batch).loss.detach())


def test_two_step_run_loss_matches_independent_computation(tiny_train_config, tmp_path, isolated_env):
    cfg = tiny_train_config(tmp_path / "run")
    seen: list[StepInfo] = []
    summary = train(cfg, progress=True, callbacks=[seen.append])  # the bar is a callback too
    assert summary["steps"] == 2
    expected = _first_batch_loss(cfg)
    assert summary["loss_first"] == pytest.approx(expected, rel=1e-5)
    assert (
        5.0 < summary["loss_first"] < 15.0
    )  # random tiny model over a 49k vocabulary: about ln(49152) = 10.8
    art = Path(summary["artifact"])
    assert sorted(p.name for p in art.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "circuit.qasm",
        "manifest.json",
        "manifest.sha256",
    ]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["training"]["domain"] == "math" and manifest["training"]["system_prompt"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in steps)
    assert any("dev_loss" in r for r in rows)
    # the callbacks saw every step as metrics.jsonl recorded it, and the dev loss where it was measured
    assert [(i.step, i.total_steps, i.loss, i.lr) for i in seen] == [
        (r["step"], 2, r["loss"], r["lr"]) for r in steps
    ]
    assert [i.dev_loss for i in seen] == [None, rows[-1]["dev_loss"]] and summary["dev_loss_last"] == rows[
        -1
    ]["dev_loss"]


def test_resume_equals_uninterrupted_run(tiny_train_config, tmp_path, isolated_env):
    straight = train(tiny_train_config(tmp_path / "a", steps=4, save_every=2), progress=False)

    def stop_at_two(info: StepInfo) -> None:
        if info.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_train_config(tmp_path / "b", steps=4, save_every=2), progress=False, callbacks=[stop_at_two]
        )
    assert not (tmp_path / "b" / "artifact").exists()
    assert (tmp_path / "b" / "checkpoints" / "step-0000002").is_dir()
    # as if a kill -9 had come later: a step past the checkpoint logged, the next one torn mid-write
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 99.0, "lr": 0.0, "tokens_per_s": 1.0, "elapsed": 1.0}\n{"step": 4, "lo')
    resumed = train(tiny_train_config(tmp_path / "b", steps=4, save_every=2), resume=True, progress=False)

    a = load_file(Path(straight["artifact"]) / "adapter_model.safetensors")
    b = load_file(Path(resumed["artifact"]) / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)

    def losses(run):
        return [
            json.loads(x)["loss"]
            for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in x
        ]

    assert losses("a") == pytest.approx(losses("b"), rel=1e-6)


def test_resume_with_another_config_is_refused_naming_the_keys(tiny_train_config, tmp_path, isolated_env):
    train(tiny_train_config(tmp_path / "run", steps=1), progress=False)
    (tmp_path / "run" / "artifact").rename(tmp_path / "run" / "artifact-old")
    with pytest.raises(ConfigMismatch, match=r"lr: saved 0\.01, now 0\.5.*|r: saved") as err:
        train(tiny_train_config(tmp_path / "run", steps=1, lr=0.5, r=3), resume=True, progress=False)
    assert "lr" in str(err.value) and "r: saved 2, now 3" in str(err.value)


def test_bad_inputs_fail_clearly(tiny_train_config, tmp_path, isolated_env):
    with pytest.raises(TrainError, match="max-len 8: every training prompt is longer"):
        train(tiny_train_config(tmp_path / "short", max_len=8), progress=False)
    with pytest.raises(TrainError, match="exactly one of --steps or --epochs"):
        tiny_train_config(tmp_path / "x", epochs=1.0)
    train(tiny_train_config(tmp_path / "done", steps=1), progress=False)
    with pytest.raises(TrainError, match="already holds a run"):
        train(tiny_train_config(tmp_path / "done", steps=1), progress=False)


def test_cli_reports_malformed_data_without_traceback(tiny_chat_model_dir, tmp_path, isolated_env, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n{"question": "oops"\n')
    code = train_main(
        [
            "--model",
            str(tiny_chat_model_dir),
            "--data",
            f"gsm8k:{bad}",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl" in err and "line 2" in err and "Traceback" not in err


def test_cli_json_summary(tiny_chat_model_dir, tmp_path, isolated_env, capsys):
    code = train_main(
        [
            "--model",
            str(tiny_chat_model_dir),
            "--data",
            "synthetic-counseling:30",
            "--method",
            "lora",
            "--r",
            "2",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("loss_first", "loss_last", "steps", "artifact", "trainable_params", "seconds"):
        assert key in summary
    assert summary["steps"] == 2 and Path(summary["artifact"]).is_dir()


@pytest.mark.slow
def test_torchrun_two_processes_write_one_artifact(tiny_chat_model_dir, tmp_path):
    env = {**os.environ, "QTHA_REGISTRY": str(tmp_path / "reg.db"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "training.cli",
        "--model",
        str(tiny_chat_model_dir),
        "--data",
        "synthetic-math:40",
        "--rank",
        "2",
        "--layers",
        "1",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jsons = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(jsons) == 1  # only the main process prints and writes
    assert [p.name for p in tmp_path.iterdir() if p.name == "ddp"] == ["ddp"]
    assert (out / "artifact" / "manifest.json").is_file()
    assert not any(p.name.startswith(".artifact") for p in out.iterdir())
