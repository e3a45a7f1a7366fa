"""The one chat-example schema every data set becomes, and the number form math answers are kept in.

A :class:`ChatExample` is a chat (``system`` / ``user`` / ``assistant`` messages) whose LAST message
is the assistant reply the model is trained to produce. The loaders (:mod:`training.data`) and the
generators (:mod:`training.synthetic`) both build them; this module imports neither, so neither
imports the other for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from quantum_adapters.domains import DOMAINS

__all__ = ["ChatExample", "clean_number", "message_problem", "normalize_number"]

_ROLES = ("system", "user", "assistant")


@dataclass
class ChatExample:
    """One training conversation.

    ``messages`` are ``{"role": ..., "content": ...}`` dicts with roles ``system`` / ``user`` /
    ``assistant``; the last one is always the assistant reply that is the training target (everything
    before it is prompt and gets no loss). ``domain`` is a canonical name of
    :data:`quantum_adapters.domains.DOMAINS`. ``source`` says where the example came from, down to the
    line (``gsm8k:/data/train.jsonl#line 12``). ``answer`` is, for math, the exact final answer as a
    normalised number string (``"72"``, ``"3.5"``; see :func:`normalize_number`), else None.
    ``meta`` holds loader-specific extras; ``meta["group"]``, when set, keeps related examples (turns
    of one dialogue, answers to one question) on the same side of :func:`training.data.split`.
    """

    messages: list[dict[str, str]]
    domain: str
    source: str
    answer: str | None = None
    synthetic: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or self.domain not in DOMAINS:
            raise ValueError(
                f"ChatExample from {self.source}: domain expected one of {tuple(DOMAINS)}; got {self.domain!r}"
            )
        problem = message_problem(self.messages)
        if problem:
            raise ValueError(f"ChatExample from {self.source}: {problem}")

    @classmethod
    def single_turn(
        cls, domain: str, user: str, reply: str, *, system: str | None = None, **fields: Any
    ) -> ChatExample:
        """``[system, user, assistant]``; the system message defaults to the domain's system prompt,
        so that what the model is trained on is what it is served with. ``fields`` are the other
        dataclass fields (``source`` is required)."""
        system = system if system is not None else DOMAINS[domain].system_prompt
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ]
        return cls(messages=messages, domain=domain, **fields)

    @property
    def prompt(self) -> list[dict[str, str]]:
        """Every message before the target."""
        return self.messages[:-1]

    @property
    def target(self) -> str:
        """The assistant reply the model is trained to produce."""
        return self.messages[-1]["content"]


def message_problem(messages: Any) -> str | None:
    """What is wrong with a message list, or None: roles, string contents, last one an assistant reply."""
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}]: expected an object with 'role' and 'content'; got {type(m).__name__}"
        if m.get("role") not in _ROLES:
            return f"messages[{i}].role: expected one of {_ROLES}; got {m.get('role')!r}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content: expected a string; got {type(m.get('content')).__name__}"
    if messages[-1]["role"] != "assistant":
        return f"the last message must be the assistant reply; got role {messages[-1]['role']!r}"
    if not messages[-1]["content"].strip():
        return "the last (assistant) message is empty"
    if not any(m["role"] == "user" for m in messages[:-1]):
        return "expected at least one user message before the assistant reply"
    return None


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def clean_number(text: str) -> str:
    """``text`` without the marks a written number carries: padding, commas, ``$``, a trailing period."""
    return text.strip().replace(",", "").replace("$", "").rstrip(".").strip()


def normalize_number(text: str) -> str | None:
    """Canonical string of a number as written in an answer, or None if it is not one number.

    ``"1,200"`` -> ``"1200"``, ``"$3.50"`` -> ``"3.5"``, ``"5.0"`` -> ``"5"``, ``"-0"`` -> ``"0"``,
    ``".5"`` -> ``"0.5"``. Only plain decimals count (no exponent, no ``inf``). Training targets and
    the evaluators (:func:`evals.extract.normalize_number`) use this function so that "exact" means
    the same thing.
    """
    t = clean_number(text)
    if not _NUMBER.fullmatch(t):
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")  # 'f': 0.25, never 2.5E-1
