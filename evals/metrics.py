"""Metrics used by the evaluation tasks, each a pure function of plain numbers or strings.

- ROUGE-L F1 (Lin, 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"): with ``LCS`` the
  longest common subsequence of the two token lists,
  ``P = LCS / len(prediction)``, ``R = LCS / len(reference)``, ``F1 = 2 P R / (P + R)``.
  Tokens are the lowercased word characters (``\\w+``, Unicode aware), no stemming.
- Percentile bootstrap interval of a mean (Efron & Tibshirani, 1993, ch. 13): resample the per-item
  values with replacement ``n_boot`` times and take the ``(1 - confidence) / 2`` and
  ``(1 + confidence) / 2`` quantiles of the resampled means. A token-weighted mean (eval loss and token
  error rate: ``sum(w_i v_i) / sum(w_i)`` with ``w_i`` an item's scored tokens) is resampled by item with
  its weights, so the interval is of the figure reported, not of the unweighted mean of the items.
- Relative reduction ``(old - new) / old``, perplexity ``exp(mean NLL)``, token error rate
  ``1 - correct / total``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "TOKEN_WEIGHTED",
    "bootstrap_ci",
    "item_ci",
    "perplexity",
    "relative_reduction",
    "rouge_l",
    "token_error_rate",
]

_WORD = re.compile(r"\w+")
# Resampled values held in memory at once by bootstrap_ci (float64: 32 MB).
_BOOT_CHUNK_ELEMENTS = 4_000_000


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence; O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for token_a in a:
        curr = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            curr[j] = prev[j - 1] + 1 if token_a == token_b else max(prev[j], curr[j - 1])
        prev = curr
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1] between two texts on lowercased word tokens.

    If either text has no word token the score is 0.0, as in Google's ``rouge-score`` package.
    """
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _finite_array(values: Sequence[float], where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: expected a sequence of numbers; got {values!r:.200}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{where}: expected a flat sequence of numbers; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{where}: expected at least one value; got an empty sequence")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{where}: expected finite values; got {arr[bad[0]]} at index {bad[0]}")
    return arr


def bootstrap_ci(
    values: Sequence[float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    weights: Sequence[float] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of the mean of ``values``.

    ``values`` are per-item scores (0/1 errors, per-item losses), shape (N,). With ``weights`` (shape
    (N,), > 0; an item's token count) the statistic is the weighted mean ``sum(w v) / sum(w)``, items
    resampled with their weights. Seeded, so a report is reproducible. With one value, or all values
    equal, the interval is that value on both sides.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"bootstrap_ci: expected n_boot to be an int >= 1; got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: expected confidence in (0, 1); got {confidence!r}")
    arr = _finite_array(values, "bootstrap_ci")
    n = arr.size
    w = np.ones(n) if weights is None else _finite_array(weights, "bootstrap_ci weights")
    if w.size != n:
        raise ValueError(f"bootstrap_ci: expected {n} weights, one per value; got {w.size}")
    if (w <= 0).any():
        raise ValueError(
            f"bootstrap_ci: expected weights > 0; got {w[w <= 0][0]} at index {np.argmax(w <= 0)}"
        )
    wv = w * arr
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)  # (n_boot,)
    rows_per_chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))  # (chunk, N)
        means[start:stop] = wv[idx].sum(axis=1) / w[idx].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


TOKEN_WEIGHTED = frozenset({"eval_loss", "token_error_rate"})
"""Metrics reported as a token-weighted mean of per-item values (their weights: ``n_tokens``)."""


def item_ci(per_item: dict[str, Sequence[float]], key: str, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of metric ``key`` from per-item values ``per_item[key]``, weighted by
    ``per_item["n_tokens"]`` for the token-weighted metrics (:data:`TOKEN_WEIGHTED`)."""
    weights = per_item.get("n_tokens") if key in TOKEN_WEIGHTED else None
    return bootstrap_ci(per_item[key], seed=seed, weights=weights)


def relative_reduction(new: float, old: float) -> float:
    """``(old - new) / old``: 0.25 means ``new`` is 25% lower than ``old``; negative means higher.

    Returns ``nan`` when ``old`` is 0 (no reduction is defined against nothing), so that a report shows
    a gap rather than an infinity.
    """
    if old == 0:
        return math.nan
    return (old - new) / old


def perplexity(mean_nll: float) -> float:
    """``exp(mean_nll)`` for a mean negative log-likelihood in nats per token; ``inf`` on overflow."""
    if not math.isfinite(mean_nll) or mean_nll < 0:
        raise ValueError(f"perplexity: expected a finite mean NLL >= 0 (nats/token); got {mean_nll!r}")
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


def token_error_rate(correct: int, total: int) -> float:
    """``1 - correct / total``: the share of reference tokens the model's top-1 prediction missed."""
    if total <= 0:
        raise ValueError(f"token_error_rate: expected total > 0 tokens; got {total!r}")
    if not 0 <= correct <= total:
        raise ValueError(f"token_error_rate: expected 0 <= correct <= total ({total}); got {correct!r}")
    return 1.0 - correct / total
