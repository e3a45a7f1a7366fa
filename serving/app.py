"""``create_app(settings, ...)``: the FastAPI app with the API routes and the chat page at /ui.

The service (engine + safety + routing) is built in the lifespan and put on ``app.state``; every
error, ours or the framework's, leaves as one JSON shape ``{"error": {message, type, code, param}}``
with no traceback. Request bodies to /v1/ are read by :class:`BodyLimit` before anything else sees
them: one over ``settings.max_body_bytes`` (by its Content-Length, or as it grows when sent chunked)
is read to the end and discarded, then answered 413 in that shape, so the client, still sending,
reads the answer instead of a reset connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import ApiError, router
from .security import ApiKeyAuth, RateLimiter, WorkQueue
from .service import ChatService, UnknownModel
from .settings import Settings

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger("qtha.serve")

DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
"""Most bytes of a too-large body read (and discarded) before its 413. Past this the 413 is sent with
`Connection: close` without reading further, and a client still sending may see a reset."""


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


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
        response = _error(413, message, "invalid_request_error", "body_too_large", headers=headers)
        await response(scope, receive, send)


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


def create_app(
    settings: Settings,
    *,
    service: ChatService | None = None,
    service_factory: Callable[[], ChatService] | None = None,
    ui: bool = True,
) -> FastAPI:
    """Build the app. Pass a ready ``service`` (tests, evaluation) or a ``service_factory`` that the
    lifespan calls (``qtha-serve``: loads the model and verifies every artifact before serving)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.service is None and service_factory is not None:
            app.state.service = service_factory()
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

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel):
        return _error(404, exc.args[0], "invalid_request_error", "model_not_found", "model")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        where = ".".join(loc) or "body"
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message, where = "request body is not valid JSON", "body"
        return _error(400, f"{where}: {message}", "invalid_request_error", "invalid_value", where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(
            exc.status_code,
            str(exc.detail),
            "invalid_request_error" if exc.status_code < 500 else "server_error",
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal server error", "server_error", "internal_error")

    if ui:
        import gradio as gr

        from .ui import build_ui

        page = build_ui(lambda: app.state.service, locale=settings.locale)
        app = gr.mount_gradio_app(app, page, path="/ui")
    return app


def build_service(model: str, adapters: dict[str, str | Path], settings: Settings) -> ChatService:
    """Load the base model once and every adapter (verified, read-only) and wrap them in a service."""
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
    return ChatService(engine, embedder=load_embedder(), locale=settings.locale, chatlog=chatlog)
