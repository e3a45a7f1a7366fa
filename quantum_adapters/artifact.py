"""Frozen adapter artifacts: the contract between training, evaluation and serving.

An artifact is a directory, written once and never changed:

    adapter_config.json         the PEFT config (QTHA or LoRA)
    adapter_model.safetensors   the adapter's tensors (safetensors only, no pickle)
    circuit.qasm                QTHA with a circuit: the first adapted module's trained circuit (OpenQASM 3,
                                input angles as named parameters); `qtha-adapters qasm` prints any module
    manifest.json               base-model identity and sha256, method and hyper-parameters, circuit
                                description, parameter counts, training summary (the system prompt serving
                                uses), metrics, the sha256 of every file above, and its own digest
    manifest.sha256             the sha256 of manifest.json's bytes, in ``sha256sum`` format
                                (``sha256sum -c manifest.sha256`` checks it without qtha)
    manifest.sig                optional: an ed25519 signature of manifest.json (``qtha-adapters sign``)

Whole-artifact integrity: a changed byte in any file is refused, naming the file.

- The files of the first three rows are covered by their sha256 in ``manifest["files"]``.
- manifest.json covers itself twice. ``manifest["manifest_sha256"]`` is the sha256 of the canonical JSON of
  everything else in it (sorted keys, no whitespace), so any change of content is caught, and the file
  must be byte-for-byte the text :func:`freeze` writes for that content (``json.dumps(indent=2,
  sort_keys=True)`` plus a newline), so a whitespace-only, key-order or escape edit is caught too. Both
  failures name manifest.json.
- manifest.sha256 holds the sha256 of manifest.json's bytes. It is listed nowhere else: when manifest.json
  passes its own two checks but not this one, manifest.sha256 changed (or manifest.json was rewritten with
  a recomputed digest), and manifest.sha256 is named.
- manifest.sig, when present, must verify against the public key it carries, so a flipped byte there is
  refused as well; ``verify(..., public_key=...)`` also requires that key, which says who froze it.

Without a signature this protects against accidents and casual edits, not against someone who rewrites
a file and then recomputes every digest: that is what signing is for.

Every reader goes through the checks: :func:`read_manifest` returns a manifest only after its own two
checks and manifest.sha256; :func:`verify` also checks every other file; :func:`load_frozen` loads only
verified bytes. Artifacts frozen by format 1 (no manifest digest, no manifest.sha256) are refused with a
message to re-freeze them (``qtha-adapters refreeze OLD NEW``): their manifest cannot be verified.

Writing goes to a temporary sibling directory that is renamed into place, so a failure never leaves
a half-written artifact. Tensors load with ``requires_grad=False``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from .circuit import describe, to_qasm
from .files import atomic_write, staged_dir
from .models import ModelSource

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "adapter_modules",
    "check_base_model",
    "freeze",
    "generate_key",
    "load_frozen",
    "module_qasm",
    "read_manifest",
    "refreeze",
    "sign",
    "signer_key",
    "verify",
]

FORMAT_VERSION = 2  # 2: manifest.json covered by its own digest and by manifest.sha256
CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, QASM_FILE = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "manifest.json",
    "circuit.qasm",
)
DIGEST_FILE, SIGNATURE_FILE = "manifest.sha256", "manifest.sig"
DIGEST_FIELD = "manifest_sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST_LINE = re.compile(rb"([0-9a-f]{64})  manifest\.json\n")
_SIGNATURE_TEXT = re.compile(rb"ed25519 ([0-9a-f]{64})\n([0-9a-f]{128})\n")


class ArtifactError(ValueError):
    """An artifact is missing, tampered with, or made for another base model."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_text(manifest: dict[str, Any]) -> str:
    """The exact text of manifest.json for ``manifest``: a verified file is byte-for-byte this."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without its digest field."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _sha256_bytes(canonical.encode())


def _digest_line(manifest_bytes: bytes) -> str:
    return f"{_sha256_bytes(manifest_bytes)}  {MANIFEST_FILE}\n"


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
    _refuse_existing(out)
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
    with _staged_artifact(out) as tmp:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "qtha_format": str(FORMAT_VERSION)})
        (tmp / CONFIG_FILE).write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        if modules:
            (tmp / QASM_FILE).write_text(module_qasm(state, modules[0]))
        manifest["files"] = {p.name: _sha256_bytes(p.read_bytes()) for p in sorted(tmp.iterdir())}
        _write_manifest(tmp, manifest)
    return out


def _refuse_existing(out: Path) -> None:
    """An artifact is written once: refuse a target that exists."""
    if out.exists():
        raise ArtifactError(
            f"{out} already exists: a frozen artifact is never overwritten; choose another path"
        )


@contextmanager
def _staged_artifact(out: Path) -> Iterator[Path]:
    """The artifact's folder, built under a temporary name (:func:`.files.staged_dir`); on success every
    file in it is made read-only (0o444) before the folder is renamed to ``out``."""
    with staged_dir(out) as tmp:
        yield tmp
        for p in tmp.iterdir():
            p.chmod(0o444)


def _is_adapter_param(name: str) -> bool:
    return any(part.startswith(("qtha_", "lora_")) for part in name.split("."))


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """manifest.json with its own digest, and manifest.sha256 with the digest of its bytes."""
    manifest = json.loads(json.dumps(manifest))  # as a reader parses it (e.g. int keys become strings)
    manifest.pop(DIGEST_FIELD, None)
    manifest[DIGEST_FIELD] = _manifest_digest(manifest)
    text = _manifest_text(manifest).encode()
    (folder / MANIFEST_FILE).write_bytes(text)
    (folder / DIGEST_FILE).write_text(_digest_line(text))


def _load_manifest_json(folder: Path) -> tuple[dict[str, Any], bytes]:
    """manifest.json parsed (a qtha manifest, any format version) and its bytes; nothing verified."""
    mpath = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ArtifactError(f"artifact not found: {folder} is not a directory")
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing (not a frozen qtha artifact, or its manifest was deleted)")
    data = mpath.read_bytes()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{mpath}: not UTF-8 text (byte {exc.start}): changed after freezing") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{mpath}: invalid JSON at line {exc.lineno} ({exc.msg}): changed after freezing"
        ) from None
    if not isinstance(manifest, dict) or "files" not in manifest or "base_model" not in manifest:
        raise ArtifactError(f"{mpath}: missing 'files' or 'base_model' (not a qtha manifest)")
    return manifest, data


def _checked_manifest(folder: Path) -> tuple[dict[str, Any], bytes]:
    """manifest.json after its own digest, its exact form and manifest.sha256 are checked; its bytes."""
    manifest, data = _load_manifest_json(folder)
    mpath = folder / MANIFEST_FILE
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or DIGEST_FIELD not in manifest:
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise ArtifactError(
                f"{mpath}: format {version} was written by a newer qtha (this one reads format "
                f"{FORMAT_VERSION}); upgrade qtha to load it"
            )
        raise ArtifactError(
            f"{mpath}: format {version!r} has no manifest digest, so its manifest (system prompt, base "
            f"model, metrics) cannot be verified; re-freeze it: check manifest.json, then run "
            f"`qtha-adapters refreeze {folder} NEW_DIR`, or train again"
        )
    if manifest[DIGEST_FIELD] != _manifest_digest(manifest):
        raise ArtifactError(
            f"{mpath}: its content does not match its own digest ({DIGEST_FIELD}): the manifest was changed "
            "after freezing; refusing it"
        )
    if data != _manifest_text(manifest).encode():
        raise ArtifactError(
            f"{mpath}: not byte-for-byte as frozen (whitespace, key order or escapes were changed after "
            "freezing); refusing it"
        )
    dpath = folder / DIGEST_FILE
    if not dpath.is_file():
        raise ArtifactError(
            f"{dpath}: missing (it holds the sha256 of {MANIFEST_FILE}); refusing the artifact"
        )
    match = _DIGEST_LINE.fullmatch(dpath.read_bytes())
    if match is None:
        raise ArtifactError(
            f"{dpath}: malformed (expected one line '<sha256>  {MANIFEST_FILE}'): changed after freezing"
        )
    if match.group(1).decode() != _sha256_bytes(data):
        raise ArtifactError(
            f"{dpath}: sha256 mismatch with {MANIFEST_FILE}: {DIGEST_FILE} was changed after freezing, or "
            f"{MANIFEST_FILE} was rewritten with a recomputed digest; refusing the artifact"
        )
    return manifest, data


def _files_listed(mpath: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's 'files': plain names in the artifact's folder (no paths) -> sha256 hex."""
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str)
        and k not in ("", ".", "..")
        and "/" not in k
        and "\\" not in k
        and isinstance(v, str)
        and _HEX64.fullmatch(v)
        for k, v in files.items()
    ):
        raise ArtifactError(f"{mpath}: 'files' must map plain file names to sha256 hex digests")
    return files


def _listed_blobs(folder: Path, expected: dict[str, str], own: set[str], refusal: str) -> dict[str, bytes]:
    """The bytes of every file the manifest lists (``expected``: name -> sha256), each checked against its
    digest; a file missing, changed, or present but not listed (besides the manifest's ``own``) is
    refused, naming it (``refusal`` ends the message of a changed one)."""
    present = {p.name for p in folder.iterdir()} - own
    extra = sorted(present - set(expected))
    if extra:
        raise ArtifactError(
            f"{folder / extra[0]}: unexpected file, not listed in the manifest (added after freezing); "
            "refusing the artifact"
        )
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
                f"the artifact was changed after freezing; {refusal}"
            )
        blobs[name] = data
    return blobs


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact, checked against its own digest and manifest.sha256.

    The other files are not read: :func:`verify` checks them (and :func:`load_frozen` calls it).
    """
    return _checked_manifest(Path(path))[0]


def verify(
    path: str | Path, *, public_key: str | Path | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check every file of the artifact; return (manifest, verified file bytes by name).

    manifest.json against its own digest and form, manifest.sha256 against manifest.json, every other
    file against its sha256 in the manifest; no file may be missing or added. A manifest.sig present
    must verify; with ``public_key`` (an ed25519 public key PEM file) a signature by that key is required.
    """
    folder = Path(path)
    manifest, manifest_bytes = _checked_manifest(folder)
    mpath = folder / MANIFEST_FILE
    expected = _files_listed(mpath, manifest)
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in expected:
            raise ArtifactError(f"{mpath}: 'files' does not list {required}")
    own = {MANIFEST_FILE, DIGEST_FILE, SIGNATURE_FILE}
    listed_own = sorted(own & set(expected))
    if listed_own:
        raise ArtifactError(f"{mpath}: 'files' lists {listed_own[0]}, which it cannot cover")
    blobs = _listed_blobs(folder, expected, own, "refusing to load it")
    signer = _check_signature(folder, manifest_bytes)
    if public_key is not None:
        wanted = _public_key_hex(public_key)
        if signer is None:
            raise ArtifactError(f"{folder}: not signed (no {SIGNATURE_FILE}), but a public key was given")
        if signer != wanted:
            raise ArtifactError(
                f"{folder / SIGNATURE_FILE}: signed by key {signer[:16]}..., not by {public_key} "
                f"({wanted[:16]}...)"
            )
    return manifest, blobs


def signer_key(path: str | Path) -> str | None:
    """Hex of the ed25519 public key that signed a verified artifact (None: not signed)."""
    folder = Path(path)
    return _check_signature(folder, _checked_manifest(folder)[1])


# ---- signing (ed25519, the ``cryptography`` package) --------------------------------------------------


def _ed25519():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ImportError(
            "signing artifacts needs the 'cryptography' package: pip install 'cryptography>=41'"
        ) from None
    return ed25519, serialization, InvalidSignature


def _check_signature(folder: Path, manifest_bytes: bytes) -> str | None:
    """Verify manifest.sig (if present) against the key it carries; return that key's hex."""
    spath = folder / SIGNATURE_FILE
    if not spath.exists():
        return None
    match = _SIGNATURE_TEXT.fullmatch(spath.read_bytes()) if spath.is_file() else None
    if match is None:
        raise ArtifactError(
            f"{spath}: malformed (expected 'ed25519 <public key hex>' and '<signature hex>' lines): "
            "changed after signing"
        )
    ed25519, _, invalid = _ed25519()
    key_hex, sig_hex = match.group(1).decode(), match.group(2).decode()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(
            bytes.fromhex(sig_hex), manifest_bytes
        )
    except (invalid, ValueError):
        raise ArtifactError(
            f"{spath}: the signature does not verify for {MANIFEST_FILE} with the key it names: changed "
            "after signing; refusing the artifact"
        ) from None
    return key_hex


def _public_key_hex(path: str | Path) -> str:
    ed25519, serialization, _ = _ed25519()
    file = Path(path)
    if not file.is_file():
        raise ArtifactError(f"--public-key: file not found: {file}")
    try:
        key = serialization.load_pem_public_key(file.read_bytes())
    except ValueError:
        raise ArtifactError(f"--public-key {file}: not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ArtifactError(f"--public-key {file}: expected an ed25519 key; got {type(key).__name__}")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def generate_key(path: str | Path) -> tuple[Path, Path]:
    """Write a new ed25519 private key to ``path`` (PEM, mode 600) and its public key to ``path.pub``."""
    ed25519, serialization, _ = _ed25519()
    private, public = Path(path), Path(f"{path}.pub")
    for p in (private, public):
        if p.exists():
            raise ArtifactError(f"{p} already exists: choose another path (keys are never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def sign(path: str | Path, key: str | Path) -> str:
    """Verify the artifact, then add manifest.sig signed with the ed25519 private key file ``key``.

    Returns the public key's hex. An artifact is signed once; a signed one is refused.
    """
    ed25519, serialization, _ = _ed25519()
    folder = Path(path)
    kpath = Path(key)
    if not kpath.is_file():
        raise ArtifactError(f"--key: file not found: {kpath}")
    try:
        private = serialization.load_pem_private_key(kpath.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ArtifactError(f"--key {kpath}: not an unencrypted PEM private key") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise ArtifactError(f"--key {kpath}: expected an ed25519 key; got {type(private).__name__}")
    verify(folder)
    if (folder / SIGNATURE_FILE).exists():
        raise ArtifactError(f"{folder / SIGNATURE_FILE}: the artifact is already signed")
    manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
    key_hex = (
        private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    )
    text = f"ed25519 {key_hex}\n{private.sign(manifest_bytes).hex()}\n"
    atomic_write(folder / SIGNATURE_FILE, text, mode=0o444)
    _check_signature(folder, manifest_bytes)
    return key_hex


def refreeze(old: str | Path, new: str | Path) -> Path:
    """Re-freeze a format-1 artifact at ``new``: its files are checked against its manifest, which is
    then taken as it is (read it first: format 1 cannot prove it unchanged) and given a digest."""
    folder, out = Path(old), Path(new)
    manifest, _ = _load_manifest_json(folder)
    if manifest.get("format_version") != 1:
        raise ArtifactError(
            f"{folder / MANIFEST_FILE}: expected a format-1 artifact; got format {manifest.get('format_version')!r}"
        )
    _refuse_existing(out)
    blobs = _listed_blobs(
        folder, _files_listed(folder / MANIFEST_FILE, manifest), {MANIFEST_FILE}, "it cannot be re-frozen"
    )
    with _staged_artifact(out) as tmp:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        manifest = {**manifest, "format_version": FORMAT_VERSION, "refrozen_from": str(folder.resolve())}
        _write_manifest(tmp, manifest)
    return out


def check_base_model(
    manifest: dict[str, Any], base: ModelSource, path: str | Path, base_is: str = "the loaded base model"
) -> None:
    """Refuse an artifact (its verified ``manifest``, read from ``path``) made for another base model
    than ``base``, naming both; ``base_is`` says where ``base`` came from (e.g. ``'--model'``)."""
    made_for = manifest["base_model"]
    if made_for.get("sha256") != base.sha256:
        raise ArtifactError(
            f"{path}: made for base model {made_for.get('name')} (sha256 {str(made_for.get('sha256'))[:12]}...), "
            f"but {base_is} is {base.name} (sha256 {base.sha256[:12]}...)"
        )


def load_frozen(
    model: Any,
    path: str | Path,
    *,
    adapter_name: str = "default",
    base: ModelSource | None = None,
    public_key: str | Path | None = None,
) -> tuple[PeftModel, dict[str, Any]]:
    """Verify the artifact (every file, see :func:`verify`), then load it onto ``model`` (a transformers
    model or a PeftModel) as ``adapter_name`` with ``requires_grad=False``. Returns (peft_model, manifest).

    With ``base`` given, an artifact made for another base model is refused, naming both; with
    ``public_key``, one not signed by that key.
    """
    manifest, blobs = verify(path, public_key=public_key)
    if base is not None:
        check_base_model(manifest, base, path)
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
