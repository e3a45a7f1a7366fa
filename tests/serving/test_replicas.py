"""Scaling out (docs/scaling.md): two real uvicorn replicas of the server on loopback behind a small
round-robin proxy; one replica is stopped mid-test and every request still succeeds through the other."""

from __future__ import annotations

import contextlib
import threading

import httpx
import pytest

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatService
from serving.settings import Settings
from tests.serving.conftest import live_server

KEY = "replica-key-abcdef"
ASK = {"model": "math", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 4, "temperature": 0}


class RoundRobinProxy:
    """A tiny load balancer as an ASGI app: each request goes to the next upstream in turn; an upstream
    that refuses the connection (nothing was sent, so retrying a POST is safe) is skipped for the next.
    Responses are buffered (enough for non-streamed calls). ``served`` lists the upstream of each answer."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.served: list[str] = []
        self._next = 0
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")]
        with self._lock:
            start, self._next = self._next, self._next + 1
        for attempt in range(len(self.upstreams)):
            upstream = self.upstreams[(start + attempt) % len(self.upstreams)]
            try:
                async with httpx.AsyncClient(base_url=upstream, timeout=60) as client:
                    reply = await client.request(
                        scope["method"],
                        scope["path"],
                        content=body,
                        headers=headers,
                        params=scope["query_string"],
                    )
            except httpx.ConnectError:
                continue
            self.served.append(upstream)
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in reply.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
                    ],
                }
            )
            await send({"type": "http.response.body", "body": reply.content})
            return
        await send(
            {"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"no replica answered"})


@pytest.fixture(scope="module")
def engines(tiny_chat_model_dir, tiny_artifacts) -> list[Engine]:
    # One process per replica in production; here each replica has its own engine (own model copy).
    return [Engine(str(tiny_chat_model_dir), {"math": tiny_artifacts["math"]}) for _ in range(2)]


def test_two_replicas_behind_a_proxy_survive_one_going_away(engines):
    from openai import OpenAI

    with contextlib.ExitStack() as stack:
        replicas = []
        for engine in engines:
            app = create_app(Settings(api_keys=(KEY,)), service=ChatService(engine))
            replica = contextlib.ExitStack()
            replicas.append((replica, replica.enter_context(live_server(app))))
            stack.enter_context(replica)
        proxy = RoundRobinProxy([srv.url for _, srv in replicas])
        front = stack.enter_context(live_server(proxy))
        client = OpenAI(base_url=f"{front.url}/v1", api_key=KEY, max_retries=0)

        for _ in range(2):  # the balancer's health check: each replica answers /health itself
            assert all(httpx.get(f"{srv.url}/health").json()["status"] == "ok" for _, srv in replicas)
        before = [client.chat.completions.create(**ASK).choices[0].message.content for _ in range(4)]
        assert len(set(before)) == 1  # stateless replicas of the same artifact answer alike
        assert sorted(proxy.served) == sorted([srv.url for _, srv in replicas] * 2)  # round robin

        gone, (_, alive) = replicas[0], replicas[1]
        gone[0].close()  # replica 0 shuts down: its port now refuses connections
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gone[1].url}/health")
        proxy.served.clear()
        after = [client.chat.completions.create(**ASK).choices[0].message.content for _ in range(4)]
        assert after == before and proxy.served == [alive.url] * 4
        models = client.models.list()
        assert [m.id for m in models] == ["auto", "base", "math"]


def test_client_side_failover_over_a_list_of_base_urls(engines):
    """Without a balancer: the client tries the next replica when one refuses the connection (the OpenAI
    SDK raises APIConnectionError once its own retries on that URL are spent)."""
    import openai
    from openai import OpenAI

    app = create_app(Settings(api_keys=(KEY,)), service=ChatService(engines[1]))
    with live_server(app) as alive:
        with live_server(create_app(Settings(api_keys=(KEY,)), service=ChatService(engines[0]))) as soon_gone:
            urls = [soon_gone.url, alive.url]
        clients = [OpenAI(base_url=f"{u}/v1", api_key=KEY, max_retries=1) for u in urls]

        def ask() -> str:
            for c in clients:
                try:
                    return c.chat.completions.create(**ASK).choices[0].message.content
                except openai.APIConnectionError:
                    continue
            raise AssertionError("no replica answered")

        answers = [ask() for _ in range(3)]
        assert len(answers) == 3 and len(set(answers)) == 1
        with pytest.raises(openai.APIConnectionError):
            clients[0].chat.completions.create(**ASK)
