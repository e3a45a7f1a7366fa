"""Fuzzing the API from its own OpenAPI schema (schemathesis + hypothesis; issue 15, item 7).

Schemathesis reads ``/openapi.json`` of the in-process app (real tiny model, real artifact) and
generates requests that fit the schema and requests that break it (wrong types, missing fields,
out-of-range numbers, odd strings), a bounded number per operation, from a fixed seed; hypothesis
drives them. Every answer must be below 500, and every 4xx must be the one error shape
``{"error": {message, type, code, param}}`` that app.py's exception handlers produce, without a
traceback.

(Schemathesis' own ``from_fixture`` loader does not run on pytest 9, so the schema is loaded from the
app fixture and its strategies are drawn with ``hypothesis.given``.)
"""

from __future__ import annotations

import json

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatService
from serving.settings import Settings

KEY = "fuzz-key-abcdef"
SEED = 1507
CASES = {
    ("POST", "/v1/chat/completions"): 80,
    ("POST", "/v1/completions"): 40,
    ("GET", "/v1/models/{model_id}"): 20,
    ("GET", "/v1/models"): 5,
    ("GET", "/health"): 5,
}
"""Generated requests per operation; about half fit the schema, half break it."""
MAX_TOKENS = 4
"""Generation is the slow part and not what is fuzzed: a valid max_tokens above this (or none, which
means 256) is lowered to it; invalid values are sent as generated."""


@pytest.fixture(scope="module")
def fuzz_app(tiny_chat_model_dir, tiny_artifacts):
    engine = Engine(str(tiny_chat_model_dir), {"math": tiny_artifacts["math"]})
    settings = Settings(api_keys=(KEY,), rate_limit_per_min=1_000_000)
    return create_app(settings, service=ChatService(engine), ui=False)


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def test_the_schema_lists_every_route(api_schema):
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert listed == set(CASES)


def _bounded(body):
    if isinstance(body, dict):
        tokens = body.get("max_tokens", 256)
        if type(tokens) is int and MAX_TOKENS < tokens <= 1024:
            body["max_tokens"] = MAX_TOKENS
    return body


def _check(case) -> int:
    case.body = _bounded(case.body)
    response = case.call(headers={"Authorization": f"Bearer {KEY}"})
    where = f"{case.method} {case.path} {json.dumps(case.body, default=repr)[:300]}"
    seen = f"{where} -> {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, seen
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, seen
        assert body["error"]["message"] and "Traceback" not in response.text, seen
    return response.status_code


@pytest.mark.parametrize(("method", "path"), list(CASES))
def test_no_server_error_and_one_error_shape(api_schema, method, path):
    operation = api_schema[path][method]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )
    codes: list[int] = []

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=CASES[(method, path)],
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def fuzz(case) -> None:
        codes.append(_check(case))

    fuzz()
    counts = {code: codes.count(code) for code in sorted(set(codes))}
    print(f"\n{method} {path}: {len(codes)} cases (seed {SEED}), status codes {counts}")
    if method == "POST":  # both kinds were sent: some answered, some refused
        assert 200 in counts and any(400 <= code < 500 for code in counts), counts
