"""SamplingParams: normalised once, refused where the engine cannot run it, the same for every choice
but its seed."""

from __future__ import annotations

import pytest

from serving.sampling import MAX_CHOICES, SamplingParams, choice_seed


def test_values_are_normalised_once():
    p = SamplingParams(stop="###", temperature=5e-324, top_p=1, frequency_penalty=1)
    assert p.stop == ("###",) and p.temperature == 0.0 and p.greedy  # too cold to sample: greedy
    assert isinstance(p.top_p, float) and isinstance(p.frequency_penalty, float)
    assert SamplingParams(stop=["a", "", "b"]).stop == ("a", "b")
    assert not SamplingParams(temperature=0.7).greedy


def test_bounds_the_engine_cannot_run_are_refused():
    with pytest.raises(ValueError, match=f"n: expected 1 <= n <= {MAX_CHOICES}; got 9"):
        SamplingParams(n=9)
    with pytest.raises(ValueError, match="max_tokens: expected >= 1; got 0"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="expected one choice"):
        SamplingParams(n=2).single()


def test_each_choice_gets_its_own_seed_and_nothing_else_changes():
    p = SamplingParams(n=3, seed=5, temperature=1.0, stop=("x",))
    choices = [p.for_choice(i) for i in range(3)]
    assert [c.seed for c in choices] == [choice_seed(5, i) for i in range(3)] and choices[0].seed == 5
    assert all(c.n == 1 and c.stop == ("x",) and c.temperature == 1.0 for c in choices)
    assert len({choice_seed(5, i) for i in range(MAX_CHOICES)}) == MAX_CHOICES
    assert SamplingParams(n=2).for_choice(1).seed is None  # unseeded stays unseeded


def test_generate_kwargs_only_for_what_generate_runs_the_same():
    kwargs = SamplingParams(max_tokens=7).to_generate_kwargs(pad_token_id=0)
    assert kwargs["max_new_tokens"] == 7 and kwargs["do_sample"] is False and kwargs["pad_token_id"] == 0
    with pytest.raises(ValueError, match="frequency_penalty"):
        SamplingParams(frequency_penalty=0.5).to_generate_kwargs(0)


def test_processors_follow_the_parameters():
    from serving.sampling import Penalties

    assert list(SamplingParams().logits_processors(3)) == []
    sampled = SamplingParams(temperature=0.5, top_p=0.9, presence_penalty=1.0).logits_processors(3)
    assert [type(p).__name__ for p in sampled] == ["Penalties", "TemperatureLogitsWarper", "TopPLogitsWarper"]
    assert isinstance(sampled[0], Penalties) and sampled[0].prompt_len == 3
    assert SamplingParams().generator("cpu") is None
