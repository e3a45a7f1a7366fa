"""OpenAI-compatible protocol models: bounds on every field, ignored extras, exact response shapes.

The response shapes are checked twice: against the key sets OpenAI sends, and by parsing our JSON with
the `openai` SDK's own response types (what client code does).
"""

from __future__ import annotations

import json

import openai.types.chat as oai
import pytest
from openai.types import Model as OaiModel
from pydantic import ValidationError

from serving.protocol import (
    MAX_CONTENT_CHARS,
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    CompletionRequest,
    DeltaMessage,
    ErrorResponse,
    ModelCard,
    ModelList,
    QthaInfo,
    ResponseMessage,
    Usage,
    describe_validation_errors,
    new_completion_id,
)
from serving.sampling import SamplingParams

USER = [{"role": "user", "content": "hello"}]


def _req(**fields):
    return ChatCompletionRequest.model_validate({"messages": USER, **fields})


def test_defaults():
    r = _req()
    assert (r.model, r.max_tokens, r.temperature, r.top_p, r.stream, r.seed, r.n) == (
        "auto",
        256,
        0.7,
        1.0,
        False,
        None,
        1,
    )
    assert r.stop_sequences == [] and r.include_usage is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", 1025),
        ("max_tokens", 1.5),
        ("max_tokens", "10"),
        ("temperature", -0.01),
        ("temperature", 2.01),
        ("temperature", True),
        ("temperature", "0.5"),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("frequency_penalty", 2.01),
        ("frequency_penalty", -2.01),
        ("presence_penalty", "1"),
        ("presence_penalty", 2.5),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stop", [""]),
        ("stop", "x" * 129),
        ("stop", 5),
        ("stream", "yes"),
        ("stream", 1),
        ("seed", 2**64),
        ("seed", "42"),
        ("user", "u" * 257),
        ("model", ""),
        ("model", "m" * 129),
        ("model", 3),
        ("n", 9),
        ("messages", []),
        ("messages", USER * 65),
        ("messages", [{"role": "robot", "content": "hi"}]),
        ("messages", [{"role": "user", "content": "x" * (MAX_CONTENT_CHARS + 1)}]),
        ("messages", [{"role": "user", "content": 5}]),
        ("messages", [{"role": "user"}]),
        ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        ("messages", "hello"),
        ("stream_options", {"include_usage": "yes"}),
        ("tools", [{"type": "function", "function": {"name": "add"}}]),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
    ],
)
def test_out_of_range_field_is_rejected_and_named(field, value):
    with pytest.raises(ValidationError) as info:
        _req(**{field: value})
    message, param = describe_validation_errors(info.value.errors())
    assert param is not None and param.startswith(field), (param, message)
    assert len(message) < 600


def test_bounds_accept_their_edges():
    r = _req(
        max_tokens=1024, temperature=2, top_p=1e-6, stop=["a", "b", "c", "d"], seed=-(2**63), user="u" * 256
    )
    assert r.max_tokens == 1024 and r.temperature == 2.0 and isinstance(r.temperature, float)
    assert _req(max_tokens=1, temperature=0.0).temperature == 0.0
    # found by the fuzzer: logits / 5e-324 = inf; what reaches the engine is greedy decoding
    assert _req(temperature=5e-324).sampling_params().temperature == 0.0
    assert _req(temperature=0.01).temperature == 0.01
    r = _req(frequency_penalty=-2, presence_penalty=2.0)
    assert (r.frequency_penalty, r.presence_penalty) == (-2.0, 2.0)
    assert (_req().frequency_penalty, _req(presence_penalty=None).presence_penalty) == (0.0, 0.0)
    assert _req(messages=USER * 64).messages[-1].content == "hello"


def test_extra_fields_are_ignored():
    r = _req(frequency_penalty=0.5, logit_bias={"1": 2}, tools=[], foo={"bar": 1})
    dumped = r.model_dump()
    assert not {"logit_bias", "foo"} & dumped.keys() and not r.tools  # no tools: nothing refused
    assert _req(response_format={"type": "text"}).response_format == {"type": "text"}
    assert _req(max_completion_tokens=7).max_tokens == 7
    assert dumped["frequency_penalty"] == 0.5
    msg = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}
    )
    assert msg.messages[0].model_dump() == {"role": "user", "content": "hi"}


def test_openai_client_spellings():
    r = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
            "max_completion_tokens": 12,
            "temperature": None,
            "top_p": None,
            "stop": "###",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert r.messages[0].content == "ab"
    assert (r.max_tokens, r.temperature, r.top_p) == (12, 0.7, 1.0)
    assert r.stop_sequences == ["###"] and r.include_usage
    with pytest.raises(ValidationError):
        _req(max_completion_tokens=5000)


def test_sampling_params_carry_every_decoding_field():
    chat = _req(
        max_tokens=9, temperature=0.5, top_p=0.9, stop="##", seed=3, frequency_penalty=1, presence_penalty=-1
    )
    chat = chat.model_copy(update={"n": 2, "logprobs": True, "top_logprobs": 4})
    assert chat.sampling_params() == SamplingParams(
        max_tokens=9,
        temperature=0.5,
        top_p=0.9,
        stop=("##",),
        seed=3,
        frequency_penalty=1.0,
        presence_penalty=-1.0,
        n=2,
        logprobs=4,
    )
    assert _req().sampling_params().logprobs is None
    text = CompletionRequest.model_validate({"prompt": "hi", "logprobs": 0})
    assert text.sampling_params() == SamplingParams(max_tokens=16, temperature=0.7, logprobs=0)


def test_validation_message_names_field_and_truncates_value():
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": [{"role": "hacker" * 100, "content": "x"}]})
    message, param = describe_validation_errors(info.value.errors())
    assert param == "messages[0].role"
    assert "messages[0].role" in message and "hacker" in message
    assert message.count("hacker") < 10  # the 600-character value is not echoed back


def _completion() -> ChatCompletion:
    return ChatCompletion(
        model="counseling",
        choices=[Choice(message=ResponseMessage(content="Hi there."), finish_reason="stop")],
        usage=Usage.of(11, 3),
        qtha=QthaInfo(adapter="counseling", routed=True, safety={"crisis": False}, scores={"math": 0.1}),
    )


def test_chat_completion_shape_matches_openai():
    data = json.loads(json.dumps(_completion().body()))  # the body the server sends
    assert set(data) == {"id", "object", "created", "model", "choices", "usage", "qtha"}
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert set(data["choices"][0]) == {"index", "message", "finish_reason"}  # no logprobs asked for
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hi there."}
    assert data["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert data["qtha"]["adapter"] == "counseling" and data["qtha"]["routed"] is True

    parsed = oai.ChatCompletion.model_validate(data)  # what the OpenAI SDK does with the body
    assert parsed.choices[0].message.content == "Hi there."
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and parsed.usage.total_tokens == 14


def test_chunk_shapes_match_openai_stream():
    cid, created = new_completion_id(), 1_700_000_000
    first = ChatCompletionChunk(
        id=cid,
        created=created,
        model="math",
        choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))],
        qtha=QthaInfo(adapter="math", routed=False),
    )
    middle = ChatCompletionChunk(
        id=cid, created=created, model="math", choices=[ChunkChoice(delta=DeltaMessage(content="4"))]
    )
    last = ChatCompletionChunk(
        id=cid,
        created=created,
        model="math",
        choices=[ChunkChoice(delta=DeltaMessage(), finish_reason="stop")],
    )
    usage = ChatCompletionChunk(id=cid, created=created, model="math", choices=[], usage=Usage.of(5, 1))

    events = [c.sse() for c in (first, middle, last, usage)]
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    assert SSE_DONE == "data: [DONE]\n\n"
    payloads = [json.loads(e[len("data: ") :]) for e in events]
    assert payloads[0]["object"] == "chat.completion.chunk"
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[1]["choices"][0]["delta"] == {"content": "4"}
    assert payloads[2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert "usage" not in payloads[0] and "qtha" not in payloads[1]  # None is left out, as sent
    assert payloads[3]["choices"] == [] and payloads[3]["usage"]["total_tokens"] == 6
    assert {p["id"] for p in payloads} == {cid}
    for p in payloads:
        assert set(p) >= {"id", "object", "created", "model", "choices"}
        oai.ChatCompletionChunk.model_validate(p)


def test_model_list_and_error_shapes():
    models = ModelList(
        data=[ModelCard(id="auto"), ModelCard(id="base"), ModelCard(id="math", qtha={"method": "qtha"})]
    )
    data = json.loads(models.model_dump_json())
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["auto", "base", "math"]
    assert set(data["data"][0]) == {"id", "object", "created", "owned_by", "qtha"}
    assert data["data"][0]["object"] == "model"
    OaiModel.model_validate(data["data"][2])

    event = ErrorResponse.of("bad temperature", param="temperature").sse()
    assert event.startswith("data: ") and event.endswith("\n\n")
    err = json.loads(event.removeprefix("data: "))
    assert (
        err
        == ErrorResponse.of("bad temperature", param="temperature").body()
        == {
            "error": {
                "message": "bad temperature",
                "type": "invalid_request_error",
                "code": None,
                "param": "temperature",
            }
        }
    )
    err = ErrorResponse.of("slow down", type="rate_limit_error", code=429).body()
    assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "code", "param"}
