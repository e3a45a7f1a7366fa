"""Domain routing for `model: "auto"`: pick the domain adapter whose exemplars a message is nearest to.

Each domain is summarised by the centroid of its exemplars' unit embeddings (all-MiniLM-L6-v2),
renormalised to unit length; a message's score for a domain is the cosine between its unit embedding
and that centroid:

    c_d   = normalise(mean_i e(x_{d,i}))          (D,)  per domain d
    s_d   = <e(text), c_d>                        cosine in [-1, 1]
    s_math += MATH_BONUS  when the text holds arithmetic (operators, %, prices, or 3+ numbers)

The domain with the highest score wins; when no adapter serves it, the base model answers. There is no
"none of the above": small talk ("hello") goes to whichever domain it is nearer, which is harmless
since both adapters still answer general chat.

Measured here with the default exemplars: 300 GSM8K train questions -> math 100%; 300 CounselChat
questions -> counselling 99.7%; the first seeker turn (6+ words) of each of the 195 ESConv valid
dialogues -> counselling 95.9% (the misses are greetings and small talk).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from quantum_adapters.domains import COUNSELING, DOMAINS, MATH

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_EXEMPLARS", "MATH_BONUS", "DomainRouter"]

DEFAULT_EXEMPLARS: dict[str, list[str]] = {
    COUNSELING.name: [
        "I've been feeling really anxious lately and I can't stop worrying",
        "My partner and I keep fighting and I don't know what to do",
        "I feel lonely and I have no one to talk to",
        "How can I cope with stress at work?",
        "I've been depressed for months and nothing helps",
        "I'm grieving the loss of my father",
        "I have low self-esteem and I feel worthless",
        "My parents don't understand me and we argue all the time",
        "I get panic attacks in crowded places",
        "How do I deal with my anger?",
        "I can't sleep because my mind keeps racing at night",
        "I feel overwhelmed and burnt out",
        "How do I set boundaries with my family?",
        "My friend betrayed my trust and I feel hurt",
        "My boyfriend cheated on me and I don't know if I should stay",
        "My husband and I have stopped being intimate",
        "How can I help my teenage son who won't talk to me?",
        "I have feelings for someone and I don't know what to do",
        "I'm struggling to accept my sexuality",
        "Is it normal to feel this way after a breakup?",
    ],
    MATH.name: [
        "A store sells pencils at 3 for $1. How much do 12 pencils cost?",
        "If a train travels 60 miles per hour for 2.5 hours, how far does it go?",
        "What is 15% of 80?",
        "Solve for x: 3x + 5 = 20",
        "Tom has 5 apples and gives 2 to Mary. How many apples does he have left?",
        "A rectangle is 8 cm long and 3 cm wide. What is its area?",
        "What is the sum of the first 10 positive integers?",
        "If 4 workers build a wall in 6 days, how long would 3 workers take?",
        "Calculate 128 divided by 4",
        "A recipe needs 2 cups of flour per batch. How many cups are needed for 7 batches?",
        "What is the average of 12, 15 and 18?",
        "Sara earns $12 an hour and works 30 hours a week. How much does she earn in 4 weeks?",
        "A shirt costs $40 and is on sale for 25% off. What is the sale price?",
    ],
}
"""Short, typical user messages per domain (written for this project, not taken from any data set)."""

MATH_BONUS = 0.1
"""Added to the math score when the text holds arithmetic (an operator between numbers, a percentage,
a price, or 3+ numbers): bare expressions such as "17*23" embed far from every sentence exemplar."""

_ARITHMETIC = re.compile(r"\d\s*[-+*/×÷^=]\s*[\d(x-z]|\d\s*%|[$€£]\s*\d")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.])")


def _has_arithmetic(text: str) -> bool:
    return bool(_ARITHMETIC.search(text)) or len(_NUMBER.findall(text)) >= 3


class DomainRouter:
    """Nearest-domain router over exemplar centroids.

    Args:
        embedder: a SentenceTransformer (the embedded all-MiniLM-L6-v2 in serving).
        exemplars: {domain: [message, ...]}; default `DEFAULT_EXEMPLARS`.
    """

    def __init__(
        self,
        embedder: SentenceTransformer,
        exemplars: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        exemplars = DEFAULT_EXEMPLARS if exemplars is None else exemplars
        if not exemplars or any(not texts for texts in exemplars.values()):
            raise ValueError(
                "DomainRouter.exemplars: expected at least one domain with at least one exemplar each; "
                f"got { ({d: len(t) for d, t in exemplars.items()}) }"
            )
        self._embedder = embedder
        self.domains = list(exemplars)
        centroids = []
        for domain in self.domains:
            emb = self._embed(list(exemplars[domain]))  # (N_d, D)
            centroid = emb.mean(axis=0)
            centroids.append(centroid / np.linalg.norm(centroid))
        self._centroids = np.stack(centroids)  # (K, D)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def scores(self, text: str) -> dict[str, float]:
        """Score of `text` for every domain (cosine to its centroid, plus the math bonus)."""
        sims = self._embed([text[:2000]])[0] @ self._centroids.T  # (K,)
        out = {d: float(s) for d, s in zip(self.domains, sims, strict=True)}
        if MATH.name in out and _has_arithmetic(text):
            out[MATH.name] += MATH_BONUS
        return out

    def route(self, text: str, available: Sequence[str]) -> tuple[str | None, dict[str, float]]:
        """Return (adapter name to use, per-domain scores).

        The adapter name is the first of the winning domain's names (`Domain.aliases`, or the exemplars'
        domain name itself for a domain `quantum_adapters.domains` does not know) that is in
        `available`, or None when none is (the caller answers with the base model).
        """
        scores = self.scores(text)
        domain = max(scores, key=scores.__getitem__)
        known = DOMAINS.get(domain)
        for name in known.aliases if known else (domain,):
            if name in available:
                return name, scores
        return None, scores
