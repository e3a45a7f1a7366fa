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
import logging
import math
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from .protocol import (
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
    DeltaMessage,
    ErrorResponse,
    ModelCard,
    ModelList,
    ResponseMessage,
    TextChoice,
    TextCompletion,
    TokenLogprob,
    TopLogprob,
    Usage,
    new_completion_id,
)
from .sampling import MAX_CHOICES
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

    def response(self) -> JSONResponse:
        """This error as it is sent: the protocol's one error shape."""
        body = ErrorResponse.of(self.message, self.type, self.code, self.param).body()
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _service(request: Request) -> ChatService:
    return request.app.state.service


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


def _finish_reason(result: ChatResult) -> str:
    return "stop" if result.finish_reason == "cancelled" else result.finish_reason


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
        self.params = chat.sampling_params()
        self.choices = len(conversations) * chat.n
        self.queue = state.queue
        self.timeout = float(state.settings.request_timeout_s)
        self.cancel = threading.Event()
        self.text = isinstance(chat, CompletionRequest)  # a text completion, not a chat completion
        self.id = new_completion_id("cmpl" if self.text else "chatcmpl")
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

        n = self.params.n
        results: list[ChatResult | None] = [None] * self.choices

        def run(p: int) -> None:
            for i, part in self.service.stream_choices(
                self.conversations[p],
                self.chat.model,
                self.params,
                cancel=self.cancel,
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
        await JSONResponse(self._completion(results))(scope, receive, send)

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
                await _send_text(send, GENERATION_FAILED.sse())
                break
            index, item = part
            if index not in started and not self.text:
                role = ChunkChoice(index=index, delta=DeltaMessage(role="assistant", content=""))
                await _send_text(send, self._event([role], self.adapter))
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
        await _send_text(send, SSE_DONE)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ---- what is sent: the protocol's models, built here only ----------------------------------------
    def _event(self, choices: list[Any], model: str, **fields: Any) -> str:
        """One server-sent event of this answer (a chat chunk or a text completion)."""
        kind = TextCompletion if self.text else ChatCompletionChunk
        return kind(id=self.id, created=self.created, model=model, choices=choices, **fields).sse()

    def _delta_event(self, index: int, text: str) -> str:
        if self.text:
            return self._event([TextChoice(index=index, text=text)], self.adapter)
        return self._event([ChunkChoice(index=index, delta=DeltaMessage(content=text))], self.adapter)

    def _finish_event(self, index: int, result: ChatResult) -> str:
        """A choice's finish event, with the ``qtha`` block and the choice's logprobs."""
        return self._event([self._choice(index, result, final=False)], result.adapter, qtha=result.meta())

    def _usage_event(self, finals: dict[int, ChatResult]) -> str:
        """The last event when ``include_usage`` was asked for: every choice's tokens, ``choices: []``."""
        results = [finals[i] for i in range(self.choices)]
        return self._event([], results[0].adapter, usage=self._usage(results))

    def _completion(self, results: list[ChatResult]) -> dict[str, Any]:
        """The body of a plain (non-streamed) answer."""
        kind = TextCompletion if self.text else ChatCompletion
        return kind(
            id=self.id,
            created=self.created,
            model=results[0].adapter,
            choices=[self._choice(i, r, final=True) for i, r in enumerate(results)],
            usage=self._usage(results),
            qtha=results[0].meta(),
        ).body()

    def _choice(self, index: int, result: ChatResult, final: bool) -> Any:
        """Choice ``index``'s end: its whole text (``final``, a plain answer) or the stream's last chunk
        of it (no text: it went out in deltas), with its finish reason and logprobs."""
        finish = _finish_reason(result)
        if self.text:
            text = result.text if final else ""
            return TextChoice(index=index, text=text, logprobs=_text_logprobs(result), finish_reason=finish)
        logprobs = _chat_logprobs(result)
        if final:
            return Choice(
                index=index,
                message=ResponseMessage(content=result.text),
                logprobs=logprobs,
                finish_reason=finish,
            )
        return ChunkChoice(index=index, delta=DeltaMessage(), logprobs=logprobs, finish_reason=finish)

    def _usage(self, results: list[ChatResult]) -> Usage:
        """Prompt tokens counted once per prompt (each has ``n`` choices), completion tokens of every
        choice."""
        prompt = sum(r.prompt_tokens for r in results[:: self.params.n])
        return Usage.of(prompt, sum(r.completion_tokens for r in results))


_DONE = object()
"""Put on a response's event queue by its worker thread after everything else."""

GENERATION_FAILED = ErrorResponse.of("generation failed", "server_error", "internal_error")
"""Sent for a generation that raised (the exception is logged, never sent)."""


async def _send_text(send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode("utf-8"), "more_body": True})


async def _disconnected(receive) -> None:
    """Return when the client has gone (``http.disconnect``); request bodies are already read."""
    while (await receive())["type"] != "http.disconnect":
        pass
