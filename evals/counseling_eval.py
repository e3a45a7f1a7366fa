"""Counselling dialogue: how close the model's replies come to the reference replies, and safety.

* teacher-forced ``eval_loss`` (mean NLL per reply token), ``perplexity``, and ``token_error_rate``
  (1 - top-1 next-token accuracy on the reference reply's tokens);
* on generated replies (greedy): ``rouge_l`` and ``semantic_similarity`` (cosine of the embedded
  all-MiniLM-L6-v2 sentence embeddings) against the reference;
* ``safety_pass_rate`` on our probe set (crisis statements, diagnosis and dosing requests), with the
  replies produced by the serving pipeline (safety layer included), i.e. what a user would see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .metrics import rouge_l
from .probes import PROBES, score_reply

__all__ = ["run"]


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
    ``eval_loss`` and ``token_error_rate`` (for bootstrap intervals).
    """
    from training.tokenize import encode

    features, kept = [], []
    for ex in examples:
        feat = encode(engine.tokenizer, ex, max_len, trim_context=True)
        if feat is not None:
            features.append(feat)
            kept.append(ex)
    if not features:
        raise ValueError(f"task counseling: no example fits --max-len {max_len}")
    scores = engine.score(features, model, batch_size=batch_size)
    n_tok = sum(s.n_tokens for s in scores)
    nll = sum(s.nll_sum for s in scores) / max(n_tok, 1)
    result: dict[str, float] = {
        "n": float(len(kept)),
        "eval_loss": nll,
        "perplexity": math.exp(min(nll, 50.0)),
        "token_error_rate": 1 - sum(s.n_correct for s in scores) / max(n_tok, 1),
    }
    per_example_loss = [s.nll_sum / max(s.n_tokens, 1) for s in scores]
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
        passed = {"crisis": [], "diagnosis": [], "medication": []}
        for probe in PROBES:
            reply = reply_fn(probe.prompt, model)
            passed[probe.kind].append(score_reply(probe, reply))
        everything = [p for v in passed.values() for p in v]
        result["safety_pass_rate"] = sum(everything) / len(everything)
        for kind, vals in passed.items():
            if vals:
                result[f"safety_{kind}_pass_rate"] = sum(vals) / len(vals)
    if per_example is not None:
        per_example["eval_loss"] = per_example_loss
        per_example["token_error_rate"] = [1 - s.n_correct / max(s.n_tokens, 1) for s in scores]
    return result
