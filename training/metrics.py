"""A run's ``metrics.jsonl``: written by the recipe, read by the recipe's summary and by the study.

One JSON record per line: one per optimiser step ``{"step", "loss", "lr", "tokens_per_s", "elapsed"}``
and one per dev evaluation ``{"step", "dev_loss"}``. Each record is flushed as it is written, so a run
killed mid-write can leave at most its last line torn (no newline, not JSON): :func:`read_metrics`
drops such a line, and a resumed run rewrites the file to the records up to its checkpoint
(:func:`truncate_metrics`) before it appends, so a finished run's file is the same as an
uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantum_adapters.files import atomic_write, read_jsonl

__all__ = ["METRICS_FILE", "Metrics", "metrics_log", "read_metrics", "truncate_metrics"]

METRICS_FILE = "metrics.jsonl"


@dataclass
class Metrics:
    """The records of one run's ``metrics.jsonl``, in file order."""

    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def train(self) -> list[tuple[int, float]]:
        """``(step, loss)`` of every optimiser step."""
        return [(r["step"], r["loss"]) for r in self.records if "loss" in r]

    @property
    def dev(self) -> list[tuple[int, float]]:
        """``(step, dev_loss)`` of every dev evaluation."""
        return [(r["step"], r["dev_loss"]) for r in self.records if "dev_loss" in r]


def read_metrics(run_folder: str | os.PathLike) -> Metrics:
    """The metrics of a run folder (none if it has no ``metrics.jsonl`` yet).

    A last line that is not JSON and has no newline is a write cut short by a kill, and is dropped;
    a bad line anywhere else raises ``ValueError`` naming the file and line.
    """
    path = Path(run_folder) / METRICS_FILE
    return Metrics(read_jsonl(path, torn_tail=True)) if path.is_file() else Metrics()


def truncate_metrics(run_folder: str | os.PathLike, step: int) -> None:
    """Keep only the records of steps up to ``step`` (a resumed run's checkpoint): the steps after it
    are trained again, and a torn last line goes with them."""
    kept = [r for r in read_metrics(run_folder).records if r["step"] <= step]
    atomic_write(Path(run_folder) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


@contextmanager
def metrics_log(run_folder: str | os.PathLike, *, write: bool = True) -> Iterator[Callable[[dict], None]]:
    """A function that appends one record (flushed at once); ``write=False`` (every process of a
    data-parallel run but the main one) gives one that does nothing."""
    if not write:
        yield lambda record: None
        return
    with open(Path(run_folder) / METRICS_FILE, "a") as f:

        def log(record: dict) -> None:
            f.write(json.dumps(record) + "\n")
            f.flush()

        yield log
