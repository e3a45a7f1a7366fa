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
The state is a complex tensor laid out ``(B, D_first, S, D_rest...)``: one axis per qubit group, the group
being applied first (a real matmul contracts it directly over the view ``(B, D_first, S·rest·2)`` of the
interleaved real/imaginary parts), ``S`` = 1 (the state) or 2 (state and adjoint, in the backward pass).
Between two groups the axes are rotated by one copy.

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

import torch
from torch import Tensor

from .circuit import _check_weights

__all__ = ["expvals"]

# Largest qubit group turned into one dense matrix. 2^5 = 32 keeps the batched matmuls efficient for
# the ranks the adapter uses (r = 4..10: one or two groups); larger r gets more groups.
_MAX_GROUP = 5


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

    psi0 = _product_state(c, plan.sizes)  # (B, 2^n) real: the first data RY layer on |0...0>
    theta_rows = c.unsqueeze(0) + w[:-1, 3].unsqueeze(1)  # (L-1, B, n): RY(w[l,3]) fused with RY(c) of l+1
    theta_shared = torch.cat([w[:, 1], w[-1:, 3]])  # (L+1, n): first trainable RYs, then the final one
    phi = torch.einsum("lkq,kxq->lkx", w[:, 0::2], plan.ring_basis.to(dtype))  # (L, 2, 2^n) ring phases
    z = _CircuitFunction.apply(psi0, theta_rows, theta_shared, phi, plan)  # (B, n)
    return z.to(inputs.dtype).reshape(inputs.shape)


class _Plan:
    """Constants of an n-qubit simulation (built once per n and device)."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        k = -(-n // _MAX_GROUP)
        base, extra = divmod(n, k)
        self.sizes = [base + (g < extra) for g in range(k)]  # qubits per group, wire order
        self.starts = [sum(self.sizes[:g]) for g in range(k)]  # first wire of each group
        x = torch.arange(2**n, device=device)
        bits = ((x[:, None] >> torch.arange(n - 1, -1, -1, device=device)) & 1).to(torch.float64)  # (2^n, n)
        nxt, prv = torch.roll(bits, -1, dims=1), torch.roll(bits, 1, dims=1)
        # phi_fwd(x) = sum_i w_i x_i (x_{i+1} - 1/2), phi_rev(x) = sum_i w_i x_i (x_{i-1} - 1/2)
        self.ring_basis = torch.stack([bits * (nxt - 0.5), bits * (prv - 0.5)])  # (2, 2^n, n)
        self.z_sign = 1.0 - 2.0 * bits  # (2^n, n): eigenvalue of Z_i on basis state x
        # patterns[size] (4^size, size): G (D x D, G[a, a'] = lambda_a . psi_a') -> dL/dtheta per qubit
        self.patterns = {s: _pair_pattern(s, device) for s in set(self.sizes)}


@functools.lru_cache(maxsize=64)
def _plan(n: int, device: torch.device) -> _Plan:
    return _Plan(n, device)


def _pair_pattern(size: int, device: torch.device) -> Tensor:
    """``C`` with ``(G.view(-1) @ C)[j] = sum_{a: bit j of a = 0} G[a|m, a] - G[a, a|m]``, m = bit of qubit j."""
    d = 2**size
    pattern = torch.zeros(d, d, size, dtype=torch.float64, device=device)
    for j in range(size):
        m = 1 << (size - 1 - j)  # qubit j of the group is bit (size-1-j): first wire most significant
        for a in range(d):
            if not a & m:
                pattern[a | m, a, j] = 1.0
                pattern[a, a | m, j] = -1.0
    return pattern.reshape(d * d, size)


def _product_state(c: Tensor, sizes: list[int]) -> Tensor:
    """``(B, n)`` angles -> ``(B, 2^n)`` real amplitudes of RY(c_0)|0> x ... x RY(c_{n-1})|0>."""
    half = c / 2
    factors = torch.stack([torch.cos(half), torch.sin(half)], dim=-1)  # (B, n, 2)
    state, start = None, 0
    for size in sizes:  # kron inside each group (small), then one outer product per group
        group = factors[:, start]
        for j in range(start + 1, start + size):
            group = (group[:, :, None] * factors[:, j, None, :]).flatten(1)
        state = group if state is None else (state[:, :, None] * group[:, None, :]).flatten(1)
        start += size
    return state


def _ry_kron(theta: Tensor) -> Tensor:
    """``(..., g)`` angles -> ``(..., 2^g, 2^g)`` real matrix RY(theta_0) x ... x RY(theta_{g-1})."""
    cos, sin = torch.cos(theta / 2), torch.sin(theta / 2)
    ry = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (..., g, 2, 2)
    mat = ry[..., 0, :, :]
    for j in range(1, theta.shape[-1]):
        d = mat.shape[-1]
        mat = (mat[..., :, None, :, None] * ry[..., j, None, :, None, :]).reshape(*theta.shape[:-1], 2 * d, 2 * d)
    return mat


