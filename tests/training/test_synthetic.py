"""The built-in generators: determinism, verified arithmetic, the crisis and decline share, distinctness."""

from __future__ import annotations

import operator
import re
from collections import Counter

import pytest

from quantum_adapters.domains import COUNSELING, MATH
from training.synthetic import synthetic_counseling, synthetic_math

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_EQUATION = re.compile(r"(\d+(?: [-+*/] \d+)+) = \$?(\d+)")


def _evaluate(expr: str) -> int:
    """Left-to-right integer arithmetic with one operator per expression, exact division only."""
    tokens = expr.split(" ")
    assert len(set(tokens[1::2])) == 1, f"mixed operators in {expr!r}"
    value = int(tokens[0])
    for op, arg in zip(tokens[1::2], tokens[2::2], strict=True):
        if op == "/":
            assert value % int(arg) == 0, f"inexact division in {expr!r}"
            value //= int(arg)
        else:
            value = _OPS[op](value, int(arg))
    return value


@pytest.fixture(scope="module")
def math500():
    return synthetic_math(500, seed=0)


@pytest.fixture(scope="module")
def counsel1000():
    return synthetic_counseling(1000, seed=0)


def test_math_is_deterministic_and_seeded(math500):
    again = synthetic_math(500, seed=0)
    assert [(e.messages, e.answer) for e in again] == [(e.messages, e.answer) for e in math500]
    other = synthetic_math(500, seed=1)
    assert sum(a.messages != b.messages for a, b in zip(other, math500, strict=True)) > 450


def test_math_solutions_verify(math500):
    for ex in math500:
        assert ex.messages[0] == {"role": "system", "content": MATH.system_prompt}
        assert ex.synthetic and ex.domain == "math" and ex.source == "synthetic-math"
        *steps, final = ex.target.split("\n")
        assert final == f"#### {ex.answer}"
        assert re.fullmatch(r"\d+", ex.answer)
        assert 1 <= len(steps) == ex.meta["steps"] <= 4
        last = None
        for line in steps:
            equations = _EQUATION.findall(line)
            assert equations, f"step without a calculation: {line!r}"
            for expr, result in equations:
                assert _evaluate(expr) == int(result), f"{line!r} in {ex.source} #{ex.meta['index']}"
                last = int(result)
        assert last == int(ex.answer), ex.target


def test_math_variety(math500):
    assert len({e.messages[1]["content"] for e in math500}) == 500
    assert len({e.meta["template"] for e in math500}) >= 10
    assert Counter(e.meta["steps"] for e in math500).keys() == {1, 2, 3, 4}


def test_counseling_is_deterministic_and_seeded(counsel1000):
    again = synthetic_counseling(1000, seed=0)
    assert [e.messages for e in again] == [e.messages for e in counsel1000]
    other = synthetic_counseling(1000, seed=5)
    assert [e.messages for e in other] != [e.messages for e in counsel1000]


def test_counseling_distinct_and_short(counsel1000):
    pairs = {(e.messages[1]["content"], e.target) for e in counsel1000}
    assert len(pairs) == 1000
    assert len({e.target for e in counsel1000}) > 900
    for ex in counsel1000:
        assert ex.messages[0] == {"role": "system", "content": COUNSELING.system_prompt}
        assert ex.synthetic and ex.domain == "counseling" and ex.answer is None
        words = len(ex.target.split())
        assert 40 <= words <= 90, (words, ex.target)
    support = [e for e in counsel1000 if e.meta["kind"] == "support"]
    assert len({e.meta["situation"] for e in support}) >= 15
    assert len({e.meta["feeling"] for e in support}) >= 20
    assert all(e.target.rstrip().endswith("?") for e in support), "support replies end with an open question"


def test_crisis_share_and_resources_first(counsel1000):
    kinds = Counter(e.meta["kind"] for e in counsel1000)
    assert kinds == {"support": 850, "crisis": 100, "decline": 50}
    small = Counter(e.meta["kind"] for e in synthetic_counseling(200, seed=9))
    assert small["crisis"] == 20 and small["decline"] == 10
    for ex in (e for e in counsel1000 if e.meta["kind"] == "crisis"):
        first_sentence = re.split(r"(?<=[.?!])\s", ex.target, maxsplit=1)[0]
        first_two = " ".join(re.split(r"(?<=[.?!])\s", ex.target)[:2])
        assert "988" in first_two, ex.target
        assert "emergency" in first_two or "crisis line" in first_two, ex.target
        assert "988" in first_sentence or first_sentence.startswith("I'm worried about your safety")
        assert re.search(r"\b(now|right now|tonight)\b", ex.target)


def test_decline_says_ai_not_clinician(counsel1000):
    declines = [e for e in counsel1000 if e.meta["kind"] == "decline"]
    assert {e.meta["topic"] for e in declines} == {"diagnosis", "dose"}
    for ex in declines:
        assert "I'm an AI support assistant, not a clinician" in ex.target
        assert re.search(r"doctor|psychiatrist|pharmacist|prescriber", ex.target)
        assert not re.search(r"\d+\s*mg", ex.target)


def test_no_crisis_content_in_support_replies(counsel1000):
    for ex in counsel1000:
        if ex.meta["kind"] != "crisis":
            assert "988" not in ex.target


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_bad_n(bad):
    with pytest.raises(ValueError, match="expected an integer >= 0"):
        synthetic_math(bad)


def test_zero_and_small_n():
    assert synthetic_math(0) == [] and synthetic_counseling(0) == []
    assert len(synthetic_counseling(3, seed=1)) == 3
