"""``qtha-eval study``: does QTHA beat LoRA (Origin Quantum, arXiv 2503.12790) under a fair protocol?

The reference's released scripts train every method with one learning rate (5e-5), so "lower loss than
LoRA" may come from the learning rate, not the adapter. A study here runs each *arm* (an adapter
configuration: QTHA ABC, QTHA at a parameter budget, the no-circuit ablation AB, the released arch BC,
LoRA at the same r, LoRA at about QTHA's size) under each *protocol*:

    protocol with one lr      arm x seeds at that lr                          ("reference": 5e-5)
    protocol with several     arm x lrs at the sweep seed; best lr = lowest   ("tuned")
                              final dev loss; then arm x seeds at the best lr

on each *domain* (counselling, math), evaluating every final run on held-out sets with the serving
engine (teacher-forced eval loss and token error; ROUGE-L and the safety probes for counselling), and,
for math, strict and flexible GSM8K accuracy of a math-capable model (its base, and a QTHA and a LoRA
run trained at each arm's best lr from the tuned sweep).

A run is named by its full training config (domain, arm, lr, seed, model, every train key), so an
identical run shared by two protocols (5e-5 at the sweep seed) is trained once. The study is resumable
at the run level: a run whose evaluation is written is never redone, a run killed mid-way resumes from
its last checkpoint. Every training run and every evaluation goes into the registry; the report (one
table per domain and protocol: mean and 95% CI over seeds, paired differences by seed, dev-loss curves,
parameters, wall time) is built from the registry's entries, never from logs.

    qtha-eval study --config configs/study.yaml --out studies/v2 --dry-run   # plan and budget only
    qtha-eval study --config configs/study.yaml --out studies/v2
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantum_adapters.domains import COUNSELING, DOMAINS, MATH
from quantum_adapters.files import atomic_write, atomic_write_json

__all__ = ["StudyError", "load_config", "plan", "register", "run_study", "study_report"]

TASK = "study"  # registry task name of every study evaluation
MARKER = "study-eval.json"  # a run folder's finished evaluation (the resume marker)
# t quantiles (0.975) for 95% intervals over seeds, by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
_DOMAIN_KEYS = ("train", "evals", "protocols", "accuracy", "generate_limit", "safety_probes", "step_scale")
_ACCURACY_KEYS = (
    "model",
    "arms",
    "lr_from",
    "lrs",
    "extra_lrs",
    "seeds",
    "data",
    "limit",
    "fewshot",
    "fewshot_data",
    "max_tokens",
    "batch_size",
)


class StudyError(ValueError):
    """A study config that cannot run; the message names the file and the key."""


# --- config ------------------------------------------------------------------------------------------


def _train_fields() -> set[str]:
    from training.recipe import TrainConfig

    return set(TrainConfig.field_names())


def _positive_lrs(where: str, lrs: Any) -> list[float]:
    if not isinstance(lrs, list) or not lrs:
        raise StudyError(f"{where}: expected a non-empty list of learning rates; got {lrs!r}")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise StudyError(f"{where}: expected positive learning rates; got {lr!r}")
    return [float(lr) for lr in lrs]


def _seeds(where: str, seeds: Any) -> list[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"{where}: expected a non-empty list of integer seeds; got {seeds!r}")
    return seeds


def _check_data(where: str, spec: Any) -> None:
    from training.data import DataError, load

    if not isinstance(spec, str) or not spec.strip():
        raise StudyError(f"{where}: expected a data spec such as gsm8k:PATH; got {spec!r}")
    try:
        examples, _ = load(spec, limit=1)
    except (DataError, OSError) as exc:
        raise StudyError(f"{where}: {exc}") from None
    if not examples:
        raise StudyError(f"{where}: {spec} holds no examples")


def load_config(path: str, *, check_data: bool = True) -> dict[str, Any]:
    """Read and validate a study YAML (see configs/study.yaml); every mistake names its key.

    Checks, before anything trains: known top-level keys; every arm key is a training option (or
    ``param_budget``); learning-rate lists non-empty and positive; seeds integers; every domain's
    protocols and arms defined; every data spec loads (``check_data``).
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise StudyError(f"--config: file not found: {file}")
    try:
        cfg = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StudyError(f"--config {file}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise StudyError(f"--config {file}: expected a mapping at the top level")
    where = f"--config {file}"
    known = {"model", "train", "step_seconds", "eval_minutes", "arms", "protocols", "domains", "pairs"}
    for key in cfg:
        if key not in known:
            raise StudyError(f"{where}: unknown key {key!r} (expected {', '.join(sorted(known))})")
    for key in ("model", "train", "arms", "protocols", "domains"):
        if key not in cfg:
            raise StudyError(f"{where}: missing key {key!r}")
    fields = _train_fields()
    allowed_arm = (fields | {"param_budget"}) - {"out", "data", "model", "seed", "lr"}
    for key in cfg["train"]:
        if key not in fields or key in ("out", "data", "seed", "lr"):
            raise StudyError(f"{where}: train.{key}: not a training option that a study may set")
    if not isinstance(cfg["arms"], dict) or not cfg["arms"]:
        raise StudyError(f"{where}: arms: expected a mapping of arm name -> training options")
    for name, arm in cfg["arms"].items():
        if not isinstance(arm, dict):
            raise StudyError(f"{where}: arms.{name}: expected a mapping of training options; got {arm!r}")
        for key in arm:
            if key not in allowed_arm:
                raise StudyError(
                    f"{where}: arms.{name}.{key}: unknown arm key (expected training options such as "
                    "method, variant, r, layers, alpha, param_budget)"
                )
    for name, proto in cfg["protocols"].items():
        _positive_lrs(f"{where}: protocols.{name}.lrs", (proto or {}).get("lrs"))
        _seeds(f"{where}: protocols.{name}.seeds", (proto or {}).get("seeds"))
        if "sweep_seed" in proto and not isinstance(proto["sweep_seed"], int):
            raise StudyError(f"{where}: protocols.{name}.sweep_seed: expected an integer")
    for dname, dom in cfg["domains"].items():
        dwhere = f"{where}: domains.{dname}"
        if not isinstance(dom, dict) or "train" not in dom or "evals" not in dom:
            raise StudyError(f"{dwhere}: expected 'train' (a data spec) and 'evals' (name -> data, limit)")
        if dname not in DOMAINS:
            raise StudyError(f"{dwhere}: expected the domain {' or '.join(DOMAINS)}; got {dname!r}")
        for key in dom:
            if key not in _DOMAIN_KEYS:
                raise StudyError(f"{dwhere}.{key}: unknown key (expected {', '.join(_DOMAIN_KEYS)})")
        for key in dom.get("accuracy") or {}:
            if key not in _ACCURACY_KEYS:
                raise StudyError(
                    f"{dwhere}.accuracy.{key}: unknown key (expected {', '.join(_ACCURACY_KEYS)})"
                )
        if check_data:
            _check_data(f"{dwhere}.train", dom["train"])
        for ename, ev in dom["evals"].items():
            if not isinstance(ev, dict) or "data" not in ev:
                raise StudyError(f"{dwhere}.evals.{ename}: expected a mapping with 'data' (and 'limit')")
            if check_data:
                _check_data(f"{dwhere}.evals.{ename}.data", ev["data"])
        for pname, proto in (dom.get("protocols") or {}).items():
            if pname not in cfg["protocols"]:
                raise StudyError(f"{dwhere}.protocols.{pname}: not a protocol in 'protocols'")
            for arm in (proto or {}).get("arms") or []:
                if arm not in cfg["arms"]:
                    raise StudyError(f"{dwhere}.protocols.{pname}.arms: unknown arm {arm!r}")
            if "seeds" in (proto or {}):
                _seeds(f"{dwhere}.protocols.{pname}.seeds", proto["seeds"])
            for arm, seeds in ((proto or {}).get("arm_seeds") or {}).items():
                if arm not in cfg["arms"]:
                    raise StudyError(f"{dwhere}.protocols.{pname}.arm_seeds: unknown arm {arm!r}")
                _seeds(f"{dwhere}.protocols.{pname}.arm_seeds.{arm}", seeds)
        acc = dom.get("accuracy")
        if acc is not None:
            if dname != MATH.name:
                raise StudyError(f"{dwhere}.accuracy: only the math domain generates answers")
            for key in ("model", "arms", "data", "limit"):
                if key not in acc:
                    raise StudyError(f"{dwhere}.accuracy: missing key {key!r}")
            for arm in acc["arms"]:
                if arm not in cfg["arms"]:
                    raise StudyError(f"{dwhere}.accuracy.arms: unknown arm {arm!r}")
            if "lrs" in acc:
                _positive_lrs(f"{dwhere}.accuracy.lrs", acc["lrs"])
            elif acc.get("lr_from") not in (dom.get("protocols") or {}):
                raise StudyError(
                    f"{dwhere}.accuracy.lr_from: expected a protocol of this domain whose best lr each arm "
                    f"uses (or 'lrs'); got {acc.get('lr_from')!r}"
                )
            extra = acc.get("extra_lrs") or {}
            if not isinstance(extra, dict):
                raise StudyError(
                    f"{dwhere}.accuracy.extra_lrs: expected a mapping arm -> [lr, ...]; got {extra!r}"
                )
            for arm, lrs in extra.items():
                if arm not in acc["arms"]:
                    raise StudyError(
                        f"{dwhere}.accuracy.extra_lrs: {arm!r} is not one of accuracy.arms ({', '.join(acc['arms'])})"
                    )
                _positive_lrs(f"{dwhere}.accuracy.extra_lrs.{arm}", lrs)
            _seeds(f"{dwhere}.accuracy.seeds", acc.get("seeds", [0]))
            if check_data:
                _check_data(f"{dwhere}.accuracy.data", acc["data"])
                if acc.get("fewshot"):
                    _check_data(f"{dwhere}.accuracy.fewshot_data", acc.get("fewshot_data"))
    for pair in cfg.get("pairs") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(a in cfg["arms"] for a in pair)):
            raise StudyError(f"{where}: pairs: expected [arm, arm] pairs of known arms; got {pair!r}")
    return cfg


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run of the study (or, with ``arm='base'``, the base model's evaluation)."""

    domain: str
    arm: str
    lr: float | None
    seed: int | None
    model: str
    values: dict[str, Any]  # TrainConfig keys (without 'out'); empty for base
    stage: str  # 'sweep' | 'final' | 'accuracy' | 'base' | 'base-accuracy'
    evaluate: bool = True
    needs: str | None = None  # why it cannot run in this checkout (e.g. a training option missing)
    roles: dict[str, set[str]] = field(default_factory=dict)  # protocol -> {'sweep', 'final'}

    def _hash(self) -> str:
        identity = {"domain": self.domain, "arm": self.arm, "model": self.model, **self.values}
        if self.stage.startswith("base"):
            identity["stage"] = self.stage
        blob = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        """Identity in the plan and the registry: the training config, plus how it is evaluated."""
        return f"{self._hash()}-accuracy" if self.stage == "accuracy" else self._hash()

    @property
    def folder(self) -> str:
        """Run folder, named by the training config only: an accuracy run whose training equals a
        final run's (same model and options) evaluates that run's artifact instead of training again."""
        model = f"-{self.model.split('/')[-1][:24]}" if self.stage == "base-accuracy" else ""
        lr = f"-lr{self.lr:g}" if self.lr is not None else ""
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"{self.domain}-{self.arm}{model}{lr}{seed}-{self._hash()}"

    @property
    def marker(self) -> str:
        """The file whose presence means this run's evaluation is recorded (the resume marker)."""
        return "study-eval-accuracy.json" if self.stage == "accuracy" else MARKER


def _values(cfg: dict, domain: str, arm: str, lr: float, seed: int, model: str) -> tuple[dict, str | None]:
    fields = _train_fields()
    values = {**cfg["train"], "model": model, "data": cfg["domains"][domain]["train"], "seed": seed, "lr": lr}
    values.update(cfg["arms"][arm])
    needs = None
    missing = sorted(k for k in values if k not in fields)
    if missing:
        needs = f"training option {', '.join(missing)} is not in this checkout's TrainConfig"
    return values, needs


def _proto(cfg: dict, domain: str, pname: str) -> dict[str, Any]:
    merged = {**cfg["protocols"][pname], **(cfg["domains"][domain].get("protocols") or {}).get(pname, {})}
    merged.setdefault("arms", list(cfg["arms"]))
    merged.setdefault("sweep_seed", merged["seeds"][0])
    return merged


def _final_dev_loss(root: Path, run: Run) -> float | None:
    summary = root / "runs" / run.folder / "summary.json"
    if not summary.is_file():
        return None
    loss = json.loads(summary.read_text()).get("dev_loss_last")
    # a diverged run (NaN) or one without a dev split ranks last rather than blocking the choice
    return loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf


def plan(cfg: dict[str, Any], root: Path) -> tuple[list[Run], dict[tuple[str, str, str], float | None]]:
    """Every run of the study in order, and each (domain, protocol, arm)'s chosen lr (None if unknown).

    A protocol with several lrs chooses from its sweep runs' final dev loss; until they have finished
    the chosen lr is unknown, and the final runs are planned at ``lr=None`` (counted in the budget,
    trained once the sweep is done). Identical runs are listed once, with every protocol that uses them.
    """
    runs: dict[str, Run] = {}
    best: dict[tuple[str, str, str], float | None] = {}

    def add(run: Run, protocol: str | None) -> Run:
        key = run.key  # a final run whose lr is not known yet is keyed with lr None until it is
        if key in runs:
            kept = runs[key]
            kept.evaluate = kept.evaluate or run.evaluate
            if run.stage == "final":
                kept.stage = "final"
        else:
            runs[key] = kept = run
        if protocol:
            kept.roles.setdefault(protocol, set()).add("sweep" if run.stage == "sweep" else "final")
        return kept

    model = cfg["model"]
    for domain, dom in cfg["domains"].items():
        add(Run(domain, "base", None, None, model, {}, "base"), None)
        for pname in dom.get("protocols") or {}:
            proto = _proto(cfg, domain, pname)
            for arm in proto["arms"]:
                seeds = (proto.get("arm_seeds") or {}).get(arm, proto["seeds"])
                lrs = proto["lrs"]
                chosen: float | None = lrs[0]
                if len(lrs) > 1:
                    losses = {}
                    for lr in lrs:
                        values, needs = _values(cfg, domain, arm, lr, proto["sweep_seed"], model)
                        run = add(
                            Run(domain, arm, lr, proto["sweep_seed"], model, values, "sweep", False, needs),
                            pname,
                        )
                        losses[lr] = _final_dev_loss(root, run)
                    done = [lr for lr in lrs if losses[lr] is not None]
                    chosen = min(done, key=lambda lr: losses[lr]) if len(done) == len(lrs) else None
                best[(domain, pname, arm)] = chosen
                for seed in seeds:
                    if chosen is None and len(lrs) > 1 and seed == proto["sweep_seed"]:
                        continue  # it will be the best lr's sweep run: already planned
                    if chosen is None:
                        values, needs = _values(cfg, domain, arm, lrs[0], seed, model)
                        values["lr"] = None
                    else:
                        values, needs = _values(cfg, domain, arm, chosen, seed, model)
                    add(Run(domain, arm, chosen, seed, model, values, "final", True, needs), pname)
        acc = dom.get("accuracy")
        if acc:
            add(Run(domain, "base", None, None, acc["model"], {}, "base-accuracy"), "accuracy")
            for arm in acc["arms"]:
                lrs = acc.get("lrs") or [best.get((domain, acc.get("lr_from"), arm))]
                extra = [lr for lr in (acc.get("extra_lrs") or {}).get(arm, []) if lr not in lrs]
                for lr in [*lrs, *extra]:
                    for seed in acc.get("seeds", [0]):
                        values, needs = _values(cfg, domain, arm, lr or 0.0, seed, acc["model"])
                        if lr is None:
                            values["lr"] = None
                        add(
                            Run(domain, arm, lr, seed, acc["model"], values, "accuracy", True, needs),
                            "accuracy",
                        )
    return list(runs.values()), best


def _step_seconds(cfg: dict, root: Path, model: str, method: str, domain: str | None = None) -> float:
    """Seconds per optimiser step: the median of this study's finished runs of the same model, method
    and domain if any, else the config's ``step_seconds`` (x the domain's ``step_scale``)."""
    data = cfg["domains"][domain]["train"] if domain else None
    measured = []
    for summary in (root / "runs").glob("*/summary.json") if (root / "runs").is_dir() else []:
        s = json.loads(summary.read_text())
        run_cfg = json.loads((summary.parent / "config.json").read_text())
        same_data = data is None or run_cfg.get("data") == data
        if s.get("model") == model and s.get("method") == method and s.get("steps") and same_data:
            measured.append(s["seconds"] / s["steps"])
    if measured:
        return statistics.median(measured)
    table = (cfg.get("step_seconds") or {}).get(model) or {}
    scale = float(cfg["domains"][domain].get("step_scale", 1.0)) if domain else 1.0
    return float(table.get(method, table.get("default", 5.0))) * scale


def _minutes(cfg: dict, root: Path, run: Run, trained: set[str]) -> float:
    """Estimated minutes left for ``run``; ``trained`` holds folders already counted (trained once)."""
    evals = cfg.get("eval_minutes") or {}
    if run.stage.startswith("base"):
        return float(evals.get(run.stage if run.stage == "base-accuracy" else run.domain, 1.0))
    train = 0.0
    if run.folder not in trained and not (root / "runs" / run.folder / "summary.json").is_file():
        steps = run.values.get("steps", 0)
        train = steps * _step_seconds(cfg, root, run.model, run.values["method"], run.domain) / 60
        trained.add(run.folder)
    if not run.evaluate:
        return train
    return train + float(evals.get("accuracy" if run.stage == "accuracy" else run.domain, 1.0))


def _done(root: Path, run: Run) -> bool:
    folder = root / "runs" / run.folder
    return (folder / run.marker).is_file() if run.evaluate else (folder / "summary.json").is_file()


def _runnable(root: Path, run: Run) -> bool:
    """Not finished, possible in this checkout, and its lr known (base evaluations need none)."""
    known = run.lr is not None or run.stage.startswith("base")
    return known and not run.needs and not _done(root, run)


def budget(cfg: dict[str, Any], root: Path) -> str:
    """The plan as text: per domain and stage, runs (to do / total) and estimated minutes; hours."""
    runs, best = plan(cfg, root)
    lines = [f"study plan ({len(runs)} runs, {sum(_done(root, r) for r in runs)} done):"]
    total_left = 0.0
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.domain, r.model, r.stage), []).append(r)
    trained: set[str] = set()
    for (domain, model, stage), rs in groups.items():
        todo = [r for r in rs if not _done(root, r) and not r.needs]
        minutes = sum(_minutes(cfg, root, r, trained) for r in todo)
        total_left += minutes
        arms = sorted({r.arm for r in rs})
        steps = rs[0].values.get("steps")
        skipped = [r for r in rs if r.needs]
        lines.append(
            f"  {domain:<10} {stage:<13} {model:<28} {len(rs):>3} runs ({len(todo)} to do)"
            + (f" x {steps} steps" if steps else "")
            + f"  ~{minutes:6.0f} min   arms: {', '.join(arms)}"
            + (f"   [{len(skipped)} skipped: {skipped[0].needs}]" if skipped else "")
        )
    for (domain, pname, arm), lr in best.items():
        proto = _proto(cfg, domain, pname)
        if len(proto["lrs"]) > 1:
            lines.append(
                f"  {domain}/{pname}/{arm}: lr sweep {proto['lrs']} at seed {proto['sweep_seed']} -> "
                + (f"best {lr:g}" if lr is not None else "best not known yet")
            )
    step_info = sorted(
        {(r.model, r.values["method"], r.domain) for r in runs if r.values.get("method")}, key=str
    )
    for model, method, domain in step_info:
        seconds = _step_seconds(cfg, root, model, method, domain)
        lines.append(f"  step time {model} {method} ({domain}): {seconds:.1f} s")
    lines.append(
        f"estimated time left: {total_left:.0f} min = {total_left / 60:.1f} hours at the step times above"
    )
    return "\n".join(lines)


# --- running -----------------------------------------------------------------------------------------


def _train(root: Path, run: Run, progress: bool = True) -> dict[str, Any]:
    from training.recipe import TrainConfig, train

    folder = root / "runs" / run.folder
    if (folder / "summary.json").is_file() and (folder / "artifact").is_dir():
        return json.loads((folder / "summary.json").read_text())
    if (folder / "artifact").exists():  # killed between freezing and the summary: train it again
        _remove(folder)
    values = {**run.values, "out": str(folder)}
    # a run killed mid-way continues from its last checkpoint (or from step 0 if it had none)
    return train(TrainConfig(**values), resume=(folder / "config.json").is_file(), progress=progress)


def _remove(folder: Path) -> None:
    """Delete a run folder, frozen (read-only) artifact included."""
    import shutil
    import stat

    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(folder)


def _curves(folder: Path) -> dict[str, list[list[float]]]:
    """Training-loss and dev-loss curves of a finished run (read once, when its evaluation is recorded)."""
    from training.metrics import read_metrics

    metrics = read_metrics(folder)
    train = [list(point) for point in metrics.train]
    dev = [list(point) for point in metrics.dev]
    every = max(1, len(train) // 50)  # at most ~50 points of the training curve
    return {"train": train[::every] + ([train[-1]] if train and (len(train) - 1) % every else []), "dev": dev}


def _eval_max_len(cfg: dict, domain: str, ev: dict) -> int:
    """Token limit of teacher-forced scoring on eval set ``ev``: its own, else 512 for counselling
    (long dialogues keep their recent turns) and the training length for math."""
    default = 512 if domain == COUNSELING.name else cfg["train"].get("max_len", 256)
    return ev.get("max_len", default)


def _evaluate(cfg: dict, run: Run, artifact: Path | None) -> dict[str, Any]:
    """Held-out metrics of one run (or the base model): {eval set: {metric: value, ...}}."""
    from serving.engine import BASE, Engine

    from . import counseling_eval, math_eval
    from .metrics import item_ci
    from .runner import task_examples

    dom = cfg["domains"][run.domain]
    engine = Engine(run.model, {"adapter": artifact} if artifact else None)
    name = "adapter" if artifact else BASE
    out: dict[str, Any] = {}
    try:
        if run.stage in ("accuracy", "base-accuracy"):
            acc = dom["accuracy"]
            examples = task_examples("gsm8k", acc["data"], acc["limit"])
            shots = task_examples("gsm8k", acc["fewshot_data"], acc["fewshot"]) if acc.get("fewshot") else []
            per: dict[str, list[float]] = {}
            metrics = math_eval.run(
                engine,
                examples,
                name,
                max_tokens=acc.get("max_tokens", 320),
                batch_size=acc.get("batch_size", 8),
                fewshot=shots,
                per_example=per,
            )
            for key in ("error_rate", "flexible_error_rate"):
                metrics[f"{key}_ci"] = list(item_ci(per, key))
                metrics[f"{key}_items"] = per[key]
            out["gsm8k-accuracy"] = metrics
        reply_fn = None
        if run.domain == COUNSELING.name and dom.get("safety_probes", True):
            from serving.embeddings import load_embedder

            reply_fn = counseling_eval.served_replies(engine, load_embedder())

        for ename, ev in dom["evals"].items():
            examples = task_examples(run.domain, ev["data"], ev.get("limit"))
            per: dict[str, list[float]] = {}
            if run.domain == COUNSELING.name:
                metrics = counseling_eval.run(
                    engine,
                    examples,
                    name,
                    max_len=_eval_max_len(cfg, run.domain, ev),
                    generate_limit=dom.get("generate_limit", 16),
                    reply_fn=reply_fn,
                    per_example=per,
                )
                reply_fn = None  # the probes do not depend on the eval set: once per run
            else:
                max_len = _eval_max_len(cfg, run.domain, ev)
                metrics, per, _ = counseling_eval.score_references(engine, examples, name, max_len=max_len)
            for key in ("eval_loss", "token_error_rate"):  # token-weighted: intervals weighted by n_tokens
                metrics[f"{key}_ci"] = list(item_ci(per, key))
                metrics[f"{key}_items"] = per[key]
            metrics["n_tokens_items"] = per["n_tokens"]
            out[ename] = metrics
        info = engine.info(name)
    finally:
        del engine
        gc.collect()
    return {"sets": out, "trainable_params": info["trainable_params"]}


def _record(reg: Any, root: Path, run: Run, payload: dict[str, Any]) -> None:
    """The run (when trained) and its evaluation, into the registry."""
    folder = root / "runs" / run.folder
    run_id = None
    if run.values:
        summary = json.loads((folder / "summary.json").read_text())
        run_id = f"study:{run.folder}"
        reg.record_run(
            {
                "id": run_id,
                "method": run.values["method"],
                "variant": run.values.get("variant") if run.values["method"] == "qtha" else None,
                "model": run.model,
                "data": run.values["data"],
                "steps": summary["steps"],
                "loss_first": summary.get("loss_first"),
                "loss_last": summary.get("loss_last"),
                "trainable_params": summary["trainable_params"],
                "artifact": summary.get("artifact"),
                "config_json": run.values,
                "metrics_path": str(folder / "metrics.jsonl"),
            }
        )
    if not run.evaluate:
        return
    results = []
    for ename, m in payload["sets"].items():
        ci = m.get("error_rate_ci") or m.get("eval_loss_ci") or [None, None]
        results.append(
            {
                "name": ename,
                "artifact": str(folder / "artifact") if run.values else None,
                "run_id": run_id,
                "error_rate": m.get("error_rate"),
                "eval_loss": m.get("eval_loss"),
                "token_error_rate": m.get("token_error_rate"),
                "safety_pass_rate": m.get("safety_pass_rate"),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "trainable_params": payload["trainable_params"],
                "metrics": {k: v for k, v in m.items() if not k.endswith("_items")},
            }
        )
    reg.record_evaluation({"task": TASK, "data": run.domain, "model": run.model, "json": payload}, results)


def _execute(cfg: dict, root: Path, run: Run, reg: Any, progress: bool = True) -> None:
    folder = root / "runs" / run.folder
    t0 = time.time()
    summary = _train(root, run, progress) if run.values else None
    if not run.evaluate:
        _record(reg, root, run, {})
        return
    artifact = Path(summary["artifact"]) if summary else None
    result = _evaluate(cfg, run, artifact)
    payload = {
        "study": str(root.resolve()),
        "key": run.key,
        "folder": run.folder,
        "domain": run.domain,
        "arm": run.arm,
        "stage": run.stage,
        "lr": run.lr,
        "seed": run.seed,
        "model": run.model,
        "protocols": {k: sorted(v) for k, v in run.roles.items()},
        "train": (
            {
                "steps": summary["steps"],
                "loss_first": summary.get("loss_first"),
                "loss_last": summary.get("loss_last"),
                "dev_loss_last": summary.get("dev_loss_last"),
                "seconds": summary.get("seconds"),
                "curves": _curves(folder),
            }
            if summary
            else None
        ),
        "eval_seconds": round(time.time() - t0 - (summary or {}).get("seconds", 0.0), 1),
        **result,
    }
    folder.mkdir(parents=True, exist_ok=True)
    _record(reg, root, run, payload)
    # after the registry: a marker means it is recorded
    atomic_write_json(folder / run.marker, payload, default=str)


_STAGE_ORDER = {"base": 0, "sweep": 1, "final": 2, "base-accuracy": 3, "accuracy": 4}


def _priority(run: Run) -> tuple[int, int]:
    """Order of work: every arm's first seed (sweeps, then finals, then the math model's accuracy) before
    the other seeds, so that a study stopped part-way already has one full table, with CIs over items."""
    return (0 if run.seed in (None, 0) else 1, _STAGE_ORDER.get(run.stage, 5))


def run_study(
    config: str,
    out: str,
    *,
    registry: str | None = None,
    dry_run: bool = False,
    report_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate, print the budget, run every unfinished run in plan order, then build the report.

    ``report_only`` builds the report from the runs finished so far (a study still running, or stopped
    part-way), trains nothing."""
    from tqdm.auto import tqdm

    from .registry import Registry

    cfg = load_config(config)
    root = Path(out)
    text = budget(cfg, root)
    print(text, flush=True)
    if dry_run:
        return {"dry_run": True, "budget": text}
    root.mkdir(parents=True, exist_ok=True)
    lock = None if report_only else _lock(root)
    reg = Registry(registry)
    try:
        # Sweeps first: the final runs' lr depends on them, so the plan is re-made as they finish.
        while not report_only:
            runs, _ = plan(cfg, root)
            todo = sorted((r for r in runs if _runnable(root, r)), key=_priority)
            if not todo:
                break
            waiting = any(r.lr is None and not r.stage.startswith("base") for r in runs)
            bar = tqdm(
                total=len(runs),
                initial=sum(_done(root, r) for r in runs),
                desc="study",
                unit="run",
                disable=not progress,
            )
            for run in todo:
                bar.set_postfix_str(run.folder)
                _execute(cfg, root, run, reg, progress)
                bar.update(1)
                if waiting and run.stage == "sweep":  # a best lr may now be known: plan again
                    break
            bar.close()
        skipped = [r for r in plan(cfg, root)[0] if r.needs]
        for r in skipped:
            print(f"skipped {r.folder}: {r.needs}")
        summary = study_report(cfg, root, reg)
    finally:
        reg.close()
        if lock is not None:
            lock.close()  # releases the lock
    return summary


LOCK = ".study.lock"  # held by the one process that trains a study folder's runs


def _lock(root: Path) -> Any:
    """Take the study folder's lock, or refuse: two processes on one folder would train the same run
    into the same checkpoints. The lock is the kernel's (flock): a killed process leaves none behind."""
    import fcntl
    import os

    handle = open(root / LOCK, "a+")  # held open until the study ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StudyError(
            f"--out {root}: a study is already running on this folder ({holder}); "
            "wait for it, or stop it (it resumes where it stopped)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


# --- the report --------------------------------------------------------------------------------------


def _mean_ci(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and 95% t-interval over seeds (no interval from one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = _T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _fmt_ci(mean: float, low: float | None, high: float | None, pct: bool = False) -> str:
    f = (lambda v: f"{v * 100:.1f}%") if pct else (lambda v: f"{v:.4f}")
    return f(mean) + (f" [{f(low)}, {f(high)}]" if low is not None else "")


def _entries(reg: Any, root: Path) -> dict[str, dict[str, Any]]:
    """This study's evaluation payloads from the registry, by run key (the latest record of each)."""
    study = str(root.resolve())
    out: dict[str, dict[str, Any]] = {}
    for e in reg.list_evaluations():
        if e["task"] != TASK:
            continue
        payload = reg.get_evaluation(e["id"])["json"] or {}
        if payload.get("study") == study:
            out[payload["key"]] = payload
    return out


def _metric_keys(payloads: list[dict]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for p in payloads:
        for ename, m in p["sets"].items():
            for k in (
                "eval_loss",
                "token_error_rate",
                "rouge_l",
                "safety_pass_rate",
                "error_rate",
                "flexible_error_rate",
            ):
                if k in m and (ename, k) not in keys:
                    keys.append((ename, k))
    return keys


def _value(p: dict, ename: str, key: str) -> float | None:
    return (p["sets"].get(ename) or {}).get(key)


@functools.cache
def _token_counts(model: str, domain: str, data: str, limit: int | None, max_len: int) -> tuple[float, ...]:
    """Scored tokens per item of an eval set (the weights of its token-weighted metrics), for evaluations
    recorded before they were stored: the same examples and encoding as the scoring."""
    from quantum_adapters.models import load_base_model
    from training.tokenize import encode

    from .runner import task_examples

    _, tokenizer, _ = load_base_model(model)
    counts = []
    for ex in task_examples(domain, data, limit):
        feature = encode(tokenizer, ex, max_len, trim_context=True)
        if feature is not None:  # position t predicts token t + 1: the first label is never scored
            counts.append(float(sum(t != -100 for t in feature["labels"][1:])))
    return tuple(counts)


def _item_weights(cfg: dict, domain: str, model: str, ename: str, p: dict) -> list[float] | None:
    """An evaluated set's per-item token counts (None where they cannot be matched to its items)."""
    m = p["sets"].get(ename) or {}
    if m.get("n_tokens_items"):
        return m["n_tokens_items"]
    ev = (cfg["domains"][domain].get("evals") or {}).get(ename)
    items = m.get("eval_loss_items")
    if ev is None or not items:
        return None
    counts = _token_counts(model, domain, ev["data"], ev.get("limit"), _eval_max_len(cfg, domain, ev))
    return list(counts) if len(counts) == len(items) else None


def _item_interval(
    p: dict, ename: str, key: str, weights: list[float] | None
) -> tuple[float | None, float | None]:
    """95% bootstrap interval over one run's items (token-weighted metrics weighted by their tokens)."""
    from .metrics import TOKEN_WEIGHTED, bootstrap_ci

    items = (p["sets"].get(ename) or {}).get(f"{key}_items")
    if not items or (key in TOKEN_WEIGHTED and weights is None):
        return None, None
    return bootstrap_ci(items, seed=0, weights=weights if key in TOKEN_WEIGHTED else None)


def study_report(cfg: dict[str, Any], root: Path, reg: Any) -> dict[str, Any]:
    """Tables per domain and protocol from the registry's entries; report.md + per-table HTML."""
    from .report import build_report

    runs, best = plan(cfg, root)
    entries = _entries(reg, root)
    for r in runs:  # a finished run recorded in another registry file: record it here too
        marker = root / "runs" / r.folder / r.marker
        if r.evaluate and r.key not in entries and marker.is_file():
            payload = json.loads(marker.read_text())
            _record(reg, root, r, payload)
            entries[r.key] = payload
    pairs = cfg.get("pairs") or [["qtha", "lora"]]
    md = [f"# qtha study: {', '.join(cfg['domains'])}", ""]
    summary: dict[str, Any] = {"tables": {}}
    sections: list[tuple[str, str, list[Run]]] = []
    for domain, dom in cfg["domains"].items():
        for pname in dom.get("protocols") or {}:
            finals = [r for r in runs if r.domain == domain and "final" in r.roles.get(pname, ())]
            sections.append((domain, pname, finals))
        if dom.get("accuracy"):
            accuracy = [r for r in runs if r.domain == domain and r.stage == "accuracy"]
            sections.append((domain, "accuracy", accuracy))
    for domain, pname, members in sections:
        base_stage = "base-accuracy" if pname == "accuracy" else "base"
        base = next((entries.get(r.key) for r in runs if r.domain == domain and r.stage == base_stage), None)
        by_arm: dict[str, list[dict]] = {}
        for r in members:
            if r.key in entries:
                by_arm.setdefault(r.arm, []).append(entries[r.key])
        lr_note: list[str] = []
        if pname == "accuracy":
            by_arm, lr_note = _choose_lrs(by_arm)
        payloads = [p for ps in by_arm.values() for p in ps] + ([base] if base else [])
        if not payloads:
            continue
        keys = _metric_keys(payloads)
        model = members[0].model if members else cfg["model"]
        title = f"{domain} / {pname} ({model})"

        def weights(p: dict, ename: str, domain: str = domain, model: str = model) -> list[float] | None:
            return _item_weights(cfg, domain, model, ename, p)

        md += [f"## {title}", ""]
        header = [
            "arm",
            "lr",
            "seeds",
            "params",
            "train loss (last)",
            *[f"{e}: {k}" for e, k in keys],
            "wall min",
        ]
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows_for_plot = []
        table: dict[str, Any] = {}
        groups = ([("base", [base])] if base else []) + list(by_arm.items())
        for arm, ps in groups:
            cells = [
                arm,
                "–" if arm == "base" else f"{ps[0]['lr']:g}",
                str(len(ps)),
                f"{ps[0]['trainable_params']:,}",
            ]
            trained = [p["train"]["loss_last"] for p in ps if p.get("train")]
            cells.append(_fmt_ci(*_mean_ci(trained)) if trained else "–")
            row: dict[str, Any] = {
                "name": arm,
                "trainable_params": ps[0]["trainable_params"],
                "seeds": len(ps),
            }
            for ename, k in keys:
                vals = [v for p in ps if (v := _value(p, ename, k)) is not None]
                if not vals:
                    cells.append("–")
                    continue
                mean, low, high = _mean_ci(vals)
                if low is None and len(ps) == 1:  # one run: the interval over items
                    low, high = _item_interval(ps[0], ename, k, weights(ps[0], ename))
                cells.append(_fmt_ci(mean, low, high, pct=k.endswith("_rate")))
                row[f"{ename}/{k}"] = mean
                table[f"{arm}/{ename}/{k}"] = {"mean": mean, "ci": [low, high], "n": len(vals)}
            wall = sum(
                (p["train"] or {}).get("seconds", 0) + p.get("eval_seconds", 0) for p in ps if p.get("train")
            )
            cells.append(f"{wall / 60:.0f}" if wall else "–")
            md.append("| " + " | ".join(cells) + " |")
            primary = next((k for e, k in keys if k == "error_rate"), "eval_loss")
            e0 = next(e for e, k in keys if k == primary)
            if row.get(f"{e0}/{primary}") is not None:
                rows_for_plot.append(
                    {
                        "name": arm,
                        primary: row[f"{e0}/{primary}"],
                        "trainable_params": row["trainable_params"],
                    }
                )
        md.append("")
        if pname != "accuracy" and len(_proto(cfg, domain, pname)["lrs"]) > 1:
            chosen = {arm: lr for arm in by_arm if (lr := best.get((domain, pname, arm))) is not None}
            if chosen:
                md += [
                    "Best lr per arm (lowest final dev loss of the sweep): "
                    + ", ".join(f"{a} {lr:g}" for a, lr in chosen.items()),
                    "",
                ]
        md += lr_note
        md += _paired_md(by_arm, keys, pairs, weights)
        md += _dev_curve_md(by_arm)
        curves = {}
        for arm, ps in by_arm.items():
            for p in ps:
                if p.get("train"):
                    curves[f"{arm} s{p['seed']}"] = p["train"]["curves"]["train"]
        sub = root / "report" / f"{domain}-{pname}"
        if rows_for_plot:
            _, html = build_report(f"qtha study: {title}", rows_for_plot, sub, curves=curves, headline="")
            md += [f"Plots: {html.relative_to(root / 'report')}", ""]
        summary["tables"][f"{domain}/{pname}"] = table
    report_dir = root / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(report_dir / "report.md", "\n".join(md) + "\n")
    summary["report_md"] = str(report_dir / "report.md")
    summary["markdown"] = "\n".join(md)
    atomic_write_json(root / "study.json", summary, default=str)
    return summary


def _run_dev_loss(p: dict) -> float:
    loss = (p.get("train") or {}).get("dev_loss_last")
    return loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf


def _choose_lrs(by_arm: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], list[str]]:
    """An arm run at several lrs on the accuracy model (``accuracy.extra_lrs``): keep, under the arm's
    name, the lr whose runs end with the lowest mean dev loss on the *training* data's dev split (never
    the evaluated items); the others stay in the table as ``arm @ lr``, out of the paired differences."""
    chosen: dict[str, list[dict]] = {}
    others: dict[str, list[dict]] = {}
    notes: list[str] = []
    for arm, ps in by_arm.items():
        by_lr: dict[float, list[dict]] = {}
        for p in ps:
            by_lr.setdefault(p["lr"], []).append(p)
        if len(by_lr) == 1:
            chosen[arm] = ps
            continue
        dev = {lr: statistics.fmean(_run_dev_loss(p) for p in group) for lr, group in by_lr.items()}
        best = min(dev, key=dev.get)
        chosen[arm] = by_lr[best]
        for lr, group in by_lr.items():
            if lr != best:
                others[f"{arm} @ {lr:g}"] = group
        notes.append(
            f"{arm}: lr {best:g} chosen by final dev loss on the training data's dev split ("
            + ", ".join(f"{lr:g}: {loss:.3f}" for lr, loss in sorted(dev.items()))
            + ")"
        )
    lines = ["Several lrs on this model: " + "; ".join(notes) + ".", ""] if notes else []
    return {**chosen, **others}, lines


def _paired_md(
    by_arm: dict[str, list[dict]],
    keys: list[tuple[str, str]],
    pairs: list[list[str]],
    weights: Any = lambda p, ename: None,
) -> list[str]:
    """Paired differences a - b: by seed (t-interval) with >= 2 common seeds, else by item (bootstrap;
    the token-weighted metrics weighted by each item's tokens, the same for both arms)."""
    from .metrics import TOKEN_WEIGHTED, bootstrap_ci

    lines: list[str] = []
    for a, b in pairs:
        if a not in by_arm or b not in by_arm:
            continue
        sa = {p["seed"]: p for p in by_arm[a]}
        sb = {p["seed"]: p for p in by_arm[b]}
        common = sorted(set(sa) & set(sb))
        if not common:
            continue
        cells = []
        for ename, k in keys:
            diffs = [
                _value(sa[s], ename, k) - _value(sb[s], ename, k)
                for s in common
                if _value(sa[s], ename, k) is not None and _value(sb[s], ename, k) is not None
            ]
            if not diffs:
                continue
            mean, low, high = _mean_ci(diffs)
            how = f"{len(diffs)} seeds"
            if low is None:
                pa, pb = sa[common[0]], sb[common[0]]
                ia = (pa["sets"][ename]).get(f"{k}_items")
                ib = (pb["sets"][ename]).get(f"{k}_items")
                w = weights(pa, ename) if k in TOKEN_WEIGHTED else None
                if ia and ib and len(ia) == len(ib) and (w is not None or k not in TOKEN_WEIGHTED):
                    diffs_i = [x - y for x, y in zip(ia, ib, strict=True)]
                    low, high = bootstrap_ci(diffs_i, seed=0, weights=w)
                    how = f"{len(ia)} items"
            cells.append(f"{ename}: {k} {_fmt_ci(mean, low, high, pct=k.endswith('_rate'))} ({how})")
        if cells:
            lines += [f"Paired difference {a} - {b}: " + "; ".join(cells), ""]
    return lines


def _dev_curve_md(by_arm: dict[str, list[dict]]) -> list[str]:
    """Mean dev loss over seeds at each evaluated step, one row per arm (the learning curves)."""
    curves = {arm: [p["train"]["curves"]["dev"] for p in ps if p.get("train")] for arm, ps in by_arm.items()}
    steps = sorted({int(s) for cs in curves.values() for c in cs for s, _ in c})
    if not steps:
        return []
    lines = [
        "Dev loss by step (mean over seeds):",
        "",
        "| arm | " + " | ".join(map(str, steps)) + " |",
        "|" + "---|" * (len(steps) + 1),
    ]
    for arm, cs in curves.items():
        cells = []
        for step in steps:
            vals = [v for c in cs for s, v in c if int(s) == step]
            cells.append(f"{statistics.fmean(vals):.4f}" if vals else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# --- command line ------------------------------------------------------------------------------------


def _cmd(args: argparse.Namespace) -> int:
    summary = run_study(
        args.config, args.out, registry=args.registry, dry_run=args.dry_run, report_only=args.report_only
    )
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "markdown"}, default=str))
    elif not args.dry_run:
        print(summary["markdown"])
        print(f"report: {summary['report_md']}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study", help="QTHA vs LoRA and ablations, reference and tuned protocols, resumable, one report"
    )
    p.add_argument("--config", default="configs/study.yaml", help="study YAML (default configs/study.yaml)")
    p.add_argument("--out", default="runs/study", help="folder for the runs and the report")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan and budget only")
    p.add_argument(
        "--report-only",
        dest="report_only",
        action="store_true",
        help="build the report from the runs finished so far (the study may still be running); train nothing",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_cmd)
