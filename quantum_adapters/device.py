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

Training on the device (``qtha-train --circuit-device``): when the inputs or weights of a call need
gradients, the runner returns a differentiable result whose backward runs the parameter-shift rule on the
device, as hardware allows (no backprop through a QPU). For the loss ``sum_rows,i g_ri z_ri``:

    RY angle t (trained, or one layer's data angle c_i):   dz/dt = [z(t + pi/2) - z(t - pi/2)] / 2
    CRZ angle t (generator eigenvalues 0, +-1/2):           dz/dt = c+ [z(t + pi/2) - z(t - pi/2)]
                                                                  - c- [z(t + 3pi/2) - z(t - 3pi/2)]
                                                            c+- = (sqrt 2 +- 1) / (4 sqrt 2)

(both exact for expectation values; with shots, unbiased). Per row that is ``1 + 2 n_RY + 4 n_CRZ``
circuits: ``1 + 2 (2nL) + 4 (2nL) + 2 (nL) = 1 + 14 nL`` when the input angles need gradients too (each
of the L data RYs of an input is shifted on its own, and their derivatives summed), ``1 + 12 nL`` when only
the weights do (:func:`parameter_shift_circuits`). The shifted circuits go out as whole circuits with their
own parameters (:func:`pennylane_backend.expvals_circuits`), in the same jobs of ``batch_size``, through the
same cache and the same ``max_circuits`` guard.

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
from .circuit import check_inputs, check_shots

__all__ = ["DeviceRunner", "RunnerStats", "parameter_shift_circuits"]


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
        noise_backend: with ``qiskit.aer``, a fake IBM backend (e.g. ``FakeManilaV2``) whose noise model
            the simulator applies (:func:`pennylane_backend.fake_backend_noise`).

    Calling the runner, ``runner(inputs (..., n), weights (L, 4, n)) -> (..., n)``, returns <Z_i> per row;
    when ``inputs`` or ``weights`` require gradients (grad mode on) the result is differentiable by the
    parameter-shift rule, run on the device in backward. :attr:`stats` counts rows, cache hits and misses,
    circuits, jobs and device time.
    """

    def __init__(
        self,
        device: str = "default.qubit",
        shots: int | None = None,
        batch_size: int = 200,
        cache: str | Path | None = None,
        max_circuits: int | None = None,
        progress: bool = True,
        noise_backend: str | None = None,
    ) -> None:
        installed = pennylane_backend.installed_devices()
        if device not in installed:
            raise ValueError(
                f"device: expected an installed PennyLane device, one of {', '.join(installed)}; got {device!r} "
                "(plugins add devices: pip install pennylane-qiskit, amazon-braket-pennylane-plugin, ...)"
            )
        check_shots(shots, "DeviceRunner(shots)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer; got {batch_size!r}")
        if max_circuits is not None and (
            not isinstance(max_circuits, int) or isinstance(max_circuits, bool) or max_circuits < 0
        ):
            raise ValueError(f"max_circuits: expected None or an integer >= 0; got {max_circuits!r}")
        if noise_backend is not None:
            if not device.startswith("qiskit.aer"):
                raise ValueError(
                    f"noise_backend {noise_backend!r}: applies to the qiskit.aer device only; got device {device!r}"
                )
            pennylane_backend.fake_backend_noise(noise_backend)  # an unknown name fails here, not mid-run
        self.noise_backend = noise_backend
        self.device, self.shots, self.batch_size = device, shots, batch_size
        self.max_circuits, self.progress = max_circuits, progress
        self.stats = RunnerStats()
        self._cache = _ResultCache(Path(cache)) if cache is not None else None
        self._lock = threading.Lock()
        self._bar: Any = None

    def check(self, n_qubits: int) -> None:
        """Raise ``ValueError`` now if the device cannot run an ``n_qubits``-qubit circuit (too few wires)."""
        pennylane_backend.check_device(self.device, n_qubits, self.shots, self.noise_backend)

    def estimate(self, n_rows: int, circuits_per_row: int = 1) -> dict[str, Any]:
        """What running ``n_rows`` rows costs at most (before cache hits): circuits, jobs and shots.
        ``circuits_per_row``: 1 for a forward pass, :func:`parameter_shift_circuits` for a training step."""
        if not isinstance(n_rows, int) or isinstance(n_rows, bool) or n_rows < 0:
            raise ValueError(f"estimate(n_rows): expected an integer >= 0; got {n_rows!r}")
        circuits = n_rows * circuits_per_row
        return {
            "device": self.device,
            "shots": self.shots,
            "circuits": circuits,
            "jobs": math.ceil(circuits / self.batch_size),
            "shots_total": None if self.shots is None else circuits * self.shots,
        }

    def run_circuits(self, angles: Tensor, weights: Tensor) -> Tensor:
        """<Z_i> of whole circuits with their own parameters: ``angles`` ``(B, L, n)`` (data angles per
        layer) and ``weights`` ``(B, L, 4, n)`` -> ``(B, n)`` float64; jobs, cache and guard as a call."""
        b, n_layers, n = angles.shape
        if b == 0:
            return torch.zeros(0, n, dtype=torch.float64)
        self.check(n)
        a = angles.detach().to("cpu", torch.float32).contiguous()
        w = weights.detach().to("cpu", torch.float32).contiguous()
        prefix = hashlib.sha256(
            f"circuit|{self.device}|{self.shots}|{self.noise_backend}|{n}|{n_layers}|".encode()
        )
        keys = _row_keys(prefix, w, a)
        return self._answer(
            keys, lambda rows: (a[rows], w[rows]), pennylane_backend.expvals_circuits
        ).reshape(b, n)

    def __call__(self, inputs: Tensor, weights: Tensor) -> Tensor:
        n_layers, n = check_inputs(inputs, weights, "DeviceRunner")
        rows = math.prod(inputs.shape[:-1])
        if rows == 0:
            return inputs.new_zeros(inputs.shape)
        self.check(n)
        # The device runs the float32 angles the cache key is made of.
        x = inputs.detach().reshape(rows, n).to("cpu", torch.float32).contiguous()
        w = weights.detach().to("cpu", torch.float32).contiguous()
        if torch.is_grad_enabled() and (inputs.requires_grad or weights.requires_grad):
            return _ParameterShift.apply(inputs, weights, self)
        noise = "" if self.noise_backend is None else f"{self.noise_backend}|"
        prefix = hashlib.sha256(f"{self.device}|{self.shots}|{noise}{n}|{n_layers}|".encode())
        prefix.update(w.numpy().tobytes())
        keys = _row_keys(prefix, x)
        out = self._answer(keys, lambda index: (x[index], w), pennylane_backend.expvals)  # (rows, n)
        return out.to(inputs.dtype).reshape(inputs.shape)

    def _answer(self, keys: list[str], select: Any, execute: Any) -> Tensor:
        """Results for ``keys`` (one per row): from the cache, else by ``execute(*select(rows))`` in jobs
        of ``batch_size``; identical keys run once. Returns ``(len(keys), n)`` float64."""
        first: dict[str, int] = {}  # key -> first row with it
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        with self._lock:
            found = self._cache.get(list(first)) if self._cache is not None else {}
            todo = [key for key in first if key not in found]
            self._guard(len(todo), len(keys))
            self.stats.rows += len(keys)
            self.stats.misses += len(todo)
            self.stats.hits += len(keys) - len(todo)
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                found.update(self._run(batch, execute, *select([first[k] for k in batch])))
        return torch.tensor([found[k] for k in keys], dtype=torch.float64)

    def _guard(self, needed: int, rows: int) -> None:
        if self.max_circuits is None or self.stats.circuits + needed <= self.max_circuits:
            return
        raise ValueError(
            f"DeviceRunner: this call needs {needed} new circuits on {self.device} ({rows} rows, "
            f"{rows - needed} answered by the cache); with {self.stats.circuits} already sent that is "
            f"{self.stats.circuits + needed}, over the max_circuits guard of {self.max_circuits}; "
            "nothing was sent (raise the guard or run fewer rows)"
        )

    def _run(self, keys: list[str], execute: Any, x: Tensor, w: Tensor) -> dict[str, list[float]]:
        """One device job: ``execute(x, w)`` on float32 parameters -> results by key, stored in the cache."""
        t0 = time.perf_counter()
        z = execute(
            x.to(torch.float64),
            w.to(torch.float64),
            device=self.device,
            shots=self.shots,
            noise_backend=self.noise_backend,
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
        """Stats as a dict, with the device, shots and noise backend."""
        return {
            "device": self.device,
            "shots": self.shots,
            "noise_backend": self.noise_backend,
            **asdict(self.stats),
        }

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


def _row_keys(prefix: Any, *per_row: Tensor) -> list[str]:
    """One cache key per row: ``prefix`` (a sha256 of what all rows share) updated with the float32 bytes
    of that row of each tensor in ``per_row``, in order."""
    keys = []
    for rows in zip(*(t.numpy() for t in per_row), strict=True):
        digest = prefix.copy()
        for row in rows:
            digest.update(row.tobytes())
        keys.append(digest.hexdigest())
    return keys


# Four-term shift rule of CRZ (generator eigenvalues 0, +-1/2): coefficients of the pi/2 and 3pi/2 pairs.
_CRZ_C_PLUS = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_CRZ_C_MINUS = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
# Rows of the weights tensor holding CRZ angles (circuit.weight_shape): 0 (forward ring) and 2 (reverse).
_CRZ_ROWS = (0, 2)


def parameter_shift_circuits(n_qubits: int, n_layers: int, inputs: bool = True) -> int:
    """Circuits per row of one forward + parameter-shift backward: ``1 + 2 n_RY + 4 n_CRZ``.

    ``2 n L`` trained RY and ``2 n L`` CRZ angles: ``1 + 12 n L``; with the input angles' gradients
    (``inputs``; each of the ``n L`` data RYs shifted on its own) ``1 + 14 n L``.
    """
    return 1 + 12 * n_qubits * n_layers + (2 * n_qubits * n_layers if inputs else 0)


def _shifts(n: int, n_layers: int, inputs: bool) -> list[tuple[str, tuple, float, float]]:
    """Every shifted evaluation of the rule: ``(kind, index, shift, coefficient)`` with kind 'w'
    (``weights[index]``) or 'x' (``angles[:, l, i]``, index ``(l, i)``)."""
    out: list[tuple[str, tuple, float, float]] = []
    half = math.pi / 2
    for layer in range(n_layers):
        for k in range(4):
            for i in range(n):
                index = (layer, k, i)
                if k in _CRZ_ROWS:
                    out += [("w", index, half, _CRZ_C_PLUS), ("w", index, -half, -_CRZ_C_PLUS)]
                    out += [("w", index, 3 * half, -_CRZ_C_MINUS), ("w", index, -3 * half, _CRZ_C_MINUS)]
                else:
                    out += [("w", index, half, 0.5), ("w", index, -half, -0.5)]
        if inputs:
            for i in range(n):
                out += [("x", (layer, i), half, 0.5), ("x", (layer, i), -half, -0.5)]
    return out


class _ParameterShift(torch.autograd.Function):
    """``runner(inputs, weights)`` with a backward that runs the parameter-shift rule on the device."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, weights: Tensor, runner: DeviceRunner) -> Tensor:
        ctx.runner = runner
        ctx.save_for_backward(inputs, weights)
        with torch.no_grad():
            return runner(inputs.detach(), weights.detach())

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        inputs, weights = ctx.saved_tensors
        runner: DeviceRunner = ctx.runner
        n_layers, _, n = weights.shape
        x = inputs.detach().reshape(-1, n).to(torch.float64)  # (R, n)
        g = grad_out.reshape(-1, n).to(torch.float64)  # (R, n)
        rows = x.shape[0]
        need_x = ctx.needs_input_grad[0]
        shifts = _shifts(n, n_layers, need_x)
        angles = x[:, None, :].expand(rows, n_layers, n)  # (R, L, n): the same c in every layer
        w = weights.detach().to(torch.float64)
        # every shifted circuit of every row, as whole circuits: (S * R, L, n) and (S * R, L, 4, n)
        all_angles = angles.unsqueeze(0).repeat(len(shifts), 1, 1, 1)
        all_weights = w.expand(len(shifts), rows, n_layers, 4, n).clone()
        for s, (kind, index, shift, _) in enumerate(shifts):
            if kind == "w":
                all_weights[(s, slice(None), *index)] += shift
            else:
                all_angles[(s, slice(None), *index)] += shift
        z = runner.run_circuits(all_angles.reshape(-1, n_layers, n), all_weights.reshape(-1, n_layers, 4, n))
        weighted = (z.view(len(shifts), rows, n) * g).sum(-1)  # (S, R): d loss contributions per row
        grad_w = torch.zeros(n_layers, 4, n, dtype=torch.float64)
        grad_x = torch.zeros(rows, n, dtype=torch.float64)
        for s, (kind, index, _, coef) in enumerate(shifts):
            if kind == "w":
                grad_w[index] += coef * weighted[s].sum()
            else:
                grad_x[:, index[1]] += coef * weighted[s]
        grad_inputs = grad_x.to(inputs.dtype).reshape(inputs.shape) if need_x else None
        grad_weights = grad_w.to(weights.dtype) if ctx.needs_input_grad[1] else None
        return grad_inputs, grad_weights, None


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
