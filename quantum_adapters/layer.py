"""The QTHA layer: a frozen ``nn.Linear`` plus a quantum tensor hybrid delta.

Quantum tensor hybrid adaptation, Origin Quantum, arXiv 2503.12790. Per token x (d_in), variant ABC:

    a = MPO_A(dropout(x))          (d_in -> m)   tensor-train matrix
    c = W_A a                      (m -> r)      circuit input angles
    q = QNN_theta(c)               (r -> r)      r-qubit re-uploading circuit, q_i = <Z_i>
    h = QW q + CW c                (r -> r)      linear fusion of the quantum and classical paths
    y = W0 x + (alpha / r) * MPO_B(W_B h)        (r -> m -> d_out); MPO_B's last core starts at 0

Variant AB drops the circuit (h = CW c): the ablation that shows what the circuit adds.
Variant BC drops the MPOs (c = W_A x with W_A: d_in -> r, and W_B: r -> d_out starts at 0).

The circuit acts on activations, so the delta is not a matrix and cannot be merged into W0.
All adapter maths runs in float32 whatever the base dtype and whatever dtype the adapter weights are
stored in (PEFT's `autocast_adapter_dtype` decides that); the result is cast back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ._derived import Derived
from .backends import execute
from .circuit import weight_shape
from .config import QTHAConfig
from .mpo import MPOLinear
from .simulator import FrozenCircuit

__all__ = ["NotMergeableError", "QTHALayer", "QTHALinear", "QuantumCircuitLayer"]

MERGE_MESSAGE = (
    "QTHA adapters cannot be merged into the base weights: the quantum circuit acts on each token's "
    "activations (a non-linear map), so the adapter is not a weight delta. Serve the frozen adapter "
    "alongside the base model instead."
)
_MERGE_MESSAGE_AB = (
    "QTHA adapters are not merged into the base weights: variant AB has no circuit, so its delta is linear, "
    "but merging is not implemented for QTHA (every variant is served by the same unmerged path). Serve "
    "the frozen adapter alongside the base model instead."
)


def merge_message(variants: set[str] | list[str]) -> str:
    """Why merging is refused for adapters of these variants (the circuit's reason when any has one)."""
    return MERGE_MESSAGE if not variants or set(variants) - {"AB"} else _MERGE_MESSAGE_AB


class _Folded(NamedTuple):
    """A layer's inference form (:meth:`QTHALinear.add_fused`): ``P^T`` (r, d_in), ``M_c`` and ``M_q``
    (r, d_out; None without a circuit), all float32, and ``rows``, the compiled kernel's one-call form of
    the whole delta for a decoded token's rows (None without the kernel or off the exact simulator)."""

    p_t: torch.Tensor
    m_c: torch.Tensor
    m_q: torch.Tensor | None
    rows: Callable[[torch.Tensor, torch.Tensor], bool] | None


class NotMergeableError(RuntimeError):
    """Raised by every merge entry point of a QTHA adapter."""


class QuantumCircuitLayer(nn.Module):
    """The r-qubit circuit as a module: (..., r) angles -> (..., r) expectation values <Z_i>."""

    def __init__(self, n_qubits: int, n_layers: int, backend: str = "fast", device: str | None = None):
        super().__init__()
        self.n_qubits, self.n_layers = n_qubits, n_layers
        self.backend, self.device_name = backend, device
        self.execution: dict[str, Any] = {}  # extra options for backends.execute (shots, noise, ...)
        self.weights = nn.Parameter(torch.empty(weight_shape(n_qubits, n_layers)))
        self._frozen_circuit: Derived[FrozenCircuit] = Derived()
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform angles in [0, 2*pi), as PennyLane's TorchLayer initialises circuit weights."""
        with torch.no_grad():
            self.weights.copy_(torch.rand(self.weights.shape, generator=generator) * 2 * math.pi)

    def configure(self, backend: str | None = None, device: str | None = None, **execution: Any) -> None:
        """Change how the circuit runs (e.g. ``backend='pennylane', device=..., shots=1000``) without
        touching its weights; ``configure(backend='fast')`` restores exact simulation."""
        if backend is not None:
            self.backend = backend
            self.device_name = device
        self.execution = {k: v for k, v in execution.items() if v is not None}

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and (frozen := self.inference_form()) is not None:
            return frozen(angles)
        weights = self.weights if self.weights.dtype == angles.dtype else self.weights.to(angles.dtype)
        return execute(angles, weights, backend=self.backend, device=self.device_name, **self.execution)

    def inference_form(self) -> FrozenCircuit | None:
        """The frozen circuit ``forward`` runs without gradients, or None where it runs another execution
        (another backend, shots, noise)."""
        return self._frozen() if self.backend == "fast" and not self.execution else None

    def _frozen(self) -> FrozenCircuit:
        """The inference form of the circuit for the current weights (rebuilt when they change)."""
        return self._frozen_circuit.get([self.weights], lambda: FrozenCircuit(self.weights))

    def extra_repr(self) -> str:
        return f"qubits={self.n_qubits}, layers={self.n_layers}, backend={self.backend}"


class QTHALayer(BaseTunerLayer):
    """PEFT tuner-layer bookkeeping for QTHA: one entry per adapter name in each ModuleDict."""

    adapter_layer_names = (
        "qtha_mpo_a",
        "qtha_w_a",
        "qtha_qnn",
        "qtha_qw",
        "qtha_cw",
        "qtha_w_b",
        "qtha_mpo_b",
    )
    other_param_names = ("qtha_scaling", "qtha_dropout", "qtha_variant")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ModuleDict({}))
        self.qtha_dropout = nn.ModuleDict({})
        self.qtha_scaling: dict[str, float] = {}
        self.qtha_variant: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"QTHA adapts nn.Linear layers only; got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features

    def update_layer(self, adapter_name: str, config: QTHAConfig) -> None:
        """Create the adapter ``adapter_name`` on this layer from ``config``."""
        d_in, d_out, r = self.in_features, self.out_features, config.r
        gen = None
        if config.init_seed is not None:
            gen = torch.Generator().manual_seed(config.init_seed)
        self.qtha_scaling[adapter_name] = config.scaling
        self.qtha_variant[adapter_name] = config.variant
        self.qtha_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        if config.has_mpo:
            m, bond = config.mpo_layout(d_in, d_out)
            self.qtha_mpo_a[adapter_name] = MPOLinear(d_in, m, config.mpo_cores, bond)
            self.qtha_mpo_b[adapter_name] = MPOLinear(m, d_out, config.mpo_cores, bond)
            self.qtha_mpo_a[adapter_name].reset_parameters(generator=gen)
            # identity start: MPO_B's last core is zero, so the delta is zero
            self.qtha_mpo_b[adapter_name].reset_parameters(zero_last=config.init_weights, generator=gen)
            a_in, b_out = m, m
        else:
            a_in, b_out = d_in, d_out
        self.qtha_w_a[adapter_name] = nn.Linear(a_in, r, bias=False)
        self.qtha_w_b[adapter_name] = nn.Linear(r, b_out, bias=False)
        self.qtha_cw[adapter_name] = nn.Linear(r, r, bias=False)
        for lin in (self.qtha_w_a[adapter_name], self.qtha_w_b[adapter_name], self.qtha_cw[adapter_name]):
            _kaiming_(lin.weight, gen)
        if config.has_circuit:
            qnn = QuantumCircuitLayer(r, config.n_layers, config.backend, config.device)
            qnn.reset_parameters(generator=gen)
            self.qtha_qnn[adapter_name] = qnn
            self.qtha_qw[adapter_name] = nn.Linear(r, r, bias=False)
            _kaiming_(self.qtha_qw[adapter_name].weight, gen)
        if not config.has_mpo and config.init_weights:
            nn.init.zeros_(self.qtha_w_b[adapter_name].weight)  # BC: the last map starts at zero
        # Stored in the base layer's dtype, as PEFT does for every method; get_peft_model / from_pretrained
        # then upcast bf16/fp16 adapters to float32 unless autocast_adapter_dtype=False. The maths runs in
        # float32 either way (see delta).
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def merge(self, *args: Any, **kwargs: Any) -> None:
        raise NotMergeableError(merge_message(list(self.qtha_variant.values())))

    def unmerge(self) -> None:
        """Nothing is ever merged, so there is nothing to undo."""

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        raise NotMergeableError(merge_message([self.qtha_variant.get(adapter, "ABC")]))


class QTHALinear(nn.Module, QTHALayer):
    """``nn.Linear`` with QTHA adapters; ``forward`` = base output + scaled deltas of the active adapters."""

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: QTHAConfig, **kwargs: Any) -> None:
        super().__init__()
        QTHALayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)
        # the folded maps watch the parameter objects they were built from; loading a state dict with
        # assign=True replaces those objects, so it drops them
        self.register_load_state_dict_post_hook(_forget_folded)

    def delta(self, adapter: str, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution for x (..., d_in) float32, in float32: (..., d_out).

        Weights stored in bf16/fp16 (``autocast_adapter_dtype=False``) are cast to x's dtype on use, so
        the maths is float32 either way and their gradients arrive in their own dtype.

        The maps on either side of the circuit are linear, so they run folded (as in :meth:`add_fused`):
        ``c = x @ P`` and ``y = h @ Q`` with ``P = dense(MPO_A) W_A^T`` (d_in, r) and
        ``Q = s W_B^T dense(MPO_B)`` (r, d_out), rebuilt from the cores on every call so that autograd
        carries their gradients. Per token that costs LoRA's ``r (d_in + d_out)`` instead of
        ``m (d_in + d_out)`` through the bottleneck of width m, and backward keeps only x and r-wide
        activations; the same values up to float32 rounding.
        """
        x = self.qtha_dropout[adapter](x)
        dtype = x.dtype
        p_t = _weight(self.qtha_w_a[adapter], dtype)  # (r, m or d_in)
        if adapter in self.qtha_mpo_a:
            p_t = p_t @ self.qtha_mpo_a[adapter].to_dense(dtype).t()  # (r, d_in)
        c = F.linear(x, p_t)  # (..., r) circuit input angles
        h = _linear(self.qtha_cw[adapter], c)  # (..., r) classical path
        if adapter in self.qtha_qnn:
            h = h + _linear(self.qtha_qw[adapter], self.qtha_qnn[adapter](c))  # quantum path
        q = _weight(self.qtha_w_b[adapter], dtype).t() * self.qtha_scaling[adapter]  # (r, m or d_out)
        if adapter in self.qtha_mpo_b:
            q = q @ self.qtha_mpo_b[adapter].to_dense(dtype)  # (r, d_out)
        return h @ q  # (..., d_out)

    def add_fused(self, adapter: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """``result + delta(x)`` without gradients, the linear maps folded together (inference, eval mode).

        Everything but the circuit is linear, so with the weights fixed

            c = x @ P,                        P   = dense(MPO_A) W_A^T                  (d_in, r)
            delta = c @ M_c + q(c) @ M_q,     M_c = s CW^T W_B^T dense(MPO_B)           (r, d_out)
                                              M_q = s QW^T W_B^T dense(MPO_B)           (r, d_out)

        one matmul, the circuit and two multiply-adds into ``result`` per token, instead of seven small
        maps (decoding runs one token at a time, where each map's call overhead costs more than its
        arithmetic). For the few rows of a decoded token, with the compiled circuit kernel, all of it is
        one kernel call that adds the delta into a float32 ``result`` in place. P, M_c and M_q are
        rebuilt when a weight changes. Equal to ``result + delta`` up to float32 rounding. ``x``:
        (..., d_in) float32; ``result``: the base output (..., d_out), which this may overwrite.
        """
        folded = self._folded(adapter)
        shape = result.shape
        x2 = x.reshape(-1, x.shape[-1])  # (T, d_in)
        acc = result.reshape(-1, shape[-1])  # (T, d_out)
        if folded.rows is not None and folded.rows(x2, acc):  # the kernel wrote into result
            return acc.view(shape)
        into = acc.dtype == torch.float32
        c = F.linear(x2, folded.p_t)  # (T, r) circuit input angles (x @ P, P stored as P^T: MKL multiplies
        # a row by a tall, 4-wide matrix several times slower in that orientation)
        out = torch.addmm(acc, c, folded.m_c) if into else c @ folded.m_c  # (T, d_out), classical path
        if folded.m_q is not None:
            out.addmm_(self.qtha_qnn[adapter](c), folded.m_q)  # quantum path
        return out.view(shape) if into else result + out.to(acc.dtype).view(shape)

    def _folded(self, adapter: str) -> _Folded:
        """:meth:`add_fused`'s maps for the adapter's current weights (rebuilt when one changes, or when the
        circuit's execution moves to or from the exact simulator)."""
        cache = self.__dict__.setdefault("_folded_cache", {})
        entry = cache.get(adapter)
        if entry is None:
            params = [
                p
                for name in self.adapter_layer_names
                if adapter in (mods := getattr(self, name))
                for p in mods[adapter].parameters()
            ]
            entry = cache[adapter] = (
                params,
                Derived(),
                self.qtha_qnn[adapter] if adapter in self.qtha_qnn else None,
            )
        params, folded, qnn = entry
        exact = qnn is not None and qnn.backend == "fast" and not qnn.execution
        return folded.get(params, lambda: self._fold(adapter), exact)

    @torch.no_grad()
    def _fold(self, adapter: str) -> _Folded:
        """Build :meth:`add_fused`'s maps, in float32 whatever dtype the weights are stored in."""
        f32 = torch.float32
        p_t = self.qtha_w_a[adapter].weight.to(f32)  # (r, m or d_in)
        if adapter in self.qtha_mpo_a:
            p_t = p_t @ self.qtha_mpo_a[adapter].to_dense(f32).t()  # (r, d_in)
        out = self.qtha_w_b[adapter].weight.to(f32).t() * self.qtha_scaling[adapter]  # (r, m or d_out)
        if adapter in self.qtha_mpo_b:
            out = out @ self.qtha_mpo_b[adapter].to_dense(f32)  # (r, d_out)
        p_t, m_c = p_t.contiguous(), (self.qtha_cw[adapter].weight.to(f32).t() @ out).contiguous()
        if adapter not in self.qtha_qnn:
            return _Folded(p_t, m_c, None, None)
        m_q = (self.qtha_qw[adapter].weight.to(f32).t() @ out).contiguous()
        frozen = self.qtha_qnn[adapter].inference_form()
        return _Folded(p_t, m_c, m_q, None if frozen is None else frozen.bind_linear_rows(p_t, m_c, m_q))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)  # PEFT's mixed batches (QTHAModel's hook)
        if adapter_names is not None and not self.disable_adapters:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        active = [a for a in self.active_adapters if a in self.qtha_w_a]
        if not active:
            return result
        if len(active) == 1 and self._add_decoded(active[0], x, result):
            return result
        return self._add_deltas(x, result, dict.fromkeys(active))

    def _add_decoded(self, adapter: str, x: torch.Tensor, result: torch.Tensor) -> bool:
        """The decoding step's shortcut: one adapter, no gradients, float32, a token's few rows and the
        compiled kernel. Adds the delta into ``result`` in place with one kernel call and returns True;
        else False, having written nothing. Each Python step here runs 60 times per generated token on
        SmolLM2 (and the kernel call itself takes about 3 us), so this skips :meth:`_add_deltas`'s general
        path (autocast, row groups, dtype casts) where none of it applies."""
        if torch.is_grad_enabled() or x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            return False
        dropout = self.qtha_dropout[adapter]
        if dropout.training and isinstance(dropout, nn.Dropout):
            return False
        rows = self._folded(adapter).rows
        if rows is None or not result.is_contiguous():  # the kernel must write into result itself
            return False
        return rows(x.reshape(-1, x.shape[-1]), result.view(-1, result.shape[-1]))

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Rows of one batch through different adapters, as PEFT's LoRA does it: row i of x (B, ..., d_in)
        gets the delta of ``adapter_names[i]``; ``"__base__"`` (or a name this layer lacks) gets none.

        Rows are grouped by adapter, so each adapter's circuit and folded maps run once, on its rows
        only (B_a, ..., d_in); a single group covering the batch runs without any gather. Each row equals
        the same row run alone with its adapter active, up to float32 rounding. Returns (B, ..., d_out).
        """
        if len(adapter_names) != x.shape[0]:
            raise ValueError(
                f"adapter_names: expected one name per row of the batch ({x.shape[0]}); "
                f"got {len(adapter_names)}"
            )
        result = self.base_layer(x, *args, **kwargs)
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(adapter_names):
            if name in self.qtha_w_a:
                groups.setdefault(name, []).append(i)
        if not groups:
            return result
        whole = len(groups) == 1 and len(next(iter(groups.values()))) == x.shape[0]
        return self._add_deltas(x, result, dict.fromkeys(groups) if whole else groups)

    def _add_deltas(
        self, x: torch.Tensor, result: torch.Tensor, rows: dict[str, list[int] | None]
    ) -> torch.Tensor:
        """``result`` (B, ..., d_out) plus each adapter's delta on its rows of x (B, ..., d_in): ``rows``
        maps an adapter to the batch rows it applies to, ``None`` for all of them (no gather).

        The maths runs in float32 even under autocast; without gradients (and with no active dropout) in
        the folded form (:meth:`add_fused`), else through :meth:`delta`.
        """
        # entering the autocast context costs as much as a small matmul, so only when autocast is on
        autocast = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(device_type=x.device.type, enabled=False) if autocast else nullcontext():
            xf = x if x.dtype == torch.float32 else x.to(torch.float32)
            for adapter, subset in rows.items():
                index = None if subset is None else torch.tensor(subset, device=x.device)
                sub_x = xf if index is None else xf.index_select(0, index)  # (B_a, ..., d_in)
                sub = result if index is None else result.index_select(0, index)  # (B_a, ..., d_out)
                dropout = self.qtha_dropout[adapter]
                if not torch.is_grad_enabled() and not (dropout.training and isinstance(dropout, nn.Dropout)):
                    sub = self.add_fused(adapter, sub_x, sub)
                else:
                    sub = sub + self.delta(adapter, sub_x).to(result.dtype)
                result = sub if index is None else result.index_copy(0, index, sub)
        return result

    def __repr__(self) -> str:
        return "qtha." + super().__repr__()


def _forget_folded(module: nn.Module, _incompatible_keys: Any) -> None:
    """After a state dict is loaded into ``module``: rebuild its folded maps from its current parameters."""
    module.__dict__.pop("_folded_cache", None)


def _linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` computed in x's dtype whatever the dtype of the module's (bias-free) weight."""
    return F.linear(x, _weight(module, x.dtype))


def _weight(module: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """The module's weight in ``dtype`` (cast on use when stored in another)."""
    w = module.weight
    return w if w.dtype == dtype else w.to(dtype)


def _kaiming_(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """nn.Linear's default init (Kaiming uniform, a = sqrt(5)), optionally from a seeded generator."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=generator) * 2 - 1) * bound)
