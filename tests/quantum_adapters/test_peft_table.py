"""PEFT's generic checks for every QTHA variant, on small custom models (as PEFT's own
tests/test_custom_models.py runs them for every method).

Adapters start random (``init_weights=False``) so that saving, loading, switching and disabling are seen
in the output; each check says what PEFT users expect of any method.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn

from quantum_adapters import NotMergeableError, QTHAConfig


class MLP(nn.Module):
    """PEFT's test MLP: lin0 (10 -> 20) and lin1 (20 -> 2) adapted."""

    targets = ["lin0", "lin1"]

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.relu = nn.ReLU()
        self.lin1 = nn.Linear(20, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 10) -> (B, 2)
        return self.lin1(self.relu(self.lin0(x)))


class Blocks(nn.Module):
    """Two residual blocks with nested q/v projections (suffix targets, 3-d input (B, T, 12))."""

    targets = ["q", "v"]

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"q": nn.Linear(12, 12, bias=False), "v": nn.Linear(12, 6, bias=False)})
            for _ in range(2)
        )
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 12) -> (B, T, 3)
        for block in self.blocks:
            h = torch.tanh(block["q"](x))
            x = x + torch.cat([block["v"](h), block["v"](h)], dim=-1)
        return self.out(x[..., :6])


MODELS = {"mlp": (MLP, (5, 10)), "blocks": (Blocks, (2, 4, 12))}

VARIANTS = {
    "ABC": dict(r=3, n_layers=2, variant="ABC"),
    "AB": dict(r=3, n_layers=2, variant="AB"),
    "BC": dict(r=2, n_layers=1, variant="BC"),
    "ABC-pennylane": dict(r=2, n_layers=1, variant="ABC", backend="pennylane"),
}

TABLE = [pytest.param(m, v, id=f"{m}-{v}") for m in MODELS for v in VARIANTS]


def _base(model: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[model][0]().eval()


def _config(model: str, variant: str, **kw) -> QTHAConfig:
    kw = {"init_weights": False, "init_seed": 1, "dropout": 0.0, **kw}
    return QTHAConfig(target_modules=MODELS[model][0].targets, **VARIANTS[variant], **kw)


def _x(model: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(MODELS[model][1], generator=torch.Generator().manual_seed(7)).to(dtype)


def _adapter_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "qtha_" in n}


@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_init_weights_true_is_the_identity_and_false_a_random_delta(model, variant):
    base = _base(model)
    with torch.no_grad():
        expected = base(_x(model))
        identity = get_peft_model(copy.deepcopy(base), _config(model, variant, init_weights=True)).eval()
        torch.testing.assert_close(identity(_x(model)), expected, rtol=0, atol=1e-6)
        rand = get_peft_model(copy.deepcopy(base), _config(model, variant)).eval()
        assert (rand(_x(model)) - expected).abs().max() > 1e-3
    # every part starts non-zero, the last MPO core (or BC's W_B) included
    params = _adapter_params(rand)
    assert params and all(p.detach().abs().sum() > 0 for p in params.values()), [
        n for n, p in params.items() if not p.detach().any()
    ]
    zero = [n for n, p in _adapter_params(identity).items() if not p.detach().any()]
    assert zero and all(("mpo_b" in n and n.endswith(".core3")) or "w_b" in n for n in zero), zero


@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_save_load_round_trip(tmp_path, model, variant):
    base = _base(model)
    with torch.no_grad():
        base_out = base(_x(model))
    peft_model = get_peft_model(copy.deepcopy(base), _config(model, variant)).eval()
    with torch.no_grad():
        expected = peft_model(_x(model))
    assert (expected - base_out).abs().max() > 1e-3
    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(_base(model), tmp_path).eval()
    assert loaded.peft_config["default"].init_weights is False
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x(model)), expected, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded for inference by default


@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_multiple_adapters_switch_and_delete(model, variant):
    peft_model = get_peft_model(_base(model), _config(model, variant)).eval()
    peft_model.add_adapter("other", _config(model, variant, init_seed=2))
    peft_model.eval()
    with torch.no_grad():
        first = peft_model(_x(model))
        peft_model.set_adapter("other")
        other = peft_model(_x(model))
        peft_model.set_adapter("default")
        again = peft_model(_x(model))
    assert (first - other).abs().max() > 1e-3
    torch.testing.assert_close(again, first, rtol=0, atol=0)

    peft_model.delete_adapter("other")
    assert not any(".other." in n for n, _ in peft_model.named_parameters())
    assert set(peft_model.peft_config) == {"default"}
    with torch.no_grad():
        torch.testing.assert_close(peft_model(_x(model)), first, rtol=0, atol=0)


@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_disable_adapter_gives_the_base_output(model, variant):
    base = _base(model)
    with torch.no_grad():
        expected = base(_x(model))
    peft_model = get_peft_model(copy.deepcopy(base), _config(model, variant)).eval()
    with torch.no_grad():
        with peft_model.disable_adapter():
            disabled = peft_model(_x(model))
        enabled = peft_model(_x(model))
    torch.testing.assert_close(disabled, expected, rtol=0, atol=0)
    assert (enabled - expected).abs().max() > 1e-3


@pytest.mark.parametrize("init_weights", [True, False])
@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_only_adapter_parameters_get_gradients(model, variant, init_weights):
    peft_model = get_peft_model(_base(model), _config(model, variant, init_weights=init_weights))
    peft_model.train()
    peft_model(_x(model)).pow(2).sum().backward()
    for name, p in peft_model.named_parameters():
        if "qtha_" in name:
            assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert any(p.grad.abs().sum() > 0 for p in _adapter_params(peft_model).values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "no-autocast"])
@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_adapter_dtype_follows_autocast_adapter_dtype(tmp_path, model, variant, dtype, autocast):
    """PEFT's rule, as for LoRA: by default bf16/fp16 adapters are upcast to float32; with
    ``autocast_adapter_dtype=False`` they stay in the base model's dtype (the circuit still runs in
    float32 inside)."""
    want = torch.float32 if autocast else dtype
    peft_model = get_peft_model(
        _base(model).to(dtype), _config(model, variant), autocast_adapter_dtype=autocast
    ).eval()
    assert {p.dtype for p in _adapter_params(peft_model).values()} == {want}
    x = _x(model, dtype)
    with torch.no_grad():
        folded = peft_model(x)  # the inference path
    with torch.enable_grad():
        unfolded = peft_model(x)  # the differentiable path
    assert folded.dtype == dtype and torch.isfinite(folded.float()).all()
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(folded.float(), unfolded.detach().float(), rtol=0, atol=tol)
    unfolded.float().pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == want for p in _adapter_params(peft_model).values())

    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(_base(model).to(dtype), tmp_path, autocast_adapter_dtype=autocast)
    assert {p.dtype for p in _adapter_params(loaded).values()} == {want}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), folded, rtol=0, atol=0)


@pytest.mark.parametrize(("model", "variant"), TABLE)
def test_merging_is_refused_naming_why(model, variant):
    peft_model = get_peft_model(_base(model), _config(model, variant))
    reason = "not implemented for QTHA" if variant == "AB" else "circuit acts on each token"
    with pytest.raises(NotMergeableError, match=reason):
        peft_model.merge_and_unload()
    with pytest.raises(NotMergeableError, match=reason):
        peft_model.merge_adapter()
    layer = next(m for m in peft_model.modules() if hasattr(m, "qtha_w_a"))
    with pytest.raises(NotMergeableError, match=reason):
        layer.get_delta_weight("default")
