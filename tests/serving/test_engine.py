"""The inference engine on a tiny real model with real frozen artifacts."""

from __future__ import annotations

import threading

import pytest
import torch

from quantum_adapters.artifact import ArtifactError
from serving.engine import BASE, Engine, Generation
from serving.sampling import Penalties, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_chat_model_dir, tiny_artifacts):
    return Engine(str(tiny_chat_model_dir), dict(tiny_artifacts))


MSG = [{"role": "user", "content": "What is 3 + 4?"}]


def test_names_and_info(engine):
    assert engine.names == [BASE, "counseling", "math", "math-lora"]
    assert engine.info("counseling")["domain"] == "counseling"
    assert engine.info("math")["method"] == "qtha" and engine.info("math-lora")["method"] == "lora"
    assert engine.info("math-lora")["trainable_params"] > 0 and engine.info("math")["trainable_params"] > 0


def test_frozen_tensors_do_not_require_grad(engine):
    for adapter in engine.adapters.values():
        assert not any(p.requires_grad for p in adapter.model.parameters())


def test_greedy_generation_is_deterministic_and_counts_tokens(engine):
    a = engine.generate(MSG, "math", SamplingParams(max_tokens=8))
    b = engine.generate(MSG, "math", SamplingParams(max_tokens=8))
    assert isinstance(a, Generation) and a.text == b.text
    assert a.completion_tokens <= 8 and a.prompt_tokens > 5
    assert a.finish_reason in ("stop", "length")


def test_openai_penalties_subtract_counts_of_generated_tokens_only():
    ids = torch.tensor([[5, 6, 1, 1, 2]])  # prompt [5, 6], generated [1, 1, 2]
    scores = torch.zeros(1, 8)
    out = Penalties(2, frequency=0.5, presence=0.25)(ids, scores)
    expected = torch.zeros(1, 8)
    expected[0, 1] = -(0.5 * 2 + 0.25)
    expected[0, 2] = -(0.5 * 1 + 0.25)
    torch.testing.assert_close(out, expected)  # prompt tokens 5 and 6 are not penalised
    assert Penalties(5, 1.0, 1.0)(ids, scores) is scores  # nothing generated yet


def test_penalties_reach_generation(engine):
    """The tiny random model repeats itself under greedy decoding; a strong presence penalty makes every
    generated token new."""
    plain = engine.generate(MSG, BASE, SamplingParams(max_tokens=12))
    penalised = engine.generate(
        MSG, BASE, SamplingParams(max_tokens=12, presence_penalty=2.0, frequency_penalty=2.0)
    )
    ids = engine.tokenizer(penalised.text, add_special_tokens=False)["input_ids"]
    assert penalised.text != plain.text
    assert len(set(engine.tokenizer(plain.text, add_special_tokens=False)["input_ids"])) < len(set(ids))


def test_stream_deltas_concatenate_to_the_text(engine):
    parts = list(engine.stream(MSG, BASE, SamplingParams(max_tokens=6)))
    final = parts[-1]
    assert isinstance(final, Generation)
    assert "".join(p for p in parts[:-1]) == final.text


def test_batch_generation_matches_single(engine):
    convs = [MSG, [{"role": "user", "content": "Tell me about your day, please, in some detail."}]]
    batch = engine.generate_batch(convs, "math", max_tokens=6, batch_size=2)
    single = [engine.generate(c, "math", SamplingParams(max_tokens=6)) for c in convs]
    assert [g.text for g in batch] == [g.text for g in single]


def test_cancel_stops_generation(engine):
    cancel = threading.Event()
    cancel.set()
    out = engine.generate(MSG, BASE, SamplingParams(max_tokens=50), cancel=cancel)
    assert out.finish_reason == "cancelled" and out.completion_tokens <= 1


def test_score_is_teacher_forced_and_adapters_differ_from_base(engine):
    ids = engine.prompt_ids(MSG, BASE)
    feats = [{"input_ids": [*ids, 42, 43, 44], "labels": [-100] * len(ids) + [42, 43, 44]}]
    base = engine.score(feats, BASE)[0]
    assert base.n_tokens == 3 and 0 <= base.n_correct <= 3 and base.nll_sum > 0
    # recompute the base NLL by hand
    with torch.no_grad(), engine._use(BASE) as model:
        logits = model(input_ids=torch.tensor([feats[0]["input_ids"]])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    manual = -sum(logp[len(ids) - 1 + i, t] for i, t in enumerate([42, 43, 44]))
    assert base.nll_sum == pytest.approx(float(manual), rel=1e-4)
    assert engine.score(feats, "math")[0].nll_sum != pytest.approx(base.nll_sum, rel=1e-9)


def test_unknown_adapter_and_reserved_names(engine, tiny_artifacts):
    with pytest.raises(KeyError, match="unknown model 'nope'; available: base, counseling"):
        engine.generate(MSG, "nope")
    with pytest.raises(ValueError, match="reserved"):
        engine.add_adapter("auto", tiny_artifacts["math"])


def test_artifact_for_another_base_is_refused(tiny_chat_model_dir, tiny_artifacts, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_chat_model_dir, other)
    (other / "config.json").write_text(
        (other / "config.json").read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')
    )
    with pytest.raises(
        ArtifactError, match=r"made for base model tiny-chat0.*but the loaded base model is other"
    ):
        Engine(str(other), {"math": tiny_artifacts["math"]})
