"""``create_app(settings, ...)``: the FastAPI app with the API routes and the chat page at /ui.

The service (engine + safety + routing) is built before the app and put on ``app.state``; every
error, ours or the framework's, goes through one exception handler and leaves as the protocol's one
shape ``{"error": {message, type, code, param}}`` (:class:`serving.protocol.ErrorResponse`), with no
traceback. Request bodies to /v1/ are read by :class:`BodyLimit` before anything else sees
them: one over ``settings.max_body_bytes`` (by its Content-Length, or as it grows when sent chunked)
is read to the end and discarded, then answered 413 in that shape, so the client, still sending,
reads the answer instead of a reset connection.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import ApiError, router
from .protocol import describe_validation_errors
from .security import ApiKeyAuth, RateLimiter, WorkQueue
from .service import ChatService, UnknownModel
from .settings import Settings

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger("qtha.serve")

DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
"""Most bytes of a too-large body read (and discarded) before its 413. Past this the 413 is sent with
`Connection: close` without reading further, and a client still sending may see a reset."""


class BodyLimit:
    """ASGI middleware: read each POST/PUT/PATCH body to /v1/ in full, at most ``limit`` bytes, before
    the app runs, and answer 413 in the one error shape for a larger one.

    A body is refused by its Content-Length before anything is read, or, sent chunked, as soon as it
    grows past ``limit``. Either way the rest is read and discarded (up to ``DRAIN_LIMIT_BYTES``)
    before the 413 is sent: a server that answers and closes while the client is still sending
    makes the client's kernel see a reset, often before it has read the answer. A fully drained
    connection stays open for the next request; one that is not (``Expect: 100-continue``, so the
    body was never sent, or past the drain limit) is closed after the 413 (``Connection: close``).
    A client that goes before its body is complete gets no answer and the app never runs.
    """

    def __init__(self, app: ASGIApp, limit: int, prefix: str = "/v1/") -> None:
        self.app, self.limit, self.prefix = app, limit, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            message = f"request body of {length} bytes exceeds the limit of {self.limit}"
            if "100-continue" in headers.get("expect", "").lower():  # the client waits: nothing sent
                await self._refuse(scope, receive, send, message, drained=False)
            else:
                drained = (
                    await _drain(receive, DRAIN_LIMIT_BYTES) if int(length) <= DRAIN_LIMIT_BYTES else False
                )
                if drained is not None:
                    await self._refuse(scope, receive, send, message, drained)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return  # the client went before its body was complete: nobody to answer
            chunk = event.get("body", b"")
            more = event.get("more_body", False)
            size += len(chunk)
            if size > self.limit:
                drained = await _drain(receive, DRAIN_LIMIT_BYTES - size) if more else True
                if drained is not None:
                    message = f"request body exceeds the limit of {self.limit} bytes"
                    await self._refuse(scope, receive, send, message, drained)
                return
            chunks.append(chunk)
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, message: str, drained: bool) -> None:
        headers = None if drained else {"Connection": "close"}
        error = ApiError(413, message, code="body_too_large", headers=headers)
        await error.response()(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> bool | None:
    """Read and discard the rest of a request body, about ``budget`` bytes at most: True when it was
    read to its end, False when the budget ran out first, None when the client went."""
    read = 0
    while read <= budget:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        read += len(event.get("body", b""))
        if not event.get("more_body", False):
            return True
    return False


def _api_error(exc: Exception, path: str) -> ApiError:
    """Any exception a request raised, as the error the client gets (the one shape; a traceback is
    logged, never sent)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModel):
        return ApiError(404, exc.args[0], code="model_not_found", param="model")
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return ApiError(400, "body: request body is not valid JSON", code="invalid_value", param="body")
        message, param = describe_validation_errors(errors)
        return ApiError(400, message, code="invalid_value", param=param or "body")
    if isinstance(exc, StarletteHTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return ApiError(exc.status_code, str(exc.detail), kind)
    log.error("unhandled error on %s", path, exc_info=exc)
    return ApiError(500, "internal server error", "server_error", "internal_error")


def create_app(settings: Settings, *, service: ChatService, ui: bool = True) -> FastAPI:
    """Build the app around a ready ``service`` (``qtha-serve`` loads the model and verifies every
    artifact before it builds the app, so the app never serves a half-loaded model)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("qtha-serve ready: models %s", ", ".join(app.state.service.model_names()))
        yield

    app = FastAPI(title="qtha", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.service = service
    app.state.started = int(time.time())
    app.state.auth = ApiKeyAuth(settings.api_keys)
    app.state.limiter = RateLimiter(settings.rate_limit_per_min)
    app.state.queue = WorkQueue(settings.max_concurrent, settings.max_queue)
    app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    async def error(request: Request, exc: Exception) -> JSONResponse:  # the one exception handler
        return _api_error(exc, request.url.path).response()

    for kind in (ApiError, UnknownModel, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, error)

    if ui:
        import gradio as gr

        from .ui import build_ui

        page = build_ui(lambda: app.state.service, locale=settings.locale)
        app = gr.mount_gradio_app(app, page, path="/ui")
    return app


def build_service(model: str, adapters: dict[str, str | Path], settings: Settings) -> ChatService:
    """Load the base model once and every adapter (verified, read-only) and wrap them in a service."""
    from .batching import on_own_thread
    from .chatlog import ChatLog
    from .embeddings import load_embedder
    from .engine import Engine

    engine = Engine(
        model, adapters, max_batch=settings.max_concurrent, max_batch_tokens=settings.max_batch_tokens
    )
    chatlog = (
        ChatLog(
            settings.chat_log,
            settings.chat_log_retention_days,
            log_safety_content=settings.safety_log_content,
        )
        if settings.chat_log
        else None
    )
    embedder = on_own_thread(load_embedder)  # torch work off this thread (serving.batching's docstring)
    return ChatService(engine, embedder=embedder, locale=settings.locale, chatlog=chatlog)
