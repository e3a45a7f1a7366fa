"""The domains qtha adapts a model to, defined once: names, aliases, system prompts, page labels.

A frozen artifact records the domain it was trained on (``manifest.json`` -> ``training.domain``), and
training, evaluation and serving all need to agree on what that word means; this module is the one
place they read it from (it sits in ``quantum_adapters`` because that is the package all three may
import). British and American spellings, and the names an adapter may be given, resolve here:

    >>> canonical("Counselling")
    'counseling'
    >>> canonical("gsm8k")
    'math'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COUNSELING",
    "DOMAINS",
    "MATH",
    "Domain",
    "canonical",
    "is_counseling",
]


@dataclass(frozen=True)
class Domain:
    """One domain and every name it goes by."""

    name: str
    """Canonical name, the one manifests, data loaders and reports use."""
    label: str
    """How the chat page shows it."""
    aliases: tuple[str, ...]
    """Names that mean this domain (spellings, adapter names, task names), the canonical name first:
    the router serves a domain with the first of these that is a loaded adapter."""
    system_prompt: str
    """The system message every training and evaluation example of this domain starts with."""


MATH = Domain(
    name="math",
    label="Math",
    aliases=("math", "maths", "gsm8k", "synthetic-math"),
    system_prompt=(
        "You are a careful math tutor. Solve the problem step by step, showing each calculation, "
        "and end with a final line of the form '#### <number>'."
    ),
)

COUNSELING = Domain(
    name="counseling",
    label="Counselling",
    aliases=("counseling", "counselling", "mental-health"),
    system_prompt=(
        "You are an AI support assistant, not a therapist or a clinician. Listen, reflect the person's "
        "feelings, validate them, ask open questions and suggest gentle next steps. If someone may be in "
        "danger, first urge them to call or text 988 (Suicide & Crisis Lifeline, US) or local emergency "
        "services."
    ),
)

DOMAINS: dict[str, Domain] = {d.name: d for d in (COUNSELING, MATH)}
"""Canonical name -> domain, in the order the page lists them."""

_BY_ALIAS = {alias: d.name for d in DOMAINS.values() for alias in d.aliases}


def canonical(name: str | None) -> str | None:
    """The canonical domain a name means (any alias, any case), or None if it names no domain."""
    return None if name is None else _BY_ALIAS.get(name.strip().lower())


def is_counseling(name: str | None) -> bool:
    """Whether a domain or adapter name means the counselling domain (the safety layer's question)."""
    return canonical(name) == COUNSELING.name
