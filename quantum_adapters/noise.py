"""The QTHA circuit as a quantum device runs it: finite shots, depolarising gate noise, readout error.

The reference (Origin Quantum's QTHA, arXiv 2503.12790) ran its adapter circuits on a superconducting
machine, where every <Z_i> is estimated from a finite number of shots and every gate is noisy. This
module computes what such a device would return for the circuit of :func:`circuit.gates`, so that a
frozen adapter can be evaluated under those conditions before anyone pays for device time.

Channels (PennyLane's conventions, checked against ``default.mixed`` in the tests)::

    after every RY on wire i:           rho -> D_i(p1) rho
    after every CRZ on wires (a, b):    rho -> D_b(p2) D_a(p2) rho
    D_i(p) rho = (1 - p) rho + p/3 (X_i rho X_i + Y_i rho Y_i + Z_i rho Z_i)      (DepolarizingChannel(p))

The two-qubit gate's noise is one depolarising channel on each of its wires, the rule pyQPanda's
``NoiseQVM`` uses for two-qubit gates (its Kraus set is ``{K_j x K_k}``). pyQPanda's own depolarising
parameter ``q`` (``K_0 = sqrt(1 - 3q/4) I``) is PennyLane's ``p = 3q/4``.

Readout error acts on the measured bits, independently per qubit, with the confusion matrix
``M[t][m] = P(measured m | true t)``::

    P_meas(m_0 .. m_{n-1}) = sum_t  prod_i M[t_i][m_i]  P(t_0 .. t_{n-1})

Then ``shots=None`` returns ``<Z_i> = sum_m P_meas(m) (1 - 2 m_i)`` exactly, and ``shots=S`` draws S
outcomes from the 2^n-outcome distribution ``P_meas`` (a multinomial, sampled as n levels of binomial
splits: bit 0, then bit 1 given bit 0, ...) and returns the sample means of ``1 - 2 m_i``: what a device
returns after S shots.

Noise-free circuits are simulated as state vectors (``B x 2^n`` amplitudes), noisy ones as density
matrices (``B x 4^n`` entries, rows in chunks so that memory stays bounded for r up to 10). Gates are
applied one at a time from :func:`circuit.gates`, so a channel can follow each; there are no gradients
(shots and noise are for evaluation; train with the exact ``'fast'`` backend).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import _check_weights, gates

__all__ = ["IDEAL_READOUT", "NOISE_MODELS", "NoiseModel", "noise_model", "noisy_expvals"]

Readout = tuple[tuple[float, float], tuple[float, float]]

IDEAL_READOUT: Readout = ((1.0, 0.0), (0.0, 1.0))

# Density-matrix entries per chunk of rows (complex128): 2^22 entries = 64 MiB, so r = 10 (4^10 entries
# per row) runs 4 rows at a time and r = 4 the whole ``chunk``.
_MAX_DENSITY_ENTRIES = 2**22


def _probability(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: expected a probability in [0, 1]; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class NoiseModel:
    """Gate and readout noise of a device, in PennyLane's conventions (see the module docstring)."""

    p1: float = 0.0
    """Depolarising probability ``p`` of ``DepolarizingChannel(p)`` on the wire after every RY."""
    p2: float = 0.0
    """Depolarising probability on each of the two wires after every CRZ."""
    readout: Readout = IDEAL_READOUT
    """Confusion matrix ``P(measured | true)``: row 0 is a true 0, row 1 a true 1; columns measured 0 and 1.
    Each row sums to 1; the same matrix applies to every qubit."""

    def __post_init__(self) -> None:
        for name in ("p1", "p2"):
            object.__setattr__(self, name, _probability(f"NoiseModel.{name}", getattr(self, name)))
        rows = self.readout
        if not isinstance(rows, (tuple, list)) or len(rows) != 2 or any(
            not isinstance(r, (tuple, list)) or len(r) != 2 for r in rows
        ):
            raise ValueError(
                f"NoiseModel.readout: expected a 2x2 confusion matrix ((P(0|0), P(1|0)), (P(0|1), P(1|1))); "
                f"got {rows!r}"
            )
        checked = tuple(
            tuple(_probability(f"NoiseModel.readout[{t}][{m}]", rows[t][m]) for m in range(2)) for t in range(2)
        )
        for t in range(2):
            if abs(sum(checked[t]) - 1.0) > 1e-9:
                raise ValueError(
                    f"NoiseModel.readout[{t}]: expected a row of probabilities summing to 1 "
                    f"(P(measured 0 | true {t}) + P(measured 1 | true {t})); got {checked[t]} (sum {sum(checked[t])})"
                )
        object.__setattr__(self, "readout", checked)

    def spec(self) -> str:
        """The model as a spec string that :func:`noise_model` parses back."""
        e0, e1 = self.readout[0][1], self.readout[1][0]
        readout = f"{e0!r}" if e0 == e1 else f"{e0!r}:{e1!r}"
        return f"p1={self.p1!r},p2={self.p2!r},readout={readout}"


NOISE_MODELS: dict[str, NoiseModel | None] = {
    "none": None,
    # The reference's noisy simulator: 1% on single-qubit gates, 10% on two-qubit gates, and the
    # readout confusion matrix [[0.95, 0.05], [0.1, 0.9]].
    "depolarizing": NoiseModel(0.01, 0.10, ((0.95, 0.05), (0.10, 0.90))),
}


def noise_model(spec: str | NoiseModel | None) -> NoiseModel | None:
    """A noise model from a name in :data:`NOISE_MODELS` or a spec such as ``'p1=0.01,p2=0.05,readout=0.02'``.

    Spec keys (any subset; missing ones are noise-free): ``p1`` and ``p2`` (depolarising probabilities),
    ``readout=E`` (symmetric: each bit flips with probability E) or ``readout=E0:E1`` (E0 = P(read 1 |
    true 0), E1 = P(read 0 | true 1)). ``None`` and :class:`NoiseModel` instances are returned as they are.
    """
    if spec is None or isinstance(spec, NoiseModel):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"noise: expected a name, a spec string or a NoiseModel; got {type(spec).__name__}")
    text = spec.strip()
    if text.lower() in NOISE_MODELS:
        return NOISE_MODELS[text.lower()]
    expected = f"a name in {sorted(NOISE_MODELS)} or 'p1=P,p2=P,readout=E' (readout=E or E0:E1)"
    if "=" not in text:
        raise ValueError(f"noise {spec!r}: expected {expected}")
    values: dict[str, object] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in ("p1", "p2", "readout") or key in values:
            why = "a repeated key" if key in values else f"unknown or malformed part {part.strip()!r}"
            raise ValueError(f"noise {spec!r}: {why}; expected {expected}")
        try:
            if key == "readout":
                e0, _, e1 = value.partition(":")
                flip0 = _probability("noise readout", float(e0))
                flip1 = _probability("noise readout", float(e1)) if e1 else flip0
                values[key] = ((1.0 - flip0, flip0), (flip1, 1.0 - flip1))
            else:
                values[key] = float(value)
        except ValueError as exc:
            raise ValueError(f"noise {spec!r}: {key}={value!r}: {exc}") from None
    try:
        return NoiseModel(**values)
    except ValueError as exc:
        raise ValueError(f"noise {spec!r}: {exc}") from None


def noisy_expvals(
    inputs: Tensor,
    weights: Tensor,
    *,
    noise: NoiseModel | str | None = None,
    shots: int | None = None,
    seed: int = 0,
    chunk: int = 256,
) -> Tensor:
    """<Z_i> of the circuit for every row as a device returns them: with noise, from ``shots`` samples.

    Args:
        inputs: ``(..., n)`` input angles, one circuit per row.
        weights: ``(L, 4, n)`` trained angles (layout in :func:`circuit.weight_shape`).
        noise: a :class:`NoiseModel`, a name or spec for :func:`noise_model`, or ``None`` (noise-free).
        shots: ``None`` for the exact expectation values of the (noisy) measurement distribution, else
            the number of shots per row (a positive integer).
        seed: seeds the sampling. The generator is seeded from ``seed``, ``weights`` and ``inputs``
            together, so a call is reproducible and two calls on different rows draw different samples.
        chunk: rows simulated at a time (fewer for density matrices of many qubits, to bound memory).

    Returns:
        ``(..., n)`` values in [-1, 1] in ``inputs``' dtype. Not differentiable: call it under
        ``torch.no_grad()`` (or on tensors that do not require gradients).
    """
    _check_weights(weights, "noisy_expvals(weights)")
    n_layers, _, n = weights.shape
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[-1] != n:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"noisy_expvals(inputs): expected shape (..., {n}) to match weights {tuple(weights.shape)}; got {got}")
    if not inputs.is_floating_point():
        raise TypeError(f"noisy_expvals(inputs): expected a floating-point tensor; got dtype {inputs.dtype}")
    noise = noise_model(noise)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed: expected an integer; got {seed!r}")
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
        raise ValueError(f"shots: expected a positive integer; got {shots!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"noisy_expvals(chunk): expected a positive integer; got {chunk!r}")
    if torch.is_grad_enabled() and (inputs.requires_grad or weights.requires_grad):
        raise ValueError(
            "noisy_expvals: expected to run without gradients (under torch.no_grad() or inference_mode); "
            "shots and noise are for evaluation: train with the exact backend='fast'"
        )
    rows = math.prod(inputs.shape[:-1])
    if rows == 0:
        return inputs.new_zeros(inputs.shape)
    x = inputs.detach().reshape(rows, n).to("cpu", torch.float64)
    w = weights.detach().to("cpu", torch.float64)
    program = _program(n, n_layers, w)
    generator = None
    if shots is not None:
        generator = torch.Generator().manual_seed(_call_seed(seed, x, w))
    if noise is not None:
        chunk = max(1, min(chunk, _MAX_DENSITY_ENTRIES // 4**n))
    z_sign = _z_sign(n)  # (2^n, n)
    out = torch.empty(rows, n, dtype=torch.float64)
    for start in range(0, rows, chunk):
        block = x[start : start + chunk]  # (b, n)
        if noise is None:
            probs = _pure_probs(block, program, n)
        else:
            probs = _mixed_probs(block, program, n, noise)
            probs = _apply_readout(probs, noise.readout, n)
        if shots is not None:
            probs = _sample_counts(probs, shots, n, generator) / shots
        out[start : start + chunk] = probs @ z_sign
    return out.to(inputs.dtype).reshape(inputs.shape)


# --- the circuit, compiled ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _RY:
    wire: int
    input_index: int | None  # the row's input angle c_i, or None for a weight angle
    cos: float  # cos(theta/2) and sin(theta/2) of a weight angle
    sin: float


@dataclass(frozen=True)
class _CRZ:
    control: int
    target: int
    phases: Tensor  # (2^n,) complex: exp(i theta c (t - 1/2)) on each basis state


def _program(n: int, n_layers: int, w: Tensor) -> list[_RY | _CRZ]:
    """:func:`circuit.gates` with each weight angle turned into what applying its gate needs."""
    bits = _bits(n)  # (2^n, n)
    program: list[_RY | _CRZ] = []
    for gate in gates(n, n_layers):
        if gate.name == "RY":
            if gate.param[0] == "input":
                program.append(_RY(gate.wires[0], gate.param[1], 1.0, 0.0))
            else:
                half = float(w[gate.param[1:]]) / 2
                program.append(_RY(gate.wires[0], None, math.cos(half), math.sin(half)))
        else:
            control, target = gate.wires
            phi = float(w[gate.param[1:]]) * bits[:, control] * (bits[:, target] - 0.5)  # (2^n,)
            program.append(_CRZ(control, target, torch.polar(torch.ones_like(phi), phi)))
    return program


def _bits(n: int) -> Tensor:
    """``(2^n, n)`` float64 bits of every basis state; wire 0 is the most significant bit."""
    x = torch.arange(2**n)
    return ((x[:, None] >> torch.arange(n - 1, -1, -1)) & 1).to(torch.float64)


def _z_sign(n: int) -> Tensor:
    """``(2^n, n)``: the eigenvalue ``1 - 2 x_i`` of Z_i on every basis state."""
    return 1.0 - 2.0 * _bits(n)


def _ry_rows(op: _RY, x: Tensor) -> tuple[Tensor, Tensor]:
    """``cos(theta/2)``, ``sin(theta/2)`` shaped ``(b, 1, 1)`` (per row) or ``(1, 1, 1)`` (a weight)."""
    if op.input_index is None:
        return x.new_full((1, 1, 1), op.cos), x.new_full((1, 1, 1), op.sin)
    half = x[:, op.input_index].view(-1, 1, 1) / 2
    return torch.cos(half), torch.sin(half)


def _rotate(state: Tensor, cos: Tensor, sin: Tensor) -> None:
    """RY in place on the middle axis of ``state`` ``(b, A, 2, C)``: ``[[c, -s], [s, c]]``."""
    zero, one = state[:, :, 0].clone(), state[:, :, 1]
    state[:, :, 0].mul_(cos).sub_(one * sin)
    one.mul_(cos).add_(zero * sin)


# --- noise-free: state vectors --------------------------------------------------------------------


def _pure_probs(x: Tensor, program: list[_RY | _CRZ], n: int) -> Tensor:
    """``(b, 2^n)`` outcome probabilities of the noise-free circuit for input rows ``x`` ``(b, n)``."""
    b = x.shape[0]
    psi = torch.zeros(b, 2**n, dtype=torch.complex128)
    psi[:, 0] = 1.0
    for op in program:
        if isinstance(op, _RY):
            cos, sin = _ry_rows(op, x)
            _rotate(psi.view(b, 2**op.wire, 2, -1), cos, sin)
        else:
            psi.mul_(op.phases)
    return torch.view_as_real(psi).square().sum(-1)  # |psi|^2, (b, 2^n)


# --- noisy: density matrices ----------------------------------------------------------------------


def _mixed_probs(x: Tensor, program: list[_RY | _CRZ], n: int, noise: NoiseModel) -> Tensor:
    """``(b, 2^n)`` outcome probabilities (before readout error) of the noisy circuit."""
    b, dim = x.shape[0], 2**n
    rho = torch.zeros(b, dim, dim, dtype=torch.complex128)
    rho[:, 0, 0] = 1.0
    for op in program:
        if isinstance(op, _RY):
            cos, sin = _ry_rows(op, x)
            a = 2**op.wire
            _rotate(rho.view(b, a, 2, -1), cos, sin)  # U rho  (the row index's bit)
            _rotate(rho.view(b, dim * a, 2, -1), cos, sin)  # (U rho) U^T  (the column index's bit; U real)
            _depolarize(rho, op.wire, n, noise.p1)
        else:
            rho.mul_(op.phases.view(1, dim, 1)).mul_(op.phases.conj().view(1, 1, dim))
            _depolarize(rho, op.control, n, noise.p2)
            _depolarize(rho, op.target, n, noise.p2)
    probs = torch.diagonal(rho, dim1=1, dim2=2).real.clamp_min(0.0)  # (b, 2^n)
    return probs / probs.sum(-1, keepdim=True)


def _depolarize(rho: Tensor, wire: int, n: int, p: float) -> None:
    """``DepolarizingChannel(p)`` on ``wire`` of ``rho`` ``(b, 2^n, 2^n)``, in place.

    ``(1 - p) rho + p/3 sum_{X,Y,Z} P rho P = lam rho + (1 - lam) Tr_wire(rho) x I/2`` with
    ``lam = 1 - 4p/3``: on the 2x2 blocks of the wire's (row bit, column bit), the off-diagonal blocks
    shrink by ``lam`` and the two diagonal blocks move towards their mean.
    """
    if p == 0.0:
        return
    lam = 1.0 - 4.0 * p / 3.0
    a, c = 2**wire, 2 ** (n - 1 - wire)
    blocks = rho.view(rho.shape[0], a, 2, c, a, 2, c)
    d0, d1 = blocks[:, :, 0, :, :, 0], blocks[:, :, 1, :, :, 1]
    shared = (d0 + d1) * ((1.0 - lam) / 2)
    d0.mul_(lam).add_(shared)
    d1.mul_(lam).add_(shared)
    blocks[:, :, 0, :, :, 1].mul_(lam)
    blocks[:, :, 1, :, :, 0].mul_(lam)


# --- measurement ----------------------------------------------------------------------------------


def _apply_readout(probs: Tensor, readout: Readout, n: int) -> Tensor:
    """``(b, 2^n)`` true-outcome probabilities -> measured-outcome probabilities (confusion per qubit)."""
    if readout == IDEAL_READOUT:
        return probs
    (m00, m01), (m10, m11) = readout
    b = probs.shape[0]
    out = probs.clone()
    for wire in range(n):
        view = out.view(b, 2**wire, 2, -1)
        true0, true1 = view[:, :, 0].clone(), view[:, :, 1].clone()
        view[:, :, 0] = m00 * true0 + m10 * true1
        view[:, :, 1] = m01 * true0 + m11 * true1
    return out


def _sample_counts(probs: Tensor, shots: int, n: int, generator: torch.Generator) -> Tensor:
    """``(b, 2^n)`` multinomial counts of ``shots`` draws from each row of ``probs``.

    Sampled one bit at a time: the shots landing on each prefix of bits split binomially on the next
    bit with its conditional probability, which is exactly a multinomial draw, in n vectorised steps.
    """
    b = probs.shape[0]
    counts = torch.full((b, 1), float(shots), dtype=torch.float64)
    for level in range(n):
        marginal = probs.view(b, 2 ** (level + 1), -1).sum(-1).view(b, 2**level, 2)  # P(prefix, next bit)
        total = marginal.sum(-1)
        p_zero = torch.where(total > 0, marginal[..., 0] / total.clamp_min(1e-300), 0.5).clamp(0.0, 1.0)
        zeros = torch.binomial(counts, p_zero, generator=generator)
        counts = torch.stack([zeros, counts - zeros], dim=-1).view(b, 2 ** (level + 1))
    return counts


def _call_seed(seed: int, x: Tensor, w: Tensor) -> int:
    """A 63-bit generator seed from the user's seed and the call's inputs and weights."""
    digest = hashlib.sha256()
    digest.update(str(seed).encode())
    digest.update(w.numpy().tobytes())
    digest.update(x.numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1
