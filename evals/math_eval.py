"""Math word problems (GSM8K, synthetic-math): error rate = 1 - exact match of the final answer.

Generation is greedy and batched through the serving engine; answers are extracted as
lm-evaluation-harness does (strict: the number after ``####``; flexible: the last number).
The headline ``error_rate`` uses the strict match, as the reference's "strict accuracy" does; the
flexible figures sit next to it, since a model that reasons to the right number but never writes a
``#### N`` line fails strict and passes flexible.

Few-shot (as the harness's ``--fewshot_as_multiturn`` chat form): ``k`` solved problems go before the
question as earlier user / assistant turns, so the model sees the answer format (worked steps, then
``#### N``). The turns are ordinary chat messages, so what is evaluated is exactly what a client of the
API gets when it sends the same conversation::

    [system, user q_1, assistant s_1 ... #### a_1, ..., user q_k, assistant s_k, user q]
"""

from __future__ import annotations

from typing import Any

from .extract import extract_flexible, extract_strict, is_correct

__all__ = ["fewshot_prompt", "run"]


def _question(ex: Any) -> str:
    return ex.prompt[-1]["content"]


def fewshot_prompt(example: Any, shots: list[Any]) -> list[dict[str, str]]:
    """``example``'s prompt with each shot's question and worked solution as earlier turns.

    The system message (if any) stays first; the shots are ChatExamples whose last message is the
    solution ending in ``#### N`` (as the GSM8K loader writes it).
    """
    prompt = list(example.prompt)
    head = [m for m in prompt[:1] if m["role"] == "system"]
    turns = [
        turn
        for shot in shots
        for turn in (
            {"role": "user", "content": _question(shot)},
            {"role": "assistant", "content": shot.target},
        )
    ]
    return [*head, *turns, *prompt[len(head) :]]


def run(
    engine: Any,
    examples: list[Any],
    model: str,
    *,
    max_tokens: int = 256,
    batch_size: int = 8,
    fewshot: list[Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    per_example: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` (an adapter name or 'base') on ``examples`` (ChatExamples with ``answer``).

    ``fewshot``: solved examples shown before every question (refused if one is also an evaluation
    item). ``records`` receives one dict per item; ``per_example["error_rate"]`` and
    ``per_example["flexible_error_rate"]`` the 0/1 errors (for intervals).
    """
    missing = [ex.source for ex in examples if not ex.answer]
    if missing:
        raise ValueError(f"task gsm8k: example {missing[0]} has no reference answer (not math data?)")
    shots = list(fewshot or [])
    asked = {_question(ex): ex.source for ex in examples}
    overlap = [s for s in shots if _question(s) in asked]
    if overlap:
        raise ValueError(
            f"few-shot example {overlap[0].source} is also an evaluation item ({asked[_question(overlap[0])]}); "
            "take the shots from rows outside the evaluation data"
        )
    prompts = [fewshot_prompt(ex, shots) if shots else ex.prompt for ex in examples]
    outs = engine.generate_batch(prompts, model, max_tokens=max_tokens, batch_size=batch_size)
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
                    "prompt": _question(ex),
                    "reference": ex.answer,
                    "output": out.text,
                    "finish_reason": out.finish_reason,
                    "strict_pred": s_pred,
                    "flexible_pred": f_pred,
                    "strict_correct": bool(strict[-1]),
                    "flexible_correct": bool(flexible[-1]),
                }
            )
    n = len(examples)
    if per_example is not None:
        per_example["error_rate"] = [1 - v for v in strict]
        per_example["flexible_error_rate"] = [1 - v for v in flexible]
    return {
        "n": float(n),
        "shots": float(len(shots)),
        "strict_accuracy": sum(strict) / n,
        "flexible_accuracy": sum(flexible) / n,
        "error_rate": 1 - sum(strict) / n,
        "flexible_error_rate": 1 - sum(flexible) / n,
        "cut_off_rate": sum(o.finish_reason == "length" for o in outs) / n,
    }
