"""OpenAI's `n` (several choices, several prompts) and `logprobs`/`top_logprobs`: the values in process
against the tiny model's own logits, then end to end with the stock OpenAI SDK on a real uvicorn server."""

from __future__ import annotations

import math

import pytest
import torch

from serving.app import create_app
from serving.batching import Request
from serving.engine import BASE, Engine
from serving.sampling import SamplingParams, choice_seed
from serving.service import ChatService
from serving.settings import Settings
from tests.serving.conftest import live_server

KEY = "options-key-abcdef"
ASK = [{"role": "user", "content": "What is 2+2? Explain."}]


@pytest.fixture(scope="module")
def engine(tiny_chat_model_dir, tiny_artifacts) -> Engine:
    return Engine(str(tiny_chat_model_dir), {"math": tiny_artifacts["math"]})


def _raw(engine: Engine, adapter: str, **kw) -> tuple[list[int], dict]:
    """A request straight to the scheduler: (prompt ids, its final result with raw logprob records)."""
    ids = engine.prompt_ids(ASK, adapter)
    req = engine.scheduler.submit(Request(ids, adapter, SamplingParams(**kw)))
    while isinstance(item := req.out.get(), str):
        pass
    assert isinstance(item, dict), item
    return ids, item


def _reference_logprobs(engine: Engine, adapter: str, ids: list[int], tokens: list[int]) -> torch.Tensor:
    """log_softmax of one uncached forward's logits at the positions that chose ``tokens``: (T, V)."""
    with engine._use(adapter) as model, torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids + tokens])).logits[0].float()
    return torch.log_softmax(logits[len(ids) - 1 : len(ids) - 1 + len(tokens)], dim=-1)


@pytest.mark.parametrize("adapter", [BASE, "math"])
def test_greedy_logprobs_are_the_models_log_softmax_and_the_chosen_token_is_the_max(engine, adapter):
    ids, final = _raw(engine, adapter, max_tokens=8, logprobs=5, ignore_eos=True)
    records = final["logprobs"]
    assert len(records) == 8 == final["completion_tokens"]
    tokens = [token for token, _, _ in records]
    reference = _reference_logprobs(engine, adapter, ids, tokens)
    for t, (token, logprob, top) in enumerate(records):
        assert len(top) == 5 and top[0][0] == token  # greedy: the chosen token is the most likely
        assert logprob == max(lp for _, lp in top)
        assert logprob == pytest.approx(float(reference[t, token]), abs=1e-4)
        best = torch.topk(reference[t], 5)
        assert [i for i, _ in top] == best.indices.tolist()
        assert [lp for _, lp in top] == pytest.approx(best.values.tolist(), abs=1e-4)


def test_sampled_logprobs_are_those_of_the_tempered_distribution(engine):
    ids, final = _raw(engine, BASE, max_tokens=6, temperature=0.7, seed=11, logprobs=0, ignore_eos=True)
    tokens = [token for token, _, top in final["logprobs"] if top == []]
    assert len(tokens) == 6
    reference = torch.log_softmax(_reference_logprobs(engine, BASE, ids, tokens) / 0.7, dim=-1)
    for t, (token, logprob, _) in enumerate(final["logprobs"]):
        assert logprob == pytest.approx(float(reference[t, token]), abs=1e-4)
    _, plain = _raw(engine, BASE, max_tokens=3)
    assert plain["logprobs"] is None  # nothing recorded unless asked for


def test_token_logprobs_rebuild_the_text_and_its_offsets(engine):
    choices = list(engine.stream_choices(ASK, "math", SamplingParams(logprobs=2, max_tokens=12)))
    gen = choices[-1][1]
    assert gen.logprobs is not None and len(gen.logprobs) >= 1
    assert b"".join(t.raw for t in gen.logprobs).decode("utf-8", "replace") == gen.text
    for t in gen.logprobs:
        assert gen.text[t.start : t.end] == t.raw.decode("utf-8", "ignore") or "\ufffd" in t.token
        assert len(t.top) == 2 and t.top[0][2] >= t.top[1][2]
    assert [t.start for t in gen.logprobs] == sorted(t.start for t in gen.logprobs)


def _texts(engine: Engine, **kw) -> list[str]:
    out: dict[int, str] = {}
    for index, part in engine.stream_choices(ASK, BASE, SamplingParams(max_tokens=8, **kw)):
        if not isinstance(part, str):
            out[index] = part.text
    return [out[i] for i in sorted(out)]


def test_n_choices_seeded_repeatable_and_different_greedy_identical(engine):
    seeded = _texts(engine, n=3, temperature=1.0, seed=5)
    assert len(seeded) == 3 and len(set(seeded)) >= 2
    assert _texts(engine, n=3, temperature=1.0, seed=5) == seeded
    assert _texts(engine, n=1, temperature=1.0, seed=5) == seeded[:1]  # choice 0 uses the seed itself
    assert choice_seed(5, 0) == 5 and len({choice_seed(5, i) for i in range(8)}) == 8
    greedy = _texts(engine, n=3, temperature=0.0)
    assert len(greedy) == 3 and len(set(greedy)) == 1
    with pytest.raises(ValueError, match="n: expected"):
        _texts(engine, n=9)


def test_service_fixed_replies_have_no_logprobs_and_count_one_event(engine):
    service = ChatService(engine)
    crisis = [{"role": "user", "content": "I want to end my life tonight"}]
    before = service.counters.snapshot().get("crisis", 0)
    parts = list(service.stream_choices(crisis, "math", SamplingParams(n=2, logprobs=3, max_tokens=4)))
    results = [p for _, p in parts if not isinstance(p, str)]
    assert len(results) == 2 and all("988" in r.text and r.logprobs is None for r in results)
    assert service.counters.snapshot().get("crisis", 0) == before + 1


# ---------------------------------------------------------------------------------------------------
# End to end: the OpenAI SDK against a real uvicorn server
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(engine):
    from openai import OpenAI

    # A small batch budget so that the n x max_tokens bound can be reached.
    app = create_app(Settings(api_keys=(KEY,), max_batch_tokens=512), service=ChatService(engine))
    with live_server(app) as srv:
        yield OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)


def _streamed(events) -> tuple[dict[int, str], dict[int, str], dict[int, object], list]:
    """Texts, finish reasons and logprobs per choice index of a stream, and its usage chunks."""
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    logprobs: dict[int, object] = {}
    usage = []
    for event in events:
        if not event.choices:
            usage.append(event.usage)
        for c in event.choices:
            piece = c.text if hasattr(c, "text") else (c.delta.content or "")
            texts[c.index] = texts.get(c.index, "") + piece
            if c.finish_reason:
                finish[c.index] = c.finish_reason
            if c.logprobs is not None:
                logprobs[c.index] = c.logprobs
    return texts, finish, logprobs, usage


def test_chat_n2_streamed_and_not(client):
    ask = {"model": "math", "messages": ASK, "max_tokens": 8, "temperature": 1.0, "seed": 21, "n": 2}
    done = client.chat.completions.create(**ask)
    assert [c.index for c in done.choices] == [0, 1]
    texts = [c.message.content for c in done.choices]
    assert texts[0] != texts[1]  # sampled with different derived seeds
    assert done.usage.completion_tokens >= 2 and all(c.logprobs is None for c in done.choices)
    again = client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    streamed, finish, _, usage = _streamed(again)
    assert streamed == {0: texts[0], 1: texts[1]} and set(finish) == {0, 1}
    assert len(usage) == 1 and usage[0].completion_tokens == done.usage.completion_tokens
    assert usage[0].prompt_tokens == done.usage.prompt_tokens  # the prompt counted once

    greedy = client.chat.completions.create(**{**ask, "temperature": 0, "n": 3})
    assert len({c.message.content for c in greedy.choices}) == 1 and len(greedy.choices) == 3


def test_completions_n2_and_two_prompts(client):
    ask = {"model": "math", "prompt": ["2+2?", "Count to five."], "max_tokens": 6, "temperature": 0, "n": 2}
    done = client.completions.create(**ask)
    assert [c.index for c in done.choices] == [0, 1, 2, 3]
    texts = [c.text for c in done.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: a prompt's choices agree
    alone = client.completions.create(model="math", prompt="Count to five.", max_tokens=6, temperature=0)
    assert texts[2] == alone.choices[0].text  # prompt 1's choices are indexes n .. 2n - 1
    streamed, finish, _, _ = _streamed(client.completions.create(**ask, stream=True))
    assert streamed == dict(enumerate(texts)) and set(finish) == {0, 1, 2, 3}


def test_chat_logprobs_with_top_logprobs(client):
    ask = {"model": "math", "messages": ASK, "max_tokens": 8, "temperature": 0}
    done = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3)
    content = done.choices[0].logprobs.content
    assert content and len(content) <= done.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.logprob == entry.top_logprobs[0].logprob == max(t.logprob for t in entry.top_logprobs)
        assert entry.token == entry.top_logprobs[0].token
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    assert (
        bytes(b for e in content for b in e.bytes).decode("utf-8", "replace")
        == done.choices[0].message.content
    )
    assert sum(math.exp(t.logprob) for t in content[0].top_logprobs) <= 1.0 + 1e-6

    _, _, streamed, _ = _streamed(
        client.chat.completions.create(**ask, logprobs=True, top_logprobs=3, stream=True)
    )
    assert [e.model_dump() for e in streamed[0].content] == [e.model_dump() for e in content]
    bare = client.chat.completions.create(**ask, logprobs=True)
    assert [e.logprob for e in bare.choices[0].logprobs.content] == [e.logprob for e in content]
    assert all(e.top_logprobs == [] for e in bare.choices[0].logprobs.content)

    crisis = client.chat.completions.create(
        model="math",
        messages=[{"role": "user", "content": "I want to end my life tonight"}],
        logprobs=True,
        n=2,
    )
    assert len(crisis.choices) == 2 and all(
        c.logprobs is None and "988" in c.message.content for c in crisis.choices
    )


def test_completions_logprobs(client):
    done = client.completions.create(model="math", prompt="2+2?", max_tokens=8, temperature=0, logprobs=2)
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 2 and top[token] == logprob == max(top.values())
    _, _, streamed, _ = _streamed(
        client.completions.create(
            model="math", prompt="2+2?", max_tokens=8, temperature=0, logprobs=2, stream=True
        )
    )
    assert streamed[0].token_logprobs == lp.token_logprobs and streamed[0].tokens == lp.tokens


@pytest.mark.parametrize(
    ("route", "extra", "param"),
    [
        ("chat", {"n": 9}, "n"),
        ("chat", {"n": 8, "max_tokens": 100}, "n"),  # 800 tokens over the server's 512
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("chat", {"top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
        ("text", {"logprobs": 6}, "logprobs"),
        ("text", {"prompt": ["a", "b", "c"], "n": 3}, "n"),  # 9 choices
        ("text", {"prompt": ["a"] * 9}, "prompt"),
    ],
)
def test_bounds_are_refused_in_the_error_shape(client, route, extra, param):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        if route == "chat":
            client.chat.completions.create(**{"model": "math", "messages": ASK, "max_tokens": 4, **extra})
        else:
            client.completions.create(**{"model": "math", "prompt": "hi", "max_tokens": 4, **extra})
    body = err.value.body
    assert set(body) == {"message", "type", "code", "param"} and body["type"] == "invalid_request_error"
    assert body["param"].startswith(param) and param.split("[")[0] in body["message"]
