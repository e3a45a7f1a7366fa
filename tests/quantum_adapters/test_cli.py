"""``qtha-adapters``: parameter counts from a config alone, artifact verification, OpenQASM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from quantum_adapters import QTHAConfig
from quantum_adapters.artifact import freeze
from quantum_adapters.cli import count_params, main
from quantum_adapters.models import resolve_model

ROOT = Path(__file__).resolve().parents[2]


def test_params_on_qwen_7b_config_meets_the_reference_ratio(capsys):
    assert (
        main(
            [
                "params",
                "--config",
                str(ROOT / "configs/hf/qwen2.5-7b.json"),
                "--r",
                "8",
                "--targets",
                "q_proj,v_proj",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # LoRA r=8 on q_proj + v_proj of 28 layers: 28 * 8 * ((3584 + 3584) + (3584 + 512))
    assert out["lora_trainable"] == 28 * 8 * (3584 * 2 + 3584 + 512)
    assert out["ratio"] <= 0.30 and out["qtha_trainable"] == pytest.approx(
        out["ratio"] * out["lora_trainable"]
    )


def test_params_counts_match_a_real_model(tiny_model_dirs):
    cfg = tiny_model_dirs["llama"] / "config.json"
    counted = count_params(cfg, r=3, n_layers=2)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), QTHAConfig(r=3, n_layers=2)
    )
    assert counted["qtha_trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_params_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "c.json"
    bad.write_text('{"hidden_size": 8,}')
    assert main(["params", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "invalid JSON at line 1" in err and "Traceback" not in err


def test_verify_and_qasm(tmp_path, tiny_model_dirs, capsys):
    source = resolve_model(str(tiny_model_dirs["llama"]))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), QTHAConfig(r=2, n_layers=1)
    )
    art = freeze(model, tmp_path / "art", base=source)
    assert main(["verify", str(art)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert main(["qasm", str(art)]) == 0
    qasm = capsys.readouterr().out
    assert "OPENQASM" in qasm and qasm.count("crz(") == 4 and (art / "circuit.qasm").read_text() == qasm
    manifest = json.loads((art / "manifest.json").read_text())
    module = manifest["circuit"]["modules"][-1]
    assert main(["qasm", str(art), "--module", module]) == 0 and module in capsys.readouterr().out
    assert main(["qasm", str(art), "--module", "nope"]) == 2
    assert "modules with circuits" in capsys.readouterr().err
    os.chmod(art / "adapter_config.json", 0o644)
    (art / "adapter_config.json").write_text(
        (art / "adapter_config.json").read_text().replace('"r": 2', '"r": 3')
    )
    assert main(["verify", str(art)]) == 2
    err = capsys.readouterr().err
    assert "adapter_config.json: sha256 mismatch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_params_with_a_budget_meets_the_reference_ratio_on_small_models(name, capsys):
    config = str(ROOT / f"configs/hf/{name}.json")
    default = count_params(config, r=4)
    assert default["ratio"] > 0.8  # the default sizes: about LoRA's count on these small layers
    assert main(["params", "--config", config, "--r", "4", "--param-budget", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["lora_trainable"] == default["lora_trainable"]
    assert 0.2 <= out["ratio"] <= 0.30
    assert len(out["layouts"]) == 2 and all(v["bond_dim"] < 8 for v in out["layouts"].values())


def test_params_default_counts_on_smollm2_are_unchanged():
    out = count_params(ROOT / "configs/hf/smollm2-135m.json", r=4)
    assert (out["qtha_trainable"], out["lora_trainable"]) == (191_160, 230_400)


def test_params_bad_budget_is_one_line(capsys):
    config = str(ROOT / "configs/hf/smollm2-135m.json")
    assert main(["params", "--config", config, "--param-budget", "2"]) == 2
    err = capsys.readouterr().err
    assert (
        "param_budget: expected a fraction" in err and "got 2.0" in err and len(err.strip().splitlines()) == 1
    )


def test_default_targets_are_the_configs():
    """``--targets`` left out, count_params's default and QTHAModel's per-architecture default all take
    config.DEFAULT_TARGET_MODULES."""
    from quantum_adapters.cli import build_parser
    from quantum_adapters.config import DEFAULT_TARGET_MODULES
    from quantum_adapters.model import QTHAModel

    args = build_parser().parse_args(["params", "--config", "c.json"])
    assert args.targets.split(",") == list(DEFAULT_TARGET_MODULES)
    assert QTHAModel.target_module_mapping["llama"] == list(DEFAULT_TARGET_MODULES)
    config = str(ROOT / "configs/hf/qwen2.5-7b.json")
    assert count_params(config, r=4) == count_params(config, r=4, targets=list(DEFAULT_TARGET_MODULES))
