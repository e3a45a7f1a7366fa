"""Running the QTHA circuit on a PennyLane device, the way one runs it on quantum hardware.

Serving or evaluating a frozen adapter on a device means one circuit per token per adapted module: many
thousands of circuits, each costing device time. :class:`DeviceRunner` sends them the way the reference
did on Origin Quantum's machine (arXiv 2503.12790), which submitted 200 circuits per job and cached the
results:

* rows go to the device in jobs of ``batch_size`` circuits (one PennyLane broadcast execution each;
  a device without broadcasting gets them as a batch of separate circuits);
* every result is stored in a SQLite cache keyed by ``sha256(device, shots, n, L, weights, angles)``
  (weights and the row's input angles as float32 bytes; the device runs exactly those float32 angles),
  so re-running an evaluation costs nothing twice, and identical rows in one call run once;
* :meth:`DeviceRunner.estimate` says how many circuits and shots a run needs, and ``max_circuits``
  refuses a call that would send more circuits than that to the device before any is sent;
* a tqdm progress bar counts the circuits sent.

The device is any installed PennyLane device, by name (``default.qubit``, ``default.mixed``,
``lightning.qubit``, ``qiskit.aer``/``qiskit.remote`` from ``pennylane-qiskit``, ``braket.aws.qubit``
from ``amazon-braket-pennylane-plugin``); the QNode comes from :mod:`.pennylane_backend`, the only
module that imports PennyLane.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import pennylane_backend
from .circuit import _check_weights

__all__ = ["DeviceRunner", "RunnerStats"]


@dataclass
class RunnerStats:
    """What a :class:`DeviceRunner` has done so far."""

    rows: int = 0
    """Rows asked for (one circuit each)."""
    hits: int = 0
    """Rows answered from the cache (or by an identical row of the same call)."""
    misses: int = 0
    """Rows that needed the device."""
    circuits: int = 0
    """Circuits sent to the device."""
    jobs: int = 0
    """Device executions (batches of at most ``batch_size`` circuits)."""
    seconds: float = 0.0
    """Wall time spent in device executions."""


class DeviceRunner:
    """Runs the circuit for many rows on a PennyLane device, in jobs, with a result cache.

    Args:
        device: a PennyLane device name (see :func:`pennylane_backend.installed_devices`).
        shots: shots per circuit; ``None`` asks the device for exact expectation values (simulators only).
        batch_size: circuits per device job (the reference sent 200).
        cache: SQLite file for results (created if missing; WAL mode, safe for concurrent readers);
            ``None`` keeps no cache beyond merging identical rows within a call.
        max_circuits: the most circuits this runner may send to the device over its lifetime; a call that
            would go over raises ``ValueError`` before sending any. ``None`` means no limit.
        progress: show a tqdm progress bar of the circuits sent.

    Calling the runner, ``runner(inputs (..., n), weights (L, 4, n)) -> (..., n)``, returns <Z_i> per row
    (no gradients). :attr:`stats` counts rows, cache hits and misses, circuits, jobs and device time.
    """

    def __init__(
        self,
        device: str = "default.qubit",
        shots: int | None = None,
        batch_size: int = 200,
        cache: str | Path | None = None,
        max_circuits: int | None = None,
        progress: bool = True,
    ) -> None:
        installed = pennylane_backend.installed_devices()
        if device not in installed:
            raise ValueError(
                f"device: expected an installed PennyLane device, one of {', '.join(installed)}; got {device!r} "
                "(plugins add devices: pip install pennylane-qiskit, amazon-braket-pennylane-plugin, ...)"
            )
        if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
            raise ValueError(f"shots: expected a positive integer or None (exact); got {shots!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer; got {batch_size!r}")
        if max_circuits is not None and (
            not isinstance(max_circuits, int) or isinstance(max_circuits, bool) or max_circuits < 0
        ):
            raise ValueError(f"max_circuits: expected None or an integer >= 0; got {max_circuits!r}")
        self.device, self.shots, self.batch_size = device, shots, batch_size
        self.max_circuits, self.progress = max_circuits, progress
        self.stats = RunnerStats()
        self._cache = _ResultCache(Path(cache)) if cache is not None else None
        self._lock = threading.Lock()
        self._bar: Any = None

    def check(self, n_qubits: int) -> None:
        """Raise ``ValueError`` now if the device cannot run an ``n_qubits``-qubit circuit (too few wires)."""
        pennylane_backend.check_device(self.device, n_qubits, self.shots)

    def estimate(self, n_rows: int) -> dict[str, Any]:
        """What running ``n_rows`` rows costs at most (before cache hits): circuits, jobs and shots."""
        if not isinstance(n_rows, int) or isinstance(n_rows, bool) or n_rows < 0:
            raise ValueError(f"estimate(n_rows): expected an integer >= 0; got {n_rows!r}")
        return {
            "device": self.device,
            "shots": self.shots,
            "circuits": n_rows,
            "jobs": math.ceil(n_rows / self.batch_size),
            "shots_total": None if self.shots is None else n_rows * self.shots,
        }

    def __call__(self, inputs: Tensor, weights: Tensor) -> Tensor:
        _check_weights(weights, "DeviceRunner(weights)")
        n_layers, _, n = weights.shape
        if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[-1] != n:
            got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"DeviceRunner(inputs): expected shape (..., {n}) to match weights; got {got}")
        rows = math.prod(inputs.shape[:-1])
        if rows == 0:
            return inputs.new_zeros(inputs.shape)
        self.check(n)
        # The device runs the float32 angles the cache key is made of.
        x = inputs.detach().reshape(rows, n).to("cpu", torch.float32).contiguous()
        w = weights.detach().to("cpu", torch.float32).contiguous()
        prefix = hashlib.sha256(f"{self.device}|{self.shots}|{n}|{n_layers}|".encode())
        prefix.update(w.numpy().tobytes())
        keys = []
        for row in x.numpy():
            digest = prefix.copy()
            digest.update(row.tobytes())
            keys.append(digest.hexdigest())
        first: dict[str, int] = {}  # key -> first row with it
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        with self._lock:
            found = self._cache.get(list(first)) if self._cache is not None else {}
            todo = [key for key in first if key not in found]
            self._guard(len(todo), rows)
            self.stats.rows += rows
            self.stats.misses += len(todo)
            self.stats.hits += rows - len(todo)
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                found.update(self._run(batch, x[[first[k] for k in batch]], w))
        out = torch.tensor([found[k] for k in keys], dtype=torch.float64)  # (rows, n)
        return out.to(inputs.dtype).reshape(inputs.shape)

    def _guard(self, needed: int, rows: int) -> None:
        if self.max_circuits is None or self.stats.circuits + needed <= self.max_circuits:
            return
        raise ValueError(
            f"DeviceRunner: this call needs {needed} new circuits on {self.device} ({rows} rows, "
            f"{rows - needed} answered by the cache); with {self.stats.circuits} already sent that is "
            f"{self.stats.circuits + needed}, over the max_circuits guard of {self.max_circuits}; "
            "nothing was sent (raise the guard or run fewer rows)"
        )

    def _run(self, keys: list[str], x: Tensor, w: Tensor) -> dict[str, list[float]]:
        """One device job: ``x`` ``(b, n)`` float32 angles -> results by key, stored in the cache."""
        t0 = time.perf_counter()
        z = pennylane_backend.expvals(
            x.to(torch.float64), w.to(torch.float64), device=self.device, shots=self.shots
        )
        self.stats.seconds += time.perf_counter() - t0
        self.stats.jobs += 1
        self.stats.circuits += len(keys)
        results = {k: [float(v) for v in row] for k, row in zip(keys, z.tolist(), strict=True)}
        if self._cache is not None:
            self._cache.put(results, device=self.device, shots=self.shots)
        self._advance(len(keys))
        return results

    def _advance(self, circuits: int) -> None:
        if not self.progress:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=0, unit="circuit", desc=f"{self.device} circuits", leave=False)
        self._bar.total += circuits
        self._bar.update(circuits)
        self._bar.set_postfix(hits=self.stats.hits, misses=self.stats.misses, refresh=False)

    def summary(self) -> dict[str, Any]:
        """Stats as a dict, with the device and shots."""
        return {"device": self.device, "shots": self.shots, **asdict(self.stats)}

    def close(self) -> None:
        """Close the progress bar and the cache connection."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> DeviceRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeviceRunner(device={self.device!r}, shots={self.shots}, batch_size={self.batch_size})"


class _ResultCache:
    """``key -> <Z_i> values`` in one SQLite table (WAL journal: readers never block the writer)."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS circuit_results ("
        "key TEXT PRIMARY KEY, device TEXT NOT NULL, shots INTEGER, expvals BLOB NOT NULL, created REAL NOT NULL)"
    )
    _CHUNK = 500  # keys per SELECT (SQLite caps the number of bound parameters)

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the threads that call the runner (the engine generates in a worker
        # thread); DeviceRunner serialises access with its lock.
        self.conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(self._SCHEMA)
            self.conn.commit()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise ValueError(f"cache {path}: not a usable SQLite file ({exc})") from None
        self.path = path

    def get(self, keys: list[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for start in range(0, len(keys), self._CHUNK):
            chunk = keys[start : start + self._CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, blob in self.conn.execute(
                f"SELECT key, expvals FROM circuit_results WHERE key IN ({marks})", chunk
            ):
                found[key] = torch.frombuffer(bytearray(blob), dtype=torch.float64).tolist()
        return found

    def put(self, results: dict[str, list[float]], *, device: str, shots: int | None) -> None:
        now = time.time()
        rows = [
            (key, device, shots, torch.tensor(values, dtype=torch.float64).numpy().tobytes(), now)
            for key, values in results.items()
        ]
        with self.conn:  # one transaction per job
            self.conn.executemany("INSERT OR REPLACE INTO circuit_results VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.conn.close()
