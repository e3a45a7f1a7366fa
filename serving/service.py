"""Chat logic shared by the API and the chat page: routing, the safety layer, generation, logging.

No web types here (vLLM's split): ``api.py`` and ``ui.py`` translate to and from HTTP and Gradio.

For every conversation:
  1. the safety layer assesses the latest user message (patterns + embedding similarity, any of
     en / zh / es / fr) and names its risk category;
  2. a crisis gets its category's resources at once (lead-in in the user's language), with no
     generated text at all; a request for a
     diagnosis or a medication dose gets a kind refusal; neither reaches the model;
  3. otherwise ``model='auto'`` picks the domain adapter nearest to the message (exemplar
     embeddings), the engine generates, every sentence passes the means filter as it streams, and a
     counselling reply ends with the AI disclosure;
  4. events are counted (never their content); the conversation is logged only with opt-in + consent.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from quantum_adapters.domains import MATH, canonical

from .engine import BASE, Engine, TokenLogprob, one_choice
from .safety import (
    AI_DISCLOSURE,
    SafetyAssessment,
    SafetyCounters,
    SafetyLayer,
    StreamingFinalCheck,
    needs_disclosure,
)
from .sampling import SamplingParams

__all__ = ["AUTO", "ChatResult", "ChatService", "UnknownModel"]

AUTO = "auto"


class UnknownModel(KeyError):
    """The requested model is neither an adapter, 'base' nor 'auto'."""


@dataclass
class ChatResult:
    text: str
    adapter: str
    routed: bool
    domain: str | None
    safety: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    route_scores: dict[str, float] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    logprobs: list[TokenLogprob] | None = None
    """When asked for: the generated tokens that reached the reply unchanged (the longest prefix the
    safety filter let through as generated; the AI disclosure is not model text). None for a fixed
    reply (crisis, declined request), which is not generated."""
    ended: bool = field(default=False, repr=False)

    def meta(self) -> dict[str, Any]:
        """The ``qtha`` block of API responses: which adapter answered, why, and the safety verdict."""
        out: dict[str, Any] = {"adapter": self.adapter, "routed": self.routed, "safety": self.safety}
        if self.route_scores:
            out["scores"] = {k: round(v, 4) for k, v in self.route_scores.items()}
        return out


class _OnSchedulerThread:
    """An embedder whose ``encode`` runs on the engine's scheduler thread: torch work on a request's
    thread would slow every later decode step (see :mod:`serving.batching`)."""

    def __init__(self, embedder: Any, engine: Engine) -> None:
        self.embedder, self.engine = embedder, engine

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine.scheduler.call(lambda: self.embedder.encode(*args, **kwargs))


class ChatService:
    """Routing + safety + generation over an :class:`Engine`; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        *,
        embedder: Any = None,
        locale: str = "US",
        safety: SafetyLayer | None = None,
        router: Any = None,
        chatlog: Any = None,
    ) -> None:
        self.engine = engine
        self._embedder = embedder
        # The safety layer has its own (multilingual) embedder; `embedder` is the router's.
        self.safety = safety or SafetyLayer(locale=locale)
        self._router = router
        self.chatlog = chatlog
        self.counters = SafetyCounters()
        self._router_lock = threading.Lock()

    # ---- models and routing ---------------------------------------------------------------------
    def model_names(self) -> list[str]:
        return [AUTO, *self.engine.names]

    def domain_of(self, adapter: str) -> str | None:
        """The canonical domain ``adapter`` was trained on (its manifest's), or None (base, or a
        domain :mod:`quantum_adapters.domains` does not know)."""
        return None if adapter == BASE else canonical(self.engine.info(adapter).get("domain"))

    def _domains(self) -> dict[str, str]:
        """canonical domain -> adapter name (the first adapter trained on that domain)."""
        out: dict[str, str] = {}
        for name in self.engine.adapters:
            domain = self.domain_of(name)
            if domain and domain not in out:
                out[domain] = name
        return out

    @property
    def router(self):
        with self._router_lock:
            if self._router is None:
                from .routing import DomainRouter

                embedder = _OnSchedulerThread(self._embedder or self.safety_embedder(), self.engine)
                self._router = DomainRouter(embedder)
            return self._router

    def safety_embedder(self):
        from .embeddings import load_embedder

        self._embedder = self._embedder or load_embedder()
        return self._embedder

    def choose(self, model: str, messages: list[dict[str, str]]) -> tuple[str, bool, dict[str, float]]:
        """(adapter name, routed?, route scores) for a requested model."""
        if model == AUTO:
            domains = self._domains()
            if not domains:
                return BASE, True, {}
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            domain, scores = self.router.route(text, list(domains))
            return domains.get(domain, BASE), True, scores
        if model == BASE or model in self.engine.adapters:
            return model, False, {}
        raise UnknownModel(f"unknown model {model!r}; available: {', '.join(self.model_names())}")

    # ---- completion -----------------------------------------------------------------------------
    def stream(
        self,
        messages: list[dict[str, str]],
        model: str = AUTO,
        params: SamplingParams | None = None,
        **kw: Any,
    ) -> Iterator[str | ChatResult]:
        """Yield safe text deltas, then one final :class:`ChatResult` (one choice of
        :meth:`stream_choices`, whose keyword arguments it takes; ``params.n`` must be 1)."""
        return one_choice(self.stream_choices(messages, model, (params or SamplingParams()).single(), **kw))

    def stream_choices(
        self,
        messages: list[dict[str, str]],
        model: str = AUTO,
        params: SamplingParams | None = None,
        *,
        cancel: threading.Event | None = None,
        consent: bool = False,
        conversation_id: str | None = None,
    ) -> Iterator[tuple[int, str | ChatResult]]:
        """``params.n`` answers to one conversation: yield ``(choice index, safe text delta)``, and
        ``(index, ChatResult)`` as each choice ends. The message is assessed (and a safety event
        counted) once; every choice passes the streaming means filter and gets the disclosure."""
        params = params or SamplingParams()
        n = params.n
        adapter, routed, scores = self.choose(model, messages)
        domain = self.domain_of(adapter)
        assessment: SafetyAssessment = self.safety.assess(messages)
        if assessment.kind is not None:
            self.counters.record(assessment.kind)
            if self.chatlog is not None:  # the event always; its text only with operator opt-in + consent
                text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
                self.chatlog.record_safety_event(
                    assessment.kind, assessment.matched, conversation_id, text=text, consent=consent
                )
        results = [
            ChatResult("", adapter, routed, domain, assessment.as_dict(), route_scores=scores)
            for _ in range(n)
        ]
        # Crises are answered in every domain. Diagnosis and dosing requests are declined where the
        # model would otherwise advise on them (counselling, base); a math adapter answers its word
        # problems about pills or doses as arithmetic.
        declines = assessment.kind in ("diagnosis", "medication") and domain != MATH.name
        if assessment.crisis or declines:
            # No generation at all: the reply is ours, leads with resources or declines kindly.
            text = (
                self.safety.crisis_reply(assessment)
                if assessment.crisis
                else self.safety.decline_reply(assessment.kind)
            )
            for i, result in enumerate(results):
                result.text = text
                result.safety["handled"] = "fixed_reply"
                yield i, text
                self._log_last(results, i, messages, consent, conversation_id)
                yield i, result
        else:
            checks = [StreamingFinalCheck() for _ in range(n)]
            disclose = needs_disclosure(domain, assessment)
            generated = self.engine.stream_choices(messages, adapter, params, cancel=cancel)
            with closing(generated):
                for i, part in generated:
                    result, check = results[i], checks[i]
                    if isinstance(part, str):
                        safe = check.feed(part)
                        if safe:
                            result.text += safe
                            yield i, safe
                        continue
                    extra = check.flush()
                    if check.removed:
                        self.counters.record("means_removed", check.removed)
                    if disclose and AI_DISCLOSURE not in result.text + extra:
                        extra = extra.rstrip() + "\n\n" + AI_DISCLOSURE
                    if extra:
                        result.text += extra
                        yield i, extra
                    result.prompt_tokens, result.completion_tokens = (
                        part.prompt_tokens,
                        part.completion_tokens,
                    )
                    result.finish_reason = part.finish_reason
                    if part.logprobs is not None:
                        kept = _common_prefix(result.text, part.text)
                        result.logprobs = [t for t in part.logprobs if t.end <= kept]
                    self._log_last(results, i, messages, consent, conversation_id)
                    yield i, result

    def _log_last(
        self,
        results: list[ChatResult],
        index: int,
        messages: list[dict[str, str]],
        consent: bool,
        conversation_id: str | None,
    ) -> None:
        """Once choice ``index`` has ended: when it is the last to end, log the conversation with the
        first choice's reply (only with the operator's chat log and the user's consent)."""
        results[index].ended = True
        if self.chatlog is None or not consent or not all(r.ended for r in results):
            return
        first = results[0]
        self.chatlog.record(conversation_id or first.id, messages, first.text, first.adapter, consent=True)

    def complete(
        self,
        messages: list[dict[str, str]],
        model: str = AUTO,
        params: SamplingParams | None = None,
        **kw: Any,
    ) -> ChatResult:
        """Non-streaming: the final :class:`ChatResult` of :meth:`stream`."""
        *_, last = self.stream(messages, model, params, **kw)
        assert isinstance(last, ChatResult)
        return last


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
