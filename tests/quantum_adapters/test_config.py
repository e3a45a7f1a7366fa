"""Config validation: every error names the field, the value and what is allowed."""

from __future__ import annotations

import json

import pytest
from peft import PeftConfig

from quantum_adapters import QTHAConfig, default_bottleneck


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 1}, r"QTHAConfig\.r: expected an integer >= 2.*got 1"),
        ({"r": 40}, r"QTHAConfig\.r: expected at most 16.*got 40"),
        ({"n_layers": 0}, r"QTHAConfig\.n_layers: expected an integer >= 1.*got 0"),
        ({"bottleneck": 2, "r": 4}, r"QTHAConfig\.bottleneck: .*at least r.*got 2"),
        ({"bond_dim": 0}, r"QTHAConfig\.bond_dim"),
        ({"alpha": -1}, r"QTHAConfig\.alpha: expected a positive number; got -1"),
        ({"dropout": 1.5}, r"QTHAConfig\.dropout: expected a number in \[0, 1\); got 1\.5"),
        ({"variant": "XYZ"}, r"QTHAConfig\.variant: expected one of ABC, AB, BC; got 'XYZ'"),
        ({"backend": "gpu"}, r"QTHAConfig\.backend: expected one of fast, pennylane; got 'gpu'"),
        ({"device": "lightning.qubit"}, r"QTHAConfig\.device: .*backend='pennylane'"),
        (
            {"backend": "pennylane", "device": "origin.wukong"},
            r"QTHAConfig\.device: expected an installed PennyLane device \(.*default\.qubit.*\); got 'origin\.wukong'",
        ),
    ],
)
def test_config_errors_name_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QTHAConfig(**kwargs)


def test_defaults_follow_the_reference():
    c = QTHAConfig()
    assert (c.r, c.n_layers, c.bond_dim, c.mpo_cores, c.variant) == (8, 8, 8, 4, "ABC")
    assert c.target_modules == {"q_proj", "v_proj"}
    assert c.scaling == c.alpha / c.r
    assert QTHAConfig(r=4).n_layers == 4


@pytest.mark.parametrize(
    ("d_in", "d_out", "m"),
    [(3584, 3584, 256), (3584, 512, 256), (576, 576, 32), (576, 192, 32), (64, 64, 16), (1536, 256, 128)],
)
def test_default_bottleneck_rule(d_in, d_out, m):
    assert default_bottleneck(d_in, d_out) == m


def test_config_round_trips_through_json(tmp_path):
    QTHAConfig(r=6, n_layers=3, variant="BC").save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "adapter_config.json").read_text())
    assert raw["peft_type"] == "QTHA"
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, QTHAConfig) and (loaded.r, loaded.n_layers, loaded.variant) == (6, 3, "BC")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"param_budget": 0},
            ValueError,
            r"QTHAConfig\.param_budget: expected a fraction .* \(0, 1\]; got 0",
        ),
        ({"param_budget": 1.5}, ValueError, r"QTHAConfig\.param_budget: expected .*; got 1\.5"),
        ({"param_budget": True}, ValueError, r"QTHAConfig\.param_budget: expected .*; got True"),
        (
            {"param_budget": 0.3, "bottleneck": 32},
            ValueError,
            r"expected bottleneck unset.*got bottleneck=32",
        ),
        ({"param_budget": 0.3, "variant": "BC"}, ValueError, r"expected variant ABC or AB.*got variant 'BC'"),
        ({"init_weights": "yes"}, TypeError, r"QTHAConfig\.init_weights: expected True or False; got 'yes'"),
    ],
)
def test_new_fields_are_validated(kwargs, error, message):
    with pytest.raises(error, match=message):
        QTHAConfig(**kwargs)


# (d_in, d_out) of q_proj and v_proj: SmolLM2-135M (9 heads, 3 KV heads of 64) and Qwen2.5-0.5B (2 KV heads)
SHAPES = {"smollm2-135m": [(576, 576), (576, 192)], "qwen2.5-0.5b": [(896, 896), (896, 128)]}


@pytest.mark.parametrize("model", sorted(SHAPES))
@pytest.mark.parametrize("r", [4, 6, 8])
@pytest.mark.parametrize("variant", ["ABC", "AB"])
@pytest.mark.parametrize("budget", [0.3, 0.24])
def test_param_budget_is_met_with_a_valid_mpo(model, r, variant, budget):
    from quantum_adapters.config import adapter_parameters
    from quantum_adapters.mpo import MPOLinear, mpo_shapes

    config = QTHAConfig(r=r, variant=variant, param_budget=budget)
    for d_in, d_out in SHAPES[model]:
        m, bond = config.mpo_layout(d_in, d_out)
        assert r <= m <= default_bottleneck(d_in, d_out) and m & (m - 1) == 0 and 1 <= bond <= config.bond_dim
        count = adapter_parameters(
            d_in, d_out, r=r, n_layers=config.n_layers, variant=variant, bottleneck=m, bond_dim=bond
        )
        assert count <= budget * r * (d_in + d_out)
        # the chosen layout is the largest that fits: one more bond (if allowed) would exceed the budget
        if bond < config.bond_dim:
            bigger = adapter_parameters(
                d_in, d_out, r=r, n_layers=config.n_layers, variant=variant, bottleneck=m, bond_dim=bond + 1
            )
            assert bigger > budget * r * (d_in + d_out)
        for a, b in ((d_in, m), (m, d_out)):  # a real MPO of those sizes, its dense map of the right shape
            mpo = MPOLinear(a, b, config.mpo_cores, bond)
            assert mpo.to_dense().shape == (a, b)
            assert [tuple(p.shape) for p in mpo.parameters()] == mpo_shapes(a, b, config.mpo_cores, bond)


def test_adapter_parameters_matches_a_built_layer():
    import torch

    from quantum_adapters.config import adapter_parameters
    from quantum_adapters.layer import QTHALinear

    for variant in ("ABC", "AB", "BC"):
        config = QTHAConfig(r=4, n_layers=2, variant=variant, param_budget=0.3 if variant != "BC" else None)
        layer = QTHALinear(torch.nn.Linear(576, 192, bias=False), "default", config)
        built = sum(p.numel() for n, p in layer.named_parameters() if "qtha_" in n)
        m, bond = config.mpo_layout(576, 192)
        assert built == adapter_parameters(
            576, 192, r=4, n_layers=2, variant=variant, bottleneck=m, bond_dim=bond
        )


def test_param_budget_too_small_for_a_layer_names_it():
    config = QTHAConfig(r=8, param_budget=0.01)
    with pytest.raises(ValueError, match=r"param_budget: .*576 -> 192 layer.*r=8.*smallest QTHA there"):
        config.mpo_layout(576, 192)


def test_default_layout_is_unchanged_by_the_new_fields():
    config = QTHAConfig(r=4)
    assert config.param_budget is None and config.init_weights is True
    assert config.mpo_layout(576, 576) == (32, 8) and config.mpo_layout(3584, 512) == (256, 8)
