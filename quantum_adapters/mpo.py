"""Matrix-product operators (tensor-train matrices) for any (d_in, d_out).

A dense map W (d_in x d_out) is stored as K cores; with d_in = i_1 ... i_K and d_out = o_1 ... o_K,

    W[(i_1..i_K), (o_1..o_K)] = G_1[1, i_1, o_1, :] G_2[:, i_2, o_2, :] ... G_K[:, i_K, o_K, 1]

    G_k : (b_{k-1}, i_k, o_k, b_k)      b_0 = b_K = 1, b_k <= bond_dim

so it costs sum_k b_{k-1} i_k o_k b_k parameters instead of d_in * d_out. The reference implementation
hard-codes the factorisations of a few sizes and fails on the others (1536, 576, ...); here any size is
factored into K modes by spreading its prime factors (a prime size gets one large mode and ones).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._derived import Derived

__all__ = ["MPOLinear", "factorize", "mpo_shapes"]


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def factorize(n: int, k: int) -> list[int]:
    """Split ``n`` into ``k`` factors whose product is ``n``, as even as the primes allow (descending).

    >>> factorize(576, 4), factorize(3584, 4), factorize(1031, 4)
    ([6, 6, 4, 4], [8, 8, 8, 7], [1031, 1, 1, 1])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"factorize: expected a positive integer size; got {n!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"factorize: expected a positive number of factors; got {k!r}")
    factors = [1] * k
    for p in sorted(_prime_factors(n), reverse=True):
        factors[factors.index(min(factors))] *= p
    return sorted(factors, reverse=True)


def mpo_shapes(d_in: int, d_out: int, n_cores: int = 4, bond_dim: int = 8) -> list[tuple[int, int, int, int]]:
    """Core shapes ``(b_prev, i_k, o_k, b_k)``; each bond is capped by the rank the cut can carry."""
    ins, outs = factorize(d_in, n_cores), factorize(d_out, n_cores)
    sizes = [i * o for i, o in zip(ins, outs, strict=True)]
    bonds = [1]
    for k in range(1, n_cores):
        left, right = math.prod(sizes[:k]), math.prod(sizes[k:])
        bonds.append(min(bond_dim, left, right))
    bonds.append(1)
    return [(bonds[k], ins[k], outs[k], bonds[k + 1]) for k in range(n_cores)]


class MPOLinear(nn.Module):
    """A bias-free linear map d_in -> d_out whose weight is an MPO.

    ``forward`` contracts the cores into the dense (d_in, d_out) matrix and applies it: for the sizes an
    adapter uses (d_in * m up to about a million entries) that is cheaper than contracting every token
    through the chain, and it keeps one matmul on the hot path.
    """

    def __init__(self, d_in: int, d_out: int, n_cores: int = 4, bond_dim: int = 8, zero_last: bool = False):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.shapes = mpo_shapes(d_in, d_out, n_cores, bond_dim)
        # cores are direct parameters (core0, core1, ...), not a ParameterList: PEFT's state-dict key
        # mapping expects exactly one name after the adapter name
        for k, shape in enumerate(self.shapes):
            self.register_parameter(f"core{k}", nn.Parameter(torch.empty(shape)))
        self._dense: Derived[torch.Tensor] = Derived()  # to_dense() for forward without gradients
        self.reset_parameters(zero_last=zero_last)

    @property
    def cores(self) -> list[nn.Parameter]:
        return [getattr(self, f"core{k}") for k in range(len(self.shapes))]

    def reset_parameters(self, zero_last: bool = False, generator: torch.Generator | None = None) -> None:
        """Gaussian cores scaled so the dense weight's entries have variance 1/d_in (Kaiming-like).

        An entry of W is a sum over prod(b_k) paths of products of K core entries, so each core gets
        std = (1 / (d_in * prod(inner bonds))) ** (1 / (2K)).
        """
        inner = math.prod(s[3] for s in self.shapes[:-1])
        std = (1.0 / (self.d_in * inner)) ** (1.0 / (2 * len(self.shapes)))
        with torch.no_grad():
            for core in self.cores:
                core.copy_(torch.randn(core.shape, generator=generator) * std)
            if zero_last:
                self.cores[-1].zero_()

    def to_dense(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The (d_in, d_out) matrix the cores represent, contracted in ``dtype`` (default: the cores').

        Core by core, one matmul over the bond and one reordering copy each: training rebuilds the
        matrix on every forward of every adapted module, where an einsum's extra views and their
        backward nodes cost more than the arithmetic."""
        cores = [c if dtype is None or c.dtype == dtype else c.to(dtype) for c in self.cores]
        _, i_acc, o_acc, bond = cores[0].shape
        w = cores[0].reshape(i_acc, o_acc, bond)  # (I, O, b)
        for core in cores[1:]:
            _, i_k, o_k, b_k = core.shape
            # (I*O, b) @ (b, i*o*b') -> (I, O, i, o, b') -> (I, i, O, o, b') -> (I*i, O*o, b')
            w = (w.reshape(i_acc * o_acc, bond) @ core.reshape(bond, i_k * o_k * b_k)).view(
                i_acc, o_acc, i_k, o_k, b_k
            )
            w = w.permute(0, 2, 1, 3, 4).reshape(i_acc * i_k, o_acc * o_k, b_k)
            i_acc, o_acc, bond = i_acc * i_k, o_acc * o_k, b_k
        return w.reshape(self.d_in, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d_in) -> (..., d_out), computed in x's dtype (cores stored in another are cast).

        Without gradients (evaluation, serving: one token at a time) the dense matrix is cached and
        rebuilt only when a core changes, so decoding pays one matmul per token.
        """
        cores = self.cores
        if torch.is_grad_enabled() and any(c.requires_grad for c in cores):
            return x @ self.to_dense(x.dtype)
        return x @ self._dense.get(cores, lambda: self.to_dense(x.dtype), x.dtype)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, cores={[tuple(s) for s in self.shapes]}"
