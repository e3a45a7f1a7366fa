"""Exact, batched, differentiable state-vector simulator of the QTHA circuit (the ``'fast'`` backend).

It computes what :func:`quantum_adapters.circuit.gates` defines, <Z_i> for every row, in one of two
executions. On the CPU, where a C++ compiler is found, the compiled kernel (:mod:`._kernel`) runs each
row's whole circuit in the L1 cache with a hand-written adjoint backward: one call forward, one
backward, 5-9x the torch ops below (n = 8, L = 8 / n = 4, L = 4, 1,024 rows, forward + backward).
Elsewhere (GPU tensors, no compiler, ``QTHA_KERNEL=torch``) the torch ops described next run; tests hold
the two equal (values and gradients). The torch execution never applies a gate at a time. The ansatz has structure that turns 5·n·L gates into 4·L cheap tensor ops:

* Every single-qubit gate is an RY, and RYs about the same axis add: the second trainable RY of layer l
  and the data RY of layer l+1 fuse into one per-row RY(c_i + w[l,3,i]). The first data RY acting on
  |0...0> is a real product state, built directly as a Kronecker product of ``[cos c_i/2, sin c_i/2]``.
* A layer of RYs is a Kronecker product of real 2x2 matrices. The qubits are split into a few groups of
  at most ``_MAX_GROUP`` wires; each group's RYs form one small real matrix (2^g x 2^g; per row for the
  data-dependent layers), applied by a batched matmul along that group's axis of the state.
* A CRZ ring is diagonal: one phase vector ``exp(i phi(x))`` over the 2^n basis states, with ``phi`` linear
  in the ring's weights (``phi(x) = sum_i w_i x_i (x_{i+/-1} - 1/2)``). Applying it is one elementwise
  complex multiply.

So each row runs ``psi = R D_rev R D_fwd ... R D_fwd psi0`` as 2L phase multiplies and 2L Kronecker
products. The state is a complex tensor laid out ``(B, D_first, D_rest...)``, one axis per qubit group,
the group applied next first, so that a real batched matmul contracts it directly over the view
``(B, D_first, rest·2)`` of the interleaved real/imaginary parts; between two groups the axes are
rotated by one copy. Rows run in chunks of ~``_CHUNK_AMPLITUDES`` amplitudes (512 rows at n = 8) so a
chunk stays in the CPU caches through all ops, every op writes into one of two preallocated buffers
through views made once per chunk size, and most ops are a single torch call: at the adapter's sizes
per-call overhead and fresh multi-MB allocations otherwise cost as much as the arithmetic.

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
contracted with a constant +/-1 pattern. The small steps from inputs and weights to the function's
arguments (product-state factors, fused angles, phase vectors) are left to ordinary autograd.

Cost (n = 8, L = 8, 4096 rows, 2 CPU cores): forward + backward ~0.15-0.2 s, 40-50x PennyLane's
default.qubit with backprop, at ~30 MB peak instead of ~13 GB. About 60% of it is the batched matmuls
(forward 4 per layer; backward 8 to un-compute the state and carry the adjoint, plus 4 for gradients),
the rest the axis rotations, phase multiplies, the phase-gradient reductions and per-row matrix builds.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _kernel
from .circuit import check_inputs, check_weights, input_shape_error

__all__ = ["FROZEN_MAX_BYTES", "FrozenCircuit", "expvals", "frozen_bytes"]

# Largest qubit group turned into one dense matrix (2^g x 2^g). Measured here (2 cores, fwd+bwd, L=8):
# groups of <= 4 beat <= 5 at r = 9, 10 (e.g. 4+3+3 is 1.2x faster than 5+5) and <= 3 at r = 8 (4+4 vs
# 3+3+2, 1.15x): the matmul work grows with 2^g, every extra group costs one more axis rotation (a copy).
_MAX_GROUP = 4
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
    _, n = check_inputs(inputs, weights, "simulator.expvals", floating=True)
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    rows = math.prod(inputs.shape[:-1])
    if rows == 0:
        return inputs.new_zeros(inputs.shape)
    c = inputs.reshape(rows, n).to(dtype)  # (B, n)
    w = weights.to(dtype=dtype, device=c.device)  # (L, 4, n)
    plan = _plan(n, c.device)
    kernel = _compiled(n, c.device)
    if kernel is not None:
        return _kernel_expvals(kernel, plan, c, w).to(inputs.dtype).reshape(inputs.shape)

    factors = _product_factors(plan, c)
    w_rows, theta_shared, phi = _weight_terms(plan, w)
    theta_rows = c.unsqueeze(0) + w_rows  # (L-1, B, n): RY(w[l,3]) fused with RY(c) of l+1
    if torch.is_grad_enabled() and (c.requires_grad or w.requires_grad):
        z = _CircuitFunction.apply(theta_rows, theta_shared, phi, plan, *factors)  # (B, n)
    else:  # inference: nothing to save for a backward pass
        z, _ = _simulate(plan, theta_rows, theta_shared, phi, factors, keep_final=False)
    return z.to(inputs.dtype).reshape(inputs.shape)


def _compiled(n: int, device: torch.device) -> _kernel.Kernel | None:
    """The compiled kernel where it applies (CPU tensors, n <= its limit) and could be built, else None."""
    if device.type != "cpu" or n > _kernel.MAX_QUBITS:
        return None
    return _kernel.load()


def _kernel_expvals(kernel: _kernel.Kernel, plan: _Plan, c: Tensor, w: Tensor) -> Tensor:
    """<Z_i> ``(B, n)`` of rows ``c`` ``(B, n)`` by the compiled kernel, differentiable (adjoint backward).

    The kernel's program is uniform over layers: per-row RY angles ``c + offsets[l]`` (``offsets`` ``(L,
    n)``: layer 0 zeros, ``c`` itself on |0...0>; layer l > 0 ``w[l-1, 3]``, the second trainable RY fused
    with the next data RY), shared RY angles ``theta_shared`` ``(L+1, n)`` and ring phases ``phi`` ``(L, 2,
    2^n)``; the kernel takes the rows' sines and cosines itself, and the small maps from w to these
    tables are left to autograd.
    """
    w_rows, theta_shared, phi = _weight_terms(plan, w)
    offsets = torch.cat([w_rows.new_zeros(1, w_rows.shape[-1]), w_rows.squeeze(1)])  # (L, n)
    c = c.contiguous()
    if torch.is_grad_enabled() and (c.requires_grad or w.requires_grad):
        return _KernelFunction.apply(c, offsets, theta_shared, phi, kernel)
    z = c.new_empty(c.shape)
    shared, phases = _shared_table(theta_shared), _phase_table(phi)
    kernel.forward(z, shared, phases, theta=c, offsets=offsets.contiguous(), threads=torch.get_num_threads())
    return z


def _half_cos_sin(theta: Tensor) -> tuple[Tensor, Tensor]:
    half = theta * 0.5
    return torch.cos(half), torch.sin(half)


def _shared_table(theta_shared: Tensor) -> Tensor:
    """``(L+1, n)`` angles -> ``(L+1, 2, n)``: cos and sin of the half angles, as the kernel reads them."""
    return torch.stack(_half_cos_sin(theta_shared), dim=1).contiguous()


def _phase_table(phi: Tensor) -> Tensor:
    """``(L, 2, 2^n)`` ring phases -> ``(2L, 2, 2^n)``: their cos and sin, as the kernel reads them."""
    flat = phi.reshape(-1, phi.shape[-1])
    return torch.stack([torch.cos(flat), torch.sin(flat)], dim=1).contiguous()


class _KernelFunction(torch.autograd.Function):
    """``(c, offsets, theta_shared, phi, kernel) -> z`` by the compiled kernel, row b's angles in layer l
    being ``c[b] + offsets[l]``. The backward pass is the kernel's adjoint pass, which recomputes each row's
    final state itself: autograd keeps the input angles ``c`` ``(B, n)`` and the weights' small tables,
    nothing of size 2^n per row."""

    @staticmethod
    def forward(ctx, c, offsets, theta_shared, phi, kernel):
        offsets = offsets.contiguous()
        shared, phases = _shared_table(theta_shared), _phase_table(phi)
        z = c.new_empty(c.shape)
        kernel.forward(z, shared, phases, theta=c, offsets=offsets, threads=torch.get_num_threads())
        ctx.save_for_backward(c, offsets, shared, phases)
        ctx.kernel = kernel
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable  # first derivatives only: a clear error on double backward
    def backward(ctx, grad_z):
        c, offsets, shared, phases = ctx.saved_tensors
        grad_c, grad_offsets, grad_shared, grad_phase = ctx.kernel.backward(
            c, offsets, shared, phases, grad_z.contiguous(), torch.get_num_threads()
        )
        return grad_c, grad_offsets, grad_shared, grad_phase.view(offsets.shape[0], 2, -1), None


class _Plan:
    """Constants of an n-qubit simulation (built once per n and device, float64; cast at use)."""

    def __init__(self, n: int, device: torch.device) -> None:
        # cached for the process: never as inference tensors, which autograd could not use later
        with torch.inference_mode(False):
            self._build(n, device)

    def _build(self, n: int, device: torch.device) -> None:
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


def _product_factors(plan: _Plan, c: Tensor) -> list[Tensor]:
    """The first data RY layer on |0...0>: a real product state, kron over the groups of these (B, D_g)."""
    return [
        _cos_sin_products(c[:, a : a + s]).t().contiguous()
        for a, s in zip(plan.starts, plan.sizes, strict=True)
    ]


def _weight_terms(plan: _Plan, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What the simulation takes from the weights ``(L, 4, n)``: ``(w_rows, theta_shared, phi)``.

    w_rows ``(L-1, 1, n)``: RY(w[l,3]) angles, added to the next layer's data angles; theta_shared
    ``(L+1, n)``: the first trainable RYs of every layer, then the final one; phi ``(L, 2, 2^n)``: the
    phases of the forward and reverse CRZ rings.
    """
    phi = torch.einsum("lkq,kxq->lkx", w[:, 0::2], plan.ring_basis.to(w.dtype))
    return w[:-1, 3].unsqueeze(1), torch.cat([w[:, 1], w[-1:, 3]]), phi


def _ry_sign(size: int, device: torch.device) -> Tensor:
    """``(D, D)`` long: the sign of entry ``[r, c]`` of a Kronecker product of RYs, +1 or -1:
    ``(-1)^(#qubits with r_j = 0, c_j = 1)`` (the -sin of RY's upper-right entry)."""
    d = 2**size
    r = torch.arange(d, device=device)
    negative = torch.zeros(d, d, dtype=torch.long, device=device)
    for j in range(size):
        m = 1 << (size - 1 - j)
        negative += ((r[:, None] & m) == 0) & ((r[None, :] & m) != 0)
    return 1 - 2 * (negative % 2)


def _kron_basis(size: int, device: torch.device) -> Tensor:
    """``E`` ``(D, D*D)``: the RY product matrix is ``M.flatten() = v @ E``, with ``v`` its magnitudes.

    For RY(t_0) x ... x RY(t_{g-1}), entry ``M[r, c] = sign(r, c) * v[r XOR c]`` where
    ``v[d] = prod_j (sin t_j/2 if bit j of d else cos t_j/2)`` and ``sign = (-1)^(#qubits with r_j=0, c_j=1)``
    (the -sin of RY's upper-right entry). Building ``M`` as one small matmul avoids a cascade of
    broadcast products over 2x2 blocks, which torch runs slowly.
    """
    d = 2**size
    r = torch.arange(d, device=device)
    basis = torch.zeros(d, d * d, dtype=torch.float64, device=device)
    basis[(r[:, None] ^ r[None, :]).flatten(), torch.arange(d * d, device=device)] = (
        _ry_sign(size, device).flatten().double()
    )
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


def _ry_kron(theta: Tensor, basis: Tensor) -> Tensor:
    """``(..., g)`` angles -> ``(..., 2^g, 2^g)`` real matrices RY(theta_0) x ... x RY(theta_{g-1})."""
    d = basis.shape[0]
    v = _cos_sin_products(theta.reshape(-1, theta.shape[-1]))  # (D, R)
    return (v.t().contiguous() @ basis).view(*theta.shape[:-1], d, d)


@dataclass(frozen=True)
class _Op:
    """One fused op of the simulation, in forward order.

    ``kind``: 'phase' (multiply by ring phase ``index`` of the flat (2L, 2^n) table), 'mult' (apply
    group ``group``'s RY matrix of layer ``index``: per-row angles if ``rows``, else shared ones) or
    'rotate' (cycle the group axes). ``order``/``after``: the state's group-axis order before/after it.
    """

    kind: str
    index: int
    rows: bool
    group: int
    order: tuple[int, ...]
    after: tuple[int, ...]


@functools.lru_cache(maxsize=64)
def _program(n: int, n_layers: int) -> tuple[_Op, ...]:
    """The fused op sequence of an (n, L) circuit."""
    k = len(_group_sizes(n))
    order = tuple(range(k))
    ops: list[_Op] = []

    def kron(index: int, rows: bool) -> None:  # one Kronecker product of RYs, group by group
        nonlocal order
        for j in range(k):
            ops.append(_Op("mult", index, rows, order[0], order, order))
            if j < k - 1:
                ops.append(_Op("rotate", -1, False, -1, order, order[1:] + order[:1]))
                order = order[1:] + order[:1]

    for layer in range(n_layers):
        ops.append(_Op("phase", 2 * layer, False, -1, order, order))  # forward CRZ ring
        kron(layer, rows=False)  # first trainable RY layer
        ops.append(_Op("phase", 2 * layer + 1, False, -1, order, order))  # reverse CRZ ring
        if layer < n_layers - 1:
            kron(layer, rows=True)  # RY(w[l,3]) fused with the next layer's data RY(c)
        else:
            kron(n_layers, rows=False)  # the last trainable RY layer
    return tuple(ops)


def _group_sizes(n: int) -> list[int]:
    """Split n wires (in order) into ceil(n / _MAX_GROUP) groups of near-equal size."""
    k = -(-n // _MAX_GROUP)
    base, extra = divmod(n, k)
    return [base + (g < extra) for g in range(k)]


def _in_layout(table: Tensor, dims: list[int], order: tuple[int, ...]) -> Tensor:
    """A ``(2^n, ...)`` per-basis-state table reordered to group order ``order``: ``(D_o0, D_o1, ..., ...)``."""
    k = len(dims)
    return table.reshape(*dims, *table.shape[1:]).permute(*order, *range(k, table.ndim - 1 + k))


def _to_natural(t: Tensor, order: tuple[int, ...]) -> Tensor:
    """A ``(D_o0, D_o1, ...)`` table in group order ``order`` -> flat ``(2^n,)`` in wire order."""
    return t.permute(*[order.index(g) for g in range(len(order))]).reshape(-1)


class _CircuitFunction(torch.autograd.Function):
    """``(theta_rows, theta_shared, phi, plan, *factors) -> z`` with an adjoint (un-computing) backward.

    theta_rows: ``(L-1, B, n)`` per-row RY angles; theta_shared: ``(L+1, n)`` RY angles shared by all
    rows; phi: ``(L, 2, 2^n)`` ring phases; factors: per qubit group ``(B, D_g)``, the initial product
    state ``psi0 = factors[0] x factors[1] x ...`` (row by row). Returns z: ``(B, n)``. Only the final
    state (B x 2^n complex) is saved for the backward pass.
    """

    @staticmethod
    def forward(ctx, theta_rows, theta_shared, phi, plan, *factors):
        z, final = _simulate(plan, theta_rows, theta_shared, phi, factors, keep_final=True)
        ctx.save_for_backward(final, theta_rows, theta_shared, phi, *factors)
        ctx.plan = plan
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable  # first derivatives only: a clear error on double backward
    def backward(ctx, grad_z):
        final, theta_rows, theta_shared, phi, *factors = ctx.saved_tensors
        sim = _Simulation(ctx.plan, final.shape[0], theta_rows, theta_shared, phi, adjoint=True)
        for rows in sim.chunks():
            sim.backward(final[rows], grad_z[rows].contiguous(), [f[rows] for f in factors], rows)
        grad_rows, grad_shared, grad_phi = sim.gradients()
        return grad_rows, grad_shared, grad_phi, None, *sim.grad_factors


def _simulate(
    plan: _Plan,
    theta_rows: Tensor,
    theta_shared: Tensor,
    phi: Tensor,
    factors: list[Tensor],
    keep_final: bool,
    sim: _Simulation | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Forward simulation: z ``(B, n)``, and the final states ``(B, 2^n)`` complex if ``keep_final``.

    ``sim``: a forward simulation built earlier for the same weights (``theta_shared``, ``phi``), rebound
    to these rows, so that its constants and workspaces are reused (:class:`FrozenCircuit`)."""
    b = factors[0].shape[0]
    if sim is None:
        sim = _Simulation(plan, b, theta_rows, theta_shared, phi, adjoint=False)
    else:
        sim.rebind(theta_rows, b)
    final = torch.empty(b, 2**plan.n, dtype=sim.cdtype, device=phi.device) if keep_final else None
    z = phi.new_empty(b, plan.n)
    for rows in sim.chunks():
        sim.forward([f[rows] for f in factors], rows, z[rows], final[rows] if keep_final else None)
    return z, final


class _PingPong:
    """Two flat complex buffers a chunk's state alternates between (every op reads one, writes the other),
    with every view of them the ops use, made once: per buffer ``i`` and group order ``o``, the state
    ``c[i][o]`` ``(b, D_o0, D_o1, ...)``, its real matrix stack ``r[i][o]`` ``(b, D_o0, rest * 2)`` and that
    transposed, and the permuted views a rotation copies from (``fwd``: to ``o[1:] + o[:1]``, ``adj``:
    back to ``o[-1:] + o[:-1]``)."""

    def __init__(self, b: int, dims: list[int], dtype: torch.dtype, device: torch.device) -> None:
        k = len(dims)
        orders = [tuple((g + s) % k for g in range(k)) for s in range(k)]
        self.c: list[dict] = [{}, {}]
        self.r: list[dict] = [{}, {}]
        self.rt: list[dict] = [{}, {}]
        self.fwd: list[dict] = [{}, {}]
        self.adj: list[dict] = [{}, {}]
        for i in range(2):
            flat = torch.empty(b * math.prod(dims), dtype=dtype, device=device)
            for o in orders:
                c = flat.view(b, *[dims[g] for g in o])
                self.c[i][o] = c
                self.r[i][o] = torch.view_as_real(c).view(b, dims[o[0]], -1)
                self.rt[i][o] = self.r[i][o].transpose(1, 2)
                self.fwd[i][o] = c.permute(0, *range(2, k + 1), 1)
                self.adj[i][o] = c.permute(0, k, *range(1, k))
        self.cur = 0

    def apply(self, op: _Op, adjoint: bool, phase: Tensor | None, mat: Tensor | None) -> None:
        """Apply ``op`` (its inverse if ``adjoint``; ``phase``/``mat`` already inverted) to the current state."""
        src, dst = self.cur, self.cur ^ 1
        if op.kind == "phase":
            o = op.order
            torch.mul(self.c[src][o], phase, out=self.c[dst][o])
        elif op.kind == "mult":
            torch.bmm(mat, self.r[src][op.order], out=self.r[dst][op.order])
        elif adjoint:
            self.c[dst][op.order].copy_(self.adj[src][op.after])
        else:
            self.c[dst][op.after].copy_(self.fwd[src][op.order])
        self.cur = dst


class _Simulation:
    """One call of :class:`_CircuitFunction` (forward, or adjoint = backward).

    Holds the constants in the layouts where the ops meet them, the shared RY matrices and, per chunk
    size, a workspace of preallocated tensors and views (:class:`_Workspace`). Rows run in chunks of
    ~``_CHUNK_AMPLITUDES`` amplitudes so that a chunk's state stays in cache through all 4L ops, and the
    per-op work is one or two torch calls on ready-made views: at the adapter's sizes the Python and
    dispatch cost per call is a large share of the total.
    """

    def __init__(
        self, plan: _Plan, b: int, theta_rows: Tensor, theta_shared: Tensor, phi: Tensor, adjoint: bool
    ) -> None:
        self.plan, self.b, self.theta_rows, self.adjoint = plan, b, theta_rows, adjoint
        self.n_layers = phi.shape[0]
        self.program = _program(plan.n, self.n_layers)
        self.dims = [2**s for s in plan.sizes]
        self.wires = [slice(a, a + s) for a, s in zip(plan.starts, plan.sizes, strict=True)]
        self.final_order = self.program[-1].after
        self.rdtype, self.device = phi.dtype, phi.device
        self.cdtype = torch.complex128 if phi.dtype == torch.float64 else torch.complex64
        # The adjoint pass applies inverses: conjugate phases, transposed matrices.
        phases = torch.polar(torch.ones_like(phi), -phi if adjoint else phi).reshape(
            -1, phi.shape[-1]
        )  # (2L, 2^n)
        self.phases = [
            _in_layout(phases[op.index], self.dims, op.order).contiguous() if op.kind == "phase" else None
            for op in self.program
        ]
        self.kron_basis = [plan.kron_basis[s].to(self.rdtype) for s in plan.sizes]  # per group (D, D*D)
        self.patterns = [plan.patterns[s].to(self.rdtype) for s in plan.sizes]  # per group (g, D*D)
        self.shared = [
            _ry_kron(theta_shared[:, w], basis) for w, basis in zip(self.wires, self.kron_basis, strict=True)
        ]  # (L+1, D, D)
        self.z_sign = _in_layout(plan.z_sign.to(self.rdtype), self.dims, self.final_order).reshape(-1, plan.n)
        self.z_sign_parts = self.z_sign.repeat_interleave(2, dim=0)  # (2^n * 2, n): for re^2 and im^2
        self.chunk = max(1, min(_CHUNK_AMPLITUDES // 2**plan.n, b))
        self.workspaces: dict[int, _Workspace] = {}
        if adjoint:
            n_states = 2**plan.n
            self.grad_factors = [phi.new_empty(b, d) for d in self.dims]
            self.grad_rows = torch.zeros_like(theta_rows)
            self.shared_pairs = [phi.new_zeros(self.n_layers + 1, d * d) for d in self.dims]  # sum_b G per op
            self.inner = torch.zeros(2 * self.n_layers, n_states, dtype=self.cdtype, device=self.device)

    def rebind(self, theta_rows: Tensor, b: int) -> None:
        """Reuse this forward simulation (same weights) for ``b`` other rows with angles ``theta_rows``."""
        assert not self.adjoint, "only forward simulations are reused"
        self.theta_rows, self.b = theta_rows, b
        self.chunk = max(1, min(_CHUNK_AMPLITUDES // 2**self.plan.n, b))
        if self.chunk not in self.workspaces and len(self.workspaces) >= 4:
            self.workspaces.clear()  # prompts of many lengths: keep the workspace cache small

    def chunks(self) -> list[slice]:
        return [slice(i, min(i + self.chunk, self.b)) for i in range(0, self.b, self.chunk)]

    def _workspace(self, b: int) -> _Workspace:
        if b not in self.workspaces:
            self.workspaces[b] = _Workspace(self, b)
        return self.workspaces[b]

    def _row_factors(self, rows: slice) -> list[list[Tensor]]:
        """This chunk's per-row RY magnitudes (:func:`_kron_basis`), per group and layer: ``(b, D)``."""
        if self.n_layers == 1:
            return [[] for _ in self.wires]
        theta = self.theta_rows[:, rows]  # (L-1, b, n)
        out = []
        for w in self.wires:
            v = _cos_sin_products(theta[..., w].reshape(-1, w.stop - w.start))  # (D, (L-1) * b)
            out.append(list(v.t().contiguous().view(*theta.shape[:2], -1).unbind(0)))
        return out

    def forward(self, psi0: list[Tensor], rows: slice, z: Tensor, final: Tensor | None) -> None:
        """One chunk: initial product states (factors ``(b, D_g)`` per group) -> ``z`` ``(b, n)``; final
        states into ``final`` ``(b, 2^n)``."""
        b = psi0[0].shape[0]
        ws = self._workspace(b)
        state = ws.states[0]
        state.cur = 0
        product = psi0[0]
        for u in psi0[1:]:
            product = (product[:, :, None] * u[:, None, :]).view(b, -1)
        start = torch.view_as_real(state.c[0][tuple(range(len(self.dims)))]).view(b, -1, 2)  # (b, 2^n, 2)
        start[:, :, 0] = product
        start[:, :, 1] = 0
        factors = self._row_factors(rows)
        for pos, op in enumerate(self.program):
            state.apply(
                op, False, self.phases[pos], ws.matrix(pos, op, factors) if op.kind == "mult" else None
            )
        x = state.c[state.cur][self.final_order]
        if final is not None:
            final.view(x.shape).copy_(x)
        parts = torch.view_as_real(x).view(b, -1)  # (b, 2^n * 2): re, im interleaved
        torch.mul(parts, parts, out=ws.squares)
        torch.mm(ws.squares, self.z_sign_parts, out=z)  # sum_x |psi_x|^2 z_i(x)

    def backward(self, final: Tensor, grad_z: Tensor, psi0: list[Tensor], rows: slice) -> None:
        """Adjoint pass of one chunk (``final``: its ``(b, 2^n)`` final states; ``psi0``: its initial
        product-state factors)."""
        b = final.shape[0]
        ws = self._workspace(b)
        psi, lam = ws.states
        psi.cur = lam.cur = 0
        order = self.final_order
        psi_c = psi.c[0][order]
        psi_c.view(b, -1).copy_(final)
        weight = (grad_z @ self.z_sign.t()).view(psi_c.shape)  # sum_i g_i z_i(x)
        torch.mul(psi_c, weight, out=lam.c[0][order])  # lambda_final
        factors = self._row_factors(rows)
        for pos in range(len(self.program) - 1, -1, -1):
            op = self.program[pos]
            mat = None
            if op.kind == "phase":  # sum_b conj(lambda) psi, invariant under the phase itself
                torch.linalg.vecdot(
                    lam.c[lam.cur][op.order], psi.c[psi.cur][op.order], dim=0, out=ws.inner[pos]
                )
            elif op.kind == "mult":  # G[b, a, a'] = lambda_a . psi_a' (real dot over the other axes)
                torch.bmm(lam.r[lam.cur][op.order], psi.rt[psi.cur][op.order], out=ws.pair3[op.group])
                if op.rows:
                    torch.mm(
                        ws.pair2[op.group], self.patterns[op.group].t(), out=ws.grad_rows[op.group][op.index]
                    )
                else:
                    torch.sum(ws.pair2[op.group], dim=0, out=ws.shared_pairs[op.group][op.index])
                mat = ws.matrix(pos, op, factors)
            psi.apply(op, True, self.phases[pos], mat)
            lam.apply(op, True, self.phases[pos], mat)
        # dL/dpsi0 = 2 Re(lambda_0) for the real psi0 = u_0 x u_1 x ...: contract it with the other factors.
        grad_psi0 = torch.mul(lam.c[lam.cur][tuple(range(len(self.dims)))].real, 2, out=ws.grad_psi0)
        letters = "acdefghijk"[: len(self.dims)]
        for g, out in enumerate(self.grad_factors):
            others = [h for h in range(len(self.dims)) if h != g]
            equation = ",".join(["b" + letters] + ["b" + letters[h] for h in others]) + "->b" + letters[g]
            out[rows] = torch.einsum(equation, grad_psi0, *[psi0[h] for h in others])
        for g, w in enumerate(self.wires):
            if self.n_layers > 1:
                self.grad_rows[:, rows, w] = ws.grad_rows_full[g]
            self.shared_pairs[g] += ws.shared_pairs_full[g]
        self.inner += ws.inner_full

    def gradients(self) -> tuple[Tensor, Tensor, Tensor]:
        """After all chunks: dL/d(theta_rows, theta_shared, phi); the factors' are in ``grad_factors``."""
        grad_shared = torch.zeros(self.n_layers + 1, self.plan.n, dtype=self.rdtype, device=self.device)
        for g, w in enumerate(self.wires):
            grad_shared[:, w] = self.shared_pairs[g] @ self.patterns[g].t()
        grad_phi = torch.empty(self.inner.shape, dtype=self.rdtype, device=self.device)
        for op in self.program:
            if op.kind == "phase":
                table = self.inner[op.index].view(*[self.dims[g] for g in op.order])
                grad_phi[op.index] = -2 * _to_natural(table.imag, op.order)
        return self.grad_rows, grad_shared, grad_phi.view(self.n_layers, 2, -1)


class _Workspace:
    """Preallocated tensors and views for one chunk size ``b`` of a :class:`_Simulation`."""

    def __init__(self, sim: _Simulation, b: int) -> None:
        rd, dev = sim.rdtype, sim.device
        self.sim = sim
        self.states = [_PingPong(b, sim.dims, sim.cdtype, dev) for _ in range(2 if sim.adjoint else 1)]
        # shared matrices as the batch-expanded views bmm takes: M forward, M^T in the adjoint pass
        self.shared = {
            pos: (
                sim.shared[op.group][op.index].t() if sim.adjoint else sim.shared[op.group][op.index]
            ).expand(b, -1, -1)
            for pos, op in enumerate(sim.program)
            if op.kind == "mult" and not op.rows
        }
        # one layer's per-row matrices per group: written (b, D*D), read as (b, D, D), M or M^T
        self.matrix_out = [torch.empty(b, d * d, dtype=rd, device=dev) for d in sim.dims]
        self.matrix_in = [m.view(b, d, d) for m, d in zip(self.matrix_out, sim.dims, strict=True)]
        if sim.adjoint:
            self.matrix_in = [m.transpose(1, 2) for m in self.matrix_in]
        self.squares = torch.empty(b, 2 * math.prod(sim.dims), dtype=rd, device=dev)
        if sim.adjoint:
            self.grad_psi0 = torch.empty(b, *sim.dims, dtype=rd, device=dev)
            self.pair2 = [torch.empty(b, d * d, dtype=rd, device=dev) for d in sim.dims]
            self.pair3 = [p.view(b, d, d) for p, d in zip(self.pair2, sim.dims, strict=True)]
            layers = sim.n_layers
            self.grad_rows_full = [
                torch.empty(layers - 1, b, s, dtype=rd, device=dev) for s in sim.plan.sizes
            ]
            self.grad_rows = [list(t.unbind(0)) for t in self.grad_rows_full]
            self.shared_pairs_full = [torch.empty(layers + 1, d * d, dtype=rd, device=dev) for d in sim.dims]
            self.shared_pairs = [list(t.unbind(0)) for t in self.shared_pairs_full]
            self.inner_full = torch.empty(2 * layers, math.prod(sim.dims), dtype=sim.cdtype, device=dev)
            self.inner = {
                pos: self.inner_full[op.index].view(*[sim.dims[g] for g in op.order])
                for pos, op in enumerate(sim.program)
                if op.kind == "phase"
            }

    def matrix(self, pos: int, op: _Op, factors: list[list[Tensor]]) -> Tensor:
        """The matrix bmm multiplies by for 'mult' op ``op`` at program position ``pos``.

        Shared matrices are ready-made; a per-row one is built for this layer just before use (so it is
        still in cache when bmm reads it) as ``factors @ basis`` into a reused buffer.
        """
        if not op.rows:
            return self.shared[pos]
        torch.mm(factors[op.group][op.index], self.sim.kron_basis[op.group], out=self.matrix_out[op.group])
        return self.matrix_in[op.group]


# Most memory one FrozenCircuit may spend on its dense layer unitaries (L x (2 * 2^n)^2 floats): 2 MB
# admits n = 7 with L = 7 and n = 8 with L <= 2. Beyond it every call would stream megabytes per token
# (60 adapted modules: hundreds of MB), and the general simulator's structured ops are faster.
FROZEN_MAX_BYTES = 2**21
# Above this many floats of per-row data-rotation matrices (rows x 2^n x 2^n), FrozenCircuit hands the
# rows to the general simulator. Up to 5 qubits the rotations come from one matmul and the dense form
# stays 2-3x faster at any batch (measured: n = 5, L = 5, 4,096 rows 5.1 ms vs 14.4 ms), so only memory
# bounds it (64 MB); from 6 qubits the XOR gather loses from a few dozen rows on (n = 6, L = 6: 1,024 rows
# 30 ms vs 3.7 ms), so 1 MB (64 rows at n = 6, 4 at n = 8).
_FROZEN_ROW_MATRIX_FLOATS = {"kron": 2**24, "gather": 2**18}


# Up to this many rows FrozenCircuit's kernel call adds the layer offsets and takes the sines and cosines
# itself, in one thread (a decoded token: torch's vectorised ops and a thread team cost more than they save).
_KERNEL_INLINE_ROWS = 8


class FrozenCircuit:
    """The circuit with its weights fixed, for inference: ``(..., n)`` angles -> ``(..., n)`` <Z_i>.

    Decoding calls the circuit once per token per adapted module with a single row, where the general
    simulator's per-call set-up (phase tables, shared rotation matrices, workspaces) costs far more than
    its arithmetic. With the weights fixed, each layer's trainable gates form one constant unitary

        V_l = R(w[l,3]) D_rev(w[l,2]) R(w[l,1]) D_fwd(w[l,0])              (2^n x 2^n, built once)
        psi = V_{L-1} R(c) ... V_1 R(c) V_0 v(c),    v(c) = R(c)|0...0> = kron_i [cos c_i/2, sin c_i/2]

    and the data rotation R(c) is the same in every layer: ``R(c)[r, k] = sign(r, k) v(c)[r XOR k]``
    (:func:`_kron_basis`). The product state is a trigonometric polynomial, ``v(c) = sin(c @ freq +
    shift) @ W`` (:func:`_product_state_fourier`), so one matmul of those 2^n features gives both
    ``V_0 v(c)`` and, up to 5 qubits, ``R(c)^T`` (above, ``v(c)`` for a gather). A call is then five
    torch ops plus two per layer, whatever n. The state is kept real as ``[Re psi, Im psi]`` ``(B, 2 * 2^n)`` and each V_l is stored in
    the matching real block form ``[[A^T, B^T], [-B^T, A^T]]`` (V = A + iB, rows times V^T).

    Where the dense unitaries would pass :data:`FROZEN_MAX_BYTES` (wide, deep circuits), and for inputs
    with so many rows that their per-row rotations would not fit in cache, the general simulator runs
    instead, with its weight-only set-up (phase tables, shared rotations, workspaces) built once and
    reused. No gradients: training uses :func:`expvals`.
    """

    def __init__(self, weights: Tensor) -> None:
        check_weights(weights, "FrozenCircuit(weights)")
        n_layers, _, n = weights.shape
        self.n, self.n_layers = n, n_layers
        self.dtype = torch.float64 if weights.dtype == torch.float64 else torch.float32
        plan = self.plan = _plan(n, weights.device)
        # the general simulator's weight-only inputs, for long inputs and wide circuits
        self.w_rows, self.theta_shared, self.phi = _weight_terms(plan, weights.detach().to(self.dtype))
        self._simulation: _Simulation | None = None
        self._lock = threading.Lock()  # the reused simulation's workspaces serve one call at a time
        self.kernel = _compiled(n, weights.device)
        if self.kernel is not None:  # one call per input: the kernel's weight tables, built once
            with torch.inference_mode(False), torch.no_grad():
                zero = self.w_rows.new_zeros(1, n)
                self.kernel_rows = torch.cat([zero, self.w_rows[:, 0]])  # (L, n): row angles c + this
                self.kernel_shared = _shared_table(self.theta_shared)
                self.kernel_phases = _phase_table(self.phi)
        self.dense = self.kernel is None and frozen_bytes(n, n_layers) <= FROZEN_MAX_BYTES
        if self.dense:
            self._build_dense(weights.detach().to(torch.float64))

    def _build_dense(self, w: Tensor) -> None:
        n_layers, _, n = w.shape
        dev, d = w.device, 2**n
        plan = self.plan
        phi = _weight_terms(plan, w)[2]
        phases = torch.polar(torch.ones_like(phi), phi)  # (L, 2, 2^n): diagonals of D_fwd, D_rev
        blocks = []
        for layer in range(n_layers):
            first, second = _ry_dense(w[layer, 1]).to(phases.dtype), _ry_dense(w[layer, 3]).to(phases.dtype)
            v = second @ (phases[layer, 1, :, None] * (first * phases[layer, 0, None, :]))
            a, b = v.real.t(), v.imag.t()
            blocks.append(torch.cat([torch.cat([a, b], 1), torch.cat([-b, a], 1)], 0))
        self.blocks = [m.to(self.dtype).contiguous() for m in blocks]  # L x (2D, 2D)
        self.z_sign = plan.z_sign.to(self.dtype).repeat(2, 1)  # (2D, n): |psi|^2 = re^2 + im^2
        # R(c)^T per row: v(c) @ K_t with K_t (D, D*D) the transposed Kronecker basis, while K_t stays within
        # 128 KB (n <= 5); beyond, a gather v[r XOR k] times the sign pattern
        if n <= 5:
            tail = _kron_basis(n, dev).view(d, d, d).transpose(1, 2).reshape(d, d * d)
        else:
            idx = torch.arange(d, device=dev)
            self.xor = idx[:, None] ^ idx[None, :]  # (D, D), symmetric
            self.sign_t = _ry_sign(n, dev).t().to(self.dtype).contiguous()  # sign(r, k) at [k, r]
            tail = torch.eye(d, dtype=torch.float64, device=dev)  # v itself, for the gather
        # The product state v(c) = F(c) @ W with F(c) = sin(c @ freq + shift) (_product_state_fourier), so
        # one matmul F(c) @ lift gives V_0 v(c) and R(c)^T (or v(c)) together: lift = W [first | tail].
        freq, shift, w_fourier = _product_state_fourier(n, dev)
        first64 = blocks[0][:d]
        lift = w_fourier @ (first64 if n_layers == 1 else torch.cat([first64, tail], dim=1))
        self.freq, self.shift, self.lift = freq.to(self.dtype), shift.to(self.dtype), lift.to(self.dtype)

    def __call__(self, inputs: Tensor) -> Tensor:
        if inputs.shape[-1] != self.n:
            raise input_shape_error(inputs, self.n, "FrozenCircuit")
        rows, d = math.prod(inputs.shape[:-1]), 2**self.n
        if rows == 0:
            return inputs.new_zeros(inputs.shape)
        c = inputs.reshape(rows, self.n)
        c = c if c.dtype == self.dtype else c.to(self.dtype)  # (a no-op .to still costs a dispatch)
        if self.kernel is not None:
            z = self._run_kernel(c)
            return (z if z.dtype == inputs.dtype else z.to(inputs.dtype)).view(inputs.shape)
        budget = _FROZEN_ROW_MATRIX_FLOATS["kron" if self.n <= 5 else "gather"]
        if self.dense and (self.n_layers == 1 or rows * d * d <= budget):
            z = self._evolve(c)
        else:
            # a wide circuit, or many rows (a long prompt) whose per-row 2^n x 2^n rotations would not fit
            # in cache: the general simulator, which applies them qubit group by qubit group
            z = self._simulate(c)
        return (z if z.dtype == inputs.dtype else z.to(inputs.dtype)).view(inputs.shape)

    def bind_linear_rows(self, p_t: Tensor, m_c: Tensor, m_q: Tensor) -> _LinearRows | None:
        """``rows(x, out) -> bool``: ``out += c @ m_c + self(c) @ m_q`` with ``c = x @ p_t^T`` as one kernel
        call, for the few rows of a decoded token (the layer's folded inference form: ``p_t`` ``(n, d_in)``,
        ``m_c``/``m_q`` ``(n, d_out)``, float32, contiguous). The matrices' and the circuit's tables'
        pointers are bound once: decoding calls it once per token per module, where each Python step
        around the kernel call costs about as much as the call. None where the kernel form never applies
        (no kernel, float64 weights or matrices)."""
        if self.kernel is None or self.dtype != torch.float32:
            return None
        if any(t.dtype != torch.float32 or not t.is_contiguous() for t in (p_t, m_c, m_q)):
            return None
        return _LinearRows(self, p_t, m_c, m_q)

    def _run_kernel(self, c: Tensor) -> Tensor:
        """<Z_i> of rows ``c`` ``(B, n)`` by the compiled kernel: one allocation and one kernel call."""
        rows = c.shape[0]
        z = c.new_empty(rows, self.n)
        if rows <= _KERNEL_INLINE_ROWS:  # a decoded token: the kernel adds the offsets and takes sin/cos
            c = c if c.is_contiguous() else c.contiguous()
            self.kernel.forward(z, self.kernel_shared, self.kernel_phases, theta=c, offsets=self.kernel_rows)
        else:
            row_cs = _half_cos_sin(c.unsqueeze(0) + self.kernel_rows.unsqueeze(1))  # (L, B, n) each
            threads = torch.get_num_threads()
            self.kernel.forward(z, self.kernel_shared, self.kernel_phases, row_cs=row_cs, threads=threads)
        return z

    def _simulate(self, c: Tensor) -> Tensor:
        """<Z_i> of rows ``c`` ``(B, n)`` by the general simulator, its set-up built once and reused."""
        plan = self.plan
        factors = _product_factors(plan, c)
        theta_rows = c.unsqueeze(0) + self.w_rows  # (L-1, B, n)
        # the reused workspaces are written in place by every call: plain tensors (not inference tensors,
        # which could not be written outside inference mode), whichever mode this call runs in
        with self._lock, torch.inference_mode(False), torch.no_grad():
            if self._simulation is None:
                self._simulation = _Simulation(
                    plan, c.shape[0], theta_rows, self.theta_shared, self.phi, adjoint=False
                )
            z, _ = _simulate(
                plan, theta_rows, self.theta_shared, self.phi, factors, False, sim=self._simulation
            )
        return z

    def _evolve(self, c: Tensor) -> Tensor:
        """<Z_i> of rows ``c`` ``(B, n)``."""
        rows, d = c.shape[0], 2**self.n
        features = torch.addmm(self.shift, c, self.freq).sin_()  # (B, D): F(c)
        lifted = features @ self.lift  # (B, 2D [+ D*D or D]): V_0 v(c), then R(c)^T or v(c)
        state = lifted[:, : 2 * d]  # (B, 2D) real and imaginary parts
        if self.n_layers > 1:
            if self.n <= 5:
                rot = lifted[:, 2 * d :].view(rows, d, d)  # (B, D, D): R(c)^T, applied to Re and Im alike
            else:
                rot = lifted[:, 2 * d :][:, self.xor] * self.sign_t
            for block in self.blocks[1:]:
                state = torch.bmm(state.reshape(rows, 2, d), rot).view(rows, 2 * d) @ block
        return (state * state) @ self.z_sign  # (B, n)


def frozen_bytes(n_qubits: int, n_layers: int) -> int:
    """Bytes of dense layer unitaries a float32 :class:`FrozenCircuit` of this size holds."""
    return n_layers * (2 * 2**n_qubits) ** 2 * 4


def _product_state_fourier(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(freq, shift, W)``, float64, with ``sin(c @ freq + shift) @ W`` = kron_i [cos c_i/2, sin c_i/2].

    Every entry of the product state is a product of n half-angle cosines and sines, i.e. (expanding each
    as exponentials) a combination of ``exp(i sigma.c/2)`` over sign patterns sigma in {+-1}^n; pairing
    sigma with -sigma leaves 2^(n-1) frequencies, each as a cosine and a sine: 2^n features, one matmul.
    With ``a_j = 1/2`` for a cosine factor and ``-i sigma_j / 2`` for a sine, the coefficient of
    ``exp(i sigma.c/2)`` in entry d is ``2^-n (-i)^popcount(d) prod_{j in d} sigma_j``; the real entry is
    twice the real part of that term, which gives the cosine (Re) and sine (-Im) rows of W.
    """
    d, k = 2**n, 2 ** (n - 1)
    idx = torch.arange(d, device=device)
    bits = ((idx[:, None] >> torch.arange(n - 1, -1, -1, device=device)) & 1).to(torch.float64)  # (D, n)
    sigma = 1.0 - 2.0 * bits[:k]  # (K, n): sign patterns with sigma_0 = +1 (the first K indices)
    negative = (sigma < 0).to(torch.float64) @ bits.t()  # (K, D): factors of entry d with sigma_j = -1
    sign = 1.0 - 2.0 * torch.remainder(negative, 2)
    power = bits.sum(1).long() % 4  # (-i)^popcount: 1, -i, -1, i
    real = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=device)[power]
    imag = torch.tensor([0.0, -1.0, 0.0, 1.0], dtype=torch.float64, device=device)[power]
    scale = 2.0 * 0.5**n
    w = torch.cat([scale * sign * real, -scale * sign * imag])  # (D, D): cosine rows, then sine rows
    freq = torch.cat([sigma.t(), sigma.t()], dim=1) * 0.5  # (n, D)
    shift = torch.cat([torch.full((k,), math.pi / 2, dtype=torch.float64, device=device), bits.new_zeros(k)])
    return freq, shift, w


def _ry_dense(theta: Tensor) -> Tensor:
    """``(n,)`` angles -> the ``(2^n, 2^n)`` matrix RY(theta_0) x ... x RY(theta_{n-1}) (wire 0 first)."""
    out = torch.ones(1, 1, dtype=theta.dtype, device=theta.device)
    for t in theta:
        c, s = torch.cos(t / 2), torch.sin(t / 2)
        out = torch.kron(out, torch.stack([torch.stack([c, -s]), torch.stack([s, c])]))
    return out


class _LinearRows:
    """``rows(x, out) -> bool`` of :meth:`FrozenCircuit.bind_linear_rows`; it keeps the matrices and the
    circuit's tables alive for the pointers it holds."""

    __slots__ = ("_call", "_tensors")

    def __init__(self, frozen: FrozenCircuit, p_t: Tensor, m_c: Tensor, m_q: Tensor) -> None:
        self._tensors = (p_t, m_c, m_q, frozen.kernel_rows, frozen.kernel_shared, frozen.kernel_phases)
        pointers = tuple(t.data_ptr() for t in self._tensors)
        self._call = frozen.kernel.bind_adapter_rows(
            frozen.n, frozen.n_layers, p_t.shape[1], m_c.shape[1], pointers
        )

    def __call__(self, x: Tensor, out: Tensor) -> bool:
        """Add into ``out`` ``(T, d_out)`` for ``x`` ``(T, d_in)``; False (nothing written) where the kernel
        form does not apply: more than a few rows, not float32, rows not of unit stride."""
        if (
            x.shape[0] > _KERNEL_INLINE_ROWS
            or x.dtype != torch.float32
            or out.dtype != torch.float32
            or x.stride(-1) != 1
            or out.stride(-1) != 1
        ):
            return False
        self._call(x, out)
        return True
