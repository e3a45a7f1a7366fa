"""A client that goes away never costs the server its generation slot (issue 15, item 4).

Each request's slot is a lease owned by ``GenerationResponse.__call__``; it must come back exactly
once, and the generation must be cancelled, whatever the client does. Checked two ways:

- in-process, deterministically: the ASGI app called with a ``send`` that raises at the response
  start, at the first body chunk or mid-stream, and a ``receive`` that reports ``http.disconnect``
  at once (before or after the body);
- on a real uvicorn server, with raw sockets that close (FIN or RST) at every stage of an exchange,
  many times over, one after another and in concurrent bursts; then ordinary requests are served at
  once and ``/health`` shows nothing in flight.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time

import httpx
import pytest

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatResult, ChatService
from serving.settings import Settings
from tests.serving.conftest import live_server

KEY = "drop-key-abcdef"


class RecordingService(ChatService):
    """The real service; it also keeps the finish reason of every generation it ran."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.finished: list[str] = []

    def stream_choices(self, *args, **kwargs):
        for index, part in super().stream_choices(*args, **kwargs):
            if isinstance(part, ChatResult):
                self.finished.append(part.finish_reason)
            yield index, part


@pytest.fixture(scope="module")
def service(tiny_chat_model_dir, tiny_artifacts):
    engine = Engine(str(tiny_chat_model_dir), {"math": tiny_artifacts["math"]})
    return RecordingService(engine)


def _body(stream: bool, max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": "math",
            "messages": [{"role": "user", "content": "Count from one to one hundred."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        }
    ).encode()


# ---------------------------------------------------------------------------------------------------
# In-process: the ASGI app with a send or receive that fails at a chosen point
# ---------------------------------------------------------------------------------------------------


class Gone(OSError):
    """What a server's send raises when the peer has reset the connection."""


def _scope(body: bytes) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


async def _drop(
    app,
    *,
    stream: bool,
    fail_at: int | None,
    gone_at_once: bool,
    body_first: bool = True,
    max_tokens: int = 1024,
):
    """Run one request through ``app``: ``send`` raises on its ``fail_at``-th message (0: the response
    start, 1: the first body chunk, ...); with ``gone_at_once``, ``receive`` reports the client gone
    right after the body (or before it, without ``body_first``). Returns the messages sent."""
    body = _body(stream, max_tokens)
    sent: list[dict] = []
    delivered = not body_first
    ended = asyncio.Event()

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not gone_at_once:
            await ended.wait()  # a client still there: disconnect only after the response
        return {"type": "http.disconnect"}

    async def send(message):
        if fail_at is not None and len(sent) >= fail_at:
            raise Gone("connection reset by peer")
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ended.set()

    try:
        await app(_scope(body), receive, send)
    except Gone:
        pass
    return sent


async def _settled(queue, completed: int, seconds: float = 60.0) -> None:
    """Wait (bounded) until the queue has released ``completed`` leases and holds none."""
    deadline = time.monotonic() + seconds
    while (queue.completed < completed or queue.in_flight) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


CASES = {
    "send fails at the response start": {"stream": True, "fail_at": 0, "gone_at_once": False},
    "send fails at the first chunk": {"stream": True, "fail_at": 1, "gone_at_once": False},
    "send fails mid-stream": {"stream": True, "fail_at": 4, "gone_at_once": False},
    "receive: gone at once (stream)": {"stream": True, "fail_at": None, "gone_at_once": True},
    "receive: gone at once (plain)": {"stream": False, "fail_at": None, "gone_at_once": True},
    "send fails at the plain answer": {"stream": False, "fail_at": 0, "gone_at_once": False, "max_tokens": 8},
}


@pytest.mark.parametrize("case", list(CASES))
def test_slot_comes_back_exactly_once_and_generation_is_cancelled(service, case):
    app = create_app(Settings(max_concurrent=1, max_queue=2), service=service, ui=False)
    queue = app.state.queue
    kw = CASES[case]

    async def run() -> list[dict]:
        sent = await _drop(app, **kw)
        await _settled(queue, completed=1)
        return sent

    before = len(service.finished)
    sent = asyncio.run(run())
    assert queue.stats() == {"in_flight": 0, "waiting": 0, "completed": 1, "rejected": 0, "timed_out": 0}
    if kw["gone_at_once"]:  # gone before anything was generated: nothing is
        assert len(service.finished) == before and sent == []
    else:
        assert len(service.finished) == before + 1 and len(sent) == kw["fail_at"]
        if kw["stream"]:  # nobody read the reply: the generation stopped early
            assert service.finished[-1] == "cancelled"

    # the slot is free: the next request is admitted at once and answered in full
    async def ordinary() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return await client.post(
                "/v1/chat/completions", content=_body(False, 4), headers={"Content-Type": "application/json"}
            )

    resp = asyncio.run(ordinary())
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] >= 1
    assert queue.in_flight == 0 and queue.completed == 2


def test_client_gone_while_waiting_leaves_the_queue(service):
    app = create_app(Settings(max_concurrent=1, max_queue=2), service=service, ui=False)
    queue = app.state.queue
    before = len(service.finished)

    async def run() -> dict[str, int]:
        async with queue.slot():  # a long generation holds the only slot
            await _drop(app, stream=True, fail_at=None, gone_at_once=True)
            assert queue.waiting == 0 and queue.in_flight == 1
        return queue.stats()

    assert asyncio.run(run()) == {"in_flight": 0, "waiting": 0, "completed": 1, "rejected": 0, "timed_out": 0}
    assert len(service.finished) == before


def test_client_gone_before_its_body_never_reaches_the_queue(service):
    app = create_app(Settings(), service=service, ui=False)
    asyncio.run(_drop(app, stream=True, fail_at=None, gone_at_once=True, body_first=False))
    assert app.state.queue.stats()["completed"] == 0 and app.state.queue.in_flight == 0


def test_lease_is_released_once_however_often_it_is_released():
    from serving.security import WorkQueue

    async def run() -> dict[str, int]:
        queue = WorkQueue(max_concurrent=1, max_queue=1)
        lease = await queue.lease()
        assert lease.release() is True and lease.release() is False
        async with queue.slot() as held:  # the slot came back once: one holder again, not two
            assert queue.in_flight == 1 and not held.released
        return queue.stats()

    assert asyncio.run(run())["in_flight"] == 0


# ---------------------------------------------------------------------------------------------------
# A real uvicorn server, raw sockets closing at every stage
# ---------------------------------------------------------------------------------------------------

DROPS_PER_STAGE = 50
BURST = 20  # concurrent clients per burst, more than the server holds (8 running + 8 waiting)


@pytest.fixture(scope="module")
def server(service):
    app = create_app(
        Settings(
            api_keys=(KEY,), max_concurrent=8, max_queue=8, request_timeout_s=10, rate_limit_per_min=100_000
        ),
        service=service,
        ui=False,
    )
    with live_server(app) as live:
        yield live


def _request(body: bytes) -> bytes:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_until(sock: socket.socket, buf: bytes, done) -> bytes:
    while not done(buf):
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf


def _events(buf: bytes) -> int:
    return buf.count(b"data: ")


STAGES = {
    # the request itself is cut short: headers and half the body
    "request cut short": None,
    # the whole request, then gone before the response starts (the prompt is being prefilled)
    "before the response": lambda b: True,
    "after the response headers": lambda b: b"\r\n\r\n" in b,
    "after the first chunk": lambda b: _events(b) >= 1,
    "mid-stream": lambda b: _events(b) >= 3,
    "after the end": lambda b: b"[DONE]" in b or (b"\r\n\r\n" in b and not b.startswith(b"HTTP/1.1 200")),
}


UNANSWERED = ("request cut short", "before the response")


def _drop_once(port: int, stage: str, reset: bool) -> bytes:
    """One client that goes at ``stage``; ``reset`` closes with RST (SO_LINGER 0) instead of FIN."""
    payload = _request(_body(True, max_tokens=24))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        done = STAGES[stage]
        if done is None:
            sock.sendall(payload[: len(payload) - len(payload) // 4])
            return b""
        sock.sendall(payload)
        return _read_until(sock, b"", done)


def _health(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=30).json()["queue"]


def _settle(server, seconds: float = 30.0) -> None:
    """Wait until the server answers a plain request (a full queue says 429 meanwhile; a wedged
    server never answers 200: it says 503 once no slot came within request_timeout_s)."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    deadline = time.monotonic() + seconds
    while True:
        resp = httpx.post(
            f"{server.url}/v1/chat/completions", content=_body(False, 1), headers=headers, timeout=seconds
        )
        if resp.status_code == 200:
            return
        assert resp.status_code == 429 and time.monotonic() < deadline, resp.text
        time.sleep(0.05)


def _wait_idle(server, seconds: float = 30.0) -> dict:
    deadline = time.monotonic() + seconds
    stats = server.queue_stats()
    while (stats["in_flight"] or stats["waiting"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = server.queue_stats()
    return stats


def test_dropped_clients_at_every_stage_never_wedge_the_server(server):
    start = server.queue_stats()
    seen: dict[str, list[int]] = {stage: [] for stage in STAGES}
    burst: dict[str, list[int]] = {stage: [] for stage in STAGES}

    def status(reply: bytes) -> int:
        return int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else 0  # 0: went before any answer

    for stage in STAGES:
        for i in range(DROPS_PER_STAGE):
            seen[stage].append(status(_drop_once(server.port, stage, reset=bool(i % 2))))
            # a stage that reads the answer must get one: a wedged server answers 503 (no slot)
            assert stage in UNANSWERED or seen[stage][-1] == 200, (stage, i, seen[stage])
        _settle(server)  # clients that never wait arrive faster than they are served: let them drain
    # concurrent bursts: clients waiting in the queue go too, at every stage
    for stage in STAGES:

        def one(i: int, stage: str = stage) -> None:
            burst[stage].append(status(_drop_once(server.port, stage, reset=bool(i % 2))))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)

    streamed = [s for s in STAGES if s not in UNANSWERED]

    stats = _wait_idle(server)
    assert stats["in_flight"] == 0 and stats["waiting"] == 0, stats
    assert stats["completed"] - start["completed"] >= len(streamed) * DROPS_PER_STAGE
    assert stats["timed_out"] == start["timed_out"]
    health = _health(server)
    assert health["in_flight"] == 0 and health["waiting"] == 0

    # ordinary requests are served at once, plain and streamed
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        for _ in range(3):
            plain = client.post("/v1/chat/completions", content=_body(False, 4))
            assert plain.status_code == 200, plain.text
        with client.stream("POST", "/v1/chat/completions", content=_body(True, 4)) as resp:
            assert resp.status_code == 200 and "data: [DONE]" in resp.read().decode()
    assert _wait_idle(server)["in_flight"] == 0
    summary = {stage: {"in turn": _counts(seen[stage]), "burst": _counts(burst[stage])} for stage in STAGES}
    print(f"\nstatus per stage (0: gone before any answer): {json.dumps(summary)}")
    print(f"queue before {start}, after {_health(server)}")


def _counts(codes: list[int]) -> dict[int, int]:
    return {code: codes.count(code) for code in sorted(set(codes))}
