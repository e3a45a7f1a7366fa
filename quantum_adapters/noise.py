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

How it is computed (exactly, in float64 on the CPU, without gradients). Gates come one at a time from
:func:`circuit.gates`, so that a channel can follow each:

* noise-free: the state vector, ``B x 2^n`` amplitudes;
* noisy: the density matrix in the Pauli basis, ``rho = 2^-n sum_P r_P P`` with ``r_P = Tr(P rho)`` real,
  ``B x 4^n`` numbers (index digit per wire: I, X, Y, Z; wire 0 most significant). There a depolarising
  channel is diagonal (``r_P *= lam^(number of wires where P is not I)``, ``lam = 1 - 4p/3``) and folds
  into the gate before it: RY(t) + D(p) rotates (r_X, r_Z) by t and scales X, Y, Z by lam; CRZ + D(p2) x
  D(p2) is a sparse 16 x 16 Pauli transfer matrix on its two wires (each output mixes at most 4 inputs).
  The diagonal of rho, the outcome distribution, comes from the components in {I, Z}^n.

For r <= 4 the trained part of each layer (everything between two data re-uploads) is fused once per
weights into one matrix (``2^n x 2^n`` unitary, or ``4^n x 4^n`` transfer matrix), so a call costs a few
tensor operations per layer; larger r applies the gates one by one. Rows go in chunks that bound memory
(r = 10 with noise: ``4^10`` numbers, 8 MiB, per row).

Noise-aware training (:func:`density_expvals`, what ``noisy_expvals`` runs when its inputs or weights
need gradients, with ``shots=None``) is the same exact Pauli-basis density matrix written with
out-of-place torch ops, so autograd differentiates it: per layer, the data RYs (each a 4 x 4 mixing of
(r_X, r_Z) per row, times ``lam``) and one ``4^n x 4^n`` transfer matrix of the trained gates and their
channels, built from the weights on every call (differentiable in them). Readout error is per qubit, so
on a marginal it is affine: ``<Z_i>_measured = a + b <Z_i>`` with ``a = (M00 - M01 + M10 - M11) / 2`` and
``b = (M00 - M01 - M10 + M11) / 2``; ``<Z_i> = r_{Z_i}`` is one component of the Pauli vector. Exact, not
sampled: there is no gradient estimator to bias. It costs ``B x 4^n x 4^n`` multiply-adds per layer
(r = 4: 256 x 256 per token), so it is for small r; r > 4 applies the gates one by one (autograd then
keeps ``4^n`` numbers per row per gate).
"""

from __future__ import annotations

import cmath
import functools
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import check_inputs, check_shots, gates

__all__ = [
    "IDEAL_READOUT",
    "NOISE_MODELS",
    "NoiseModel",
    "density_expvals",
    "noise_gain",
    "noise_model",
    "noisy_expvals",
]

Readout = tuple[tuple[float, float], tuple[float, float]]

IDEAL_READOUT: Readout = ((1.0, 0.0), (0.0, 1.0))

# Numbers per chunk of rows (float64 Pauli vectors or complex128 amplitudes): 2^20, 8-16 MiB, so that a
# chunk stays in memory the caches can serve; r = 10 with noise runs one row (4^10 numbers) at a time.
_MAX_CHUNK_ENTRIES = 2**20
# Up to this many qubits the trained part of each layer is fused into one matrix per weights (256 x 256
# with noise: 0.5 MiB per layer), cached for the last _COMPILED_CACHE weight tensors (the adapted modules).
_FUSE_MAX_QUBITS = 4
_COMPILED_CACHE = 256


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
        if (
            not isinstance(rows, (tuple, list))
            or len(rows) != 2
            or any(not isinstance(r, (tuple, list)) or len(r) != 2 for r in rows)
        ):
            raise ValueError(
                f"NoiseModel.readout: expected a 2x2 confusion matrix ((P(0|0), P(1|0)), (P(0|1), P(1|1))); "
                f"got {rows!r}"
            )
        checked = tuple(
            tuple(_probability(f"NoiseModel.readout[{t}][{m}]", rows[t][m]) for m in range(2))
            for t in range(2)
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
        ``(..., n)`` values in [-1, 1] in ``inputs``' dtype. With ``shots=None`` and inputs or weights
        that require gradients (and grad mode on) the result comes from :func:`density_expvals`, the
        same exact values, differentiable: noise-aware training. Shots have no gradient: sampled calls
        must run under ``torch.no_grad()`` (or on tensors that do not require gradients).
    """
    n_layers, n = check_inputs(inputs, weights, "noisy_expvals", floating=True)
    noise = noise_model(noise)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed: expected an integer; got {seed!r}")
    check_shots(shots, "noisy_expvals(shots)")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"noisy_expvals(chunk): expected a positive integer; got {chunk!r}")
    if torch.is_grad_enabled() and (inputs.requires_grad or weights.requires_grad):
        if shots is not None:
            raise ValueError(
                f"noisy_expvals: shots={shots} has no gradient; expected shots=None to train through the noise "
                "(the exact density matrix), or a call under torch.no_grad() to evaluate with shots"
            )
        return density_expvals(inputs, weights, noise)
    rows = math.prod(inputs.shape[:-1])
    if rows == 0:
        return inputs.new_zeros(inputs.shape)
    x = inputs.detach().reshape(rows, n).to("cpu", torch.float64)
    w = weights.detach().to("cpu", torch.float64).contiguous()
    # Without gate noise the state stays pure: readout error alone acts on the state vector's probabilities.
    gate_noise = None if noise is None or noise.p1 == noise.p2 == 0.0 else (noise.p1, noise.p2)
    program = _compile(n, n_layers, w.numpy().tobytes(), gate_noise)
    generator = None
    if shots is not None:
        generator = torch.Generator().manual_seed(_call_seed(seed, x, w))
    per_row = 2**n if gate_noise is None else 4**n
    chunk = max(1, min(chunk, _MAX_CHUNK_ENTRIES // per_row))
    z_sign = _z_sign(n)  # (2^n, n)
    out = torch.empty(rows, n, dtype=torch.float64)
    for start in range(0, rows, chunk):
        probs = program.probabilities(x[start : start + chunk])  # (b, 2^n)
        if noise is not None:
            probs = _apply_readout(probs, noise.readout, n)
        if shots is not None:
            probs = _sample_counts(probs, shots, n, generator) / shots
        out[start : start + chunk] = probs @ z_sign
    return out.to(inputs.dtype).reshape(inputs.shape)


def density_expvals(inputs: Tensor, weights: Tensor, noise: NoiseModel | str | None) -> Tensor:
    """Exact <Z_i> under ``noise`` (shots=None), differentiable in ``inputs`` and ``weights``.

    The exact density-matrix simulation of the module docstring ("Noise-aware training") in ``inputs``'
    dtype (float32 in training; float64 for tests against :func:`noisy_expvals`' float64 path).

    Args:
        inputs: ``(..., n)`` input angles, one circuit per row.
        weights: ``(L, 4, n)`` trained angles.
        noise: a :class:`NoiseModel`, a name or spec for :func:`noise_model`, or ``None``.

    Returns:
        ``(..., n)`` values of <Z_i> after gate noise and readout error, with autograd's graph.
    """
    n_layers, n = check_inputs(inputs, weights, "density_expvals", floating=True)
    noise = noise_model(noise)
    p1, p2 = (noise.p1, noise.p2) if noise is not None else (0.0, 0.0)
    lam1, lam2 = 1.0 - 4.0 * p1 / 3.0, 1.0 - 4.0 * p2 / 3.0
    dtype = inputs.dtype
    x = inputs.reshape(-1, n)  # (B, n)
    w = weights.to(device=x.device, dtype=dtype)
    size = 4**n
    cos, sin = torch.cos(x), torch.sin(x)  # (B, n): data RY(c_i) turns (r_X, r_Z) of wire i by c_i
    # Layer 0's data RYs act on |0...0>: a product state, per wire (1, lam sin c, 0, lam cos c).
    state = x.new_ones(x.shape[0], 1)
    for wire in range(n):
        local = torch.stack(
            (torch.ones_like(cos[:, wire]), lam1 * sin[:, wire], 0 * cos[:, wire], lam1 * cos[:, wire]), -1
        )
        state = (state[:, :, None] * local[:, None, :]).reshape(x.shape[0], -1)  # (B, 4^(wire+1))
    ops = _trained_ops(n, n_layers)
    z_index = [3 * 4 ** (n - 1 - i) for i in range(n)]  # Z on wire i, I elsewhere: r_{Z_i} = <Z_i>
    if n <= _FUSE_MAX_QUBITS:  # every layer's trained part as one (4^n, 4^n) matrix, all layers at once
        basis = torch.eye(size, dtype=dtype, device=x.device).expand(n_layers, size, size)
        fused = _apply_trained(basis, ops, w, lam1, lam2)  # (L, 4^n, 4^n)
    for layer in range(n_layers):
        if layer > 0:
            for wire in range(n):
                state = _ry_pauli(state, wire, cos[:, wire, None, None], sin[:, wire, None, None], lam1)
        if n > _FUSE_MAX_QUBITS:
            state = _apply_trained(state, ops, w[layer], lam1, lam2)
        elif layer < n_layers - 1:
            state = state @ fused[layer]  # (B, 4^n)
        else:  # only the n components that are read out
            state = state @ fused[layer][:, z_index]  # (B, n)
    z = state if n <= _FUSE_MAX_QUBITS else state[:, z_index]  # (B, n)
    if noise is not None and noise.readout != IDEAL_READOUT:
        (m00, m01), (m10, m11) = noise.readout
        z = (m00 - m01 + m10 - m11) / 2 + (m00 - m01 - m10 + m11) / 2 * z
    return z.reshape(inputs.shape)


def noise_gain(weights: Tensor, noise: NoiseModel | str | None, *, rows: int = 512, seed: int = 0) -> float:
    """How much of the circuit's input-dependent signal survives ``noise``: a number in (0, 1].

    The ratio of the RMS deviation from its mean of <Z_i> under ``noise`` to the same of the exact
    <Z_i>, over ``rows`` input rows drawn uniformly from [0, 2 pi)^n (seeded by ``seed``), all wires
    together::

        gain = sqrt( sum_i Var_rows(z_i^noisy) / sum_i Var_rows(z_i^exact) )

    Depolarising channels contract the Pauli vector towards the maximally mixed state, so the noisy
    outputs are, roughly, ``gain`` times a smoothed version of the exact ones plus a constant (the readout
    error's offset). With the reference's ``depolarizing`` model at r = 4, L = 4 the gain is a few per
    cent (docs/quantum-devices.md, "Does noise-aware training help?"). ``noise=None`` gives 1.0.

    Args:
        weights: ``(L, 4, n)`` trained angles.
        noise: a :class:`NoiseModel`, a name or spec for :func:`noise_model`, or ``None``.
        rows: how many random input rows to average over (>= 2).
        seed: seeds the input rows.
    """
    noise = noise_model(noise)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2:
        raise ValueError(f"noise_gain(rows): expected an integer >= 2; got {rows!r}")
    if noise is None:
        return 1.0
    w = weights.detach().to("cpu", torch.float64)
    n = w.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, n, generator=generator, dtype=torch.float64) * (2 * math.pi)
    with torch.no_grad():
        exact = noisy_expvals(x, w)
        noisy = noisy_expvals(x, w, noise=noise)
    spread = float((exact - exact.mean(0)).square().sum())
    if spread == 0.0:
        return 1.0  # the circuit ignores its inputs: nothing to rescale
    return max(math.sqrt(float((noisy - noisy.mean(0)).square().sum()) / spread), 1e-12)


@functools.lru_cache(maxsize=16)
def _trained_ops(n: int, n_layers: int) -> tuple[tuple, ...]:
    """One layer's trained gates of :func:`circuit.gates` in order (the same in every layer):
    ``('RY', wire, (k, i))`` or ``('CRZ', control, target, (k, i))``, the angle at ``weights[l, k, i]``."""
    ops = []
    for gate in gates(n, n_layers):
        if gate.param[0] == "input" or gate.param[1] != 0:
            continue
        _, _, k, i = gate.param
        ops.append((gate.name, *gate.wires, (k, i)))
    return tuple(ops)


def _apply_trained(state: Tensor, ops: tuple[tuple, ...], w: Tensor, lam1: float, lam2: float) -> Tensor:
    """The trained gates of a layer and their channels on Pauli vectors, out of place (differentiable in
    ``w``): ``state`` ``(b, 4^n)`` with ``w`` ``(4, n)``, or ``(L, b, 4^n)`` with ``w`` ``(L, 4, n)`` (one
    layer's angles per leading index)."""
    lead = (-1, 1, 1, 1) if w.ndim == 3 else ()  # per-layer angles broadcast over (b, A, C)
    for op in ops:
        k, i = op[-1]
        angle = w[..., k, i]  # () or (L,)
        if op[0] == "RY":
            state = _ry_pauli(state, op[1], torch.cos(angle).view(lead), torch.sin(angle).view(lead), lam1)
        else:
            state = _crz_pauli(state, op[1], op[2], angle, lam2)
    return state


def _ry_pauli(state: Tensor, wire: int, cos: Tensor, sin: Tensor, lam: float) -> Tensor:
    """RY then ``DepolarizingChannel`` on ``wire`` (see :func:`_pauli_rotate`), out of place, on
    ``state`` ``(..., 4^n)``; ``cos``/``sin`` broadcast against ``(..., A, C)``."""
    view = state.unflatten(-1, (4**wire, 4, -1))
    i, x, y, z = view.unbind(-2)
    x_new = (cos * x + sin * z) * lam
    z_new = (cos * z - sin * x) * lam
    return torch.stack((i, x_new, y * lam, z_new), dim=-2).flatten(-3)


def _crz_pauli(state: Tensor, control: int, target: int, angle: Tensor, lam: float) -> Tensor:
    """CRZ(angle) then ``DepolarizingChannel`` on both wires, on Pauli vectors ``(..., 4^n)``, out of place.

    The 16 x 16 transfer matrix of :func:`_crz_transfer`, built in torch from ``angle`` (``()``, or
    ``(L,)`` for a leading layer axis of ``state``) so that it carries the gradient, and contracted with
    the two wires' Pauli digits.
    """
    half = (angle / 2)[..., None] * torch.tensor([-1.0, 1.0], dtype=angle.dtype)
    u = torch.cat((torch.ones_like(half), half), -1)  # phases of diag(CRZ): 0, 0, -t/2, t/2
    u = torch.polar(torch.ones_like(u), u * torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=u.dtype))
    pairs = _pair_paulis().to(u.dtype)  # (16, 4, 4)
    conjugated = pairs * (u[..., :, None] * u[..., None, :].conj())[..., None, :, :]  # (..., 16, 4, 4)
    transfer = torch.einsum("axy,...byx->...ab", pairs, conjugated).real / 4  # (..., 16 out, 16 in)
    damp = torch.tensor([1.0, lam, lam, lam], dtype=transfer.dtype)
    transfer = transfer * torch.outer(damp, damp).reshape(16, 1)
    transfer = transfer.unflatten(-1, (4, 4)).unflatten(-3, (4, 4))  # (..., pc, pt, ic, it)
    lo, hi = min(control, target), max(control, target)
    if control > target:
        transfer = transfer.transpose(-4, -3).transpose(-2, -1)  # digits in (lower wire, higher wire) order
    view = state.unflatten(-1, (4**lo, 4, 4 ** (hi - lo - 1), 4, -1))
    if state.ndim == 2:
        out = torch.einsum("pqij,xaiyjz->xapyqz", transfer.to(state.dtype), view)
    else:
        out = torch.einsum("lpqij,lxaiyjz->lxapyqz", transfer.to(state.dtype), view)
    return out.flatten(-5)


@functools.lru_cache(maxsize=1)
def _pair_paulis() -> Tensor:
    """``(16, 4, 4)`` two-qubit Paulis ``P_a0 (x) P_a1``, index ``4 a0 + a1``."""
    return torch.einsum("aij,bkl->abikjl", _PAULIS, _PAULIS).reshape(16, 4, 4)


# --- the circuit, compiled ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    """The row's input angles: RY(c[index]) on each wire, ``(wire, index)`` pairs."""

    inputs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Rotation:
    """RY(angle) on ``wire`` and, on a Pauli vector, the depolarising factor ``lam`` that follows it."""

    wire: int
    angle: float
    lam: float = 1.0


@dataclass(frozen=True)
class _Phase:
    """A diagonal gate on amplitudes: ``(2^n,)`` complex phases."""

    phases: Tensor


@dataclass(frozen=True)
class _PairTransfer:
    """A sparse 16 x 16 Pauli transfer matrix on wires ``lo < hi``: ``(p, q, ((i, j, coef), ...))`` gives
    output component ``(P_p on lo, P_q on hi)`` as a sum of input components."""

    lo: int
    hi: int
    terms: tuple[tuple[int, int, tuple[tuple[int, int, float], ...]], ...]


_Op = _Rotation | _Phase | _PairTransfer

# Single-qubit Paulis in the order the Pauli basis uses: I, X, Y, Z.
_PAULIS = torch.tensor(
    [[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=torch.complex128
)


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def _compile(
    n: int, n_layers: int, weight_bytes: bytes, depolarizing: tuple[float, float] | None
) -> _Program:
    """The circuit of :func:`circuit.gates` for these weights (float64 bytes of ``(L, 4, n)``) as steps:
    state-vector ops when ``depolarizing`` is None, else Pauli-vector ops with ``(p1, p2)`` folded in."""
    w = torch.frombuffer(bytearray(weight_bytes), dtype=torch.float64).view(n_layers, 4, n)
    pauli = depolarizing is not None
    lam1, lam2 = (1.0 - 4.0 * p / 3.0 for p in depolarizing) if pauli else (1.0, 1.0)
    bits = _bits(n)
    steps: list[_Data | list[_Op]] = []
    for gate in gates(n, n_layers):
        if gate.param[0] == "input":
            assert gate.name == "RY", f"input angles drive RY gates only; got {gate}"
            if not steps or not isinstance(steps[-1], _Data):
                steps.append(_Data(()))
            steps[-1] = _Data((*steps[-1].inputs, (gate.wires[0], gate.param[1])))
            continue
        if not steps or isinstance(steps[-1], _Data):
            steps.append([])
        angle = float(w[gate.param[1:]])
        if gate.name == "RY":
            steps[-1].append(_Rotation(gate.wires[0], angle, lam1))
        elif pauli:
            steps[-1].append(_crz_transfer(*gate.wires, angle, lam2))
        else:
            control, target = gate.wires
            phi = angle * bits[:, control] * (bits[:, target] - 0.5)  # CRZ: exp(i t c (x_t - 1/2))
            steps[-1].append(_Phase(torch.polar(torch.ones_like(phi), phi)))
    return _Program(n, steps, pauli, lam1)


def _crz_transfer(control: int, target: int, angle: float, lam: float) -> _PairTransfer:
    """CRZ(angle) followed by ``DepolarizingChannel`` (factor ``lam``) on both wires, as Pauli transfer.

    ``R[a, b] = Tr(P_a U P_b U^dagger) / 4`` over two-qubit Paulis ``P_a = P_a0 (x) P_a1`` (control first),
    then each output component scaled by ``lam`` per wire where it is not I.
    """
    half = angle / 2
    u = torch.tensor([1, 1, cmath.exp(-1j * half), cmath.exp(1j * half)], dtype=torch.complex128)  # diag(CRZ)
    pairs = torch.einsum("aij,bkl->abikjl", _PAULIS, _PAULIS).reshape(16, 4, 4)  # (P_a0 (x) P_a1) as 4 x 4
    conjugated = pairs * torch.outer(u, u.conj())  # U P U^dagger for a diagonal U
    transfer = torch.einsum("axy,byx->ab", pairs, conjugated).real / 4  # (16 out, 16 in)
    damp = torch.tensor([1.0, lam, lam, lam], dtype=torch.float64)
    transfer = transfer * torch.outer(damp, damp).reshape(16, 1)
    swap = control > target  # store components in (lower wire, higher wire) order

    def split(index: int) -> tuple[int, int]:
        on_control, on_target = divmod(index, 4)
        return (on_target, on_control) if swap else (on_control, on_target)

    terms = []
    for out in range(16):
        inputs = tuple(
            (*split(k), float(transfer[out, k])) for k in range(16) if abs(transfer[out, k]) > 1e-15
        )
        p, q = split(out)
        if inputs == ((p, q, 1.0),):
            continue  # this component passes unchanged
        terms.append((p, q, inputs))
    return _PairTransfer(min(control, target), max(control, target), tuple(terms))


class _Program:
    """A compiled circuit: data steps (RY by each row's input angles) between trained steps (fixed ops,
    fused into one matrix for n <= ``_FUSE_MAX_QUBITS``)."""

    def __init__(self, n: int, steps: list[_Data | list[_Op]], pauli: bool, lam1: float) -> None:
        self.n, self.pauli, self.lam1 = n, pauli, lam1
        bits = _bits(n).long()
        # Pauli-vector positions of the {I, Z}^n components, in the order of the basis states they measure.
        self.iz_index = (3 * bits * 4 ** torch.arange(n - 1, -1, -1)).sum(-1)  # (2^n,)
        fuse = n <= _FUSE_MAX_QUBITS
        self.steps = [s if isinstance(s, _Data) or not fuse else self._fuse(s) for s in steps]

    def _state(self, b: int) -> Tensor:
        """``b`` copies of |0...0>: amplitudes ``(b, 2^n)`` or Pauli vector ``(b, 4^n)``."""
        if self.pauli:
            state = torch.zeros(b, 4**self.n, dtype=torch.float64)
            state[:, self.iz_index] = 1.0  # Tr(P |0><0|) = 1 for P in {I, Z}^n
        else:
            state = torch.zeros(b, 2**self.n, dtype=torch.complex128)
            state[:, 0] = 1.0
        return state

    def _fuse(self, ops: list[_Op]) -> Tensor:
        """The matrix ``M`` with ``ops(state) = state @ M`` (row i = the image of basis vector i)."""
        size = 4**self.n if self.pauli else 2**self.n
        basis = torch.eye(size, dtype=torch.float64 if self.pauli else torch.complex128)
        self._apply(basis, ops)
        return basis

    def _apply(self, state: Tensor, ops: list[_Op] | Tensor) -> Tensor:
        if isinstance(ops, Tensor):
            return state @ ops
        b = state.shape[0]
        for op in ops:
            if isinstance(op, _Rotation):
                if self.pauli:
                    _pauli_rotate(
                        state.view(b, 4**op.wire, 4, -1), math.cos(op.angle), math.sin(op.angle), op.lam
                    )
                else:
                    _rotate(state.view(b, 2**op.wire, 2, -1), math.cos(op.angle / 2), math.sin(op.angle / 2))
            elif isinstance(op, _Phase):
                state.mul_(op.phases)
            else:
                _pair_transfer(state.view(b, 4**op.lo, 4, 4 ** (op.hi - op.lo - 1), 4, -1), op.terms)
        return state

    def probabilities(self, x: Tensor) -> Tensor:
        """``(b, 2^n)`` outcome probabilities (before readout error) for input rows ``x`` ``(b, n)``."""
        b, n = x.shape[0], self.n
        state = self._state(b)
        for step in self.steps:
            if not isinstance(step, _Data):
                state = self._apply(state, step)
                continue
            for wire, index in step.inputs:
                angle = x[:, index].view(b, 1, 1)
                if self.pauli:
                    _pauli_rotate(
                        state.view(b, 4**wire, 4, -1), torch.cos(angle), torch.sin(angle), self.lam1
                    )
                else:
                    _rotate(state.view(b, 2**wire, 2, -1), torch.cos(angle / 2), torch.sin(angle / 2))
        if not self.pauli:
            return torch.view_as_real(state).square().sum(-1)  # |psi|^2
        probs = state[:, self.iz_index]  # (b, 2^n): components over {I, Z}^n, bit 1 = Z
        for wire in range(n):  # per wire (r_I, r_Z) -> (P(0), P(1)) = ((r_I + r_Z) / 2, (r_I - r_Z) / 2)
            view = probs.view(b, 2**wire, 2, -1)
            probs = (
                torch.stack((view[:, :, 0] + view[:, :, 1], view[:, :, 0] - view[:, :, 1]), dim=2).view(b, -1)
                / 2
            )
        probs = probs.clamp_min(0.0)
        return probs / probs.sum(-1, keepdim=True)


def _rotate(view: Tensor, cos: float | Tensor, sin: float | Tensor) -> None:
    """RY on amplitudes, in place: ``view`` ``(b, A, 2, C)`` gets ``[[cos, -sin], [sin, cos]]`` (half angles)."""
    zero, one = view[:, :, 0].clone(), view[:, :, 1]
    view[:, :, 0].mul_(cos).sub_(one * sin)
    one.mul_(cos).add_(zero * sin)


def _pauli_rotate(view: Tensor, cos: float | Tensor, sin: float | Tensor, lam: float) -> None:
    """RY then ``DepolarizingChannel`` on a Pauli vector, in place: ``view`` ``(b, A, 4, C)``.

    RY(t) turns the Bloch vector about Y: ``x' = cos t x + sin t z``, ``z' = cos t z - sin t x``; the
    channel then scales x, y and z by ``lam``.
    """
    x, y, z = view[:, :, 1], view[:, :, 2], view[:, :, 3]
    x_old = x.clone()
    lam_cos, lam_sin = cos * lam, sin * lam
    x.mul_(lam_cos).add_(z * lam_sin)
    z.mul_(lam_cos).sub_(x_old * lam_sin)
    if lam != 1.0:
        y.mul_(lam)


def _pair_transfer(view: Tensor, terms: tuple) -> None:
    """A sparse two-wire Pauli transfer matrix, in place: ``view`` ``(b, A, 4, B, 4, C)``."""
    source = view.clone()
    for p, q, inputs in terms:
        target = view[:, :, p, :, q]
        if not inputs:
            target.zero_()
            continue
        (i, j, coef), *rest = inputs
        target.copy_(source[:, :, i, :, j]).mul_(coef)
        for i, j, coef in rest:
            target.add_(source[:, :, i, :, j], alpha=coef)


def _bits(n: int) -> Tensor:
    """``(2^n, n)`` float64 bits of every basis state; wire 0 is the most significant bit."""
    x = torch.arange(2**n)
    return ((x[:, None] >> torch.arange(n - 1, -1, -1)) & 1).to(torch.float64)


def _z_sign(n: int) -> Tensor:
    """``(2^n, n)``: the eigenvalue ``1 - 2 x_i`` of Z_i on every basis state."""
    return 1.0 - 2.0 * _bits(n)


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
