"""--train-noise-rescale: each QW divided by its circuit's gain under the training noise, its learning
rate raised to match, so that the quantum path trains as it would without noise; on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from quantum_adapters.layer import QTHALinear
from quantum_adapters.models import load_base_model
from quantum_adapters.noise import noise_gain
from training.cli import main as train_main
from training.recipe import TrainConfig, _param_groups, _peft_config, _rescale_for_noise, train


def _qtha_modules(model) -> list[QTHALinear]:
    return [m for m in model.modules() if isinstance(m, QTHALinear)]


def test_rescale_divides_every_qw_by_its_circuits_gain_and_scales_its_lr(tiny_train_config, tmp_path):
    cfg = tiny_train_config(
        tmp_path / "r", train_noise="depolarizing", train_noise_rescale=True, weight_decay=0.1
    )
    torch.manual_seed(0)
    base, _, _ = load_base_model(cfg.model)
    model = get_peft_model(base, _peft_config(cfg))
    modules = _qtha_modules(model)
    assert modules
    before = {id(m): m.qtha_qw["default"].weight.detach().clone() for m in modules}
    scales = _rescale_for_noise(model, "depolarizing")
    assert len(scales) == len(modules)
    for m in modules:
        gain = noise_gain(m.qtha_qnn["default"].weights, "depolarizing")
        assert 0 < gain < 1
        weight = m.qtha_qw["default"].weight
        assert scales[id(weight)] == pytest.approx(1 / gain)
        torch.testing.assert_close(weight.detach(), before[id(m)] / gain)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = _param_groups(cfg, params, scales)
    assert sum(len(g["params"]) for g in groups) == len(params)
    assert "lr" not in groups[0] and all(id(p) not in scales for p in groups[0]["params"])
    for group in groups[1:]:
        (p,) = group["params"]
        assert group["lr"] == pytest.approx(cfg.lr * scales[id(p)])
        assert group["weight_decay"] == pytest.approx(cfg.weight_decay / scales[id(p)])


def test_adamw_on_the_rescaled_qw_follows_training_qw_times_gain_at_the_plain_lr():
    # the claim the groups rest on: QW = V / g with AdamW on V at (lr, wd) moves QW exactly as AdamW on
    # QW at (lr / g, wd * g) started from V0 / g (up to Adam's eps)
    gain, lr, wd = 0.03, 5e-3, 0.1
    generator = torch.Generator().manual_seed(0)
    v0, target = torch.randn(4, 4, generator=generator), torch.randn(4, 4, generator=generator)
    x = torch.randn(32, 4, generator=generator)
    v = v0.clone().requires_grad_()
    qw = (v0 / gain).clone().requires_grad_()
    cfg = TrainConfig(lr=lr, weight_decay=wd)
    opt_v = torch.optim.AdamW([v], lr=lr, weight_decay=wd, eps=1e-12)
    opt_qw = torch.optim.AdamW(
        _param_groups(cfg, [qw], {id(qw): 1 / gain}), lr=lr, weight_decay=wd, eps=1e-12
    )
    for _ in range(20):
        for opt, w in ((opt_v, v / gain), (opt_qw, qw)):
            opt.zero_grad()
            # the loss sees the noisy circuit's output (gain x signal) through QW
            ((x * gain) @ w.t() - x @ target.t()).square().mean().backward()
            opt.step()
    torch.testing.assert_close(qw.detach(), v.detach() / gain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(qw.detach(), v0 / gain)


def test_rescaled_noise_run_trains_and_records_the_option(tiny_train_config, tmp_path):
    cfg = tiny_train_config(
        tmp_path / "run",
        data="synthetic-counseling:12",
        targets=["layers.0.self_attn.q_proj"],
        train_noise="depolarizing",
        train_noise_rescale=True,
    )
    summary = train(cfg, progress=False)
    manifest = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())
    assert manifest["training"]["config"]["train_noise_rescale"] is True
    assert summary["loss_first"] > 0


def test_rescale_without_train_noise_is_refused_in_one_line(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path / "r"), "--train-noise-rescale"]) == 2
    err = capsys.readouterr().err
    assert "--train-noise-rescale applies to --train-noise only; add --train-noise NAME" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
