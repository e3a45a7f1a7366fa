"""Frozen artifacts trained for two steps on the tiny chat model (one per domain, one LoRA), and a
real uvicorn server for end-to-end tests (:func:`live_server`)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_train_config, tmp_path_factory) -> dict[str, Path]:
    from training.recipe import train

    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name, data, method in (
        ("counseling", "synthetic-counseling:24", "qtha"),
        ("math", "synthetic-math:24", "qtha"),
        ("math-lora", "synthetic-math:24", "lora"),
    ):
        cfg = tiny_train_config(root / name, data=data, method=method)
        out[name] = Path(train(cfg, progress=False)["artifact"])
    return out


@dataclass
class LiveServer:
    """A real uvicorn server on a loopback port, run on its own event loop in a thread."""

    url: str
    port: int
    app: Any
    loop: asyncio.AbstractEventLoop

    def call(self, coro, timeout: float = 30.0):
        """Run ``coro`` on the server's event loop (where its work queue lives); return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def queue_stats(self) -> dict[str, int]:
        async def stats() -> dict[str, int]:
            return self.app.state.queue.stats()

        return self.call(stats())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn on 127.0.0.1 until the ``with`` block ends."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", port, app, loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
