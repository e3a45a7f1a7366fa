"""OpenAI-compatible routes: thin translations between HTTP and :class:`serving.service.ChatService`.

    POST /v1/chat/completions   (stream: server-sent events, chat.completion.chunk, then [DONE])
    GET  /v1/models
    GET  /health

Admission (auth, rate limit, queue) happens here; one exception handler in ``app.py`` gives every
error the same JSON shape.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
)
from .security import QueueFull
from .service import ChatResult, ChatService

__all__ = ["ApiError", "router"]

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


@router.get("/v1/models", dependencies=[Depends(authenticate)])
def list_models(request: Request) -> ModelList:
    service = _service(request)
    created = request.app.state.started
    cards = []
    for name in service.model_names():
        info = None if name == "auto" else service.engine.info(name)
        cards.append(ModelCard(id=name, created=created, owned_by="qtha", qtha=info))
    return ModelList(data=cards)


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


def _completion(body: ChatCompletionRequest, result: ChatResult) -> dict[str, Any]:
    payload = ChatCompletion(
        id=result.id,
        created=int(time.time()),
        model=result.adapter,
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason if result.finish_reason != "cancelled" else "stop",
            }
        ],
        usage={
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
        qtha=result.meta(),
    )
    return payload.model_dump(exclude_none=True)


def _chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish: str | None,
    extra: dict[str, Any] | None = None,
) -> str:
    chunk = ChatCompletionChunk(
        id=cid,
        created=created,
        model=model,
        choices=[{"index": 0, "delta": delta, "finish_reason": finish}],
        qtha=extra,
    )
    return f"data: {json.dumps(chunk.model_dump(exclude_none=True))}\n\n"


@router.post("/v1/chat/completions", dependencies=[Depends(authenticate)])
async def chat_completions(body: ChatCompletionRequest, request: Request):
    service = _service(request)
    state = request.app.state
    messages = _messages(body)
    adapter, _, _ = service.choose(body.model, messages)  # an unknown model fails before queueing
    timeout = state.settings.request_timeout_s
    cancel = threading.Event()
    try:
        slot = state.queue.slot(timeout)
        await slot.__aenter__()
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

    if not body.stream:
        work = asyncio.ensure_future(
            asyncio.to_thread(service.complete, messages, body.model, cancel=cancel, **_kwargs(body))
        )
        try:
            done, _ = await asyncio.wait({work}, timeout=timeout)
            if not done:
                cancel.set()  # stops within one token; the slot is released only when the thread is done
                await work
                raise ApiError(504, f"generation took longer than {timeout:.0f}s", "server_error", "timeout")
            result = work.result()
        finally:
            await slot.__aexit__(None, None, None)
        return JSONResponse(_completion(body, result))

    return StreamingResponse(
        _sse(service, body, messages, adapter, request, cancel, slot, timeout),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _sse(
    service: ChatService,
    body: ChatCompletionRequest,
    messages,
    adapter: str,
    request: Request,
    cancel: threading.Event,
    slot,
    timeout: float,
) -> AsyncIterator[str]:
    """Run the blocking generator in a thread; forward its deltas as SSE; cancel on disconnect."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def produce() -> None:
        try:
            for part in service.stream(messages, body.model, cancel=cancel, **_kwargs(body)):
                loop.call_soon_threadsafe(queue.put_nowait, part)
        except Exception as exc:  # reported to the client as an error event
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    created = int(time.time())
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    deadline = time.monotonic() + timeout
    first = True
    try:
        while True:
            try:
                part = await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected() or time.monotonic() > deadline:
                    cancel.set()
                continue
            if part is done:
                break
            if isinstance(part, Exception):
                err = {
                    "error": {
                        "message": "generation failed",
                        "type": "server_error",
                        "code": "internal_error",
                    }
                }
                yield f"data: {json.dumps(err)}\n\n"
                break
            if isinstance(part, ChatResult):
                yield _chunk(
                    cid,
                    created,
                    part.adapter,
                    {},
                    "stop" if part.finish_reason == "cancelled" else part.finish_reason,
                    part.meta(),
                )
                break
            if first:
                yield _chunk(cid, created, adapter, {"role": "assistant", "content": ""}, None)
                first = False
            yield _chunk(cid, created, adapter, {"content": part}, None)
        yield "data: [DONE]\n\n"
    finally:
        if thread.is_alive():  # the client went away mid-stream: stop generating
            cancel.set()
        await slot.__aexit__(None, None, None)
