"""Answer extraction for math word problems, as lm-evaluation-harness's ``gsm8k`` task does it.

The harness scores a generation two ways (``lm_eval/tasks/gsm8k/gsm8k.yaml``):

- **strict-match**: the first number after ``#### `` (the GSM8K answer format), regex
  ``#### (\\-?[0-9\\.\\,]+)``;
- **flexible-extract**: the last number anywhere in the text, regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``.

Both are then compared to the gold number after ignoring commas, ``$`` and a trailing period. Here the
comparison is numeric (``72.00`` equals ``72``), which the harness's string match is not; that only ever
turns a harness miss into a hit when the two strings name the same number.

One deliberate difference from the harness: a match with no digit in it (``...`` or ``$,`` in the
flexible pattern) is skipped rather than extracted, so "the last number" really is a number.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from training.examples import clean_number
from training.examples import normalize_number as training_number

__all__ = ["extract_flexible", "extract_strict", "is_correct", "normalize_number"]

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_DIGIT = re.compile(r"[0-9]")


def normalize_number(s: str) -> str:
    """Canonical text of a number (:func:`training.examples.normalize_number`, the function training
    targets are written with), or, for text that is not one number, that text cleaned of commas,
    ``$``, padding and a trailing period, so that it can still be compared as a string.

    ``'$1,234.'`` -> ``'1234'``; ``'72.00'`` -> ``'72'``; ``'3.50'`` -> ``'3.5'``; ``'-0'`` -> ``'0'``;
    ``'.5'`` -> ``'0.5'``; ``'1.2.3'`` -> ``'1.2.3'``.
    """
    if not isinstance(s, str):
        raise TypeError(f"normalize_number: expected a str; got {type(s).__name__} {s!r}")
    number = training_number(s)
    return clean_number(s) if number is None else number


def extract_strict(text: str) -> str | None:
    """The first number written after ``#### `` in ``text``, normalised; ``None`` if there is none."""
    for match in _STRICT.finditer(text):
        if _DIGIT.search(match.group(1)):
            return normalize_number(match.group(1))
    return None


def extract_flexible(text: str) -> str | None:
    """The last number anywhere in ``text``, normalised; ``None`` if there is none."""
    numbers = [m.group(1) or m.group(2) for m in _FLEXIBLE.finditer(text)]
    numbers = [n for n in numbers if _DIGIT.search(n)]
    return normalize_number(numbers[-1]) if numbers else None


def _as_decimal(s: str) -> Decimal | None:
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def is_correct(pred: str | None, gold: str) -> bool:
    """Whether the extracted prediction names the same number as the gold answer.

    ``gold`` is the reference number itself (for a GSM8K ``answer`` field, pass
    ``extract_strict(answer)``); a gold that is not a number is a caller's mistake and raises. A
    ``None`` prediction (nothing extracted) is wrong; a prediction that is not a number is wrong.
    """
    gold_norm = normalize_number(gold)
    gold_value = _as_decimal(gold_norm)
    if gold_value is None:
        raise ValueError(f"is_correct: expected a number as the gold answer; got {gold!r}")
    if pred is None:
        return False
    pred_value = _as_decimal(normalize_number(pred))
    return pred_value is not None and pred_value == gold_value
