"""Each metric on tiny fixed inputs with values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.metrics import (
    bootstrap_ci,
    item_ci,
    perplexity,
    relative_reduction,
    rouge_l,
    token_error_rate,
)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # LCS 'the cat on the mat' = 5 of 6 tokens each side: P = R = F1 = 5/6.
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # LCS 'b d' = 2; P = 2/4, R = 2/3, F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = 4/7.
        ("a b c d", "b d e", 4 / 7),
        # Order matters: LCS of 'a b' and 'b a' is 1; P = R = 1/2.
        ("a b", "b a", 0.5),
        # Case and punctuation are ignored.
        ("Hello, World!", "hello world", 1.0),
        ("completely different", "nothing shared", 0.0),
        ("", "something", 0.0),
        ("...", "", 0.0),
    ],
)
def test_rouge_l_hand_computed(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_rouge_l_is_symmetric_in_f1() -> None:
    a, b = "i feel alone and tired every day", "you feel tired and alone"
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))


def test_bootstrap_ci_contains_the_mean_and_matches_normal_width() -> None:
    values = [1.0, 0.0] * 200  # mean 0.5, n = 400
    low, high = bootstrap_ci(values)
    assert low < 0.5 < high
    # Normal approximation: 2 * 1.96 * sqrt(0.25 / 400) = 0.098.
    assert high - low == pytest.approx(0.098, abs=0.015)


def test_bootstrap_ci_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = (rng.random(100) < 0.3).astype(float)
    large = (rng.random(10_000) < 0.3).astype(float)  # also exercises the chunked resampling
    w_small = np.subtract(*bootstrap_ci(small)[::-1])
    w_large = np.subtract(*bootstrap_ci(large)[::-1])
    assert w_large < w_small / 5  # width shrinks like 1 / sqrt(n): about 10x here
    low, high = bootstrap_ci(large)
    assert low < large.mean() < high


def test_bootstrap_ci_with_weights_is_of_the_weighted_mean() -> None:
    # long items score 1.0, short ones 3.0: the token-weighted mean is near 1, the plain mean is 2
    values = [1.0, 3.0] * 50
    weights = [90.0, 10.0] * 50
    low, high = bootstrap_ci(values, weights=weights)
    assert low < 1.2 < high and high < 1.5
    plain = bootstrap_ci(values)
    assert plain[0] < 2.0 < plain[1]
    assert item_ci({"eval_loss": values, "n_tokens": weights}, "eval_loss") == (low, high)
    assert item_ci({"error_rate": values, "n_tokens": weights}, "error_rate") == plain  # not token-weighted


@pytest.mark.parametrize(
    ("weights", "message"), [([1.0, 2.0], "expected 3 weights"), ([1.0, 0.0, 2.0], "expected weights > 0")]
)
def test_bootstrap_ci_refuses_bad_weights(weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci([1.0, 2.0, 3.0], weights=weights)


def test_bootstrap_ci_is_seeded() -> None:
    values = [0.2, 1.5, 0.7, 3.1, 0.0, 2.2]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_ci_of_constant_values_is_that_value() -> None:
    assert bootstrap_ci([2.0]) == pytest.approx((2.0, 2.0))
    assert bootstrap_ci([1.0] * 7) == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "at least one value"),
        ({"values": [1.0, math.nan]}, "finite"),
        ({"values": [[1.0, 2.0]]}, "flat"),
        ({"values": [1.0], "n_boot": 0}, "n_boot"),
        ({"values": [1.0], "confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_ci_validates(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)


def test_bootstrap_ci_refuses_non_numbers() -> None:
    with pytest.raises(TypeError, match="sequence of numbers"):
        bootstrap_ci(["a", "b"])  # type: ignore[list-item]


def test_relative_reduction() -> None:
    assert relative_reduction(0.18, 0.32) == pytest.approx(0.4375)  # the reference's math error
    assert relative_reduction(2.0, 1.0) == pytest.approx(-1.0)
    assert math.isnan(relative_reduction(1.0, 0.0))


def test_perplexity() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(1e6) == math.inf
    with pytest.raises(ValueError, match="mean NLL"):
        perplexity(-0.1)
    with pytest.raises(ValueError, match="mean NLL"):
        perplexity(math.nan)


def test_token_error_rate() -> None:
    assert token_error_rate(75, 100) == pytest.approx(0.25)
    assert token_error_rate(0, 3) == 1.0
    with pytest.raises(ValueError, match="total > 0"):
        token_error_rate(0, 0)
    with pytest.raises(ValueError, match="correct <= total"):
        token_error_rate(5, 4)
