"""Continuous batching: every running chat completion decodes in one forward pass per step.

One scheduler thread owns the model. Requests are submitted to a queue; each step

1. drops cancelled requests (the ``cancel`` event: a client that went away leaves at the next step);
2. admits waiting requests while the batch has rows and memory for them, and prefills them together
   (left-padded, one forward per underlying model), sampling each one's first token. An idle scheduler
   first waits a few milliseconds while requests keep arriving (``gather_s``), so clients that come
   together are prefilled in one forward instead of one alone and the rest a step later. A prompt that
   begins like one prefilled before (the chat template's system turn, say) reuses that prompt's keys and
   values for the shared part (``prefix_tokens``: exact, since a causal model's cache of a prefix depends
   on the prefix alone) and feeds only the rest;
3. merges their KV caches into the running batch of their model (the shorter side is left-padded);
4. runs one decode forward for all running rows of each model: the last sampled token of every row,
   a left-padded 2D attention mask, per-row position ids, and ``adapter_names`` (one per row,
   ``"__base__"`` for the base model), so rows with different adapters share the pass (PEFT's mixed
   batches; :meth:`quantum_adapters.layer.QTHALinear._mixed_batch_forward` for QTHA). A batch whose
   rows all use the model's active adapter runs the plain forward instead (the same maths, without
   PEFT's per-call hooks, which walk every module: a few ms a step);
5. samples every row with its own logits processors (penalties, temperature, top-p) and its own
   ``torch.Generator`` (so a seeded request gives the same tokens alone or in any batch; plain greedy
   rows take theirs from one argmax over the batch), checks stop strings, EOS and max tokens, puts
   text deltas on the request's output queue, and evicts finished rows; the columns of left padding no
   remaining row needs are dropped.

KV layout, per model: transformers' ``DynamicCache`` with keys/values (B, H_kv, W, D) per layer, rows
right-aligned: row i holds its ``n_i`` real tokens in the last ``n_i`` columns and ``mask[i]`` marks them.
After trimming, ``W = max_i n_i``, so the cache holds ``rows x W`` token slots: ``max_batch_tokens``
bounds ``rows x max_i(prompt_i + max_tokens_i)``, which ``W`` never exceeds. A request too large for
the budget still runs, alone, once the batch is empty. The prefix store holds at most ``prefix_tokens``
tokens' keys and values per scheduler (least recently used out first), besides that budget.

Why one thread does the torch work: PyTorch's CPU kernels run on GNU OpenMP, which keeps a team of
worker threads for every thread that has run a parallel region, for as long as that thread lives. Once
those teams hold more threads than there are cores, libgomp's workers stop spinning between regions and
sleep, and every parallel region pays a wake-up: a decode step's ~200 small matmuls ran 3-4x slower on a
second thread than on the first (a (1, 576) x (576, 1536) linear: 42 us on the thread that first used
torch, 175 us on another, on this 2-core machine). So the engine's other torch work (loading models,
embedding a message for routing, the benchmark's reference decoding) runs on the scheduler's thread too,
through :meth:`Scheduler.call`, or on a thread of its own that ends with it (:func:`on_own_thread`),
whose team ends with it.

Why not transformers' own continuous batching (``generate_batch``, paged attention)? On this CPU it
decoded 8 prompts x 32 tokens at 15 tok/s in total, while one left-padded ``generate`` call on the same
prompts gave 84 tok/s; this scheduler keeps the padded dense path and adds joining and leaving.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .sampling import SamplingParams

__all__ = ["BASE_ROW", "Request", "Scheduler", "on_own_thread"]

T = TypeVar("T")

BASE_ROW = "__base__"  # PEFT's adapter name for rows that run the base model
QUIET_S = 0.004  # gathering arrivals ends once no request has come for this long
MIN_PREFIX = 8  # shorter shared prefixes are fed again (their reuse saves less than it costs)


@dataclass
class Request:
    """One choice of a completion as the scheduler sees it; results arrive on ``out``.

    ``out`` receives text deltas (``str``), then one final dict (``text``, ``completion_tokens``,
    ``finish_reason``, ``seconds``, ``logprobs``), or an exception raised while serving it. With
    ``params.logprobs`` = k (not None), ``logprobs`` is one ``(token id, logprob, [(id, logprob)] * k)``
    per sampled token: the log-softmax of the scores the token was drawn from (after penalties,
    temperature and top-p; greedy rows: after penalties); else None. ``params.n`` is not read: each
    choice is a request of its own (:meth:`SamplingParams.for_choice`)."""

    ids: list[int]
    adapter: str  # the engine's name: 'base' or an adapter
    params: SamplingParams = field(default_factory=SamplingParams)
    cancel: threading.Event | None = None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False  # the reader went away (its iterator was closed)

    @property
    def span(self) -> int:
        """Cache slots this request may need: prompt + every token it may generate."""
        return len(self.ids) + self.params.max_tokens

    def cancelled(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


@dataclass
class _Job:
    """A function to run on the scheduler's thread between two steps (:meth:`Scheduler.call`)."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the caller, who re-raises it
            self.error = exc
        self.done.set()

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


def on_own_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a new thread that ends when it returns (see the module docstring: the OpenMP team it
    makes ends with it, so it does not slow the scheduler's steps later); its error is re-raised here."""
    job = _Job(fn)
    worker = threading.Thread(target=job.run, name="qtha-torch-once", daemon=True)
    worker.start()
    return job.wait()


@dataclass
class _Row:
    """A running request: its sampling state, the text emitted so far, and its place in the cache."""

    req: Request
    model: Any
    name: str  # adapter name inside the model, or BASE_ROW (ignored for a model without adapters)
    processors: Any  # transformers LogitsProcessorList
    generator: torch.Generator | None
    t0: float
    tokens: list[int] = field(default_factory=list)  # generated ids (EOS included)
    emitted: str = ""  # text put on the output queue
    text: str = ""  # reply text so far, cut at a stop string
    finish: str | None = None
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Tokens of this row in the cache once its last sampled token has been fed."""
        return len(self.req.ids) + len(self.tokens)


@dataclass
class _Batch:
    """The running rows of one underlying model and their shared, right-aligned KV cache."""

    model: Any
    rows: list[_Row] = field(default_factory=list)
    cache: Any = None  # DynamicCache, (B, H_kv, W, D) per layer, holding every token but each row's last
    mask: torch.Tensor | None = None  # (B, W) bool, True on real tokens


class Scheduler:
    """The batching loop over an engine's models; thread-safe ``submit``.

    ``route(adapter) -> (model, name)`` gives the model object that serves an engine adapter name and
    the adapter's name inside it (``BASE_ROW`` for the base; ``None`` when the model has no adapters).
    ``lock`` is held for every step, so other users of the models (scoring, ``set_adapter``) interleave
    between steps."""

    def __init__(
        self,
        route: Callable[[str], tuple[Any, str | None]],
        tokenizer: Any,
        *,
        eos_ids: set[int],
        lock: threading.RLock,
        device: torch.device,
        max_rows: int = 8,
        max_batch_tokens: int = 16_384,
        gather_s: float = 0.02,
        prefix_tokens: int = 2048,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"Scheduler.max_rows: expected >= 1; got {max_rows!r}")
        if max_batch_tokens < 1:
            raise ValueError(f"Scheduler.max_batch_tokens: expected >= 1; got {max_batch_tokens!r}")
        if gather_s < 0 or prefix_tokens < 0:
            raise ValueError(
                f"Scheduler: expected gather_s >= 0 and prefix_tokens >= 0; got {gather_s!r}, {prefix_tokens!r}"
            )
        self.route, self.tokenizer, self.eos_ids = route, tokenizer, eos_ids
        self.lock, self.device = lock, device
        self.max_rows, self.max_batch_tokens = max_rows, max_batch_tokens
        self.gather_s = gather_s  # longest wait of an idle scheduler for requests arriving together
        self.prefix_tokens = prefix_tokens  # bound on the prefix store (0: no reuse)
        self._prefixes: list[_Prefix] = []  # least recently used first
        self._waiting: list[Request] = []
        self._jobs: list[_Job] = []  # functions to run on this thread between steps (call())
        self._admitted: list[Request] = []  # taken from _waiting for the step being run
        self._batches: dict[int, _Batch] = {}  # id(model) -> its running batch
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0  # decode steps run (tests read it to see requests share steps)
        self.max_rows_seen = 0  # largest decode batch so far
        self.prefills = 0  # prefill forwards run
        self.reused_tokens = 0  # prompt tokens taken from the prefix store instead of fed

    # ---- public -----------------------------------------------------------------------------------
    def submit(self, req: Request) -> Request:
        """Queue ``req``; it joins the running batch between two decode steps."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._waiting.append(req)
            self._start()
            self._cond.notify()
        return req

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the scheduler's thread between two decode steps and return its result (its
        error is re-raised here). For torch work outside the batch (see the module docstring); ``fn``
        must not wait for a request of this scheduler. Called on the scheduler's thread, it runs at once."""
        if threading.current_thread() is self._thread:
            return fn()
        job = _Job(fn)
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._jobs.append(job)
            self._start()
            self._cond.notify()
        return job.wait()

    def _start(self) -> None:
        """Start the loop's thread if none runs (``_cond`` held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="qtha-scheduler", daemon=True)
            self._thread.start()

    @property
    def running(self) -> int:
        """Rows in the running batches."""
        return sum(len(b.rows) for b in list(self._batches.values()))

    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished: waiting, being prefilled, or running."""
        return len(self._waiting) + len(self._admitted) + self.running

    def forget_prefixes(self) -> None:
        """Empty the prefix store (call when what a forward computes changes: circuit execution options)."""
        with self.lock:
            self._prefixes.clear()

    def close(self) -> None:
        """Stop the loop after the current step; running and waiting requests end 'cancelled'."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        """Step until there is no work, then end (``submit`` starts a new thread): an idle engine holds
        no thread, and an engine nobody references can be freed."""
        while True:
            with self._cond:
                jobs, self._jobs = self._jobs, []
                if self._closed:
                    self._shutdown()
                    for job in jobs:
                        job.error = RuntimeError("the scheduler is closed")
                        job.done.set()
                    return
                if not self._waiting and not self.running and not jobs:
                    self._thread = None
                    return
                if not self.running and not jobs:
                    self._gather()
                admitted = self._admitted = self._admit()
            for job in jobs:
                job.run()
            try:
                with self.lock, torch.inference_mode():
                    self._prefill(admitted)
                    for batch in list(self._batches.values()):
                        self._decode(batch)
            except Exception as exc:  # a failing forward fails its requests, not the server
                failed = {id(r.req): r.req for b in self._batches.values() for r in b.rows}
                failed.update({id(req): req for req in admitted})
                for req in failed.values():
                    req.out.put(exc)
                self._batches.clear()
            self._admitted = []

    def _shutdown(self) -> None:
        for req in self._waiting:
            self._finish_unstarted(req)
        self._waiting.clear()
        for batch in self._batches.values():
            for row in batch.rows:
                row.finish = "cancelled"
                self._final(row)
        self._batches.clear()

    def _gather(self) -> None:
        """Nothing is decoding, so waiting costs no running row a step: wait (``_cond`` held) while
        requests keep arriving, up to ``gather_s`` in all, for them to share one prefill."""
        deadline = time.monotonic() + self.gather_s
        while len(self._waiting) < self.max_rows and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            count = len(self._waiting)
            self._cond.wait(min(left, QUIET_S))  # submit() notifies
            if len(self._waiting) == count:
                return  # quiet: nobody else is coming

    def _admit(self) -> list[Request]:
        """Waiting requests that fit (first come, first served; called with ``_cond`` held)."""
        for req in [r for r in self._waiting if r.cancelled()]:
            self._waiting.remove(req)
            self._finish_unstarted(req)
        admitted: list[Request] = []
        rows = self.running
        widest = max((r.req.span for b in self._batches.values() for r in b.rows), default=0)
        while self._waiting and rows < self.max_rows:
            req = self._waiting[0]
            span = max(widest, req.span)
            if rows and (rows + 1) * span > self.max_batch_tokens:
                break  # waits for rows to leave; alone it always runs
            admitted.append(self._waiting.pop(0))
            rows, widest = rows + 1, span
        return admitted

    def _finish_unstarted(self, req: Request) -> None:
        req.out.put({"text": "", "completion_tokens": 0, "finish_reason": "cancelled", "seconds": 0.0})

    # ---- prefill ----------------------------------------------------------------------------------
    def _prefill(self, admitted: list[Request]) -> None:
        """Prefill the admitted requests (one left-padded forward per model), sample each one's first
        token, and merge the rows that go on into their model's running batch.

        Row i reuses ``c_i`` cached tokens of its prompt (:meth:`_lookup`) and feeds the other ``f_i``.
        The forward's cache then holds, per row, ``[pad | c_i cached]`` in ``C = max c`` columns, and the
        fed part is ``[pad | f_i]`` in ``F = max f`` columns; positions count real tokens only, so the
        gap between the two is masked like any padding. Afterwards each row's ``n_i = c_i + f_i`` tokens
        are moved right-aligned into ``max n`` columns (the batch's layout) and its prompt's keys and
        values go into the store."""
        groups: dict[int, list[_Row]] = {}
        for req in admitted:
            model, name = self.route(req.adapter)
            groups.setdefault(id(model), []).append(self._new_row(req, model, name))
        for rows in groups.values():
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            model = rows[0].model
            cache = DynamicCache(config=model.config)
            if any(type(layer) is not DynamicLayer for layer in cache.layers):
                raise ValueError(
                    f"continuous batching needs full-attention layers; {type(model.config).__name__} "
                    "has sliding-window or other cache layers"
                )
            hits = [self._lookup(model, r) for r in rows]
            cached = [0 if h is None else h[0] for h in hits]
            fed = [r.req.ids[c:] for r, c in zip(rows, cached, strict=True)]
            width_c, width_f = max(cached), max(len(f) for f in fed)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width_f - len(f)) + f for f in fed], device=self.device)  # (B, F)
            mask = torch.tensor(
                [
                    [False] * (width_c - c) + [True] * c + [False] * (width_f - len(f)) + [True] * len(f)
                    for c, f in zip(cached, fed, strict=True)
                ],
                device=self.device,
            )  # (B, C + F)
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)[:, width_c:]  # (B, F)
            if width_c:
                self._seed_cache(cache, hits, width_c)
                self.reused_tokens += sum(cached)
            logits = self._forward(rows, ids, mask, positions, cache)  # (B, V)
            self.prefills += 1
            if width_c:
                mask = _right_align(cache, mask)
            self._store(model, rows, cache)
            self._sample(rows, logits)
            self._merge(model, rows, cache, mask)

    # ---- the prefix store -------------------------------------------------------------------------
    def _lookup(self, model: Any, row: _Row) -> tuple[int, _Prefix] | None:
        """The longest prefix of the row's prompt held in the store for its model and adapter: (its
        length, the entry); None when shorter than ``MIN_PREFIX``. At least one prompt token is always
        left to feed (it gives the logits of the first generated token)."""
        ids, best = row.req.ids, None
        limit = len(ids) - 1
        for entry in self._prefixes:
            if entry.key != (id(model), row.name):
                continue
            n = _common_prefix(entry.ids, ids, limit)
            if n >= MIN_PREFIX and (best is None or n > best[0]):
                best = (n, entry)
        if best is not None:  # most recently used last
            self._prefixes.remove(best[1])
            self._prefixes.append(best[1])
        return best

    def _seed_cache(self, cache: Any, hits: list[tuple[int, _Prefix] | None], width: int) -> None:
        """Fill the prefill's cache with each row's cached prefix, right-aligned in ``width`` columns
        (rows without one: zeros, masked)."""
        like = next(h[1].kv for h in hits if h is not None)
        for i, layer in enumerate(cache.layers):
            parts: list[list[torch.Tensor]] = [[], []]
            for hit in hits:
                for j in (0, 1):
                    ref = like[i][j]  # (1, H, n, D)
                    t = ref[..., :0, :] if hit is None else hit[1].kv[i][j][..., : hit[0], :]
                    parts[j].append(_left_pad(t, width))
            keys, values = torch.cat(parts[0]), torch.cat(parts[1])  # (B, H, C, D)
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values

    def _store(self, model: Any, rows: list[_Row], cache: Any) -> None:
        """Keep each row's prompt keys and values (the last ``len(prompt)`` columns of its cache row) for
        later prompts that begin the same way; drop the least recently used past ``prefix_tokens``."""
        if not self.prefix_tokens:
            return
        for b, row in enumerate(rows):
            ids, key = row.req.ids, (id(model), row.name)
            if len(ids) <= MIN_PREFIX or len(ids) > self.prefix_tokens:
                continue
            same = [e for e in self._prefixes if e.key == key]
            if any(len(e.ids) >= len(ids) and e.ids[: len(ids)] == ids for e in same):
                continue  # a stored prompt already begins with all of this one
            for e in same:  # a stored prompt this one extends is no longer needed
                if e.ids == ids[: len(e.ids)]:
                    self._prefixes.remove(e)
            n = len(ids)
            kv = [
                (layer.keys[b : b + 1, :, -n:].clone(), layer.values[b : b + 1, :, -n:].clone())
                for layer in cache.layers
            ]
            self._prefixes.append(_Prefix(key, list(ids), kv))
        total = sum(len(e.ids) for e in self._prefixes)
        while total > self.prefix_tokens:
            total -= len(self._prefixes.pop(0).ids)

    def _new_row(self, req: Request, model: Any, name: str | None) -> _Row:
        processors = req.params.logits_processors(len(req.ids))
        generator = req.params.generator(self.device)
        return _Row(req, model, name or BASE_ROW, processors, generator, time.time())

    # ---- decode -----------------------------------------------------------------------------------
    def _decode(self, batch: _Batch) -> None:
        """One decode step for every running row of ``batch``, then eviction of the finished ones."""
        self._evict(batch, [r for r in batch.rows if r.req.cancelled()], "cancelled")
        if not batch.rows:
            return
        last = torch.tensor([[r.tokens[-1]] for r in batch.rows], device=self.device)  # (B, 1)
        positions = torch.tensor([[r.length - 1] for r in batch.rows], device=self.device)  # (B, 1)
        mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)  # (B, W + 1)
        logits = self._forward(batch.rows, last, mask, positions, batch.cache)
        batch.mask = mask
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(batch.rows))
        self._sample(batch.rows, logits)
        self._evict(batch, [r for r in batch.rows if r.finish is not None], None)

    def _forward(self, rows: list[_Row], ids, mask, positions, cache) -> torch.Tensor:
        """Logits of each row's last position, float32 (B, V); ``cache`` grows by ``ids.shape[1]``."""
        kwargs: dict[str, Any] = {}
        model = rows[0].model
        if hasattr(model, "peft_config"):  # a PeftModel: PEFT routes each row to its adapter
            names = {r.name for r in rows}
            if not (len(names) == 1 and model.active_adapter in names):  # else: what it runs anyway
                kwargs["adapter_names"] = [r.name for r in rows]
        out = model(
            input_ids=ids,
            attention_mask=mask.long(),
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[:, -1, :].float()

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Pick each row's next token with its own processors and generator; emit text; mark finished.
        Rows without processors or generator (plain greedy) take theirs from one argmax over the batch."""
        plain = [r.generator is None and not r.processors for r in rows]
        greedy = logits.argmax(-1).tolist() if any(plain) else []  # (B,)
        for i, row in enumerate(rows):
            scores = logits[i : i + 1]  # (1, V)
            if row.processors:
                seen = torch.tensor([row.req.ids + row.tokens], device=self.device)  # (1, T)
                scores = row.processors(seen, scores)
            if plain[i]:
                token = greedy[i]
            elif row.generator is None:
                token = int(scores.argmax(-1))
            else:
                probs = torch.softmax(scores, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=row.generator))
            k = row.req.params.logprobs
            if k is not None:
                logp = torch.log_softmax(scores[0], dim=-1)  # (V,)
                top = torch.topk(logp, min(k, logp.shape[-1]))
                alternatives = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
                row.logprobs.append((token, float(logp[token]), alternatives))
            row.tokens.append(token)
            self._emit(row, token)

    def _emit(self, row: _Row, token: int) -> None:
        """Update the row's text; put the part that can no longer change on its queue."""
        params = row.req.params
        if token in self.eos_ids and not params.ignore_eos:
            row.finish = "stop"
        else:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = (
                -1
                if params.ignore_eos
                else min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
            )
            if cut >= 0:
                text, row.finish = text[:cut], "stop"
            row.text = text
            if row.finish is None and len(row.tokens) >= params.max_tokens:
                row.finish = "length"
        if row.finish is not None:
            ready = row.text
        else:  # hold back an incomplete character and what may be the start of a stop string
            ready = row.text.rstrip("\ufffd")
            ready = ready[: len(ready) - _stop_prefix(ready, params.stop)]
        if len(ready) > len(row.emitted) and ready.startswith(row.emitted):
            row.req.out.put(ready[len(row.emitted) :])
            row.emitted = ready

    def _final(self, row: _Row) -> None:
        text = row.text if row.text.startswith(row.emitted) else row.emitted
        if len(text) > len(row.emitted):
            row.req.out.put(text[len(row.emitted) :])
        row.req.out.put(
            {
                "text": text,
                "completion_tokens": len(row.tokens),
                "finish_reason": row.finish,
                "seconds": time.time() - row.t0,
                "logprobs": row.logprobs if row.req.params.logprobs is not None else None,
            }
        )

    # ---- the cache --------------------------------------------------------------------------------
    def _merge(self, model: Any, rows: list[_Row], cache: Any, mask: torch.Tensor) -> None:
        """Add prefilled ``rows`` (their cache (B', H, W', D), mask (B', W')) to the model's batch; rows
        already finished by their first token end here instead."""
        done = [r for r in rows if r.finish is not None or r.req.cancelled()]
        for row in done:
            row.finish = row.finish or "cancelled"
            self._final(row)
        keep = [i for i, r in enumerate(rows) if r.finish is None]
        if not keep:
            return
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            mask = mask[index]
        rows = [rows[i] for i in keep]
        batch = self._batches.get(id(model))
        if batch is None or not batch.rows:
            self._batches[id(model)] = _Batch(model, rows, cache, mask)
            return
        width = max(batch.mask.shape[1], mask.shape[1])
        for old, new in zip(batch.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)], dim=0)
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)], dim=0)
        batch.mask = torch.cat([_left_pad(batch.mask, width, dim=1), _left_pad(mask, width, dim=1)], dim=0)
        batch.rows.extend(rows)

    def _evict(self, batch: _Batch, leaving: list[_Row], reason: str | None) -> None:
        """Remove ``leaving`` from the batch (their final result goes out) and trim unused padding."""
        if not leaving:
            return
        keep = [i for i, r in enumerate(batch.rows) if r not in leaving]
        batch.rows = [batch.rows[i] for i in keep]
        if not batch.rows:
            self._batches.pop(id(batch.model), None)
        else:
            index = torch.tensor(keep, device=self.device)
            batch.cache.batch_select_indices(index)
            batch.mask = batch.mask[index]
            unused = int((~batch.mask).all(dim=0).long().cumprod(0).sum())  # leading all-padding columns
            if unused:
                batch.mask = batch.mask[:, unused:]
                for layer in batch.cache.layers:
                    layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]
        for row in leaving:  # results go out once the rows have left (a caller may count rows next)
            row.finish = reason or row.finish
            self._final(row)


@dataclass
class _Prefix:
    """A prefilled prompt's keys and values, for prompts that begin the same way."""

    key: tuple[int, str]  # (id(model), adapter name inside it): the cache depends on both
    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (1, H_kv, len(ids), D)


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _right_align(cache: Any, mask: torch.Tensor) -> torch.Tensor:
    """Move every row's real columns (``mask`` (B, W) True) to the right end of ``max_i n_i`` columns,
    in the cache's layers (B, H, W, D) in place; returns the new mask (B, max n). Pad slots get a copy
    of some column of the row, masked."""
    counts = mask.sum(-1)  # (B,)
    width = int(counts.max())
    # stable order of columns: padding first, then the real ones in order; keep the last ``width``
    order = torch.sort(mask.long(), dim=-1, stable=True).indices[:, -width:]  # (B, width)
    for layer in cache.layers:
        b, h, _, d = layer.keys.shape
        index = order[:, None, :, None].expand(b, h, width, d)
        layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
    return torch.arange(width, device=mask.device)[None, :] >= (width - counts)[:, None]


def _left_pad(t: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """``t`` padded with zeros (False) on the left of ``dim`` to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _stop_prefix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
