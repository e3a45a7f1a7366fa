"""The inference engine: one base model, any number of frozen adapters, no web types.

Serving and evaluation both go through this class, so what is evaluated is exactly what is served.

* ``generate`` / ``stream``: chat completion for one conversation (sampling or greedy, stop strings,
  seeds, cancellation through a ``threading.Event``). Concurrent calls decode together: a scheduler
  thread (:mod:`serving.batching`) runs one forward per step for every running request, and requests
  for different adapters of one model share it (mixed-adapter batches).
* ``generate_batch``: greedy generation for many prompts at once (left padding), for evaluation.
* ``score``: teacher-forced loss and top-1 accuracy on given reply tokens.

Adapters of one PEFT type (all QTHA, say) share one model and are switched with ``set_adapter``;
a LoRA adapter next to QTHA ones gets its own copy of the base (PEFT cannot mix types in one model).
``base`` runs any of them with the adapters disabled. Artifacts are verified when loaded, their
tensors never require gradients, and every call runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from quantum_adapters.artifact import load_frozen
from quantum_adapters.layer import QuantumCircuitLayer
from quantum_adapters.models import ModelSource, load_base_model

from .batching import BASE_ROW, Request, Scheduler, on_own_thread
from .sampling import SamplingParams

__all__ = ["BASE", "Engine", "Generation", "SamplingParams", "TokenLogprob", "TokenScore", "one_choice"]

BASE = "base"
T = TypeVar("T")


@dataclass
class TokenLogprob:
    """One generated token with its logprob and the top alternatives at its position.

    ``token`` is its text (undecodable partial UTF-8 shown as U+FFFD), ``raw`` its exact bytes, ``top``
    ``(token, raw, logprob)`` best first; ``start``/``end`` are character offsets in the generated text
    (a token ending inside a multi-byte character ends before it)."""

    token: str
    raw: bytes
    logprob: float
    top: list[tuple[str, bytes, float]]
    start: int
    end: int


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # 'stop' | 'length' | 'cancelled'
    adapter: str
    seconds: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    """Per generated token (EOS and other special tokens left out), when asked for."""


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


class Engine:
    """Base model + frozen adapters; thread-safe.

    ``max_batch``: requests decoded together (rows of the running batch); ``max_batch_tokens``: bound on
    the batch's KV cache, rows x the longest request's prompt + ``max_tokens`` (see
    :mod:`serving.batching`). More requests wait for a row."""

    def __init__(
        self,
        model: str | ModelSource = "smollm2-135m-instruct",
        adapters: dict[str, str | Path] | None = None,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch: int = 8,
        max_batch_tokens: int = 16_384,
    ) -> None:
        # loaded on a thread that ends (serving.batching's docstring: why torch work stays off the caller's)
        self.base_model, self.tokenizer, self.source = on_own_thread(
            lambda: load_base_model(model, dtype=dtype, device=device)
        )
        self.device = torch.device(device)
        self._models: dict[str, Any] = {}  # peft type -> PeftModel
        self.adapters: dict[str, _Adapter] = {}
        self._lock = threading.RLock()
        self._byte_decoder: dict[str, int] | None = None  # GPT-2's byte alphabet, for token bytes
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)
        self.scheduler = Scheduler(
            self._route,
            self.tokenizer,
            eos_ids=self._eos_ids(),
            lock=self._lock,
            device=self.device,
            max_rows=max_batch,
            max_batch_tokens=max_batch_tokens,
        )

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
        peft_model, manifest = on_own_thread(lambda: self._load(ptype, path, name))
        training = manifest.get("training", {}) or {}
        self.adapters[name] = _Adapter(
            name=name,
            path=Path(path),
            manifest=manifest,
            model=peft_model,
            system_prompt=training.get("system_prompt"),
            domain=training.get("domain"),
        )

    def _load(self, ptype: str, path: str | Path, name: str) -> tuple[Any, dict[str, Any]]:
        """The PEFT model that now holds the artifact at ``path`` as ``name``, and its manifest."""
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
        return peft_model, manifest

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

    def _route(self, name: str) -> tuple[Any, str]:
        """(model object, adapter name inside it) serving ``name``; base rows run in the first model
        with PEFT's ``"__base__"`` (its adapters skipped), or in the plain base model."""
        if name == BASE:
            return (next(iter(self._models.values())) if self._models else self.base_model), BASE_ROW
        return self._get(name).model, name

    def _eos_ids(self) -> set[int]:
        """Token ids that end a reply: the tokenizer's EOS and the model's generation config's."""
        config = getattr(self.base_model, "generation_config", None)
        ids = getattr(config, "eos_token_id", None)
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return set(ids)

    def set_circuit_execution(self, **options: Any) -> int:
        """Set execution options (e.g. shots, noise, backend) on every circuit; returns how many."""
        count = 0
        with self._lock:
            for model in self._models.values():
                for module in model.modules():
                    if isinstance(module, QuantumCircuitLayer):
                        module.configure(**options)
                        count += 1
            self.scheduler.forget_prefixes()  # cached prompts were computed with the old options
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
    def generate(
        self,
        messages: list[dict[str, str]],
        adapter: str = BASE,
        params: SamplingParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """One chat completion (non-streaming): the final :class:`Generation` of :meth:`stream`."""
        *_, final = self.stream(messages, adapter, params, cancel=cancel)
        assert isinstance(final, Generation), "stream() always ends with a Generation"
        return final

    def stream(
        self,
        messages: list[dict[str, str]],
        adapter: str = BASE,
        params: SamplingParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Generation]:
        """Yield text deltas as they are decoded, then one final :class:`Generation` (one choice:
        ``params.n`` must be 1; :meth:`stream_choices` gives several).

        The request joins the scheduler's running batch (:mod:`serving.batching`) at the next step and
        leaves it when it ends: EOS, a stop string (cut from the text; deltas never show part of
        one), ``max_tokens``, or ``cancel`` set (or this iterator closed), within one step."""
        return one_choice(
            self.stream_choices(messages, adapter, (params or SamplingParams()).single(), cancel=cancel)
        )

    def stream_choices(
        self,
        messages: list[dict[str, str]],
        adapter: str = BASE,
        params: SamplingParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, str | Generation]]:
        """``params.n`` completions of one conversation, decoded together in the running batch: yield
        ``(choice index, text delta)`` as they come, and ``(index, Generation)`` when a choice ends.

        Choice i samples with ``choice_seed(seed, i)``, so a seeded call is repeatable and its choices
        differ; greedy choices are identical. ``params.logprobs`` = k records every token's logprob and
        top k (``Generation.logprobs``), from the distribution it was sampled from (:class:`Request`)."""
        params = params or SamplingParams()
        n = params.n
        if adapter != BASE:
            self._get(adapter)
        ids = self.prompt_ids(messages, adapter)
        shared: queue.SimpleQueue = queue.SimpleQueue()
        reqs = [
            self.scheduler.submit(Request(ids, adapter, params.for_choice(i), cancel, _Tagged(shared, i)))
            for i in range(n)
        ]
        try:
            left = n
            while left:
                index, item = shared.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    yield index, item
                    continue
                left -= 1
                raw = item.get("logprobs")
                yield (
                    index,
                    Generation(
                        item["text"],
                        len(ids),
                        item["completion_tokens"],
                        item["finish_reason"],
                        adapter,
                        item["seconds"],
                        None if params.logprobs is None else self._token_logprobs(raw or []),
                    ),
                )
        finally:
            for req in reqs:
                req.abandoned = True  # a reader that stops early frees its rows at the next step

    def _token_logprobs(self, raw: list[tuple[int, float, list[tuple[int, float]]]]) -> list[TokenLogprob]:
        """The scheduler's ``(id, logprob, top)`` records as :class:`TokenLogprob` (special tokens out)."""
        special = set(self.tokenizer.all_special_ids) | self._eos_ids()
        out: list[TokenLogprob] = []
        done = b""
        for token, logprob, top in raw:
            if token in special:
                continue
            piece = self._token_bytes(token)
            start = len(done.decode("utf-8", "ignore"))
            done += piece
            top_out = [
                (self._token_bytes(t).decode("utf-8", "replace"), self._token_bytes(t), lp) for t, lp in top
            ]
            out.append(
                TokenLogprob(
                    piece.decode("utf-8", "replace"),
                    piece,
                    logprob,
                    top_out,
                    start,
                    len(done.decode("utf-8", "ignore")),
                )
            )
        return out

    def _token_bytes(self, token: int) -> bytes:
        """The exact bytes of one token: byte-level BPE pieces mapped back through GPT-2's byte alphabet
        (so a token holding part of a multi-byte character keeps its bytes); other tokenizers: its text."""
        if getattr(self, "_byte_decoder", None) is None:
            self._byte_decoder = _byte_decoder()
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str) and piece and all(c in self._byte_decoder for c in piece):
            return bytes(self._byte_decoder[c] for c in piece)
        return self.tokenizer.decode([token], skip_special_tokens=True).encode("utf-8")

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
                greedy = SamplingParams(max_tokens=max_tokens).to_generate_kwargs(pad)
                out = model.generate(input_ids=ids, attention_mask=mask, **greedy)
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


def one_choice(choices: Iterator[tuple[int, T]]) -> Iterator[T]:
    """The parts of a one-choice ``stream_choices`` iterator, without their index; closing this
    iterator closes ``choices`` (the engine's rows leave the batch at the next step)."""
    with closing(choices):
        for _, part in choices:
            yield part


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet inverted: the character standing for each byte -> the byte.
    Printable Latin-1 bytes stand for themselves; the others (controls, space, ...) for chr(256 + k)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out = {chr(b): b for b in kept}
    others = [b for b in range(256) if b not in out.values()]
    out.update({chr(256 + k): b for k, b in enumerate(others)})
    return out


class _Tagged:
    """A request's output queue that puts ``(index, item)`` on a queue shared by a call's choices."""

    def __init__(self, shared: queue.SimpleQueue, index: int) -> None:
        self.shared, self.index = shared, index

    def put(self, item: Any) -> None:
        self.shared.put((self.index, item))
