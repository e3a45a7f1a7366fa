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
