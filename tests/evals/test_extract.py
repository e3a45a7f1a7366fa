"""Answer extraction as lm-evaluation-harness's gsm8k task does it, on tricky strings and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.extract import extract_flexible, extract_strict, is_correct, normalize_number

GSM8K_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,234", "1234"),
        ("$1,234.", "1234"),
        (" 3.50 ", "3.5"),
        ("72.00", "72"),
        ("-0", "0"),
        ("0.00", "0"),
        (".5", "0.5"),
        ("-12.", "-12"),
        ("1200", "1200"),  # not '1.2E+3'
        ("007", "7"),
        ("1.2.3", "1.2.3"),  # not a number: cleaned, otherwise kept
    ],
)
def test_normalize_number(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("So she made 48 + 24 = 72 clips.\n#### 72", "72", "72"),
        ("The total is #### 1,234.", "1234", "1234"),
        ("#### -3", "-3", "-3"),
        ("#### 72.00 dollars", "72", "72"),
        # Strict takes the first '#### N' (a model may ramble on into a new question); flexible the last.
        ("#### 42\n\nQuestion: what is 10 + 7?\nAnswer: #### 17", "42", "17"),
        ("He paid $1,250.50 in total.", None, "1250.5"),
        ("3 apples and 5 oranges make 8.", None, "8"),
        ("The answer is -0.", None, "0"),
        ("Hmm... so it is 12...", None, "12"),  # '...' alone is no number
        ("####5", None, "5"),  # the harness's strict pattern needs the space
        ("#### $5", None, "5"),  # and a digit or sign right after it
        ("No number here, sorry.", None, None),
        ("", None, None),
    ],
)
def test_extract(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("72.00", "72", True),
        ("1,234", "1234", True),
        ("$18.", "18", True),
        ("-5", "5", False),
        ("5", "6", False),
        (None, "5", False),
        ("1.2.3", "1", False),
        ("0.5", ".5", True),
    ],
)
def test_is_correct(pred: str | None, gold: str, expected: bool) -> None:
    assert is_correct(pred, gold) is expected


def test_is_correct_refuses_a_gold_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="gold answer"):
        is_correct("5", "five")


def test_normalize_number_refuses_non_str() -> None:
    with pytest.raises(TypeError, match="expected a str"):
        normalize_number(5)  # type: ignore[arg-type]


@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason="shared GSM8K data not present")
def test_every_gsm8k_reference_answer_scores_as_correct() -> None:
    """The reference solutions, read as if a model had written them, must all be right both ways."""
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()]
    assert len(rows) == 7473
    for i, row in enumerate(rows):
        gold = extract_strict(row["answer"])
        assert gold is not None, f"row {i}: no '#### N' in {row['answer'][-60:]!r}"
        assert is_correct(extract_flexible(row["answer"]), gold), f"row {i}"
        assert is_correct(gold, gold)
