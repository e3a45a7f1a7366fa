"""The circuit's executions, by name: :func:`execute` runs :mod:`.circuit`'s definition on one of them.

Imports point one way: :mod:`.circuit` defines the circuit and imports none of its executions; each
execution (:mod:`.simulator`, :mod:`.pennylane_backend`, :mod:`.noise`, :mod:`.device`) derives from that
definition; this module, above them all, picks one. The fast simulator is imported here at once (training
and serving run it); the others only when asked for, since PennyLane takes seconds to import.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import simulator

__all__ = ["BACKENDS", "execute"]

# backend -> the options (besides device and shots) that it takes
_OPTIONS: dict[str, tuple[str, ...]] = {
    "fast": (),
    "pennylane": (),
    "noisy": ("noise", "seed", "chunk"),
    "device": ("runner",),
}
BACKENDS = tuple(_OPTIONS)
"""Names :func:`execute` accepts: ``fast``, ``pennylane``, ``noisy``, ``device``."""


def execute(
    inputs: Tensor,
    weights: Tensor,
    backend: str = "fast",
    device: str | None = None,
    shots: int | None = None,
    **options: Any,
) -> Tensor:
    """Run the circuit on every row of ``inputs``: ``(..., n)`` angles -> ``(..., n)`` values of <Z_i>.

    Args:
        inputs: ``(..., n)`` input angles, one circuit per row.
        weights: ``(L, 4, n)`` trainable angles.
        backend: how to run it (:data:`BACKENDS`):

            * ``'fast'``: the exact batched torch simulator (:mod:`.simulator`), differentiable; what
              training and serving use. Exact, so no ``shots``; ``device`` may only be None or
              ``'default.qubit'`` (the simulator computes what that device would).
            * ``'pennylane'``: a PennyLane QNode on ``device`` (default ``'default.qubit'``), exact or with
              ``shots`` (:mod:`.pennylane_backend`).
            * ``'noisy'``: the built-in noisy, sampling simulator (:func:`.noise.noisy_expvals`) with
              ``shots`` and options ``noise`` (a name, spec or NoiseModel), ``seed``, ``chunk``; evaluation
              only (no gradients).
            * ``'device'``: jobs on a PennyLane device through a result-caching
              :class:`.device.DeviceRunner`, given as option ``runner`` (its device and shots apply), or
              built from ``device`` and ``shots``; evaluation only.
        device: PennyLane device name, for ``'pennylane'`` and ``'device'``.
        shots: measurement shots (``None`` = exact expectation values), for all but ``'fast'``.
        options: backend-specific options, listed above.
    """
    if backend not in _OPTIONS:
        raise ValueError(f"execute(backend): expected one of {list(BACKENDS)}; got {backend!r}")
    allowed = _OPTIONS[backend]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"execute(backend={backend!r}): expected options among {list(allowed)}; got {unknown}"
        )
    if backend == "fast":
        if device not in (None, "default.qubit") or shots is not None:
            raise ValueError(
                "execute(backend='fast'): expected device=None and shots=None (the fast simulator is exact; "
                f"use backend='pennylane' for devices and shots); got device={device!r}, shots={shots!r}"
            )
        return simulator.expvals(inputs, weights)
    if backend == "pennylane":
        from .pennylane_backend import expvals as pennylane_expvals

        return pennylane_expvals(inputs, weights, device=device or "default.qubit", shots=shots)
    if backend == "noisy":
        if device is not None:
            raise ValueError(
                f"execute(backend='noisy'): expected device=None (a built-in simulator); got {device!r}"
            )
        from .noise import noisy_expvals

        return noisy_expvals(inputs, weights, shots=shots, **options)
    runner = options.get("runner")
    if runner is None:
        from .device import DeviceRunner

        runner = DeviceRunner(device or "default.qubit", shots=shots, progress=False)
    elif (device is not None and device != getattr(runner, "device", device)) or (
        shots is not None and shots != getattr(runner, "shots", shots)
    ):
        raise ValueError(
            f"execute(backend='device'): expected device and shots to match the runner's "
            f"({getattr(runner, 'device', None)!r}, {getattr(runner, 'shots', None)!r}) or be None; "
            f"got device={device!r}, shots={shots!r}"
        )
    return runner(inputs, weights)
