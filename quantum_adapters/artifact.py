"""Frozen adapter artifacts: the contract between training, evaluation and serving.

An artifact is a directory, written once and never changed:

    adapter_config.json         the PEFT config (QTHA or LoRA)
    adapter_model.safetensors   the adapter's tensors (safetensors only, no pickle)
    circuit.qasm                QTHA with a circuit: the first adapted module's trained circuit (OpenQASM 3,
                                input angles as named parameters); `qtha-adapters qasm` prints any module
    manifest.json               base-model identity and sha256, method and hyper-parameters, circuit
                                description, parameter counts, training summary, metrics, and the
                                sha256 of every other file

Writing goes to a temporary sibling directory that is renamed into place, so a failure never leaves
a half-written artifact. Loading verifies every hash before reading a tensor and refuses a mismatch,
then loads the tensors with ``requires_grad=False``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from .circuit import describe, to_qasm
from .models import ModelSource

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "adapter_modules",
    "freeze",
    "load_frozen",
    "module_qasm",
    "read_manifest",
    "verify",
]

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, QASM_FILE = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "manifest.json",
    "circuit.qasm",
)


class ArtifactError(ValueError):
    """An artifact is missing, tampered with, or made for another base model."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def adapter_modules(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the adapted modules that carry a circuit (keys '<module>.qtha_qnn.weights')."""
    return sorted(k.removesuffix(".qtha_qnn.weights") for k in state if k.endswith(".qtha_qnn.weights"))


def module_qasm(
    state: dict[str, torch.Tensor], module: str | None = None, inputs: torch.Tensor | None = None
) -> str:
    """OpenQASM of one adapted module's trained circuit (default: the first); unknown module -> error."""
    modules = adapter_modules(state)
    if not modules:
        raise ArtifactError("this adapter has no quantum circuit (variant AB, or a LoRA adapter)")
    name = module or modules[0]
    if name not in modules:
        raise ArtifactError(f"no circuit for module {name!r}; modules with circuits: {', '.join(modules)}")
    header = f"// qtha circuit of module {name}\n"
    return header + to_qasm(state[f"{name}.qtha_qnn.weights"], inputs)


def freeze(
    model: PeftModel,
    out_dir: str | Path,
    *,
    base: ModelSource,
    adapter_name: str = "default",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write adapter ``adapter_name`` of ``model`` as a frozen artifact at ``out_dir`` (must not exist)."""
    out = Path(out_dir)
    if out.exists():
        raise ArtifactError(
            f"{out} already exists: a frozen artifact is never overwritten; choose another path"
        )
    if adapter_name not in getattr(model, "peft_config", {}):
        raise ArtifactError(
            f"adapter {adapter_name!r} has no tensors to freeze (the model has no such adapter)"
        )
    config: PeftConfig = model.peft_config[adapter_name]
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()
    }
    if not state:
        raise ArtifactError(f"adapter {adapter_name!r} has no tensors to freeze")
    method = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    config_json = _jsonable({k: v for k, v in config.to_dict().items() if k != "runtime_config"})
    config_json["base_model_name_or_path"] = base.name
    n_base = sum(p.numel() for n, p in model.named_parameters() if not _is_adapter_param(n))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base_model": base.identity(),
        "adapter": {"method": method, "variant": config_json.get("variant"), "config": config_json},
        "parameters": {"trainable": int(sum(t.numel() for t in state.values())), "base": int(n_base)},
        "training": _jsonable(training or {}),
        "metrics": _jsonable(metrics or {}),
    }
    modules = adapter_modules(state)
    if modules:
        weights = state[f"{modules[0]}.qtha_qnn.weights"]
        manifest["circuit"] = {
            **describe(int(weights.shape[2]), int(weights.shape[0])),
            "modules": modules,
            "qasm_file": QASM_FILE,
            "qasm_module": modules[0],
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "qtha_format": str(FORMAT_VERSION)})
        (tmp / CONFIG_FILE).write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        if modules:
            (tmp / QASM_FILE).write_text(module_qasm(state, modules[0]))
        manifest["files"] = {p.name: _sha256_bytes(p.read_bytes()) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for p in tmp.iterdir():
            p.chmod(0o444)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _is_adapter_param(name: str) -> bool:
    return any(part.startswith(("qtha_", "lora_")) for part in name.split("."))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact (not verified; use :func:`verify` before trusting the files)."""
    folder = Path(path)
    mpath = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ArtifactError(f"artifact not found: {folder} is not a directory")
    if not mpath.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST_FILE} (not a frozen qtha artifact)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{mpath}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(manifest, dict) or "files" not in manifest or "base_model" not in manifest:
        raise ArtifactError(f"{mpath}: missing 'files' or 'base_model' (not a qtha manifest)")
    return manifest


def verify(path: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check every file's sha256 against the manifest; return (manifest, verified file bytes)."""
    folder = Path(path)
    manifest = read_manifest(folder)
    expected: dict[str, str] = manifest["files"]
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in expected:
            raise ArtifactError(f"{folder / MANIFEST_FILE}: 'files' does not list {required}")
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST_FILE}
    extra = sorted(present - set(expected))
    if extra:
        raise ArtifactError(f"{folder}: unexpected file {extra[0]} not listed in the manifest")
    blobs: dict[str, bytes] = {}
    for name, digest in sorted(expected.items()):
        fpath = folder / name
        if not fpath.is_file():
            raise ArtifactError(f"{fpath}: missing (listed in the manifest)")
        data = fpath.read_bytes()
        actual = _sha256_bytes(data)
        if actual != digest:
            raise ArtifactError(
                f"{fpath}: sha256 mismatch (manifest {digest[:12]}..., file {actual[:12]}...): "
                "the artifact was changed after freezing; refusing to load it"
            )
        blobs[name] = data
    return manifest, blobs


def load_frozen(
    model: Any,
    path: str | Path,
    *,
    adapter_name: str = "default",
    base: ModelSource | None = None,
) -> tuple[PeftModel, dict[str, Any]]:
    """Verify the artifact, then load it onto ``model`` (a transformers model or a PeftModel) as
    ``adapter_name`` with ``requires_grad=False``. Returns (peft_model, manifest).

    With ``base`` given, an artifact made for another base model is refused, naming both.
    """
    manifest, blobs = verify(path)
    if base is not None and manifest["base_model"].get("sha256") != base.sha256:
        made_for = manifest["base_model"]
        raise ArtifactError(
            f"{path}: made for base model {made_for.get('name')} (sha256 {str(made_for.get('sha256'))[:12]}...), "
            f"but the loaded base model is {base.name} (sha256 {base.sha256[:12]}...)"
        )
    config_dict = json.loads(blobs[CONFIG_FILE])
    config_dict["inference_mode"] = True
    config_dict["base_model_name_or_path"] = getattr(getattr(model, "config", None), "name_or_path", None)
    config = PeftConfig.from_peft_type(**config_dict)
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    state = load_safetensors_bytes(blobs[WEIGHTS_FILE])
    result = set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    missing = [
        k for k in getattr(result, "missing_keys", []) if f".{adapter_name}." in k or k.endswith(adapter_name)
    ]
    if missing:
        raise ArtifactError(f"{path}: weights do not fit this base model (missing {missing[0]})")
    for name, param in peft_model.named_parameters():
        if _is_adapter_param(name):
            param.requires_grad_(False)
    peft_model.eval()
    return peft_model, manifest
