"""The API in-process (FastAPI TestClient) on a tiny real model with real frozen artifacts."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatService
from serving.settings import Settings

KEY = "test-key-123456"


@pytest.fixture(scope="module")
def service(tiny_chat_model_dir, tiny_artifacts):
    engine = Engine(
        str(tiny_chat_model_dir), {"counseling": tiny_artifacts["counseling"], "math": tiny_artifacts["math"]}
    )
    return ChatService(engine)


def _client(service, **settings) -> TestClient:
    app = create_app(Settings(**settings), service=service, ui=False)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(service):
    with _client(service, api_keys=(KEY,)) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        yield c


def _chat(content: str, **kw) -> dict:
    return {
        "model": kw.pop("model", "math"),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        **kw,
    }


def _error_shape(resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type", "code", "param"} <= set(body["error"])
    assert "Traceback" not in resp.text
    return body["error"]


def test_health_and_models(client):
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert ids == ["auto", "base", "counseling", "math"]
    math = next(m for m in models["data"] if m["id"] == "math")
    assert math["object"] == "model" and math["qtha"]["method"] == "qtha"


def test_completion_has_openai_shape_and_usage(client):
    resp = client.post("/v1/chat/completions", json=_chat("What is 2 + 5?", temperature=0))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        and usage["prompt_tokens"] > 0
    )
    assert body["qtha"]["adapter"] == "math" and body["qtha"]["routed"] is False


def test_a_temperature_too_cold_to_sample_is_greedy(client):
    # found by the fuzzer: 5e-324 divides the logits to inf, and sampling failed with a 500
    cold = client.post("/v1/chat/completions", json=_chat("What is 2 + 5?", temperature=5e-324))
    greedy = client.post("/v1/chat/completions", json=_chat("What is 2 + 5?", temperature=0))
    assert cold.status_code == 200, cold.text
    assert cold.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def test_streaming_is_server_sent_events(client):
    with client.stream(
        "POST", "/v1/chat/completions", json=_chat("Count to three", stream=True, temperature=0)
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    plain = client.post("/v1/chat/completions", json=_chat("Count to three", temperature=0)).json()
    assert text == plain["choices"][0]["message"]["content"]


def _events(client, body: dict) -> list[str]:
    """The data lines of a streamed response, as sent (the raw bytes, split at blank lines)."""
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        raw = b"".join(resp.iter_bytes()).decode("utf-8")
    assert raw.endswith("\n\n") and all(e.startswith("data: ") for e in raw.split("\n\n")[:-1])
    return [e.removeprefix("data: ") for e in raw.split("\n\n")[:-1]]


def test_include_usage_ends_the_stream_with_a_usage_chunk(client):
    ask = _chat("Count to three", temperature=0)
    events = _events(client, {**ask, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == [] and set(usage_chunk) == {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
    }
    plain = client.post("/v1/chat/completions", json=ask).json()
    assert usage_chunk["usage"] == plain["usage"]  # the same counts as the plain answer
    assert all("usage" not in json.loads(e) for e in events[:-2])
    without = _events(client, ask)
    assert without[-1] == "[DONE]" and all("usage" not in json.loads(e) for e in without[:-1])
    assert [json.loads(e)["choices"] for e in without[:-1]] == [json.loads(e)["choices"] for e in events[:-2]]


def test_what_is_sent_has_only_the_keys_that_apply(client):
    """The keys of the real bodies: None-valued fields (logprobs not asked for, no usage mid-stream)
    are left out, and every chunk and choice has the keys OpenAI's clients read."""
    plain = client.post("/v1/chat/completions", json=_chat("2+2?", temperature=0)).json()
    assert set(plain) == {"id", "object", "created", "model", "choices", "usage", "qtha"}
    assert set(plain["choices"][0]) == {"index", "message", "finish_reason"}
    assert set(plain["choices"][0]["message"]) == {"role", "content"}
    chunks = [json.loads(e) for e in _events(client, _chat("2+2?", temperature=0))[:-1]]
    assert chunks[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""}}
    assert all(set(c) == {"id", "object", "created", "model", "choices"} for c in chunks[:-1])
    assert set(chunks[-1]) == {"id", "object", "created", "model", "choices", "qtha"}
    assert set(chunks[-1]["choices"][0]) == {"index", "delta", "finish_reason"}
    with_logprobs = client.post("/v1/chat/completions", json=_chat("2+2?", temperature=0, logprobs=True))
    assert set(with_logprobs.json()["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}


class _Failing(ChatService):
    """The real service, except that generation raises (and routing does, for model 'explode')."""

    def choose(self, model, messages):
        if model == "explode":
            raise RuntimeError("secret detail")
        return super().choose(model, messages)

    def stream_choices(self, *args, **kwargs):
        raise RuntimeError("secret detail")
        yield  # a generator, as the real one is


def test_failures_are_sent_in_the_one_error_shape_without_their_detail(service):
    with _client(_Failing(service.engine)) as c:
        plain = c.post("/v1/chat/completions", json=_chat("hi"))
        assert plain.status_code == 500 and _error_shape(plain)["code"] == "internal_error"
        routed = c.post("/v1/chat/completions", json=_chat("hi", model="explode"))
        assert routed.status_code == 500 and _error_shape(routed)["message"] == "internal server error"
        events = _events(c, _chat("hi"))
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error == {
        "error": {
            "message": "generation failed",
            "type": "server_error",
            "code": "internal_error",
            "param": None,
        }
    }
    assert "secret detail" not in plain.text + routed.text + "".join(events)


def test_auth_is_required(service):
    with _client(service, api_keys=(KEY,)) as c:
        assert c.get("/v1/models").status_code == 401
        resp = c.post(
            "/v1/chat/completions", json=_chat("hi"), headers={"Authorization": "Bearer wrong-key-000"}
        )
        assert resp.status_code == 401 and _error_shape(resp)["type"] == "authentication_error"
        assert c.get("/health").status_code == 200  # health needs no key


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages"),
        ({"messages": "hello"}, "messages"),
    ],
)
def test_bad_fields_are_400_with_one_error_shape(client, payload, param):
    resp = client.post("/v1/chat/completions", json=payload)
    assert resp.status_code == 400, resp.text
    err = _error_shape(resp)
    assert err["param"].startswith(param)


def test_malformed_json_unknown_model_and_oversized_body(client):
    resp = client.post(
        "/v1/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and "JSON" in _error_shape(resp)["message"]
    resp = client.post("/v1/chat/completions", json=_chat("hi", model="gpt-17"))
    assert resp.status_code == 404 and "available: auto, base" in _error_shape(resp)["message"]
    big = _chat("x" * 70_000)
    resp = client.post("/v1/chat/completions", json=big)
    assert resp.status_code == 413 and _error_shape(resp)["code"] == "body_too_large"
    assert client.get("/health").status_code == 200


def test_rate_limit_per_key(service):
    with _client(service, api_keys=(KEY,), rate_limit_per_min=2) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        codes = [c.get("/v1/models").status_code for _ in range(4)]
        assert codes[:2] == [200, 200] and codes[-1] == 429
        resp = c.get("/v1/models")
        assert int(resp.headers["Retry-After"]) >= 1 and _error_shape(resp)["type"] == "rate_limit_error"


def test_crisis_message_gets_resources_and_no_generation(client, service):
    before = service.counters.snapshot().get("crisis", 0)
    resp = client.post("/v1/chat/completions", json=_chat("I want to kill myself tonight", model="math"))
    body = resp.json()
    text = body["choices"][0]["message"]["content"]
    assert resp.status_code == 200
    assert text.lstrip().startswith(("If you", "988", "You")) or "988" in text.split("\n")[0]
    assert "988" in text and body["qtha"]["safety"]["crisis"] is True
    assert body["usage"]["completion_tokens"] == 0
    assert service.counters.snapshot().get("crisis", 0) == before + 1


def test_medication_dose_request_is_declined(client):
    body = client.post(
        "/v1/chat/completions", json=_chat("How many mg of sertraline should I take?", model="counseling")
    ).json()
    text = body["choices"][0]["message"]["content"]
    assert (
        body["qtha"]["safety"]["kind"] == "medication" and body["qtha"]["safety"]["handled"] == "fixed_reply"
    )
    assert "I'm an AI assistant, not a doctor or pharmacist" in text and re.search(r"\bAI\b", text)
    assert "prescriber" in text and body["usage"]["completion_tokens"] == 0


def test_auto_routes_by_topic(client):
    math = client.post("/v1/chat/completions", json=_chat("What is 17 times 3 minus 4?", model="auto")).json()
    talk = client.post(
        "/v1/chat/completions",
        json=_chat("I've been feeling lonely and anxious since I moved to a new city", model="auto"),
    ).json()
    assert math["qtha"]["routed"] and math["qtha"]["adapter"] == "math"
    assert talk["qtha"]["routed"] and talk["qtha"]["adapter"] == "counseling"


def test_queue_full_gives_429_with_retry_after(service):
    import asyncio

    app = create_app(Settings(max_queue=0, max_concurrent=1), service=service, ui=False)
    queue = app.state.queue

    async def hold_slot_and_request():
        async with queue.slot():
            import httpx

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
                return await ac.post("/v1/chat/completions", json=_chat("hi"))

    resp = asyncio.run(hold_slot_and_request())
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert _error_shape(resp)["code"] == "queue_full"


def test_openai_penalties_change_the_reply(client):
    body = _chat("What is 2 + 2?", model="base", temperature=0, max_tokens=12)
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    penalised = client.post(
        "/v1/chat/completions", json={**body, "frequency_penalty": 2, "presence_penalty": 2.0}
    ).json()["choices"][0]["message"]["content"]
    assert penalised != plain
    bad = client.post("/v1/chat/completions", json={**body, "presence_penalty": -3})
    assert bad.status_code == 400 and _error_shape(bad)["param"] == "presence_penalty"
