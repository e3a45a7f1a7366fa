"""``create_app(settings, ...)``: the FastAPI app with the API routes and the chat page at /ui.

The service (engine + safety + routing) is built in the lifespan and put on ``app.state``; every
error, ours or the framework's, leaves as one JSON shape ``{"error": {message, type, code, param}}``
with no traceback; bodies over ``settings.max_body_bytes`` are refused with 413 before being read.
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api import ApiError, router
from .security import ApiKeyAuth, RateLimiter, WorkQueue
from .service import ChatService, UnknownModel
from .settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("qtha.serve")


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

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH") and request.url.path.startswith("/v1/"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return _error(
                    411, "a Content-Length header is required", "invalid_request_error", "length_required"
                )
            if int(length) > settings.max_body_bytes:
                return _error(
                    413,
                    f"request body of {length} bytes exceeds the limit of {settings.max_body_bytes}",
                    "invalid_request_error",
                    "body_too_large",
                )
        return await call_next(request)

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

    engine = Engine(model, adapters)
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
