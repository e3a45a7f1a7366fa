"""The inference engine: one base model, any number of frozen adapters, no web types.

Serving and evaluation both go through this class, so what is evaluated is exactly what is served.

* ``generate`` / ``stream``: chat completion for one conversation (sampling or greedy, stop strings,
  seeds, cancellation through a ``threading.Event``).
* ``generate_batch``: greedy generation for many prompts at once (left padding), for evaluation.
* ``score``: teacher-forced loss and top-1 accuracy on given reply tokens.

Adapters of one PEFT type (all QTHA, say) share one model and are switched with ``set_adapter``;
a LoRA adapter next to QTHA ones gets its own copy of the base (PEFT cannot mix types in one model).
``base`` runs any of them with the adapters disabled. Artifacts are verified when loaded, their
tensors never require gradients, and every call runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantum_adapters.artifact import load_frozen
from quantum_adapters.layer import QuantumCircuitLayer
from quantum_adapters.models import ModelSource, load_base_model

__all__ = ["BASE", "Engine", "Generation", "TokenScore"]

BASE = "base"


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # 'stop' | 'length' | 'cancelled'
    adapter: str
    seconds: float = 0.0


@dataclass
class TokenScore:
    """Teacher-forced score of one example's labelled tokens."""

    nll_sum: float
    n_tokens: int
    n_correct: int


@dataclass
class _Adapter:
    name: str
    path: Path
    manifest: dict[str, Any]
    model: Any  # the PeftModel holding it
    system_prompt: str | None = None
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class _CancelCriteria:
    """A transformers StoppingCriteria that stops when the event is set (client went away)."""

    def __init__(self, event: threading.Event | None):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        stop = bool(self.event is not None and self.event.is_set())
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _Penalties:
    """A transformers LogitsProcessor with OpenAI's frequency and presence penalties.

    For every token t already generated (the reply so far, not the prompt, as vLLM does):
    ``logit[t] -= frequency * count(t) + presence * (count(t) > 0)``. Positive values discourage
    repetition, negative ones encourage it; both 0 leaves decoding unchanged.
    """

    def __init__(self, prompt_len: int, frequency: float, presence: float) -> None:
        self.prompt_len, self.frequency, self.presence = prompt_len, float(frequency), float(presence)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_len :]  # (B, T_new)
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device)
        )  # (B, V)
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class Engine:
    """Base model + frozen adapters; thread-safe (one generation at a time per underlying model)."""

    def __init__(
        self,
        model: str | ModelSource = "smollm2-135m-instruct",
        adapters: dict[str, str | Path] | None = None,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.base_model, self.tokenizer, self.source = load_base_model(model, dtype=dtype, device=device)
        self.device = torch.device(device)
        self._models: dict[str, Any] = {}  # peft type -> PeftModel
        self.adapters: dict[str, _Adapter] = {}
        self._lock = threading.RLock()
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    # ---- adapters -------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str | Path) -> None:
        """Verify and load a frozen artifact as ``name`` (refused if made for another base model)."""
        if name == BASE or not name or name == "auto":
            raise ValueError(f"adapter name {name!r} is reserved; choose another name")
        if name in self.adapters:
            raise ValueError(f"adapter name {name!r} is already loaded")
        from quantum_adapters.artifact import read_manifest

        manifest = read_manifest(path)
        ptype = str(manifest["adapter"]["method"]).upper()
        with self._lock:
            if ptype in self._models:
                peft_model, manifest = load_frozen(
                    self._models[ptype], path, adapter_name=name, base=self.source
                )
            else:
                # A first adapter goes onto the base model itself; an adapter of another PEFT type needs its
                # own copy of the base: a copy of an existing model with its adapters unloaded.
                target = (
                    copy.deepcopy(next(iter(self._models.values()))).unload()
                    if self._models
                    else self.base_model
                )
                peft_model, manifest = load_frozen(target, path, adapter_name=name, base=self.source)
                self._models[ptype] = peft_model
        training = manifest.get("training", {}) or {}
        self.adapters[name] = _Adapter(
            name=name,
            path=Path(path),
            manifest=manifest,
            model=peft_model,
            system_prompt=training.get("system_prompt"),
            domain=training.get("domain"),
        )

    @property
    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    def info(self, name: str) -> dict[str, Any]:
        if name == BASE:
            return {"name": BASE, "method": None, "trainable_params": 0, "domain": None}
        a = self._get(name)
        return {
            "name": name,
            "method": a.manifest["adapter"]["method"],
            "variant": a.manifest["adapter"].get("variant"),
            "trainable_params": a.manifest["parameters"]["trainable"],
            "domain": a.domain,
            "path": str(a.path),
        }

    def _get(self, name: str) -> _Adapter:
        if name not in self.adapters:
            raise KeyError(f"unknown model {name!r}; available: {', '.join(self.names)}")
        return self.adapters[name]

    @contextmanager
    def _use(self, name: str):
        """Hold the lock, activate ``name`` (or disable adapters for base), yield the model to call."""
        with self._lock:
            if name == BASE:
                if not self._models:
                    yield self.base_model
                    return
                model = next(iter(self._models.values()))
                with model.disable_adapter():
                    yield model
                return
            adapter = self._get(name)
            adapter.model.set_adapter(name)
            yield adapter.model

    def set_circuit_execution(self, **options: Any) -> int:
        """Set execution options (e.g. shots, noise, backend) on every circuit; returns how many."""
        count = 0
        with self._lock:
            for model in self._models.values():
                for module in model.modules():
                    if isinstance(module, QuantumCircuitLayer):
                        module.configure(**options)
                        count += 1
        return count

    # ---- prompts --------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, str]], adapter: str) -> list[int]:
        """Token ids of the conversation with the generation prompt; the adapter's training system
        prompt is added when the conversation has none, so serving matches training."""
        msgs = list(messages)
        system = self.adapters[adapter].system_prompt if adapter in self.adapters else None
        if system and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}, *msgs]
        out = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    # ---- generation -----------------------------------------------------------------------------
    def _gen_kwargs(
        self,
        max_tokens,
        temperature,
        top_p,
        stop,
        cancel,
        prompt_len: int = 0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ) -> dict[str, Any]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kw: dict[str, Any] = {
            "max_new_tokens": int(max_tokens),
            "pad_token_id": self.tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([_CancelCriteria(cancel)]),
        }
        if temperature and temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kw.update(stop_strings=[stop] if isinstance(stop, str) else list(stop), tokenizer=self.tokenizer)
        if frequency_penalty or presence_penalty:
            kw["logits_processor"] = LogitsProcessorList(
                [_Penalties(prompt_len, frequency_penalty, presence_penalty)]
            )
        return kw

    @staticmethod
    def _cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        return (text[:cut], True) if cut >= 0 else (text, False)

    def generate(
        self,
        messages: list[dict[str, str]],
        adapter: str = BASE,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ) -> Generation:
        """One chat completion (non-streaming)."""
        parts = list(
            self.stream(
                messages,
                adapter,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                seed=seed,
                cancel=cancel,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
            )
        )
        final = parts[-1] if parts and isinstance(parts[-1], Generation) else None
        assert final is not None, "stream() always ends with a Generation"
        return final

    def stream(
        self,
        messages: list[dict[str, str]],
        adapter: str = BASE,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ) -> Iterator[str | Generation]:
        """Yield text deltas as they are decoded, then one final :class:`Generation`.

        ``frequency_penalty``/``presence_penalty``: OpenAI's repetition penalties (:class:`_Penalties`)."""
        from transformers import TextIteratorStreamer

        if adapter != BASE:
            self._get(adapter)
        ids = self.prompt_ids(messages, adapter)
        input_ids = torch.tensor([ids], device=self.device)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        kwargs = self._gen_kwargs(
            max_tokens, temperature, top_p, stop, cancel, len(ids), frequency_penalty, presence_penalty
        )
        result: dict[str, Any] = {}
        t0 = time.time()

        def work() -> None:
            try:
                with self._use(adapter) as model, torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(int(seed))
                    out = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        **kwargs,
                    )
                result["new"] = out[0, input_ids.shape[1] :].tolist()
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        stopped = False
        for delta in streamer:
            if stopped:
                continue
            candidate, hit = self._cut_at_stop(text + delta, stop)
            if len(candidate) > len(text):
                yield candidate[len(text) :]
            text, stopped = candidate, hit
        thread.join()
        if "error" in result:
            raise result["error"]
        new = result.get("new", [])
        eos = self.tokenizer.eos_token_id
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
        elif stopped or (new and new[-1] == eos):
            reason = "stop"
        else:
            reason = "length" if len(new) >= max_tokens else "stop"
        yield Generation(text, len(ids), len(new), reason, adapter, time.time() - t0)

    def generate_batch(
        self,
        conversations: list[list[dict[str, str]]],
        adapter: str = BASE,
        *,
        max_tokens: int = 256,
        batch_size: int = 8,
    ) -> list[Generation]:
        """Greedy completions for many conversations, ``batch_size`` at a time (left padding)."""
        outputs: list[Generation] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(conversations), batch_size):
            chunk = [self.prompt_ids(c, adapter) for c in conversations[start : start + batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=self.device)
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=self.device)
            t0 = time.time()
            with self._use(adapter) as model, torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=mask, **self._gen_kwargs(max_tokens, 0.0, 1.0, None, None)
                )
            seconds = (time.time() - t0) / len(chunk)
            for row, prompt in zip(out[:, width:].tolist(), chunk, strict=True):
                eos = self.tokenizer.eos_token_id
                n = row.index(eos) + 1 if eos in row else len(row)
                while n > 0 and row[n - 1] == pad and pad != eos:
                    n -= 1
                text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
                reason = "stop" if eos in row[:n] else "length"
                outputs.append(Generation(text, len(prompt), n, reason, adapter, seconds))
        return outputs

    # ---- scoring --------------------------------------------------------------------------------
    def score(
        self, features: list[dict[str, list[int]]], adapter: str = BASE, *, batch_size: int = 8
    ) -> list[TokenScore]:
        """Teacher-forced NLL and top-1 accuracy on each feature's labelled tokens (labels != -100)."""
        scores: list[TokenScore] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            width = max(len(f["input_ids"]) for f in chunk)
            ids = torch.tensor(
                [f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in chunk], device=self.device
            )
            labels = torch.tensor(
                [f["labels"] + [-100] * (width - len(f["labels"])) for f in chunk], device=self.device
            )
            mask = (
                torch.arange(width, device=self.device)[None, :]
                < torch.tensor([len(f["input_ids"]) for f in chunk], device=self.device)[:, None]
            ).long()
            with self._use(adapter) as model, torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logits, target = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
            valid = target != -100
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.clamp_min(0).reshape(-1), reduction="none"
            ).reshape(target.shape)
            correct = (logits.argmax(-1) == target) & valid
            for i in range(len(chunk)):
                scores.append(
                    TokenScore(float((nll[i] * valid[i]).sum()), int(valid[i].sum()), int(correct[i].sum()))
                )
        return scores
