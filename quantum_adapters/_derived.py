"""A value derived from weights, kept until one of them changes.

Inference runs one token at a time, where rebuilding what only depends on the weights (an MPO's dense
matrix, a layer's folded maps, a frozen circuit) on every call costs more than the arithmetic. Each such
value is kept in a :class:`Derived` and rebuilt when a weight is written in place (its ``_version``
counter moves: an optimizer step, ``copy_``, loading a state dict) or replaced (its storage moves:
``.to()``, ``param.data = ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import torch

__all__ = ["Derived"]

T = TypeVar("T")


class Derived(Generic[T]):
    """One value built from some tensors; :meth:`get` returns it, rebuilt only when they change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: T | None = None

    def get(self, tensors: Sequence[torch.Tensor], build: Callable[[], T], *extra: Any) -> T:
        """The value for the tensors as they are now: ``build()`` when a tensor was written in place or
        replaced since the last call, or when ``extra`` (e.g. the dtype asked for) differs."""
        key = (extra, tuple((t.data_ptr(), t._version) for t in tensors))
        if key != self._key:
            self._value = build()
            self._key = key
        return self._value  # type: ignore[return-value]
