"""OpenAI-compatible routes: thin translations between HTTP and :class:`serving.service.ChatService`.

    POST /v1/chat/completions   (stream: server-sent events, chat.completion.chunk, then [DONE])
    POST /v1/completions        (text completions: the prompt is answered as one user message)
    GET  /v1/models, GET /v1/models/{id}
    GET  /health

Admission (auth, rate limit, queue) happens here; one exception handler in ``app.py`` gives every
error the same JSON shape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import threading
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from .protocol import (
    MAX_CHOICES,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    CompletionLogprobs,
    CompletionRequest,
    ModelCard,
    ModelList,
    TextChoice,
    TextCompletion,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from .security import Lease, QueueFull
from .service import ChatResult, ChatService, UnknownModel

__all__ = ["ApiError", "GenerationResponse", "router"]

log = logging.getLogger("qtha.serve")
router = APIRouter()


class ApiError(Exception):
    """An error for the client: status code, OpenAI error type, message (and optional headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}


def _service(request: Request) -> ChatService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(
            503,
            "the model is still loading; retry shortly",
            "server_error",
            "not_ready",
            headers={"Retry-After": "5"},
        )
    return service


def authenticate(request: Request) -> str:
    """Dependency: the caller's key id (401 without a valid key), then the per-key rate limit (429)."""
    state = request.app.state
    key_id = state.auth.check(request.headers.get("authorization"))
    if key_id is None:
        raise ApiError(
            401,
            "missing or invalid API key (send 'Authorization: Bearer <key>')",
            "authentication_error",
            "invalid_api_key",
        )
    allowed, retry_after = state.limiter.allow(key_id)
    if not allowed:
        raise ApiError(
            429,
            "rate limit exceeded for this API key",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )
    return key_id


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {
        "status": "ok",
        "models": service.model_names(),
        "safety_events": service.counters.snapshot(),
        "queue": request.app.state.queue.stats() if hasattr(request.app.state.queue, "stats") else None,
    }


def _card(request: Request, service: ChatService, name: str) -> ModelCard:
    info = None if name == "auto" else service.engine.info(name)
    return ModelCard(id=name, created=request.app.state.started, owned_by="qtha", qtha=info)


@router.get("/v1/models", dependencies=[Depends(authenticate)])
def list_models(request: Request) -> ModelList:
    service = _service(request)
    return ModelList(data=[_card(request, service, name) for name in service.model_names()])


@router.get("/v1/models/{model_id}", dependencies=[Depends(authenticate)])
def get_model(model_id: str, request: Request) -> ModelCard:
    service = _service(request)
    if model_id not in service.model_names():
        raise UnknownModel(f"unknown model {model_id!r}; available: {', '.join(service.model_names())}")
    return _card(request, service, model_id)


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in body.messages]


def _kwargs(body: ChatCompletionRequest) -> dict[str, Any]:
    return {
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "seed": body.seed,
        "frequency_penalty": body.frequency_penalty,
        "presence_penalty": body.presence_penalty,
    }


_LOGPROB_FLOOR = -9999.0
"""Reported for a token the sampler could not pick (top-p cut it: log 0), as OpenAI does; JSON has no
-inf."""


def _lp(value: float) -> float:
    return max(float(value), _LOGPROB_FLOOR)


def _chat_logprobs(result: ChatResult) -> ChoiceLogprobs | None:
    """OpenAI's chat ``logprobs`` of one choice; None for a fixed reply or when none were asked for."""
    if result.logprobs is None:
        return None
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.token,
                logprob=_lp(t.logprob),
                bytes=list(t.raw),
                top_logprobs=[TopLogprob(token=a, logprob=_lp(lp), bytes=list(b)) for a, b, lp in t.top],
            )
            for t in result.logprobs
        ]
    )


def _text_logprobs(result: ChatResult) -> CompletionLogprobs | None:
    """The legacy text-completion ``logprobs`` of one choice (None as for chat)."""
    if result.logprobs is None:
        return None
    return CompletionLogprobs(
        tokens=[t.token for t in result.logprobs],
        token_logprobs=[_lp(t.logprob) for t in result.logprobs],
        top_logprobs=[{a: _lp(lp) for a, _, lp in t.top} for t in result.logprobs],
        text_offset=[t.start for t in result.logprobs],
    )


def _usage(results: list[ChatResult], n: int) -> Usage:
    """Prompt tokens counted once per prompt (each has ``n`` choices), completion tokens of every choice."""
    prompt = sum(r.prompt_tokens for r in results[::n])
    return Usage.of(prompt, sum(r.completion_tokens for r in results))


def _completion(body: ChatCompletionRequest, results: list[ChatResult]) -> dict[str, Any]:
    payload = ChatCompletion(
        id=results[0].id,
        created=int(time.time()),
        model=results[0].adapter,
        choices=[
            {
                "index": i,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": _chat_logprobs(result),
                "finish_reason": _finish_reason(result),
            }
            for i, result in enumerate(results)
        ],
        usage=_usage(results, body.n),
        qtha=results[0].meta(),
    )
    return payload.model_dump(exclude_none=True)


def _chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None,
    extra: dict[str, Any] | None = None,
    usage: Usage | None = None,
    index: int = 0,
    logprobs: ChoiceLogprobs | None = None,
) -> str:
    """One SSE event; ``delta=None`` gives the usage chunk (``choices: []``)."""
    chunk = ChatCompletionChunk(
        id=cid,
        created=created,
        model=model,
        choices=[]
        if delta is None
        else [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        qtha=extra,
        usage=usage,
    )
    return f"data: {json.dumps(chunk.model_dump(exclude_none=True))}\n\n"


def _finish_reason(result: ChatResult) -> str:
    return "stop" if result.finish_reason == "cancelled" else result.finish_reason


def _text_completion(cid: str, created: int, results: list[ChatResult], n: int) -> dict[str, Any]:
    payload = TextCompletion(
        id=cid,
        created=created,
        model=results[0].adapter,
        choices=[
            TextChoice(index=i, text=r.text, logprobs=_text_logprobs(r), finish_reason=_finish_reason(r))
            for i, r in enumerate(results)
        ],
        usage=_usage(results, n),
        qtha=results[0].meta(),
    )
    return payload.model_dump(exclude_none=True)


def _text_chunk(
    cid: str,
    created: int,
    model: str,
    text: str | None,
    finish: str | None = None,
    extra: dict[str, Any] | None = None,
    usage: Usage | None = None,
    index: int = 0,
    logprobs: CompletionLogprobs | None = None,
) -> str:
    """One SSE event of a text completion; ``text=None`` gives the usage event (``choices: []``)."""
    chunk = TextCompletion(
        id=cid,
        created=created,
        model=model,
        choices=[]
        if text is None
        else [TextChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)],
        qtha=extra,
        usage=usage,
    )
    return f"data: {json.dumps(chunk.model_dump(exclude_none=True))}\n\n"


@router.post("/v1/chat/completions", dependencies=[Depends(authenticate)])
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    service = _service(request)
    messages = _messages(body)
    _check_choices(body, 1, request.app.state.settings)
    adapter, _, _ = service.choose(body.model, messages)  # an unknown model fails before queueing
    return GenerationResponse(service, body, [messages], adapter, request.app.state)


@router.post("/v1/completions", dependencies=[Depends(authenticate)])
async def completions(body: CompletionRequest, request: Request) -> Response:
    """OpenAI's text completions: each prompt is answered as one user message (same safety checks)."""
    service = _service(request)
    conversations = [[{"role": "user", "content": prompt}] for prompt in body.prompts]
    _check_choices(body, len(conversations), request.app.state.settings)
    adapter, _, _ = service.choose(body.model, conversations[0])
    return GenerationResponse(service, body, conversations, adapter, request.app.state)


def _check_choices(body: ChatCompletionRequest | CompletionRequest, prompts: int, settings: Any) -> None:
    """400 (param ``n``) past ``MAX_CHOICES`` choices, or when the choices' tokens exceed the batch's
    KV budget (``max_batch_tokens``), which they would share."""
    choices = prompts * body.n
    if choices > MAX_CHOICES:
        raise ApiError(
            400, f"n: {prompts} prompt(s) x n={body.n} is {choices} choices; at most {MAX_CHOICES}", param="n"
        )
    budget = int(settings.max_batch_tokens)
    if choices * body.max_tokens > budget:
        raise ApiError(
            400,
            f"n: {choices} choice(s) x max_tokens={body.max_tokens} = {choices * body.max_tokens} tokens, "
            f"over this server's batch budget of {budget} (QTHA_MAX_BATCH_TOKENS); ask for fewer",
            param="n",
        )


class GenerationResponse(Response):
    """The answer to one chat or text completion, as an ASGI app that owns the request's generation slot.

    Everything that must happen exactly once happens in ``__call__``: the slot is leased there
    (429/503 before anything is sent), the generation thread is started there, and its ``finally``
    stops the generation (sets ``cancel``; the engine stops within one token) and releases the lease
    when that thread is done, whatever the client did: gone before the response started, during
    prefill, half way through the stream, or after the end. (A ``StreamingResponse`` over a generator
    cannot promise this: when the client is gone before the body iterator first runs, the
    generator's ``finally`` never runs, and its slot was lost for good.)

    A client that goes is noticed by one task reading ``receive`` for ``http.disconnect``, for both
    streamed and plain answers, so a plain answer nobody waits for is cancelled as well.

    ``conversations``: one per prompt (a chat has one); each gets ``n`` choices, choice ``p * n + j``
    being prompt p's j-th. They all hold this one slot and decode together in the engine's batch.
    Streamed, every chunk names its choice (``index``); a choice's logprobs travel on its finish
    chunk, covering the text released before it.
    """

    def __init__(
        self,
        service: ChatService,
        chat: ChatCompletionRequest | CompletionRequest,
        conversations: list[list[dict[str, str]]],
        adapter: str,
        state: Any,
    ) -> None:
        # A Response subclass only so that FastAPI sends it as it is; everything is in __call__.
        self.service, self.chat, self.conversations, self.adapter = service, chat, conversations, adapter
        self.choices = len(conversations) * chat.n
        self.queue = state.queue
        self.timeout = float(state.settings.request_timeout_s)
        self.cancel = threading.Event()
        self.text = isinstance(chat, CompletionRequest)  # a text completion, not a chat completion
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}" if self.text else f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.background = None  # FastAPI reads it (and may set it); there are no background tasks here

    async def __call__(self, scope, receive, send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        gone.add_done_callback(lambda _: self.cancel.set())
        work: asyncio.Future | None = None
        lease: Lease | None = None
        try:
            lease = await self._admit(gone)
            if lease is None:
                return  # the client went while waiting for a slot: nobody to answer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            events: asyncio.Queue = asyncio.Queue()
            work = loop.run_in_executor(None, self._produce, loop, events)
            if self.chat.stream:
                await self._stream(send, events, gone, deadline)
            else:
                await self._complete(scope, receive, send, work, gone, deadline)
        finally:
            gone.cancel()
            if lease is not None and (work is None or work.done()):
                lease.release()
            elif lease is not None:  # still generating: stop it, and give the slot back when it is done
                self.cancel.set()
                work.add_done_callback(lambda _: lease.release())

    async def _admit(self, gone: asyncio.Future) -> Lease | None:
        """Wait for a slot: the lease, or None when the client went first (it leaves the queue)."""
        admit = asyncio.ensure_future(self.queue.lease(self.timeout))
        try:
            await asyncio.wait({admit, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this task is being cancelled (server shutdown)
            if admit.done() and not admit.cancelled() and admit.exception() is None:
                admit.result().release()
            admit.cancel()
            raise
        if not admit.done():  # the client went first: leave the queue
            admit.cancel()  # (WorkQueue passes on a slot handed to it meanwhile)
            await asyncio.wait({admit})
        if admit.cancelled():
            return None
        try:
            lease = admit.result()
        except QueueFull as exc:
            raise ApiError(
                429,
                "the server is busy (generation queue full); retry shortly",
                "rate_limit_error",
                "queue_full",
                headers={"Retry-After": str(math.ceil(exc.retry_after_s))},
            ) from None
        except asyncio.TimeoutError:
            raise ApiError(
                503,
                "timed out waiting for a generation slot",
                "server_error",
                "timeout",
                headers={"Retry-After": "5"},
            ) from None
        if gone.done():
            lease.release()
            return None
        return lease

    def _produce(self, loop: asyncio.AbstractEventLoop, events: asyncio.Queue) -> list[ChatResult] | None:
        """Worker thread: put ``(choice index, text delta)`` (streamed answers only) and
        ``(index, ChatResult)`` on ``events``; return every choice's ChatResult, or None when one
        failed (the exception is logged and put on ``events``); then _DONE. Prompts after the first
        run in threads of their own, so that all choices join the batch together."""

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop has closed (server shut down): nobody is listening
                pass

        n = self.chat.n
        results: list[ChatResult | None] = [None] * self.choices

        def run(p: int) -> None:
            for i, part in self.service.stream_choices(
                self.conversations[p],
                self.chat.model,
                n=n,
                logprobs=self.chat.logprob_k,
                cancel=self.cancel,
                **_kwargs(self.chat),
            ):
                if isinstance(part, ChatResult):
                    results[p * n + i] = part
                    put((p * n + i, part))
                elif self.chat.stream:
                    put((p * n + i, part))

        try:
            if len(self.conversations) == 1:
                run(0)
            else:
                with concurrent.futures.ThreadPoolExecutor(len(self.conversations)) as pool:
                    for future in [pool.submit(run, p) for p in range(len(self.conversations))]:
                        try:
                            future.result()
                        except Exception:
                            self.cancel.set()  # one prompt failed: stop the others
                            raise
        except Exception as exc:
            log.exception("generation failed")
            put(exc)
        finally:
            put(_DONE)
        return None if any(r is None for r in results) else results  # type: ignore[return-value]

    async def _complete(
        self, scope, receive, send, work: asyncio.Future, gone: asyncio.Future, deadline: float
    ) -> None:
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({work, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            if gone in done:
                return  # the client has gone: nobody to answer (the finally stops the generation)
            raise ApiError(504, f"generation took longer than {self.timeout:.0f}s", "server_error", "timeout")
        results = work.result()
        if results is None:
            raise ApiError(500, "generation failed", "server_error", "internal_error")
        payload = (
            _text_completion(self.id, self.created, results, self.chat.n)
            if self.text
            else _completion(self.chat, results)
        )
        await JSONResponse(payload)(scope, receive, send)

    async def _stream(self, send, events: asyncio.Queue, gone: asyncio.Future, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        started: set[int] = set()  # choices whose role chunk has gone out
        finals: dict[int, ChatResult] = {}
        while not gone.done():
            try:
                part = await asyncio.wait_for(events.get(), timeout=max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self.cancel.set()  # past the deadline: the engine ends the reply within one token
                deadline = math.inf
                continue
            if part is _DONE:
                break
            if isinstance(part, Exception):
                err = {
                    "error": {
                        "message": "generation failed",
                        "type": "server_error",
                        "code": "internal_error",
                    }
                }
                await _send_text(send, f"data: {json.dumps(err)}\n\n")
                break
            index, item = part
            if index not in started and not self.text:
                role = {"role": "assistant", "content": ""}
                await _send_text(send, _chunk(self.id, self.created, self.adapter, role, None, index=index))
            started.add(index)
            if isinstance(item, ChatResult):
                finals[index] = item
                await _send_text(send, self._finish_event(index, item))
                if len(finals) == self.choices and self.chat.include_usage:
                    await _send_text(send, self._usage_event(finals))
                continue
            await _send_text(send, self._delta_event(index, item))
        if gone.done():
            return  # the client has gone; the caller's finally stops the generation
        await _send_text(send, "data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _delta_event(self, index: int, text: str) -> str:
        if self.text:
            return _text_chunk(self.id, self.created, self.adapter, text, index=index)
        return _chunk(self.id, self.created, self.adapter, {"content": text}, None, index=index)

    def _finish_event(self, index: int, result: ChatResult) -> str:
        """A choice's finish event, with the ``qtha`` block and the choice's logprobs."""
        finish, meta = _finish_reason(result), result.meta()
        if self.text:
            logprobs = _text_logprobs(result)
            return _text_chunk(self.id, self.created, result.adapter, "", finish, meta, None, index, logprobs)
        logprobs = _chat_logprobs(result)
        return _chunk(self.id, self.created, result.adapter, {}, finish, meta, None, index, logprobs)

    def _usage_event(self, finals: dict[int, ChatResult]) -> str:
        """The last event when ``include_usage`` was asked for: every choice's tokens, ``choices: []``."""
        results = [finals[i] for i in range(self.choices)]
        usage = _usage(results, self.chat.n)
        if self.text:
            return _text_chunk(self.id, self.created, results[0].adapter, None, usage=usage)
        return _chunk(self.id, self.created, results[0].adapter, None, None, usage=usage)


_DONE = object()
"""Put on a response's event queue by its worker thread after everything else."""


async def _send_text(send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode("utf-8"), "more_body": True})


async def _disconnected(receive) -> None:
    """Return when the client has gone (``http.disconnect``); request bodies are already read."""
    while (await receive())["type"] != "http.disconnect":
        pass
