"""Supervised fine-tuning of a QTHA (or LoRA) adapter, ending in a frozen artifact.

The recipe, top to bottom (:func:`train` = :func:`_prepare`, :func:`_loop`, :func:`_finish`):
  1. load the data specs (before the model: bad data fails fast), split train/dev (seeded)
  2. resolve and load the base model (frozen), tokenise with the chat template (loss on the reply),
     attach the adapter (QTHA variant ABC/AB/BC or PEFT LoRA)
  3. AdamW + cosine schedule with warm-up, gradient accumulation, accelerate for data parallelism
     (``torchrun --nproc_per_node N`` / ``accelerate launch`` shard the batches; one process writes)
  4. the loop: every step logged to ``metrics.jsonl`` (training.metrics) and handed to the callbacks;
     every ``save_every`` steps and on Ctrl-C a checkpoint (adapter, optimiser, scheduler, RNG, data
     position), staged in a temporary folder and renamed, so a kill never spoils the previous one
  5. at the end: freeze the adapter into ``OUT/artifact`` (see quantum_adapters.artifact)
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantum_adapters.artifact import freeze
from quantum_adapters.config import DEFAULT_TARGET_MODULES
from quantum_adapters.files import atomic_write_json, staged_dir

from .allocator import keep_freed_memory
from .metrics import METRICS_FILE, metrics_log, read_metrics, truncate_metrics

__all__ = ["ConfigMismatch", "StepCallback", "StepInfo", "TrainConfig", "TrainError", "train"]


class TrainError(ValueError):
    """A problem with the run's inputs (data, config, run folder); the message says what and where."""


class ConfigMismatch(TrainError):
    """``--resume`` on a run folder made with a different configuration."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run folder."""

    out: str = "runs/qtha"
    """Run folder: config.json, metrics.jsonl, checkpoints/, artifact/."""
    model: str = "smollm2-135m-instruct"
    """Base model: the embedded name, a GGUF file, a model folder, or a hub id."""
    data: str = "synthetic-counseling"
    """Comma-separated data specs, NAME:PATH[#SPLIT] or a generator (synthetic-math[:N])."""
    method: str = "qtha"
    """'qtha' (quantum tensor hybrid adapter) or 'lora' (PEFT's LoRA, the classical baseline)."""
    variant: str = "ABC"
    """QTHA variant: ABC (reference), AB (no circuit), BC (no MPO). Ignored for LoRA."""
    r: int = 4
    """Rank (= qubits for QTHA). Same r for LoRA so the comparison is like for like."""
    layers: int | None = None
    """Circuit layers (default r)."""
    param_budget: float | None = None
    """QTHA only: size each adapter to at most this fraction of LoRA's parameters at the same r (e.g.
    0.3; QTHAConfig.param_budget). None keeps the default sizes."""
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    """Modules to adapt."""
    alpha: float = 16.0
    """Output scaling numerator (delta * alpha / r), for both methods."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    steps: int | None = 60
    """Optimiser steps (set steps or epochs, not both)."""
    epochs: float | None = None
    """Passes over the training split (used when steps is None)."""
    max_len: int = 256
    """Token limit of one example; longer prompts are skipped and counted, long replies truncated."""
    batch_size: int = 4
    """Examples per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup: float = 0.1
    """Fraction of the steps spent warming the learning rate up (then cosine decay to 0)."""
    seed: int = 0
    """Seeds the adapter's init, the split, the data order and dropout."""
    dev_fraction: float = 0.05
    """Fraction of the examples held out as the dev split."""
    eval_every: int = 20
    """Dev loss every K steps (0: only at the end)."""
    dev_limit: int = 32
    """At most this many dev examples per dev evaluation (keeps it quick)."""
    save_every: int = 50
    """Checkpoint every K steps (0: only at the end and on Ctrl-C)."""
    limit: int | None = None
    """Use at most this many examples per data spec (after loading)."""
    skip_bad: bool = False
    """Skip malformed rows (and count them) instead of stopping at the first."""
    bf16: str = "auto"
    """'auto' (bf16 where the hardware supports it: CUDA), 'yes' or 'no'."""
    train_noise: str | None = None
    """Train the circuits through this noise model (a name such as 'depolarizing' or a spec
    'p1=P,p2=P,readout=E', as ``qtha-eval robustness --noise``): the exact density matrix with gradients
    (quantum_adapters.noise.density_expvals). None: the exact noise-free simulator."""
    circuit_device: str | None = None
    """Run the circuits on this PennyLane device while training (gradients by the parameter-shift rule,
    through a DeviceRunner with a result cache in OUT/device-cache.sqlite). None: the built-in simulator."""
    shots: int | None = None
    """Shots per circuit with circuit_device (None: the device's exact expectation values)."""
    max_circuits: int | None = None
    """With circuit_device: refuse the run (before any work) when its circuit estimate exceeds this."""

    # keys that may differ on --resume without changing what the run computes
    RESUME_FREE = ("out", "eval_every", "save_every", "dev_limit")

    def __post_init__(self) -> None:
        if self.method not in ("qtha", "lora"):
            raise TrainError(f"--method: expected 'qtha' or 'lora'; got {self.method!r}")
        if self.variant not in ("ABC", "AB", "BC"):
            raise TrainError(f"--variant: expected ABC, AB or BC; got {self.variant!r}")
        if (self.steps is None) == (self.epochs is None):
            raise TrainError("expected exactly one of --steps or --epochs")
        for name in ("r", "max_len", "batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise TrainError(
                    f"--{name.replace('_', '-')}: expected a positive integer; got {getattr(self, name)!r}"
                )
        if self.steps is not None and self.steps < 1:
            raise TrainError(f"--steps: expected a positive integer; got {self.steps!r}")
        if self.epochs is not None and self.epochs <= 0:
            raise TrainError(f"--epochs: expected a positive number; got {self.epochs!r}")
        if not self.lr > 0:
            raise TrainError(f"--lr: expected a positive number; got {self.lr!r}")
        if self.bf16 not in ("auto", "yes", "no"):
            raise TrainError(f"bf16: expected auto, yes or no; got {self.bf16!r}")
        if self.param_budget is not None and self.method != "qtha":
            raise TrainError(f"--param-budget: applies to --method qtha; got --method {self.method}")
        if self.param_budget is not None and not (
            isinstance(self.param_budget, (int, float)) and 0 < self.param_budget <= 1
        ):
            raise TrainError(f"--param-budget: expected a fraction in (0, 1]; got {self.param_budget!r}")
        if isinstance(self.targets, str):
            self.targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        self._check_circuit_execution()

    def _check_circuit_execution(self) -> None:
        """--train-noise / --circuit-device / --shots / --max-circuits, before any work."""
        if self.train_noise is None and self.circuit_device is None:
            if self.shots is not None or self.max_circuits is not None:
                raise TrainError(
                    "--shots and --max-circuits apply to --circuit-device only; add --circuit-device NAME"
                )
            return
        flag = "--train-noise" if self.train_noise is not None else "--circuit-device"
        if self.method != "qtha" or self.variant == "AB":
            raise TrainError(
                f"{flag}: expected --method qtha with a circuit (variant ABC or BC); got {self.method} {self.variant}"
            )
        if self.train_noise is not None and self.circuit_device is not None:
            raise TrainError(
                "--train-noise and --circuit-device: expected one of them (a device brings its own noise)"
            )
        if self.train_noise is not None:
            from quantum_adapters.noise import noise_model

            try:
                noise_model(self.train_noise)
            except (TypeError, ValueError) as exc:
                raise TrainError(f"--train-noise: {exc}") from None
            return
        if self.shots is not None and (
            not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 1
        ):
            raise TrainError(
                f"--shots: expected a positive integer (or leave it unset for exact values); got {self.shots!r}"
            )
        if self.max_circuits is not None and (
            not isinstance(self.max_circuits, int) or self.max_circuits < 0
        ):
            raise TrainError(f"--max-circuits: expected an integer >= 0; got {self.max_circuits!r}")
        from quantum_adapters.pennylane_backend import installed_devices

        devices = installed_devices()
        if self.circuit_device not in devices:
            raise TrainError(
                f"--circuit-device: {self.circuit_device!r} is not an installed PennyLane device; expected one of "
                f"{', '.join(devices)} (qiskit.aer: pip install -e '.[quantum]')"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _peft_config(cfg: TrainConfig):
    if cfg.method == "lora":
        from peft import LoraConfig

        return LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets)
        )
    from quantum_adapters import QTHAConfig

    return QTHAConfig(
        r=cfg.r,
        n_layers=cfg.layers,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        variant=cfg.variant,
        init_seed=cfg.seed,
        param_budget=cfg.param_budget,
    )


def _device_estimate(
    cfg: TrainConfig,
    train_features: list,
    dev_features: list,
    global_batch: int,
    per_epoch: int,
    total_steps: int,
    n_circuits: int,
) -> dict[str, Any]:
    """Upper bound of the circuits a --circuit-device run sends: every padded token of every training
    micro-batch through every adapted circuit with the parameter-shift backward, plus the dev passes."""
    from quantum_adapters.device import parameter_shift_circuits

    per_token = parameter_shift_circuits(cfg.r, cfg.layers or cfg.r)
    train_tokens = 0
    for micro in range(total_steps * cfg.grad_accum):
        epoch, pos = divmod(micro, per_epoch)
        ids = _batches_for_epoch(len(train_features), global_batch, cfg.seed, epoch)[pos]
        train_tokens += len(ids) * max(len(train_features[i]["input_ids"]) for i in ids)
    dev_tokens = sum(
        len(chunk) * max(len(f["input_ids"]) for f in chunk)
        for chunk in (
            dev_features[i : i + cfg.batch_size] for i in range(0, len(dev_features), cfg.batch_size)
        )
    )
    evals = sum(1 for step in range(1, total_steps + 1) if _evaluates_at(cfg, step, total_steps))
    circuits = n_circuits * (train_tokens * per_token + evals * dev_tokens)
    shots = "exact" if cfg.shots is None else f"{cfg.shots:,} shots each, {circuits * cfg.shots:,} shots"
    explain = (
        f"{n_circuits} adapted module(s) x ({train_tokens:,} training tokens x {per_token} parameter-shift circuits "
        f"+ {evals} dev passes x {dev_tokens:,} tokens) = {circuits:,} circuits, {shots}"
    )
    return {"circuits": circuits, "per_token": per_token, "train_tokens": train_tokens, "explain": explain}


def _set_circuits(model, **execution: Any) -> int:
    """Configure how every adapter circuit of ``model`` runs (QuantumCircuitLayer.configure)."""
    from quantum_adapters.layer import QuantumCircuitLayer

    circuits = [m for m in model.modules() if isinstance(m, QuantumCircuitLayer)]
    for circuit in circuits:
        circuit.configure(**execution)
    return len(circuits)


def _evaluates_at(cfg: TrainConfig, step: int, total_steps: int) -> bool:
    """Whether the dev loss is measured after ``step``: every ``eval_every`` steps and at the end."""
    return bool(cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps


def _check_resume(run: Path, cfg: TrainConfig) -> None:
    saved = json.loads((run / "config.json").read_text())
    current = cfg.to_dict()
    differ = sorted(k for k in current if k not in TrainConfig.RESUME_FREE and saved.get(k) != current[k])
    if differ:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in differ)
        raise ConfigMismatch(f"--resume {run}: the run was made with a different config ({details})")


def _resume_point(run: Path, cfg: TrainConfig, resume: bool) -> Path | None:
    """The checkpoint to continue from (None: start at step 0); refuses a folder that does not fit."""
    if not resume:
        if (run / "config.json").exists():
            raise TrainError(
                f"--out {run} already holds a run; pass --resume to continue it or choose another folder"
            )
        return None
    if not (run / "config.json").is_file():
        raise TrainError(f"--resume: {run} has no config.json (not a run folder)")
    _check_resume(run, cfg)
    if (run / "artifact").exists():
        raise TrainError(f"--resume: {run} already finished (its artifact exists at {run / 'artifact'})")
    return _latest_checkpoint(run)


def _latest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    return ckpts[-1] if ckpts else None


def _save_checkpoint(run: Path, step: int, model, optimizer, scheduler, rng: dict) -> Path:
    """Adapter + optimiser + scheduler + RNG + position, staged in a temporary folder, then renamed."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = run / "checkpoints"
    final = root / f"step-{step:07d}"
    with staged_dir(final, replace=True) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(state, tmp / "adapter.safetensors")
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "step": step,
            },
            tmp / "state.pt",
        )
    for old in sorted(root.glob("step-*"))[:-2]:  # keep the last two
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> int:
    """Put a checkpoint's adapter, optimiser, scheduler and RNG state back; returns its step."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(ckpt / "adapter.safetensors"))
    state = torch.load(ckpt / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def _batches_for_epoch(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's example order (seeded) cut into global batches; the last partial batch is dropped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    return [order[i : i + global_batch] for i in range(0, n - global_batch + 1, global_batch)]


@torch.no_grad()
def _dev_loss(model, dev_features, collate, pad_id, batch_size, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(dev_features), batch_size):
        batch = {k: v.to(device) for k, v in collate(dev_features[i : i + batch_size], pad_id).items()}
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n_tokens
        count += n_tokens
    model.train()
    return total / max(count, 1)


@dataclass(frozen=True)
class StepInfo:
    """What a callback passed to :func:`train` is given after every optimiser step (the step's line of
    ``metrics.jsonl``, plus the dev loss when it was measured at this step)."""

    step: int
    """Optimiser steps done, counting those before a resume."""
    total_steps: int
    """Steps the run makes in all."""
    loss: float
    """Training loss of this step (mean over its micro-batches)."""
    lr: float
    """Learning rate after this step's scheduler update."""
    tokens_per_s: float
    """Tokens (padding included, all processes) per second in this step."""
    elapsed: float
    """Seconds since the loop started (in this process)."""
    dev_loss: float | None = None
    """Dev loss measured after this step, or None when none was."""


StepCallback = Callable[[StepInfo], None]
"""Called after every optimiser step, once the step is logged (and checkpointed when due); raising
``KeyboardInterrupt`` in it stops the run as Ctrl-C does (a checkpoint, then ``--resume``)."""


@dataclass
class _Run:
    """Everything :func:`train` prepares before the first step (the loop and the finish read it)."""

    cfg: TrainConfig
    folder: Path
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    pad_id: int
    source: Any
    """The base model (quantum_adapters.models.ModelSource)."""
    report: Any
    """What loading and tokenising the data did (training.data.DataReport)."""
    train_examples: list
    train_features: list
    dev_features: list
    per_epoch: int
    """Global batches per pass over the training split."""
    total_steps: int
    start_step: int
    """0, or the step of the checkpoint the run resumes from."""
    trainable: int
    runner: Any = None
    """The DeviceRunner of a --circuit-device run, else None."""
    device_estimate: dict | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder (the only one, or rank 0 of a data-parallel run)."""
        return self.accelerator.is_main_process

    def save_checkpoint(self, step: int) -> Path:
        return _save_checkpoint(
            self.folder,
            step,
            self.accelerator.unwrap_model(self.model),
            self.optimizer,
            self.scheduler,
            _rng_state(),
        )


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
) -> dict[str, Any]:
    """Run (or resume) a training run; returns the summary printed by ``qtha-train --json``.

    ``callbacks`` are called in order after every optimiser step with its :class:`StepInfo`. The
    process's malloc keeps freed memory from here on (:func:`training.allocator.keep_freed_memory`:
    no page faults for each step's activations; ``QTHA_KEEP_FREED_MEMORY=0`` turns it off).
    """
    keep_freed_memory()
    run = _prepare(cfg, resume)
    t0 = time.time()
    step, losses = _loop(run, callbacks, progress, t0)
    return _finish(run, step, losses, t0)


def _prepare(cfg: TrainConfig, resume: bool) -> _Run:
    """Steps 1-3 of the recipe: check the run folder, load the data, build the model and optimiser,
    restore the checkpoint of a resumed run, write config.json and data.json (main process)."""
    from accelerate import Accelerator
    from peft import get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    from quantum_adapters.models import load_base_model

    from .data import load_many, split
    from .tokenize import encode_all

    folder = Path(cfg.out)
    use_bf16 = cfg.bf16 == "yes" or (
        cfg.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision="bf16" if use_bf16 else "no",
        cpu=not torch.cuda.is_available(),  # torchrun on CPU: MULTI_CPU with gloo, not N lone processes
    )
    ckpt = _resume_point(folder, cfg, resume)

    # 1. data (before the model: bad data fails fast)
    examples, report = load_many(cfg.data, skip_bad=cfg.skip_bad, seed=cfg.seed, limit=cfg.limit)
    if not examples:
        raise TrainError(f"--data {cfg.data}: no examples left after loading ({report.as_dict()})")
    train_ex, dev_ex = split(examples, dev_fraction=cfg.dev_fraction, seed=cfg.seed)

    # 2. model + adapter
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model, tokenizer, source = load_base_model(cfg.model, device=accelerator.device)
    train_features = encode_all(tokenizer, train_ex, cfg.max_len, report, trim_context=True)
    dev_features = encode_all(tokenizer, dev_ex, cfg.max_len, report, trim_context=True)[: cfg.dev_limit]
    if not train_features:
        raise TrainError(
            f"--max-len {cfg.max_len}: every training prompt is longer than that ({report.too_long} skipped); "
            "raise --max-len"
        )
    model = get_peft_model(model, _peft_config(cfg))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    runner, n_circuits = _circuit_execution(cfg, model, folder)

    # 3. schedule + optimiser (+ the device budget, confirmed before any step)
    world = accelerator.num_processes
    per_epoch = len(train_features) // (cfg.batch_size * world)
    if per_epoch == 0:
        raise TrainError(
            f"--batch-size {cfg.batch_size} x {world} process(es) is larger than the training split "
            f"({len(train_features)} examples)"
        )
    total_steps = (
        cfg.steps if cfg.steps is not None else max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    )
    device_estimate = None
    if runner is not None:
        device_estimate = _device_estimate(
            cfg, train_features, dev_features, cfg.batch_size * world, per_epoch, total_steps, n_circuits
        )
        _confirm_device_budget(cfg, runner, device_estimate, accelerator.is_main_process)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    start_step = 0
    if ckpt is not None:
        start_step = _load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)

    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "config.json", cfg.to_dict(), indent=2, sort_keys=True)
        data = {"report": report.as_dict(), "train": len(train_features), "dev": len(dev_features)}
        atomic_write_json(folder / "data.json", data, indent=2, sort_keys=True)
        if ckpt is None:
            (folder / METRICS_FILE).unlink(missing_ok=True)
        else:
            truncate_metrics(folder, start_step)  # the steps after the checkpoint are trained again
    return _Run(
        cfg=cfg,
        folder=folder,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        pad_id=tokenizer.pad_token_id,
        source=source,
        report=report,
        train_examples=train_ex,
        train_features=train_features,
        dev_features=dev_features,
        per_epoch=per_epoch,
        total_steps=total_steps,
        start_step=start_step,
        trainable=trainable,
        runner=runner,
        device_estimate=device_estimate,
    )


def _circuit_execution(cfg: TrainConfig, model, folder: Path) -> tuple[Any, int]:
    """Point the adapter circuits at the noise model or the device the config names; returns the
    DeviceRunner (None unless --circuit-device) and the number of circuits it runs."""
    if cfg.train_noise is not None:
        _set_circuits(model, backend="noisy", noise=cfg.train_noise)
    if cfg.circuit_device is None:
        return None, 0
    from quantum_adapters.device import DeviceRunner

    runner = DeviceRunner(cfg.circuit_device, cfg.shots, cache=folder / "device-cache.sqlite", progress=False)
    runner.check(cfg.r)
    return runner, _set_circuits(model, backend="device", runner=runner)


def _confirm_device_budget(cfg: TrainConfig, runner, estimate: dict[str, Any], main: bool) -> None:
    """Refuse a --circuit-device run whose estimate exceeds --max-circuits (or that gave none)."""
    if cfg.max_circuits is None or estimate["circuits"] > cfg.max_circuits:
        given = "no --max-circuits" if cfg.max_circuits is None else f"--max-circuits {cfg.max_circuits}"
        raise TrainError(
            f"--circuit-device {cfg.circuit_device}: this run needs up to {estimate['circuits']:,} "
            f"circuits ({estimate['explain']}); {given} was given: confirm with "
            f"--max-circuits {estimate['circuits']} (or fewer --steps, a smaller --batch-size or "
            "--max-len); nothing was run"
        )
    runner.max_circuits = cfg.max_circuits
    if main:
        print(f"qtha-train: device estimate: {estimate['explain']}", flush=True)


def _loop(
    run: _Run, callbacks: Sequence[StepCallback], progress: bool, t0: float
) -> tuple[int, list[tuple[int, float]]]:
    """Step 4 of the recipe: optimiser steps from ``run.start_step`` to ``run.total_steps``, each
    logged, dev-evaluated and checkpointed when due. Ctrl-C (or SIGTERM) saves a checkpoint and
    re-raises. Returns the last step and this process's ``(step, loss)`` history."""
    from .tokenize import collate

    cfg, accelerator = run.cfg, run.accelerator
    bar = _ProgressBar(run, enabled=progress and run.main)
    callbacks = (bar, *callbacks)
    losses: list[tuple[int, float]] = []
    step = run.start_step
    with metrics_log(run.folder, write=run.main) as log, _sigterm_as_interrupt(run.main):
        try:
            run.model.train()
            while step < run.total_steps:
                t_step = time.time()
                loss, tokens = _optimiser_step(run, step, collate)
                step += 1
                elapsed = time.time() - t0
                record = {
                    "step": step,
                    "loss": loss,
                    "lr": run.scheduler.get_last_lr()[0],
                    "tokens_per_s": tokens / max(time.time() - t_step, 1e-9),
                    "elapsed": elapsed,
                }
                log(record)
                losses.append((step, loss))
                dev = None
                if run.dev_features and _evaluates_at(cfg, step, run.total_steps):
                    dev = _dev_loss(
                        run.model, run.dev_features, collate, run.pad_id, cfg.batch_size, accelerator.device
                    )
                    log({"step": step, "dev_loss": dev})
                if run.main and cfg.save_every and step % cfg.save_every == 0 and step < run.total_steps:
                    run.save_checkpoint(step)
                info = StepInfo(total_steps=run.total_steps, dev_loss=dev, **record)
                for callback in callbacks:
                    callback(info)
        except KeyboardInterrupt:
            if run.main:
                path = run.save_checkpoint(step)
                bar.write(f"interrupted at step {step}: checkpoint saved to {path}; continue with --resume")
            raise
        finally:
            bar.close()
    return step, losses


class _ProgressBar:
    """The run's tqdm bar, as the first step callback."""

    def __init__(self, run: _Run, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=run.total_steps,
            initial=run.start_step,
            desc=f"train {run.cfg.method}",
            disable=not enabled,
            unit="step",
        )

    def __call__(self, info: StepInfo) -> None:
        self._bar.set_postfix(loss=f"{info.loss:.3f}", tok_s=f"{info.tokens_per_s:.0f}")
        self._bar.update(1)

    def write(self, line: str) -> None:
        self._bar.write(line)

    def close(self) -> None:
        self._bar.close()


def _optimiser_step(run: _Run, step: int, collate) -> tuple[float, int]:
    """One optimiser step (``grad_accum`` micro-batches, this process's share of each global batch)
    after ``step`` steps; returns its mean loss and the tokens all processes fed in it."""
    cfg, accelerator = run.cfg, run.accelerator
    world = accelerator.num_processes
    step_loss, step_tokens = 0.0, 0
    for micro in range(step * cfg.grad_accum, (step + 1) * cfg.grad_accum):
        epoch, pos = divmod(micro, run.per_epoch)
        ids = _batches_for_epoch(len(run.train_features), cfg.batch_size * world, cfg.seed, epoch)[pos]
        mine = ids[accelerator.process_index :: world]
        batch = {
            k: v.to(accelerator.device)
            for k, v in collate([run.train_features[i] for i in mine], run.pad_id).items()
        }
        with accelerator.accumulate(run.model):
            loss = run.model(**batch).loss
            accelerator.backward(loss)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        step_loss += float(loss.detach()) / cfg.grad_accum
        step_tokens += int(batch["attention_mask"].sum()) * world
    run.scheduler.step()
    return step_loss, step_tokens


@contextmanager
def _sigterm_as_interrupt(enabled: bool) -> Iterator[None]:
    """While inside, a ``kill -TERM`` raises KeyboardInterrupt, so it saves like Ctrl-C."""
    if not enabled:
        yield
        return

    def _on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(run: _Run, step: int, losses: list[tuple[int, float]], t0: float) -> dict[str, Any]:
    """Step 5 of the recipe: the summary, and (main process) the frozen artifact and summary.json."""
    from .data import domain_of

    cfg, accelerator = run.cfg, run.accelerator
    accelerator.wait_for_everyone()
    metrics = read_metrics(run.folder) if run.main else None
    history = metrics.train if metrics is not None else losses  # the file also has the steps before a resume
    devs = metrics.dev if metrics is not None else []
    summary: dict[str, Any] = {
        "run_dir": str(run.folder),
        "method": cfg.method,
        "variant": cfg.variant if cfg.method == "qtha" else None,
        "steps": step,
        "loss_first": history[0][1] if history else None,
        "loss_last": history[-1][1] if history else None,
        "dev_loss_last": devs[-1][1] if devs else None,
        "trainable_params": run.trainable,
        "seconds": round(time.time() - t0, 2),
        "data": run.report.as_dict(),
        "model": run.source.name,
    }
    if run.runner is not None:
        summary["device"] = {**run.runner.summary(), "estimate": run.device_estimate}
        _set_circuits(accelerator.unwrap_model(run.model), backend="fast")
        run.runner.close()
    if run.main:
        art = freeze(
            accelerator.unwrap_model(run.model),
            run.folder / "artifact",
            base=run.source,
            training={
                "config": cfg.to_dict(),
                "data": run.report.as_dict(),
                "steps": step,
                "run_dir": str(run.folder),
                "domain": domain_of(run.train_examples),
                "system_prompt": _system_prompt(run.train_examples),
            },
            metrics={k: summary[k] for k in ("loss_first", "loss_last", "dev_loss_last", "seconds")},
        )
        summary["artifact"] = str(art)
        atomic_write_json(run.folder / "summary.json", summary, indent=2, sort_keys=True)
    accelerator.wait_for_everyone()
    return summary


def _system_prompt(examples) -> str | None:
    """The most common system message of the training data: serving adds it when a chat has none."""
    from collections import Counter

    counts = Counter(m["content"] for ex in examples for m in ex.messages[:1] if m["role"] == "system")
    return counts.most_common(1)[0][0] if counts else None
