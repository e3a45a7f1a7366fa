"""Chat-template tokenisation with loss on the assistant reply only, and batch collation.

For a :class:`~training.examples.ChatExample` with messages ``m[0..k]`` (``m[k]`` the target reply)::

    prompt = render(m[0..k-1], add_generation_prompt=True)    "<|im_start|>system ... <|im_start|>assistant\\n"
    full   = render(m[0..k])                                  prompt + "reply<|im_end|>\\n"
    target = full[len(prompt):].rstrip()                      "reply<|im_end|>"

    input_ids = tok(prompt) + tok(target)                     (T,)
    labels    = [-100] * len(tok(prompt)) + tok(target)       (T,)  -100 = no loss

Prompt and target are tokenised separately on purpose: at inference the model receives exactly
``tok(prompt)`` and generates from there, so training on the same token boundary is what it will see.
The boundary comes from the template itself (the rendering of the full chat must start with the
rendering of the prompt), so it works for any template that appends turns, whatever its markers.
Trailing whitespace after the end-of-turn token is dropped: generation stops at that token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from training.data import DataReport
from training.examples import ChatExample

__all__ = ["IGNORE_INDEX", "Batch", "collate", "encode", "encode_all"]

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy (and Hugging Face models) ignore."""


def encode(
    tokenizer: Any, example: ChatExample, max_len: int, *, trim_context: bool = False
) -> dict[str, list[int]] | None:
    """Token ids and labels for one example, or None when the prompt leaves no room for the reply.

    Returns ``{"input_ids": [...], "labels": [...]}`` of equal length ``<= max_len``; labels are
    ``-100`` on every prompt token and equal to ``input_ids`` on the reply and its end-of-turn token.
    A reply that does not fit is truncated on the right (losing its end token). Returns None when the
    prompt alone takes ``max_len`` tokens or more: the caller counts those as too long.

    ``trim_context=True`` first drops the oldest turns of a multi-turn chat (keeping the system
    message, and starting the kept context at a user turn) until the whole example fits or only the
    last user turn is left. Long dialogues (ESConv) then train on their recent context instead of
    being dropped, as a server that keeps the last turns of a long chat would prompt the model.
    """
    if max_len < 2:
        raise ValueError(f"max_len: expected an integer >= 2; got {max_len!r}")
    prompt_ids, target_ids = _tokens(tokenizer, example.messages, example.source)
    if trim_context and len(prompt_ids) + len(target_ids) > max_len:
        contexts = _trimmed_contexts(example.messages)
        # Binary search for the least trimming that fits (fewer turns never make the prompt longer);
        # if nothing fits, keep the most trimmed one, contexts[-1].
        lo, hi = 0, len(contexts) - 1
        if contexts:
            prompt_ids, target_ids = _tokens(tokenizer, contexts[hi], example.source)
        while lo < hi:
            mid = (lo + hi) // 2
            p, t = _tokens(tokenizer, contexts[mid], example.source)
            if len(p) + len(t) <= max_len:
                hi, prompt_ids, target_ids = mid, p, t
            else:
                lo = mid + 1
    if len(prompt_ids) >= max_len:
        return None
    target_ids = target_ids[: max_len - len(prompt_ids)]
    return {"input_ids": prompt_ids + target_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids}


def encode_all(
    tokenizer: Any,
    examples: Iterable[ChatExample],
    max_len: int,
    report: DataReport,
    *,
    trim_context: bool = False,
) -> list[dict[str, list[int]]]:
    """:func:`encode` every example, dropping (and counting in ``report.too_long``) those that do not fit."""
    features = []
    for ex in examples:
        feature = encode(tokenizer, ex, max_len, trim_context=trim_context)
        if feature is None:
            report.too_long += 1
        else:
            features.append(feature)
    return features


@dataclass
class Batch:
    """A right-padded batch, every tensor ``(B, T)`` int64 with ``T`` the longest example."""

    input_ids: torch.Tensor
    """Token ids, padded with the tokenizer's pad id."""
    attention_mask: torch.Tensor
    """1 on real tokens, 0 on padding."""
    labels: torch.Tensor
    """Target ids, ``-100`` on prompt tokens and padding."""

    @classmethod
    def from_features(cls, features: list[dict[str, list[int]]], pad_id: int) -> Batch:
        if not features:
            raise ValueError("collate: expected at least one feature; got an empty list")
        if pad_id is None:
            raise ValueError("collate: pad_id is None; set tokenizer.pad_token (e.g. to the eos token)")
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)  # (B, T)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            if len(f["labels"]) != n:
                raise ValueError(f"collate: feature {i} has {n} input_ids but {len(f['labels'])} labels")
            input_ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(f["labels"], dtype=torch.long)
            attention_mask[i, :n] = 1
        return cls(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The keyword arguments a Hugging Face causal LM takes: ``model(**batch.as_dict())``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad features from :func:`encode` into ``input_ids`` / ``attention_mask`` / ``labels``, each (B, T)."""
    return Batch.from_features(features, pad_id).as_dict()


def _render(tokenizer: Any, messages: list[dict[str, str]], source: str) -> tuple[str, str]:
    """(prompt text ending in the assistant header, target text: the reply and its end-of-turn token)."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        at = next(
            (i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b),
            min(len(prompt), len(full)),
        )
        raise ValueError(
            f"chat template of {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}): the rendering "
            "of the whole chat does not start with the rendering of the prompt (add_generation_prompt=True), so "
            f"the reply's first token cannot be located (example {source}); they differ at character {at}: "
            f"prompt {prompt[max(0, at - 40) : at + 40]!r} vs full {full[max(0, at - 40) : at + 40]!r}"
        )
    target = full[len(prompt) :].rstrip()
    if not target:
        raise ValueError(f"chat template rendered an empty reply for example {source}")
    return prompt, target


def _trimmed_contexts(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Ever shorter versions of ``messages``: the system message, then the context from the 2nd, 3rd,
    ... user turn on, then the reply. Empty when there is only one user turn before the reply."""
    head = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(head) : -1]
    starts = [i for i in range(1, len(body)) if body[i]["role"] == "user"]
    return [[*head, *body[i:], messages[-1]] for i in starts]


def _tokens(tokenizer: Any, messages: list[dict[str, str]], source: str) -> tuple[list[int], list[int]]:
    prompt_text, target_text = _render(tokenizer, messages, source)
    return _ids(tokenizer, prompt_text), _ids(tokenizer, target_text)


def _ids(tokenizer: Any, text: str) -> list[int]:
    # The template already wrote every special token (BOS included, when the model has one) as text.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
