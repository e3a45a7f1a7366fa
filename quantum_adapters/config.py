"""Configuration of a quantum tensor hybrid adapter (QTHA).

One dataclass, validated in ``__post_init__``, documented field by field. It is a PEFT config, so it
round-trips through ``adapter_config.json`` and ``PeftModel.from_pretrained`` like LoRA's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from ._peft_type import QTHA_PEFT_TYPE
from .mpo import mpo_shapes

__all__ = [
    "BACKENDS",
    "DEFAULT_TARGET_MODULES",
    "VARIANTS",
    "QTHAConfig",
    "adapter_parameters",
    "default_bottleneck",
]

VARIANTS = ("ABC", "AB", "BC")
BACKENDS = ("fast", "pennylane")
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")
"""The reference's targets: the query and value projections of every decoder layer."""


def default_bottleneck(d_in: int, d_out: int) -> int:
    """The bottleneck size ``m`` used when the config leaves it unset.

    Rule: the power of two nearest to ``max(d_in, d_out) / 16``, clamped to [16, 256].
    It gives the reference's m = 256 on 7B-class layers (3584 / 16 = 224 -> 256) and keeps the two MPOs
    small next to LoRA's ``r * (d_in + d_out)`` on small models (576 -> 32 on SmolLM2-135M).
    """
    target = max(d_in, d_out) / 16
    return int(min(256, max(16, 2 ** round(math.log2(max(target, 1.0))))))


def adapter_parameters(
    d_in: int,
    d_out: int,
    *,
    r: int,
    n_layers: int,
    variant: str = "ABC",
    bottleneck: int | None = None,
    bond_dim: int = 8,
    mpo_cores: int = 4,
) -> int:
    """Trainable parameters of one QTHA adapter on a (d_in -> d_out) linear layer, without building it.

    ABC: MPO_A (d_in -> m) + W_A (m x r) + CW, QW (r x r each) + circuit (4 r L) + W_B (r x m) + MPO_B
    (m -> d_out); AB drops QW and the circuit; BC has W_A (d_in x r) and W_B (r x d_out) and no MPO.
    PEFT's LoRA at the same r has r * (d_in + d_out).
    """
    has_circuit, has_mpo = variant in ("ABC", "BC"), variant in ("ABC", "AB")
    circuit = r * r + 4 * r * n_layers if has_circuit else 0
    if not has_mpo:
        return d_in * r + r * r + circuit + r * d_out
    m = bottleneck or default_bottleneck(d_in, d_out)
    mpos = sum(
        math.prod(s)
        for s in mpo_shapes(d_in, m, mpo_cores, bond_dim) + mpo_shapes(m, d_out, mpo_cores, bond_dim)
    )
    return mpos + 2 * m * r + r * r + circuit


def _field(default, help_text: str, **kw):
    return field(default=default, metadata={"help": help_text}, **kw)


@dataclass
class QTHAConfig(PeftConfig):
    """A quantum tensor hybrid adapter: MPO -> linear -> r-qubit circuit (+ classical path) -> linear -> MPO."""

    r: int = _field(8, "Rank = number of qubits of the circuit (the bottleneck the circuit acts on). >= 2.")
    """Rank of the adapter and number of qubits of its circuit (>= 2: the CRZ rings need two wires)."""

    n_layers: int | None = _field(None, "Circuit depth (data re-uploading layers). Default: r.")
    """Number of circuit layers L; each has 4*r trainable angles. ``None`` means L = r (the reference)."""

    bottleneck: int | None = _field(None, "MPO bottleneck size m. Default: see default_bottleneck().")
    """Width m between the MPOs and the r-wide linear maps. ``None`` applies :func:`default_bottleneck`
    per adapted layer."""

    bond_dim: int = _field(8, "Bond dimension of the MPO (tensor-train) cores.")
    """Bond dimension of the matrix-product operators (8 in the reference). Larger = more expressive."""

    mpo_cores: int = _field(4, "Number of cores of each MPO.")
    """How many cores each MPO has; d_in, d_out and m are factored into this many modes."""

    alpha: float = _field(16.0, "Scaling numerator: the adapter's output is multiplied by alpha / r.")
    """The delta is scaled by ``alpha / r``, as in LoRA, so changing r does not rescale the learning rate."""

    dropout: float = _field(0.05, "Dropout on the adapter's input, in [0, 1).")
    """Dropout applied to x before the first MPO (training only)."""

    target_modules: list[str] | str | None = _field(
        None, "Module names to adapt (suffix match, or a regex string). Default: q_proj, v_proj."
    )
    """Names of the linear layers to adapt. ``None`` uses q_proj and v_proj as the reference does."""

    exclude_modules: list[str] | str | None = _field(None, "Module names never to adapt.")
    """Names (or a regex) of modules to skip even if they match ``target_modules``."""

    variant: Literal["ABC", "AB", "BC"] = _field(
        "ABC", "ABC = MPO + circuit (reference); AB = MPO, no circuit (ablation); BC = circuit, no MPO."
    )
    """Which parts are present: ``ABC`` the full adapter, ``AB`` the no-circuit control (MPO + linear
    maps with the classical path only), ``BC`` no MPO (W_A -> circuit + classical path -> W_B)."""

    backend: Literal["fast", "pennylane"] = _field(
        "fast", "Circuit execution: 'fast' (exact torch simulator) or 'pennylane' (a named device)."
    )
    """How the circuit runs. ``fast`` is the exact batched simulator; ``pennylane`` sends it to ``device``."""

    device: str | None = _field(None, "PennyLane device name when backend='pennylane' (e.g. default.qubit).")
    """PennyLane device used with ``backend='pennylane'``; ``None`` means ``default.qubit``."""

    init_seed: int | None = _field(None, "Seed for the adapter's initial weights (None: torch's global RNG).")
    """Seed for initialising the adapter's weights, so two runs with the same seed start identical."""

    layers_to_transform: list[int] | int | None = _field(None, "Only adapt these decoder layer indices.")
    """Restrict adaptation to these layer indices (needs ``layers_pattern`` for unusual models)."""

    layers_pattern: list[str] | str | None = _field(
        None, "Name of the layer list, used with layers_to_transform."
    )
    """The attribute holding the decoder layers, e.g. ``layers``."""

    modules_to_save: list[str] | None = _field(None, "Extra modules to train and save in full.")
    """Modules besides the adapters that are set trainable and saved."""

    init_weights: bool = _field(
        True, "True: the adapter starts as the identity (zero delta); False: a random non-zero delta."
    )
    """PEFT's convention for every method. ``True`` zeroes the last map (MPO_B's last core, or W_B for
    BC), so training starts from the base model. ``False`` draws every part at random, the last map
    included: the adapter changes the output from the start, which is how generic tests check that
    saving, loading and disabling really carry the adapter. Not for training."""

    param_budget: float | None = _field(
        None,
        "Size each adapter to at most this fraction of LoRA's r*(d_in+d_out) parameters at the same r "
        "(e.g. 0.3); chooses the bottleneck and bond dimension per layer. ABC and AB only.",
    )
    """Trainable-parameter budget per adapted layer, as a fraction of what PEFT's LoRA has there at the
    same r. ``None`` keeps the default sizes. With a budget, each layer gets the largest bottleneck m
    (a power of two, from :func:`default_bottleneck` down by halves, not below r) for which some bond
    dimension <= ``bond_dim`` fits, and the largest such bond dimension; ``mpo_cores`` stays. The
    reference's "76% fewer parameters than LoRA" is ``param_budget=0.24``; 0.3 gives 25-30% on
    SmolLM2-135M and Qwen2.5-0.5B (see :meth:`mpo_layout`). A layer too small for the budget is refused
    when the adapter is built, naming the layer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = QTHA_PEFT_TYPE
        if self.target_modules is None:
            self.target_modules = list(DEFAULT_TARGET_MODULES)
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple)):
            self.exclude_modules = set(self.exclude_modules)
        _check_int("r", self.r, minimum=2, why="the circuit has one qubit per rank and its CRZ rings need 2")
        if self.r > 16:
            raise ValueError(
                f"QTHAConfig.r: expected at most 16 (a 2^r state vector is simulated per token); got {self.r}"
            )
        if self.n_layers is None:
            self.n_layers = self.r
        _check_int("n_layers", self.n_layers, minimum=1)
        if self.bottleneck is not None:
            _check_int("bottleneck", self.bottleneck, minimum=self.r, why="it must be at least r")
        _check_int("bond_dim", self.bond_dim, minimum=1)
        _check_int("mpo_cores", self.mpo_cores, minimum=1)
        if not isinstance(self.init_weights, bool):
            raise TypeError(f"QTHAConfig.init_weights: expected True or False; got {self.init_weights!r}")
        if self.param_budget is not None:
            budget = self.param_budget
            if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 < budget <= 1:
                raise ValueError(
                    "QTHAConfig.param_budget: expected a fraction of LoRA's parameter count in (0, 1]; "
                    f"got {budget!r}"
                )
            if self.bottleneck is not None:
                raise ValueError(
                    f"QTHAConfig.param_budget: expected bottleneck unset (the budget chooses it); got "
                    f"bottleneck={self.bottleneck} with param_budget={budget}"
                )
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ValueError(f"QTHAConfig.alpha: expected a positive number; got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"QTHAConfig.dropout: expected a number in [0, 1); got {self.dropout!r}")
        if self.variant not in VARIANTS:
            raise ValueError(
                f"QTHAConfig.variant: expected one of {', '.join(VARIANTS)}; got {self.variant!r}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"QTHAConfig.backend: expected one of {', '.join(BACKENDS)}; got {self.backend!r}"
            )
        if self.backend == "pennylane":
            from .pennylane_backend import installed_devices

            devices = installed_devices()
            if (self.device or "default.qubit") not in devices:
                raise ValueError(
                    f"QTHAConfig.device: expected an installed PennyLane device ({', '.join(devices)}); "
                    f"got {self.device!r}"
                )
        if self.param_budget is not None and self.variant == "BC":
            raise ValueError(
                "QTHAConfig.param_budget: expected variant ABC or AB (the budget sizes the MPOs; BC has "
                "none and always has more parameters than LoRA); got variant 'BC'"
            )
        if self.backend == "fast" and self.device not in (None, "default.qubit"):
            raise ValueError(
                f"QTHAConfig.device: a device ({self.device!r}) only applies with backend='pennylane'; "
                "set backend='pennylane' or leave device unset"
            )

    def mpo_layout(self, d_in: int, d_out: int) -> tuple[int, int]:
        """(bottleneck m, bond dimension) of the MPOs on a (d_in -> d_out) layer.

        Without ``param_budget``: ``bottleneck`` (or :func:`default_bottleneck`) and ``bond_dim``. With it:
        the largest m, then the largest bond, whose adapter has at most ``param_budget * r * (d_in +
        d_out)`` parameters; no fit -> ValueError naming the shape and the smallest count possible.
        """
        if self.param_budget is None:
            return self.bottleneck or default_bottleneck(d_in, d_out), self.bond_dim
        limit = self.param_budget * self.r * (d_in + d_out)

        def count(m: int, bond: int) -> int:
            return adapter_parameters(
                d_in,
                d_out,
                r=self.r,
                n_layers=self.n_layers,
                variant=self.variant,
                bottleneck=m,
                bond_dim=bond,
                mpo_cores=self.mpo_cores,
            )

        m = default_bottleneck(d_in, d_out)
        sizes = []
        while m >= self.r:
            sizes.append(m)
            m //= 2
        sizes = sizes or [self.r]
        for m in sizes:
            for bond in range(self.bond_dim, 0, -1):
                if count(m, bond) <= limit:
                    return m, bond
        smallest = count(sizes[-1], 1)
        raise ValueError(
            f"QTHAConfig.param_budget: expected a budget this {d_in} -> {d_out} layer can meet at r={self.r}; "
            f"got {self.param_budget} of LoRA's {self.r * (d_in + d_out):,} = {int(limit):,} parameters, but "
            f"the smallest QTHA there (m={sizes[-1]}, bond 1) has {smallest:,} "
            f"({smallest / (self.r * (d_in + d_out)):.2f} of LoRA)"
        )

    @property
    def scaling(self) -> float:
        """Multiplier of the adapter's output: alpha / r."""
        return float(self.alpha) / self.r

    @property
    def has_circuit(self) -> bool:
        return self.variant in ("ABC", "BC")

    @property
    def has_mpo(self) -> bool:
        return self.variant in ("ABC", "AB")


def _check_int(name: str, value: object, *, minimum: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"QTHAConfig.{name}: expected an integer >= {minimum}{reason}; got {value!r}")
