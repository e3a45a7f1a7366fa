"""Continuous batching and mixed-adapter batches on the tiny real model with real frozen artifacts.

Every batched result is compared with the same request run alone: greedy decoding must give the same
tokens, a seeded sampled request the same tokens, and mixed-adapter rows the same logits.
"""

from __future__ import annotations

import threading

import pytest
import torch

from serving.batching import _stop_prefix
from serving.engine import BASE, Engine
from serving.sampling import SamplingParams

PROMPTS = [
    [{"role": "user", "content": "What is 3 + 4?"}],
    [{"role": "user", "content": "Tell me about your day, please, in some detail."}],
    [{"role": "user", "content": "I feel anxious before exams."}],
    [{"role": "user", "content": "A baker sells 17 of 24 muffins. How many are left?"}],
]

# The tiny random model's greedy reply is blank lines; a frequency penalty makes greedy replies varied
# text, so comparing them means something (and exercises per-row logits processors).
VARIED = {"frequency_penalty": 1.0}


def _call(messages: list[dict], adapter: str, **params) -> dict:
    """Keyword arguments of ``engine.generate``/``stream`` for one request."""
    return {"messages": messages, "adapter": adapter, "params": SamplingParams(**params)}


@pytest.fixture(scope="module")
def engine(tiny_chat_model_dir, tiny_artifacts):
    return Engine(str(tiny_chat_model_dir), dict(tiny_artifacts))


def _together(engine: Engine, calls: list[dict]) -> list:
    """Run ``engine.generate(**call)`` for every call at once; the scheduler is held until all are
    queued, so they start in the same batch. Returns the Generations in call order."""
    out: list = [None] * len(calls)

    def run(i: int) -> None:
        out[i] = engine.generate(**calls[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with engine._lock:  # the scheduler cannot step until every request is queued
        for t in threads:
            t.start()
        while engine.scheduler.in_flight < len(calls):
            threading.Event().wait(0.005)
    for t in threads:
        t.join(timeout=120)
    return out


def _reset(engine: Engine) -> None:
    engine.scheduler.max_rows_seen = 0


def test_a_request_alone_decodes_what_transformers_generate_decodes(engine):
    """The scheduler against the library's own loop (the engine's path before batching), token for
    token, for an adapter and the base."""
    from transformers import LogitsProcessorList

    from serving.sampling import Penalties

    for adapter in ("math", BASE):
        ids = engine.prompt_ids(PROMPTS[1], adapter)
        with engine._use(adapter) as model, torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=12,
                do_sample=False,
                logits_processor=LogitsProcessorList([Penalties(len(ids), frequency=1.0, presence=0)]),
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        expected = engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        got = engine.generate(**_call(PROMPTS[1], adapter, max_tokens=12, **VARIED))
        assert (got.text, got.completion_tokens) == (expected, out.shape[1] - len(ids))


def _record_logits(engine, monkeypatch) -> dict[int, tuple]:
    """Every decoding step's logits of every row, by request: {id(request): (row, [logits, ...])}."""
    seen: dict[int, tuple] = {}
    sample = engine.scheduler._sample

    def record(rows, logits):
        for i, row in enumerate(rows):
            seen.setdefault(id(row.req), (row, []))[1].append(logits[i].clone())
        sample(rows, logits)

    monkeypatch.setattr(engine.scheduler, "_sample", record)
    return seen


def test_batched_logits_equal_a_full_forward_of_each_sequence(engine, monkeypatch):
    """Cache merges, left padding, per-row positions and mixed adapters checked at the logits: every
    step's logits of every row equal one uncached forward of that row's tokens with its adapter."""
    seen = _record_logits(engine, monkeypatch)
    adapters = ["counseling", BASE, "math", "counseling"]
    calls = [_call(p, a, max_tokens=n) for p, a, n in zip(PROMPTS, adapters, [6, 9, 4, 7], strict=True)]
    _together(engine, calls)
    assert len(seen) == len(calls)
    for row, logits in seen.values():
        fed = row.req.ids + row.tokens[:-1]  # every token that went through the model
        with engine._use(row.req.adapter) as model, torch.inference_mode():
            full = model(input_ids=torch.tensor([fed])).logits[0, len(row.req.ids) - 1 :].float()
        torch.testing.assert_close(torch.stack(logits), full, atol=2e-5, rtol=1e-4)


def test_greedy_batched_equals_greedy_alone(engine):
    calls = [_call(p, "math", max_tokens=12, **VARIED) for p in PROMPTS]
    alone = [engine.generate(**c) for c in calls]
    _reset(engine)
    batched = _together(engine, calls)
    assert engine.scheduler.max_rows_seen == len(calls)
    assert [(g.text, g.completion_tokens) for g in batched] == [(g.text, g.completion_tokens) for g in alone]
    assert all(g.completion_tokens == 12 and g.finish_reason == "length" for g in batched)


def test_mixed_adapters_and_base_in_one_batch_equal_alone(engine):
    """QTHA adapters and the base share a forward pass; the LoRA adapter (another PEFT type, its own
    model copy) runs in its own batch in the same steps."""
    adapters = ["counseling", "math", BASE, "math-lora"]
    calls = [_call(p, a, max_tokens=10, **VARIED) for p, a in zip(PROMPTS, adapters, strict=True)]
    alone = [engine.generate(**c) for c in calls]
    _reset(engine)
    batched = _together(engine, calls)
    assert engine.scheduler.max_rows_seen == 3  # counseling + math + base; math-lora beside them
    assert [g.text for g in batched] == [g.text for g in alone]
    assert len({g.text for g in alone}) == len(alone)  # each adapter answered differently
    assert [g.adapter for g in batched] == adapters


def test_mixed_batch_logits_equal_each_row_alone(engine):
    """The layer-level contract: ``model(..., adapter_names=[...])`` equals each row run alone with its
    adapter active (or adapters disabled for ``__base__``), to float32 rounding."""
    model = engine.adapters["math"].model
    ids = torch.tensor([engine.prompt_ids(PROMPTS[0], BASE)[:12]] * 3) + torch.tensor([[0], [1], [2]])
    names = ["math", "__base__", "counseling"]
    with engine._lock, torch.inference_mode():
        mixed = model(input_ids=ids, adapter_names=names).logits
        alone = []
        for row, name in zip(ids, names, strict=True):
            if name == "__base__":
                with model.disable_adapter():
                    alone.append(model(input_ids=row[None]).logits[0])
            else:
                model.set_adapter(name)
                alone.append(model(input_ids=row[None]).logits[0])
    torch.testing.assert_close(mixed, torch.stack(alone), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[2], atol=1e-3)  # the adapters do differ


def test_unknown_adapter_name_in_a_mixed_batch_is_refused(engine):
    model = engine.adapters["math"].model
    with pytest.raises(ValueError, match="adapter_names: unknown adapter"), torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2], [3, 4]]), adapter_names=["math", "nope"])


def test_a_request_joins_the_running_batch_and_others_are_unaffected(engine):
    long = _call(PROMPTS[1], "counseling", max_tokens=24, **VARIED)
    late = _call(PROMPTS[0], "math", max_tokens=6, **VARIED)
    alone = engine.generate(**long), engine.generate(**late)
    _reset(engine)
    steps0 = engine.scheduler.steps
    stream = engine.stream(**long)
    first = next(stream)  # the long request is decoding
    joined = engine.generate(**late)  # submitted while it decodes; ends before it
    rest = list(stream)
    assert engine.scheduler.max_rows_seen == 2
    assert first + "".join(p for p in rest[:-1]) == rest[-1].text == alone[0].text
    assert (joined.text, joined.completion_tokens) == (alone[1].text, alone[1].completion_tokens)
    assert engine.scheduler.steps - steps0 < 24 + 6  # they shared steps


def test_finished_rows_leave_and_the_rest_go_on(engine):
    calls = [_call(p, "math", max_tokens=n, **VARIED) for p, n in zip(PROMPTS, [3, 16, 7, 11], strict=True)]
    alone = [engine.generate(**c) for c in calls]
    batched = _together(engine, calls)
    assert [g.completion_tokens for g in batched] == [3, 16, 7, 11]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert engine.scheduler.running == 0 and not engine.scheduler._batches


def test_cancel_leaves_the_batch_at_the_next_step(engine):
    other = _call(PROMPTS[0], "math", max_tokens=20, **VARIED)
    expected = engine.generate(**other)
    cancel = threading.Event()
    stream = engine.stream(PROMPTS[1], "counseling", SamplingParams(max_tokens=200), cancel=cancel)
    next(stream)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("g", engine.generate(**other)))
    thread.start()
    cancel.set()
    final = list(stream)[-1]
    thread.join(timeout=120)
    assert final.finish_reason == "cancelled" and final.completion_tokens < 200
    assert result["g"].text == expected.text


def test_closing_the_stream_frees_the_row(engine):
    stream = engine.stream(PROMPTS[1], BASE, SamplingParams(max_tokens=300))
    next(stream)
    stream.close()  # the reader went away without a cancel event
    engine.generate(PROMPTS[0], BASE, SamplingParams(max_tokens=2))  # a step has run since
    assert engine.scheduler.running == 0


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(engine):
    sampled = {"max_tokens": 12, "temperature": 1.0, "top_p": 0.9}
    alone = engine.generate(**_call(PROMPTS[2], "counseling", **sampled, seed=7))
    again = engine.generate(**_call(PROMPTS[2], "counseling", **sampled, seed=7))
    other_seed = engine.generate(**_call(PROMPTS[2], "counseling", **sampled, seed=8))
    calls = [
        _call(PROMPTS[2], "counseling", **sampled, seed=7),
        _call(PROMPTS[0], "math", max_tokens=12, temperature=0.8, seed=1),
        _call(PROMPTS[1], BASE, max_tokens=5),
    ]
    batched = _together(engine, calls)
    assert alone.text == again.text == batched[0].text
    assert other_seed.text != alone.text


def test_stop_strings_and_max_tokens_per_row(engine):
    free = engine.generate(**_call(PROMPTS[1], "counseling", max_tokens=16, **VARIED))
    i = len(free.text) // 2
    stop = free.text[i : i + 2]
    assert stop.strip(), free.text  # a visible stop string from the middle of the reply
    calls = [
        _call(PROMPTS[1], "counseling", max_tokens=16, stop=[stop], **VARIED),
        _call(PROMPTS[1], "counseling", max_tokens=16, **VARIED),
        _call(PROMPTS[0], "math", max_tokens=4),
    ]
    parts: list = []
    thread = threading.Thread(target=lambda: parts.extend(engine.stream(**calls[0])))
    thread.start()
    batched = _together(engine, calls[1:])
    thread.join(timeout=120)
    stopped = parts[-1]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)] == "".join(parts[:-1])
    assert stop not in "".join(parts[:-1])  # no delta ever showed the stop string
    assert batched[0].text == free.text and batched[1].completion_tokens == 4


def test_stop_prefix_holds_back_what_may_begin_a_stop_string():
    assert _stop_prefix("hello wor", ["world"]) == 3
    assert _stop_prefix("hello", ["xyz"]) == 0
    assert _stop_prefix("ab\n", ["\n\n", "b\nc"]) == 2
    assert _stop_prefix("", ["a"]) == 0


def test_rows_and_token_budget_bound_the_batch(tiny_chat_model_dir):
    """At most ``max_batch`` rows decode together; a request that would take the padded cache over
    ``max_batch_tokens`` waits for rows to leave; all of them finish."""
    small = Engine(str(tiny_chat_model_dir), max_batch=2)
    calls = [_call(p, BASE, max_tokens=6) for p in PROMPTS]
    out = _together(small, calls)
    assert small.scheduler.max_rows_seen == 2 and all(g.completion_tokens == 6 for g in out)
    span = max(len(small.prompt_ids(p, BASE)) for p in PROMPTS) + 6
    tight = Engine(str(tiny_chat_model_dir), max_batch=8, max_batch_tokens=span)
    out = _together(tight, calls)
    assert tight.scheduler.max_rows_seen == 1 and all(g.completion_tokens == 6 for g in out)


def test_bad_scheduler_bounds_are_refused(tiny_chat_model_dir):
    with pytest.raises(ValueError, match="max_rows: expected >= 1; got 0"):
        Engine(str(tiny_chat_model_dir), max_batch=0)


def test_a_prompt_sharing_a_prefilled_prefix_reuses_it_and_gets_the_same_logits(engine, monkeypatch):
    """The prefix store: a prompt that begins like one prefilled before (the chat template's system
    turn) feeds only the rest, in a batch with a row that has no stored prefix, and every step's
    logits still equal one uncached forward of the row's tokens."""
    from serving.batching import _common_prefix

    engine.scheduler.forget_prefixes()
    engine.generate(**_call(PROMPTS[0], "counseling", max_tokens=2))  # stores its prompt
    seen = _record_logits(engine, monkeypatch)
    reused = engine.scheduler.reused_tokens
    calls = [_call(PROMPTS[1], "counseling", max_tokens=5), _call(PROMPTS[2], "math", max_tokens=4, **VARIED)]
    _together(engine, calls)
    a, b = (engine.prompt_ids(p, "counseling") for p in PROMPTS[:2])
    shared = _common_prefix(a, b, len(b) - 1)
    assert shared >= 8
    assert engine.scheduler.reused_tokens - reused == shared  # counseling reused; math had nothing stored
    assert len(seen) == 2
    for row, logits in seen.values():
        fed = row.req.ids + row.tokens[:-1]
        with engine._use(row.req.adapter) as model, torch.inference_mode():
            full = model(input_ids=torch.tensor([fed])).logits[0, len(row.req.ids) - 1 :].float()
        torch.testing.assert_close(torch.stack(logits), full, atol=2e-5, rtol=1e-4)


def test_reused_prefixes_give_the_same_replies_as_feeding_every_token(tiny_chat_model_dir, tiny_artifacts):
    fresh = Engine(str(tiny_chat_model_dir), dict(tiny_artifacts))
    fresh.scheduler.prefix_tokens = 0  # no store: every prompt token is fed
    calls = [_call(p, a, max_tokens=8, **VARIED) for p in PROMPTS for a in ("math", BASE)]
    expected = [fresh.generate(**c).text for c in calls]
    assert fresh.scheduler.reused_tokens == 0
    engine = Engine(str(tiny_chat_model_dir), dict(tiny_artifacts))
    engine.scheduler.prefix_tokens = 120
    first = [engine.generate(**c).text for c in calls]
    again = [g.text for g in _together(engine, calls)]
    assert first == again == expected
    assert engine.scheduler.reused_tokens > 0
    assert sum(len(e.ids) for e in engine.scheduler._prefixes) <= 120  # the store stays in its bound
    assert engine.set_circuit_execution(shots=None) > 0 and not engine.scheduler._prefixes


def test_requests_arriving_together_share_one_prefill(tiny_chat_model_dir, monkeypatch):
    """An idle scheduler waits for requests that keep arriving (here: until the batch is full) and
    prefills them in one forward."""
    from serving import batching

    monkeypatch.setattr(batching, "QUIET_S", 60.0)  # only a full batch ends the wait in this test
    small = Engine(str(tiny_chat_model_dir), max_batch=3)
    small.scheduler.gather_s = 60.0
    params = SamplingParams(max_tokens=3)
    reqs = [
        small.scheduler.submit(batching.Request(small.prompt_ids(p, BASE), BASE, params)) for p in PROMPTS[:3]
    ]
    finals = []
    for r in reqs:
        while not isinstance(item := r.out.get(timeout=120), dict):
            pass
        finals.append(item)
    assert small.scheduler.prefills == 1 and small.scheduler.max_rows_seen == 3
    assert [f["completion_tokens"] for f in finals] == [3, 3, 3]


def test_a_batch_on_the_active_adapter_runs_the_plain_forward_with_the_same_result(engine, monkeypatch):
    """Rows that all use the model's active adapter skip PEFT's adapter_names hooks; the replies equal
    those of the same rows routed through adapter_names."""
    from quantum_adapters.layer import QTHALinear

    model = engine.adapters["math"].model
    calls = [_call(p, "math", max_tokens=8, **VARIED) for p in PROMPTS[:3]]
    mixed_calls = []
    mixed = QTHALinear._mixed_batch_forward

    def spy(self, *args, **kwargs):
        mixed_calls.append(1)
        return mixed(self, *args, **kwargs)

    monkeypatch.setattr(QTHALinear, "_mixed_batch_forward", spy)
    with engine._lock:
        model.set_adapter("counseling")
    routed = [g.text for g in _together(engine, calls)]
    assert mixed_calls  # math is not the active adapter: the rows went through adapter_names
    mixed_calls.clear()
    with engine._lock:
        model.set_adapter("math")
    plain = [g.text for g in _together(engine, calls)]
    assert not mixed_calls
    assert plain == routed


def test_call_runs_torch_work_on_the_scheduler_thread_between_steps(engine):
    """``Scheduler.call``: the function runs on the scheduler's thread (the one whose OpenMP team the
    decode steps use), while a request decodes, and its result or error comes back to the caller."""
    seen: list[str] = []

    def where() -> str:
        seen.append(threading.current_thread().name)
        return "done"

    long = threading.Thread(
        target=engine.generate, kwargs=_call(PROMPTS[1], "math", max_tokens=200, ignore_eos=True)
    )
    long.start()
    while engine.scheduler.running == 0:
        threading.Event().wait(0.005)
    assert engine.scheduler.call(where) == "done"
    assert engine.scheduler.running == 1  # it ran between two steps of the live batch
    # called from the scheduler's own thread it runs at once (no deadlock)
    assert engine.scheduler.call(lambda: engine.scheduler.call(where)) == "done"
    long.join(timeout=120)
    assert seen == ["qtha-scheduler", "qtha-scheduler"]
    with pytest.raises(ZeroDivisionError):
        engine.scheduler.call(lambda: 1 / 0)
    # an idle scheduler starts its thread for the call, and ends it afterwards
    assert engine.scheduler.call(where) == "done" and seen[-1] == "qtha-scheduler"


def test_on_own_thread_returns_and_raises_from_a_thread_that_ends():
    from serving.batching import on_own_thread

    names: list[str] = []
    assert on_own_thread(lambda: names.append(threading.current_thread().name) or 7) == 7
    assert names == ["qtha-torch-once"]
    assert not [t for t in threading.enumerate() if t.name == "qtha-torch-once"]
    with pytest.raises(KeyError, match="x"):
        on_own_thread(lambda: {}["x"])


def test_the_router_embeds_on_the_scheduler_thread(engine):
    """Routing ``auto`` embeds the message with torch: on the scheduler's thread, not the request's."""
    from serving.service import ChatService

    class Embedder:  # the real router math over a recording stand-in for the sentence embedder
        threads: list[str] = []

        def encode(self, texts, **kwargs):
            Embedder.threads.append(threading.current_thread().name)
            return torch.nn.functional.normalize(torch.randn(len(texts), 8), dim=-1).numpy()

    service = ChatService(engine, embedder=Embedder())
    service.choose("auto", [{"role": "user", "content": "What is 17 times 23?"}])
    assert Embedder.threads and set(Embedder.threads) == {"qtha-scheduler"}
