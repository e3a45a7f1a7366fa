"""Counselling dialogue: how close the model's replies come to the reference replies, and safety.

* teacher-forced ``eval_loss`` (mean NLL per reply token), ``perplexity``, and ``token_error_rate``
  (1 - top-1 next-token accuracy on the reference reply's tokens);
* on generated replies (greedy): ``rouge_l`` and ``semantic_similarity`` (cosine of the embedded
  all-MiniLM-L6-v2 sentence embeddings) against the reference;
* ``safety_pass_rate`` on our probe set (crisis statements, diagnosis and dosing requests), with the
  replies produced by the serving pipeline (safety layer included), i.e. what a user would see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import probes
from .metrics import perplexity, rouge_l, token_error_rate

__all__ = ["run", "score_references", "served_replies"]

PROBE_REPLY_TOKENS = 96
"""Length of each reply to a safety probe."""


def served_replies(engine: Any, embedder: Any) -> Callable[[str, str], str]:
    """``reply(prompt, model)`` as a user of the chat API gets it: one user turn through serving's
    ``ChatService`` (its safety layer included), greedy, ``PROBE_REPLY_TOKENS`` tokens."""
    from serving.sampling import SamplingParams
    from serving.service import ChatService

    service = ChatService(engine, embedder=embedder)
    params = SamplingParams(max_tokens=PROBE_REPLY_TOKENS)

    def reply(prompt: str, model: str) -> str:
        return service.complete([{"role": "user", "content": prompt}], model, params).text

    return reply


def score_references(
    engine: Any, examples: list[Any], model: str, *, max_len: int = 512, batch_size: int = 8
) -> tuple[dict[str, float], dict[str, list[float]], list[Any]]:
    """Teacher-forced scores of ``model`` on each example's reference reply.

    Returns ``({'n', 'eval_loss', 'token_error_rate'}, per-example {'eval_loss', 'token_error_rate',
    'n_tokens'}, the examples that fit ``max_len``)``; ``eval_loss`` is the mean NLL per reply token (nats),
    so both figures are token-weighted means of the per-example values (``n_tokens`` their weights: pass
    them to ``bootstrap_ci(weights=)``).
    """
    from training.tokenize import encode

    features, kept = [], []
    for ex in examples:
        feat = encode(engine.tokenizer, ex, max_len, trim_context=True)
        if feat is not None:
            features.append(feat)
            kept.append(ex)
    if not features:
        raise ValueError(f"teacher-forced scoring: no example fits --max-len {max_len}")
    scores = engine.score(features, model, batch_size=batch_size)
    n_tok = sum(s.n_tokens for s in scores)
    metrics = {
        "n": float(len(kept)),
        "eval_loss": sum(s.nll_sum for s in scores) / n_tok,
        "token_error_rate": token_error_rate(sum(s.n_correct for s in scores), n_tok),
    }
    per_example = {
        "eval_loss": [s.nll_sum / s.n_tokens for s in scores],
        "token_error_rate": [token_error_rate(s.n_correct, s.n_tokens) for s in scores],
        "n_tokens": [float(s.n_tokens) for s in scores],
    }
    return metrics, per_example, kept


def run(
    engine: Any,
    examples: list[Any],
    model: str,
    *,
    max_len: int = 512,
    max_tokens: int = 96,
    generate_limit: int | None = 16,
    batch_size: int = 8,
    embed: Callable[[list[str]], Any] | None = None,
    reply_fn: Callable[[str, str], str] | None = None,
    records: list[dict[str, Any]] | None = None,
    per_example: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` on counselling ``examples``; generation metrics on the first ``generate_limit``.

    ``records`` receives one dict per generated reply; ``per_example`` the per-example values behind
    ``eval_loss`` and ``token_error_rate`` and their weights ``n_tokens`` (for bootstrap intervals).
    """
    result, per, kept = score_references(engine, examples, model, max_len=max_len, batch_size=batch_size)
    result["perplexity"] = perplexity(result["eval_loss"])
    per_example_loss = per["eval_loss"]
    gen_ex = kept[: generate_limit if generate_limit is not None else len(kept)]
    if gen_ex:
        outs = engine.generate_batch(
            [ex.prompt for ex in gen_ex], model, max_tokens=max_tokens, batch_size=batch_size
        )
        rouge = [rouge_l(o.text, ex.target) for o, ex in zip(outs, gen_ex, strict=True)]
        result["rouge_l"] = sum(rouge) / len(rouge)
        if embed is not None:
            a = embed([o.text for o in outs])
            b = embed([ex.target for ex in gen_ex])
            sims = [float((x * y).sum()) for x, y in zip(a, b, strict=True)]  # embeddings are unit-normalised
            result["semantic_similarity"] = sum(sims) / len(sims)
        if records is not None:
            for i, (o, ex) in enumerate(zip(outs, gen_ex, strict=True)):
                records.append(
                    {
                        "model": model,
                        "source": ex.source,
                        "prompt": ex.prompt[-1]["content"],
                        "reference": ex.target,
                        "output": o.text,
                        "loss": per_example_loss[i],
                        "rouge_l": rouge[i],
                    }
                )
    if reply_fn is not None:
        safety = probes.run({probe.id: reply_fn(probe.prompt, model) for probe in probes.PROBES})
        result["safety_pass_rate"] = safety["safety_pass_rate"]
        for kind in probes.KINDS:
            result[f"safety_{kind}_pass_rate"] = safety[f"{kind}_pass_rate"]
    if per_example is not None:
        per_example.update(per)
    return result
