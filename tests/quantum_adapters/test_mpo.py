"""The MPO (tensor-train matrix) against an explicit sum over its cores, for awkward sizes too."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from quantum_adapters.mpo import MPOLinear, factorize, mpo_shapes


@pytest.mark.parametrize("n", [1, 2, 7, 64, 192, 576, 1031, 1536, 3584, 18944])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_factorize_any_size(n, k):
    f = factorize(n, k)
    assert len(f) == k and math.prod(f) == n and f == sorted(f, reverse=True)


def test_factorize_is_balanced_where_primes_allow():
    assert factorize(576, 4) == [6, 6, 4, 4]
    assert factorize(3584, 4) == [8, 8, 8, 7]
    assert factorize(1031, 4) == [1031, 1, 1, 1]  # prime: one mode carries it


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_factorize_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="expected a positive integer"):
        factorize(bad, 4)


def _explicit_dense(mpo: MPOLinear) -> torch.Tensor:
    """W[i, o] as the explicit sum over bond indices of products of core entries (slow, obvious)."""
    cores = [c.detach().double() for c in mpo.cores]
    ins = [c.shape[1] for c in cores]
    outs = [c.shape[2] for c in cores]
    w = torch.zeros(mpo.d_in, mpo.d_out, dtype=torch.float64)
    for i_idx in itertools.product(*[range(i) for i in ins]):
        for o_idx in itertools.product(*[range(o) for o in outs]):
            vec = torch.ones(1, dtype=torch.float64)
            for core, i, o in zip(cores, i_idx, o_idx, strict=True):
                vec = vec @ core[:, i, o, :]
            row = sum(i * math.prod(ins[k + 1 :]) for k, i in enumerate(i_idx))
            col = sum(o * math.prod(outs[k + 1 :]) for k, o in enumerate(o_idx))
            w[row, col] = vec.item()
    return w


@pytest.mark.parametrize(
    ("d_in", "d_out", "cores", "bond"), [(12, 8, 3, 4), (7, 10, 2, 3), (24, 6, 4, 2), (5, 5, 1, 8)]
)
def test_mpo_matches_explicit_contraction(d_in, d_out, cores, bond):
    torch.manual_seed(0)
    mpo = MPOLinear(d_in, d_out, cores, bond)
    torch.testing.assert_close(mpo.to_dense().double(), _explicit_dense(mpo), rtol=1e-5, atol=1e-6)
    x = torch.randn(3, 2, d_in)
    torch.testing.assert_close(mpo(x), x @ mpo.to_dense())
    # its parameters are the cores mpo_shapes gives, which adapter_parameters counts
    assert [tuple(p.shape) for p in mpo.parameters()] == mpo_shapes(d_in, d_out, cores, bond)


@pytest.mark.parametrize(("d_in", "d_out", "cores", "bond"), [(12, 8, 3, 4), (24, 6, 4, 2), (5, 5, 1, 8)])
def test_dense_contraction_equals_the_einsum_chain_with_gradients(d_in, d_out, cores, bond):
    """to_dense (a matmul and a reordering per core) equals the plain einsum chain over the cores, in
    value and in the gradients of every core."""
    torch.manual_seed(1)
    mpo = MPOLinear(d_in, d_out, cores, bond).double()

    def einsum_chain() -> torch.Tensor:
        w = mpo.cores[0]
        for core in mpo.cores[1:]:
            _, i_acc, o_acc, _ = w.shape
            _, i_k, o_k, b_k = core.shape
            w = torch.einsum("xIOb,bioc->xIiOoc", w, core).reshape(1, i_acc * i_k, o_acc * o_k, b_k)
        return w.reshape(d_in, d_out)

    g = torch.randn(d_in, d_out, dtype=torch.float64)
    fast = torch.autograd.grad((mpo.to_dense() * g).sum(), mpo.cores)
    plain = torch.autograd.grad((einsum_chain() * g).sum(), mpo.cores)
    torch.testing.assert_close(mpo.to_dense(), einsum_chain(), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bonds_are_capped_by_the_rank_a_cut_can_carry():
    shapes = mpo_shapes(6, 4, n_cores=4, bond_dim=8)
    assert shapes[0][0] == 1 and shapes[-1][-1] == 1
    for left, right in itertools.pairwise(shapes):
        assert left[3] == right[0] <= 8


def test_zero_last_core_gives_zero_map_with_gradient():
    mpo = MPOLinear(16, 8, 4, 4, zero_last=True)
    x = torch.randn(5, 16)
    assert torch.count_nonzero(mpo(x)) == 0
    mpo(x).sum().backward()
    assert mpo.cores[-1].grad.abs().sum() > 0


def test_init_scale_is_kaiming_like():
    torch.manual_seed(0)
    w = MPOLinear(576, 32, 4, 8).to_dense()
    assert 0.5 / 576 < w.var().item() < 2.0 / 576


def test_inference_cache_follows_core_changes():
    mpo = MPOLinear(12, 8, 3, 4)
    x = torch.randn(2, 12)
    with torch.no_grad():
        first = mpo(x)
        torch.testing.assert_close(first, x @ mpo.to_dense())
        mpo.cores[1].mul_(2.0)  # an in-place change bumps the version: the cache is rebuilt
        torch.testing.assert_close(mpo(x), 2 * first)
