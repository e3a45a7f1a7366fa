"""Generic adapter checks, one table for every adapter variant (and PEFT's LoRA as the baseline)."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from quantum_adapters import NotMergeableError, QTHAConfig
from quantum_adapters.artifact import ArtifactError, check_base_model, freeze, load_frozen, verify
from quantum_adapters.models import resolve_model

from .conftest import make_tiny_model

VARIANTS = [
    pytest.param(lambda: QTHAConfig(r=4, n_layers=2, variant="ABC", init_seed=1), id="qtha-ABC"),
    pytest.param(lambda: QTHAConfig(r=4, n_layers=2, variant="AB", init_seed=1), id="qtha-AB"),
    pytest.param(lambda: QTHAConfig(r=3, n_layers=1, variant="BC", init_seed=1), id="qtha-BC"),
    pytest.param(lambda: LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), id="lora"),
]
ARCHS = ["llama", "qwen2"]


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(seed))


def _perturb(model: torch.nn.Module) -> None:
    """Move every adapter tensor away from its (zero-delta) initialisation; eval mode (no dropout)."""
    model.eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "qtha_" in name or "lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("make_config", VARIANTS)
def test_initial_output_equals_base_and_is_finite(arch, make_config):
    base = make_tiny_model(arch)
    with torch.no_grad():
        expected = base(_ids()).logits
    model = get_peft_model(copy.deepcopy(base), make_config())
    with torch.no_grad():
        out = model(_ids()).logits
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_config", VARIANTS)
def test_only_adapter_params_get_gradients(make_config):
    model = get_peft_model(make_tiny_model(), make_config())
    model.train()
    model(_ids(), labels=_ids()).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "no trainable parameters"
    assert all(("qtha_" in n or "lora_" in n) for n in trainable), sorted(trainable)[:5]
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    # the zero-initialised last map gets a non-zero gradient, so training can move away from the base
    zero_init = [p for p in model.parameters() if p.requires_grad and not p.detach().any()]
    assert zero_init and all(p.grad.abs().sum() > 0 for p in zero_init)


@pytest.mark.parametrize("make_config", VARIANTS)
def test_disabled_adapter_gives_base_output(make_config):
    base = make_tiny_model()
    with torch.no_grad():
        expected = base(_ids()).logits
    model = get_peft_model(copy.deepcopy(base), make_config())
    _perturb(model)
    with torch.no_grad():
        adapted = model(_ids()).logits
        with model.disable_adapter():
            disabled = model(_ids()).logits
    assert not torch.allclose(adapted, expected, atol=1e-4), "perturbed adapter should change the output"
    torch.testing.assert_close(disabled, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_config", VARIANTS)
def test_save_pretrained_round_trip(tmp_path, make_config):
    model = get_peft_model(make_tiny_model(), make_config())
    _perturb(model)
    with torch.no_grad():
        expected = model(_ids()).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(make_tiny_model(), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(_ids()).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_config", VARIANTS[:3])
def test_several_named_adapters(make_config):
    model = get_peft_model(make_tiny_model(), make_config(), adapter_name="math")
    _perturb(model)
    model.add_adapter("talk", make_config())
    with torch.no_grad():
        model.set_adapter("math")
        out_math = model(_ids()).logits
        model.set_adapter("talk")  # fresh adapter: zero delta
        out_talk = model(_ids()).logits
        with model.disable_adapter():
            out_base = model(_ids()).logits
    torch.testing.assert_close(out_talk, out_base, rtol=0, atol=1e-6)
    assert not torch.allclose(out_math, out_base, atol=1e-4)
    assert model.active_adapter == "talk"


def test_merge_is_refused_with_the_reason():
    model = get_peft_model(make_tiny_model(), QTHAConfig(r=2, n_layers=1))
    with pytest.raises(NotMergeableError, match="circuit acts on each token"):
        model.merge_and_unload()
    with pytest.raises(NotMergeableError):
        model.merge_adapter()


def test_adapter_math_runs_in_float32_for_bf16_base():
    base = make_tiny_model().to(torch.bfloat16)
    model = get_peft_model(base, QTHAConfig(r=2, n_layers=1))
    dtypes = {p.dtype for n, p in model.named_parameters() if "qtha_" in n}
    assert dtypes == {torch.float32}
    _perturb(model)
    with torch.no_grad():
        out = model(_ids()).logits  # the folded inference path, adding a float32 delta to a bf16 output
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    with torch.enable_grad():
        unfolded = model(_ids()).logits.detach()
    torch.testing.assert_close(out.float(), unfolded.float(), rtol=0, atol=0.05)


@pytest.mark.parametrize("make_config", VARIANTS)
def test_frozen_artifact_loads_identical_and_refuses_tampering(tmp_path, tiny_model_dirs, make_config):
    source = resolve_model(str(tiny_model_dirs["llama"]))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), make_config())
    _perturb(model)
    model.eval()
    with torch.no_grad():
        expected = model(_ids()).logits
    art = freeze(model, tmp_path / "art", base=source, training={"steps": 2}, metrics={"loss": 1.0})
    manifest, _ = verify(art)
    assert manifest["base_model"]["sha256"] == source.sha256
    assert manifest["parameters"]["trainable"] == sum(
        p.numel() for n, p in model.named_parameters() if "qtha_" in n or "lora_" in n
    )
    loaded, _ = load_frozen(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), art, base=source)
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(_ids()).logits, expected, rtol=0, atol=1e-6)

    weights = art / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"adapter_model\.safetensors: sha256 mismatch"):
        load_frozen(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), art)


def test_artifact_for_another_base_model_is_refused(tmp_path, tiny_model_dirs):
    llama, qwen = resolve_model(str(tiny_model_dirs["llama"])), resolve_model(str(tiny_model_dirs["qwen2"]))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), QTHAConfig(r=2, n_layers=1)
    )
    art = freeze(model, tmp_path / "art", base=llama)
    with pytest.raises(ArtifactError, match="made for base model") as err:
        load_frozen(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen2"]), art, base=qwen)
    assert llama.name in str(err.value) and qwen.name in str(err.value)
    assert f"but the loaded base model is {qwen.name} (sha256 {qwen.sha256[:12]}...)" in str(err.value)
    # the same check, for callers that name where their base model came from
    manifest, _ = verify(art)
    check_base_model(manifest, llama, art)
    with pytest.raises(
        ArtifactError, match=rf"made for base model {llama.name} .*but --model is {qwen.name} "
    ):
        check_base_model(manifest, qwen, art, base_is="--model")


def test_freeze_never_overwrites_and_leaves_no_partial_artifact(tmp_path, tiny_model_dirs):
    source = resolve_model(str(tiny_model_dirs["llama"]))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), QTHAConfig(r=2, n_layers=1)
    )
    art = freeze(model, tmp_path / "art", base=source)
    with pytest.raises(ArtifactError, match="already exists"):
        freeze(model, art, base=source)
    with pytest.raises(ArtifactError, match="no tensors"):
        freeze(model, tmp_path / "bad", base=source, adapter_name="missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_unknown_target_module_lists_linear_layers():
    with pytest.raises(ValueError, match="q_proj"):
        get_peft_model(make_tiny_model(), QTHAConfig(r=2, target_modules=["nope_proj"]))


@pytest.mark.parametrize("make_config", VARIANTS[:3])
def test_inference_path_equals_training_path_and_follows_weight_changes(make_config):
    """Without gradients the layer folds its linear maps (and the circuit's fixed unitaries) together:
    the same logits as the differentiable path, rebuilt after every in-place weight change."""
    model = get_peft_model(make_tiny_model(), make_config())
    _perturb(model)
    with torch.no_grad():
        folded = model(_ids()).logits
    with torch.enable_grad():
        unfolded = model(_ids()).logits.detach()
    torch.testing.assert_close(folded, unfolded, rtol=0, atol=1e-5)
    _perturb(model)  # an in-place update, as an optimiser step makes
    with torch.no_grad():
        after = model(_ids()).logits
    with torch.enable_grad():
        expected = model(_ids()).logits.detach()
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-5)
    assert (after - folded).abs().max() > 1e-4


def test_dropout_in_training_mode_keeps_the_unfolded_path():
    model = get_peft_model(make_tiny_model(), QTHAConfig(r=4, n_layers=2, dropout=0.5, init_seed=1))
    _perturb(model)
    model.train()
    with torch.no_grad():
        a, b = model(_ids()).logits, model(_ids()).logits
    assert (a - b).abs().max() > 1e-6, "dropout was skipped"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(_ids()).logits, model(_ids()).logits, rtol=0, atol=0)
