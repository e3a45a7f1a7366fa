"""Exact, batched, differentiable state-vector simulator of the QTHA circuit (the ``'fast'`` backend).

It computes what :func:`quantum_adapters.circuit.gates` defines, <Z_i> for every row, but never
applies a gate at a time. The ansatz has structure that turns 5·n·L gates into 4·L cheap tensor ops:

* Every single-qubit gate is an RY, and RYs about the same axis add: the second trainable RY of layer l
  and the data RY of layer l+1 fuse into one per-row RY(c_i + w[l,3,i]). The first data RY acting on
  |0...0> is a real product state, built directly as a Kronecker product of ``[cos c_i/2, sin c_i/2]``.
* A layer of RYs is a Kronecker product of real 2x2 matrices. The qubits are split into a few groups of
  at most ``_MAX_GROUP`` wires; each group's RYs form one small real matrix (2^g x 2^g; per row for the
  data-dependent layers), applied by a batched matmul along that group's axis of the state.
* A CRZ ring is diagonal: one phase vector ``exp(i phi(x))`` over the 2^n basis states, with ``phi`` linear
  in the ring's weights (``phi(x) = sum_i w_i x_i (x_{i+/-1} - 1/2)``). Applying it is one elementwise
  complex multiply.

So each row runs ``psi = D_rev R D_fwd ... R0 |0>`` as 2L phase multiplies and 2L Kronecker products.
The state is a complex tensor laid out ``(B, D_first, D_rest...)``: one axis per qubit group, the group
applied next first, so a real batched matmul contracts it directly over the view ``(B, D_first, rest·2)``
of the interleaved real/imaginary parts. Between two groups the axes are rotated by one copy.

Gradients come from a hand-written adjoint pass (:class:`_CircuitFunction`), not from autograd: the
circuit is unitary, so the backward pass runs the inverse ops to un-compute the state while it carries
the adjoint vector ``lambda``; nothing but the final state is stored, and memory stays flat in depth.
With ``dL = 2 Re<lambda|dpsi>``:

    lambda_final = (sum_i g_i Z_i) psi                      (g_i = dL/dz_i, Z_i diagonal)
    through psi_k = U psi_{k-1}:  lambda_{k-1} = U^T lambda_k     (U real orthogonal or a phase)
    RY(theta) on qubit i:          dL/dtheta = Re<lambda| (-iY_i) |psi>   = sum_pairs (lambda_1.psi_0 - lambda_0.psi_1)
    phase exp(i phi):              dL/dphi_x = -2 Im(conj(lambda_x) psi_x)

where ``a.b = Re(conj(a) b)`` and the pairs are the basis states differing only in qubit i (0 then 1).
For a group's matrix the qubit sums come from one batched matmul ``G = Lambda Psi^T`` (2^g x 2^g per row)
contracted with a constant +/-1 pattern. Building the product state, the fused angles and the phase
vectors from the inputs and weights is cheap and left to ordinary autograd around the function.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import _check_weights

__all__ = ["expvals"]

# Largest qubit group turned into one dense matrix. 2^5 = 32 keeps the batched matmuls efficient for
# the ranks the adapter uses (r = 4..10: one or two groups); larger r gets more groups.
_MAX_GROUP = 5
# Rows per chunk = _CHUNK_AMPLITUDES / 2^n: a chunk's state (and adjoint) then stays in the CPU caches
# through all 4L ops instead of streaming B x 2^n amplitudes through memory for every op.
_CHUNK_AMPLITUDES = 2**17


def expvals(inputs: Tensor, weights: Tensor) -> Tensor:
    """Exact <Z_i> of the circuit for every row of ``inputs``.

    Args:
        inputs: ``(..., n)`` input angles ``c`` (any leading batch shape), one circuit per row.
        weights: ``(L, 4, n)`` trainable angles (layout in :func:`quantum_adapters.circuit.weight_shape`).

    Returns:
        ``(..., n)`` values in [-1, 1]; float64 if ``inputs`` is float64, else float32 (cast back to
        ``inputs``' dtype for half precisions). Differentiable w.r.t. ``inputs`` and ``weights``.
    """
    _check_weights(weights, "simulator.expvals(weights)")
    n_layers, _, n = weights.shape
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[-1] != n:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"simulator.expvals(inputs): expected shape (..., {n}) to match weights {tuple(weights.shape)}; got {got}")
    if not inputs.is_floating_point():
        raise TypeError(f"simulator.expvals(inputs): expected a floating-point tensor; got dtype {inputs.dtype}")
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    rows = math.prod(inputs.shape[:-1])
    if rows == 0:
        return inputs.new_zeros(inputs.shape)
    c = inputs.reshape(rows, n).to(dtype)  # (B, n)
    w = weights.to(dtype=dtype, device=c.device)  # (L, 4, n)
    plan = _plan(n, c.device)

    psi0 = _product_state(c)  # (B, 2^n) real: the first data RY layer on |0...0>
    theta_rows = c.unsqueeze(0) + w[:-1, 3].unsqueeze(1)  # (L-1, B, n): RY(w[l,3]) fused with RY(c) of l+1
    theta_shared = torch.cat([w[:, 1], w[-1:, 3]])  # (L+1, n): first trainable RYs, then the final one
    phi = torch.einsum("lkq,kxq->lkx", w[:, 0::2], plan.ring_basis.to(dtype))  # (L, 2, 2^n) ring phases
    z = _CircuitFunction.apply(psi0, theta_rows, theta_shared, phi, plan)  # (B, n)
    return z.to(inputs.dtype).reshape(inputs.shape)


class _Plan:
    """Constants of an n-qubit simulation (built once per n and device, float64; cast at use)."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        self.sizes = _group_sizes(n)  # qubits per group, in wire order
        self.starts = [sum(self.sizes[:g]) for g in range(len(self.sizes))]  # first wire of each group
        x = torch.arange(2**n, device=device)
        bits = ((x[:, None] >> torch.arange(n - 1, -1, -1, device=device)) & 1).to(torch.float64)  # (2^n, n)
        nxt, prv = torch.roll(bits, -1, dims=1), torch.roll(bits, 1, dims=1)
        # phi_fwd(x) = sum_i w_i x_i (x_{i+1} - 1/2), phi_rev(x) = sum_i w_i x_i (x_{i-1} - 1/2)
        self.ring_basis = torch.stack([bits * (nxt - 0.5), bits * (prv - 0.5)])  # (2, 2^n, n)
        self.z_sign = 1.0 - 2.0 * bits  # (2^n, n): eigenvalue of Z_i on basis state x
        self.kron_basis = {s: _kron_basis(s, device) for s in set(self.sizes)}
        self.patterns = {s: _pair_pattern(s, device) for s in set(self.sizes)}


@functools.lru_cache(maxsize=64)
def _plan(n: int, device: torch.device) -> _Plan:
    return _Plan(n, device)


def _kron_basis(size: int, device: torch.device) -> Tensor:
    """``E`` ``(D, D*D)``: the RY product matrix is ``M.flatten() = v @ E``, with ``v`` its magnitudes.

    For RY(t_0) x ... x RY(t_{g-1}), entry ``M[r, c] = sign(r, c) * v[r XOR c]`` where
    ``v[d] = prod_j (sin t_j/2 if bit j of d else cos t_j/2)`` and ``sign = (-1)^(#qubits with r_j=0, c_j=1)``
    (the -sin of RY's upper-right entry). Building ``M`` as one small matmul avoids a cascade of
    broadcast products over 2x2 blocks, which torch runs slowly.
    """
    d = 2**size
    r = torch.arange(d, device=device)
    rows, cols = r[:, None], r[None, :]
    negative = torch.zeros(d, d, dtype=torch.long, device=device)
    for j in range(size):
        m = 1 << (size - 1 - j)
        negative += ((rows & m) == 0) & ((cols & m) != 0)
    basis = torch.zeros(d, d * d, dtype=torch.float64, device=device)
    basis[(rows ^ cols).flatten(), torch.arange(d * d, device=device)] = (1.0 - 2.0 * (negative % 2)).flatten().double()
    return basis


def _pair_pattern(size: int, device: torch.device) -> Tensor:
    """``P`` ``(size, D*D)`` with ``(P @ G.flatten())[j] = sum_{a: bit j of a = 0} G[a|m, a] - G[a, a|m]``.

    ``m`` is qubit j's bit (the group's first wire is the most significant). With
    ``G[a, a'] = lambda_a . psi_a'`` this is ``dL/dtheta_j`` of an RY on qubit j (module docstring).
    Stored transposed, (size, D*D), because MKL multiplies by a narrow right-hand matrix much faster
    in that orientation.
    """
    d = 2**size
    pattern = torch.zeros(size, d, d, dtype=torch.float64, device=device)
    for j in range(size):
        m = 1 << (size - 1 - j)
        for a in range(d):
            if not a & m:
                pattern[j, a | m, a] = 1.0
                pattern[j, a, a | m] = -1.0
    return pattern.reshape(size, d * d)


def _cos_sin_products(theta: Tensor) -> Tensor:
    """``(R, g)`` angles -> ``(2^g, R)``: ``v[d, r] = prod_j (sin if bit j of d else cos)(theta[r, j] / 2)``.

    Rows last so every product is a long contiguous vector op (row-first layouts make torch loop over
    tiny 2-element inner dimensions).
    """
    half = theta.t().contiguous() * 0.5  # (g, R)
    factors = torch.stack([torch.cos(half), torch.sin(half)], dim=1)  # (g, 2, R)
    v = factors[0]
    for j in range(1, theta.shape[-1]):
        v = (v[:, None, :] * factors[j][None, :, :]).reshape(-1, v.shape[-1])
    return v


def _product_state(c: Tensor) -> Tensor:
    """``(B, n)`` angles -> ``(B, 2^n)`` real amplitudes of RY(c_0)|0> x ... x RY(c_{n-1})|0>."""
    return _cos_sin_products(c).t()


def _ry_kron(theta: Tensor, basis: Tensor) -> Tensor:
    """``(..., g)`` angles -> ``(..., 2^g, 2^g)`` real matrices RY(theta_0) x ... x RY(theta_{g-1})."""
    d = basis.shape[0]
    v = _cos_sin_products(theta.reshape(-1, theta.shape[-1]))  # (D, R)
    return (v.t().contiguous() @ basis).view(*theta.shape[:-1], d, d)


@dataclass(frozen=True)
class _Op:
    """One fused op of the simulation, in forward order.

    ``kind``: 'phase' (multiply by ring phase ``index`` of the flat (2L, 2^n) table), 'mult' (apply
    group ``group``'s RY matrix of layer ``index``, per-row angles if ``rows`` else shared ones) or
    'rotate' (cycle the group axes). ``order``: the state's group-axis order before the op.
    """

    kind: str
    index: int
    rows: bool
    group: int
    order: tuple[int, ...]


@functools.lru_cache(maxsize=64)
def _program(n: int, n_layers: int) -> tuple[tuple[_Op, ...], tuple[int, ...]]:
    """The fused op sequence of an (n, L) circuit and the group order it ends in."""
    sizes = _group_sizes(n)
    order = tuple(range(len(sizes)))
    ops: list[_Op] = []

    def rotations(index: int, rows: bool) -> None:  # one Kronecker product, group by group
        nonlocal order
        for j in range(len(sizes)):
            ops.append(_Op("mult", index, rows, order[0], order))
            if j < len(sizes) - 1:
                ops.append(_Op("rotate", -1, False, -1, order))
                order = order[1:] + order[:1]

    for layer in range(n_layers):
        ops.append(_Op("phase", 2 * layer, False, -1, order))  # forward CRZ ring
        rotations(layer, rows=False)  # first trainable RY layer
        ops.append(_Op("phase", 2 * layer + 1, False, -1, order))  # reverse CRZ ring
        if layer < n_layers - 1:
            rotations(layer, rows=True)  # RY(w[l,3]) fused with the next layer's data RY(c)
        else:
            rotations(n_layers, rows=False)  # the last trainable RY layer
    return tuple(ops), order


def _group_sizes(n: int) -> list[int]:
    """Split n wires (in order) into ceil(n / _MAX_GROUP) groups of near-equal size."""
    k = -(-n // _MAX_GROUP)
    base, extra = divmod(n, k)
    return [base + (g < extra) for g in range(k)]


def _shape(b: int, dims: list[int], order: tuple[int, ...]) -> tuple[int, ...]:
    """State shape ``(B, D_o0, D_o1, ...)`` for group order ``order``."""
    return (b, *[dims[g] for g in order])


def _in_layout(table: Tensor, dims: list[int], order: tuple[int, ...]) -> Tensor:
    """A ``(2^n, ...)`` per-basis-state table reordered to group order ``order``: ``(D_o0, D_o1, ..., ...)``."""
    k = len(dims)
    return table.reshape(*dims, *table.shape[1:]).permute(*order, *range(k, table.ndim - 1 + k))


def _to_natural(t: Tensor, order: tuple[int, ...]) -> Tensor:
    """A ``(D_o0, D_o1, ...)`` table in group order ``order`` -> flat ``(2^n,)`` in wire order."""
    return t.permute(*[order.index(g) for g in range(len(order))]).reshape(-1)


class _CircuitFunction(torch.autograd.Function):
    """``(psi0, theta_rows, theta_shared, phi) -> z`` with an adjoint (un-computing) backward pass.

    psi0: ``(B, 2^n)`` real initial product state; theta_rows: ``(L-1, B, n)`` per-row RY angles;
    theta_shared: ``(L+1, n)`` RY angles shared by all rows; phi: ``(L, 2, 2^n)`` ring phases.
    Returns z: ``(B, n)``. Only the final state (B x 2^n complex) is saved for the backward pass.
    """

    @staticmethod
    def forward(ctx, psi0, theta_rows, theta_shared, phi, plan):
        sim = _Simulation(plan, theta_rows, theta_shared, phi, adjoint=False)
        final = torch.empty(psi0.shape, dtype=sim.cdtype, device=psi0.device)  # (B, 2^n), final layout
        z = psi0.new_empty(psi0.shape[0], plan.n)
        for rows in sim.chunks(psi0.shape[0]):
            z[rows] = sim.forward(psi0[rows], rows, final[rows])
        ctx.save_for_backward(final, theta_rows, theta_shared, phi)
        ctx.plan = plan
        return z

    @staticmethod
    def backward(ctx, grad_z):
        final, theta_rows, theta_shared, phi = ctx.saved_tensors
        sim = _Simulation(ctx.plan, theta_rows, theta_shared, phi, adjoint=True)
        b, n_states = final.shape
        grads = _Grads(
            psi0=final.real.new_empty(b, n_states),
            theta_rows=torch.zeros_like(theta_rows),
            theta_shared=torch.zeros_like(theta_shared),
            phi=torch.zeros(phi.numel() // n_states, n_states, dtype=phi.dtype, device=phi.device),
        )
        for rows in sim.chunks(b):
            sim.backward(final[rows], grad_z[rows], rows, grads)
        return grads.psi0, grads.theta_rows, grads.theta_shared, grads.phi.view(phi.shape), None


@dataclass
class _Grads:
    psi0: Tensor  # (B, 2^n)
    theta_rows: Tensor  # (L-1, B, n)
    theta_shared: Tensor  # (L+1, n)
    phi: Tensor  # (2L, 2^n)


class _Buffers:
    """Two flat complex work buffers used in turn: every op reads the current one and writes the other.

    Allocated once per call: a fresh multi-MB tensor per op costs page faults that rival the arithmetic.
    """

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device) -> None:
        self.pair = [torch.empty(numel, dtype=dtype, device=device) for _ in range(2)]
        self.current = 0

    def start(self, shape: tuple[int, ...]) -> Tensor:
        self.current = 0
        return self.pair[0][: math.prod(shape)].view(shape)

    def next(self, shape: tuple[int, ...]) -> Tensor:
        self.current ^= 1
        return self.pair[self.current][: math.prod(shape)].view(shape)


class _Simulation:
    """One call of :class:`_CircuitFunction`: constants in the layouts where the ops meet them, the shared
    RY matrices, and the work buffers. Rows run in chunks of ~``_CHUNK_AMPLITUDES`` amplitudes so that a
    chunk's state stays in cache through all 4L ops."""

    def __init__(self, plan: _Plan, theta_rows: Tensor, theta_shared: Tensor, phi: Tensor, adjoint: bool) -> None:
        self.plan, self.theta_rows, self.adjoint = plan, theta_rows, adjoint
        self.n_layers = phi.shape[0]
        self.program, self.final_order = _program(plan.n, self.n_layers)
        self.dims = [2**s for s in plan.sizes]
        self.wires = [slice(a, a + s) for a, s in zip(plan.starts, plan.sizes)]
        self.rdtype = phi.dtype
        self.cdtype = torch.complex128 if phi.dtype == torch.float64 else torch.complex64
        # The adjoint pass applies inverses: conjugate phases, transposed matrices.
        phases = torch.polar(torch.ones_like(phi), -phi if adjoint else phi).reshape(-1, phi.shape[-1])  # (2L, 2^n)
        self.phases = {
            op.index: _in_layout(phases[op.index], self.dims, op.order).contiguous()
            for op in self.program
            if op.kind == "phase"
        }
        self.kron_basis = {s: e.to(self.rdtype) for s, e in plan.kron_basis.items()}
        self.patterns = {s: p.to(self.rdtype) for s, p in plan.patterns.items()}
        self.shared = [self._matrices(theta_shared[:, w], g) for g, w in enumerate(self.wires)]  # (L+1, D, D)
        self.z_sign = _in_layout(plan.z_sign.to(self.rdtype), self.dims, self.final_order).reshape(-1, plan.n)
        self.chunk = max(1, _CHUNK_AMPLITUDES // 2**plan.n)
        numel = min(self.chunk, max(theta_rows.shape[1], 1)) * 2**plan.n if self.n_layers > 1 else self.chunk * 2**plan.n
        self.buffers = [_Buffers(numel, self.cdtype, phi.device) for _ in range(2 if adjoint else 1)]

    def chunks(self, b: int) -> list[slice]:
        return [slice(i, min(i + self.chunk, b)) for i in range(0, b, self.chunk)]

    def _matrices(self, theta: Tensor, group: int) -> Tensor:
        """What a 'mult' op multiplies by: ``M = RY x ... x RY`` forward, ``M^T`` in the adjoint pass.

        Returned as a transposed view of a contiguous tensor (``K.transpose(-1, -2)`` with ``K = M^T``
        built from the negated angles, or ``K = M``): MKL's batched matmul runs up to 2x faster on
        that orientation.
        """
        basis = self.kron_basis[self.plan.sizes[group]]
        return _ry_kron(theta if self.adjoint else -theta, basis).transpose(-1, -2)

    def _row_matrices(self, rows: slice) -> list[Tensor | None]:
        """This chunk's per-row matrices, per group: ``(L-1, b, D, D)``."""
        if self.n_layers == 1:
            return [None] * len(self.wires)
        return [self._matrices(self.theta_rows[:, rows, w], g) for g, w in enumerate(self.wires)]

    def forward(self, psi0: Tensor, rows: slice, out: Tensor) -> Tensor:
        """Run one chunk: ``(b, 2^n)`` real initial states -> z ``(b, n)``; final states into ``out``."""
        b = psi0.shape[0]
        buffers = self.buffers[0]
        x = buffers.start(_shape(b, self.dims, tuple(range(len(self.dims)))))
        x.view(b, -1).copy_(psi0)  # psi0 may be a strided view
        row_mats = self._row_matrices(rows)
        for op in self.program:
            x = self._apply(op, x, buffers, row_mats)
        out.view(x.shape).copy_(x)
        probs = torch.view_as_real(x).square().sum(-1).view(b, -1)  # (b, 2^n)
        return probs @ self.z_sign  # sum_x |psi_x|^2 z_i(x)

    def _apply(self, op: _Op, x: Tensor, buffers: _Buffers, row_mats: list[Tensor | None]) -> Tensor:
        """One op (or its inverse in the adjoint pass) on state ``x``, written into the next buffer."""
        if op.kind == "rotate":
            if self.adjoint:  # the last group axis comes back first
                y = buffers.next(_shape(x.shape[0], self.dims, op.order))
                y.copy_(x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)))
            else:
                y = buffers.next(_shape(x.shape[0], self.dims, op.order[1:] + op.order[:1]))
                y.copy_(x.permute(0, *range(2, x.ndim), 1))
        elif op.kind == "phase":
            y = buffers.next(x.shape)
            torch.mul(x, self.phases[op.index], out=y)
        else:
            mats = row_mats[op.group] if op.rows else self.shared[op.group]
            y = buffers.next(x.shape)
            _bmm(mats[op.index], x, y)
        return y

    def backward(self, final: Tensor, grad_z: Tensor, rows: slice, grads: _Grads) -> None:
        """Adjoint pass of one chunk (``final``: its ``(b, 2^n)`` final states): accumulate into ``grads``."""
        b = final.shape[0]
        shape = _shape(b, self.dims, self.final_order)
        psi_buffers, lam_buffers = self.buffers
        psi = psi_buffers.start(shape)
        psi.copy_(final.view(shape))
        lam = lam_buffers.start(shape)
        torch.mul(psi, (grad_z @ self.z_sign.t()).view(shape), out=lam)  # lambda = (sum_i g_i Z_i) psi
        row_mats = self._row_matrices(rows)
        for op in reversed(self.program):
            if op.kind == "phase":
                inner = torch.linalg.vecdot(lam, psi, dim=0)  # sum_b conj(lambda) psi, (D_o0, D_o1, ...)
                grads.phi[op.index] -= 2 * _to_natural(inner.imag, op.order)
            elif op.kind == "mult":
                d = psi.shape[1]
                pair = torch.bmm(_real_rows(lam), _real_rows(psi).transpose(1, 2)).view(b, d * d)  # lambda_a . psi_a'
                pattern = self.patterns[self.plan.sizes[op.group]]  # (g, D * D)
                wires = self.wires[op.group]
                if op.rows:
                    grads.theta_rows[op.index, rows, wires] = torch.nn.functional.linear(pair, pattern)
                else:
                    grads.theta_shared[op.index, wires] += pattern @ pair.sum(0)
            psi = self._apply(op, psi, psi_buffers, row_mats)
            lam = self._apply(op, lam, lam_buffers, row_mats)
        grads.psi0[rows] = 2 * lam.real.reshape(b, -1)  # dL/dpsi0 = 2 Re(lambda_0) for a real psi0


def _real_rows(x: Tensor) -> Tensor:
    """Complex state ``(b, D, rest...)`` as the real matrix stack ``(b, D, rest * 2)`` (a view)."""
    return torch.view_as_real(x).view(x.shape[0], x.shape[1], -1)


def _bmm(mat: Tensor, x: Tensor, out: Tensor) -> None:
    """``out = mat @ x`` along the first group axis of complex states ``x``, ``out`` ``(b, D, rest...)``;
    ``mat`` is real, ``(b, D, D)`` per row or ``(D, D)`` shared."""
    b, d = x.shape[:2]
    torch.bmm(mat.expand(b, d, d), _real_rows(x), out=_real_rows(out))
