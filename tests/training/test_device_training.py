"""Training with the circuit on a PennyLane device (parameter-shift gradients through DeviceRunner) and
through a noise model (--train-noise), on the tiny model: the cost estimate up front, the guard, and
refusals of bad input before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training.cli import main as train_main
from training.recipe import TrainConfig, TrainError, train

ONE_MODULE = ["layers.0.self_attn.q_proj"]


@pytest.fixture
def device_config(tiny_train_config):
    """The tiny two-step run, adapting one module on 12 counselling examples (few circuits)."""

    def make(out: Path, **extra) -> TrainConfig:
        values = dict(data="synthetic-counseling:12", targets=ONE_MODULE, dev_limit=2)
        return tiny_train_config(out, **{**values, **extra})

    return make


def test_device_training_estimates_confirms_and_runs_parameter_shift(device_config, tmp_path):
    cfg = device_config(tmp_path / "refused", circuit_device="default.qubit", shots=200)
    with pytest.raises(
        TrainError, match=r"needs up to ([\d,]+) circuits .* confirm with --max-circuits (\d+)"
    ) as err:
        train(cfg, progress=False)
    needed = int(re.search(r"confirm with --max-circuits (\d+)", str(err.value)).group(1))
    assert not (tmp_path / "refused" / "config.json").exists()  # nothing was run

    cfg = device_config(tmp_path / "run", circuit_device="default.qubit", shots=200, max_circuits=needed)
    summary = train(cfg, progress=False)
    device = summary["device"]
    assert device["device"] == "default.qubit" and device["shots"] == 200
    assert device["estimate"]["per_token"] == 1 + 14 * 2 * 1  # forward + parameter-shift circuits per token
    assert 0 < device["circuits"] <= needed
    assert device["jobs"] >= device["circuits"] / 200
    # the circuit's weights moved: its gradient came from the device
    state = load_file(Path(summary["artifact"]) / "adapter_model.safetensors")
    (key,) = [k for k in state if k.endswith("qtha_qnn.weights")]
    init = device_config(tmp_path / "exact", steps=1, lr=1e-12)
    start = load_file(Path(train(init, progress=False)["artifact"]) / "adapter_model.safetensors")
    assert (state[key] - start[key]).abs().max() > 1e-4
    assert (tmp_path / "run" / "device-cache.sqlite").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train-noise", "loud"], "--train-noise: noise 'loud': expected a name in"),
        (["--train-noise", "p1=2"], "expected a probability in [0, 1]; got 2.0"),
        (["--circuit-device", "qiskit.nowhere"], "--circuit-device: 'qiskit.nowhere' is not an installed"),
        (["--circuit-device", "default.qubit", "--shots", "0"], "--shots: expected a positive integer"),
        (["--shots", "100"], "--shots and --max-circuits apply to --circuit-device only"),
        (["--train-noise", "depolarizing", "--variant", "AB"], "expected --method qtha with a circuit"),
        (["--train-noise", "depolarizing", "--circuit-device", "default.qubit"], "expected one of them"),
    ],
)
def test_bad_flags_are_refused_in_one_line_before_any_work(flags, message, tmp_path, capsys):
    assert train_main(["--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_noise_trained_run_records_its_noise(device_config, tmp_path):
    summary = train(device_config(tmp_path / "noisy", train_noise="depolarizing"), progress=False)
    manifest = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())
    assert manifest["training"]["config"]["train_noise"] == "depolarizing"
    assert summary["loss_first"] > 0
