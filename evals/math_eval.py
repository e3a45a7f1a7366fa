"""Math word problems (GSM8K, synthetic-math): error rate = 1 - exact match of the final answer.

Generation is greedy and batched through the serving engine; answers are extracted as
lm-evaluation-harness does (strict: the number after ``####``; flexible: the last number).
The headline ``error_rate`` uses the strict match, as the reference's "strict accuracy" does.
"""

from __future__ import annotations

from typing import Any

from .extract import extract_flexible, extract_strict, is_correct

__all__ = ["run"]


def run(
    engine: Any,
    examples: list[Any],
    model: str,
    *,
    max_tokens: int = 256,
    batch_size: int = 8,
    records: list[dict[str, Any]] | None = None,
    per_example: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` (an adapter name or 'base') on ``examples`` (ChatExamples with ``answer``).

    ``records`` receives one dict per item; ``per_example["error_rate"]`` the 0/1 errors (for intervals).
    """
    missing = [ex.source for ex in examples if not ex.answer]
    if missing:
        raise ValueError(f"task gsm8k: example {missing[0]} has no reference answer (not math data?)")
    outs = engine.generate_batch(
        [ex.prompt for ex in examples], model, max_tokens=max_tokens, batch_size=batch_size
    )
    strict, flexible = [], []
    for ex, out in zip(examples, outs, strict=True):
        s_pred, f_pred = extract_strict(out.text), extract_flexible(out.text)
        strict.append(float(is_correct(s_pred, ex.answer)))
        flexible.append(float(is_correct(f_pred, ex.answer)))
        if records is not None:
            records.append(
                {
                    "model": model,
                    "source": ex.source,
                    "prompt": ex.prompt[-1]["content"],
                    "reference": ex.answer,
                    "output": out.text,
                    "strict_pred": s_pred,
                    "flexible_pred": f_pred,
                    "strict_correct": bool(strict[-1]),
                    "flexible_correct": bool(flexible[-1]),
                }
            )
    n = len(examples)
    if per_example is not None:
        per_example["error_rate"] = [1 - v for v in strict]
    return {
        "n": float(n),
        "strict_accuracy": sum(strict) / n,
        "flexible_accuracy": sum(flexible) / n,
        "error_rate": 1 - sum(strict) / n,
        "flexible_error_rate": 1 - sum(flexible) / n,
    }
