"""How one completion is decoded: :class:`SamplingParams`, built once per request and passed unchanged
from the API (``ChatCompletionRequest.sampling_params()``) or the chat page (``ui.UI_DECODING``)
through the service and the engine to the scheduler, which reads its fields when a row is created.

Each decoding step of a row, for its logits ``z`` (V,) over the vocabulary (vLLM's order):

    z[t] -= frequency_penalty * count(t) + presence_penalty * (count(t) > 0)   (tokens of the reply)
    greedy (temperature 0):  next = argmax z
    sampled:                 next ~ top_p(softmax(z / temperature))          (the row's own generator)

No web types here (the engine and evaluation build these directly), and torch is imported only where
a row is set up, so the protocol models can use this module cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_CHOICES", "MIN_TEMPERATURE", "Penalties", "SamplingParams", "choice_seed"]

MAX_CHOICES = 8
"""Most choices one call may ask for (``n``; for a text completion, prompts x ``n``)."""
MIN_TEMPERATURE = 1e-3
"""Temperatures below this are greedy decoding: dividing the logits by a smaller number overflows to
inf and sampling fails, and sampling that cold is greedy in all but exact ties anyway."""


def choice_seed(seed: int | None, index: int) -> int | None:
    """The seed of choice ``index`` of a seeded request: ``seed`` itself for choice 0 (so ``n=1`` and the
    first of ``n`` choices agree), a distinct 64-bit seed derived from it for the others."""
    if seed is None or index == 0:
        return seed
    return (seed + index * 0x9E3779B97F4A7C15) % 2**64


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters of one completion (vLLM's ``SamplingParams``, reduced to what is served).

    The API's bounds are checked by :mod:`serving.protocol`; here only what the engine itself cannot
    run is refused."""

    max_tokens: int = 256
    """Most tokens to generate (the reply ends ``length`` when reached)."""
    temperature: float = 0.0
    """0 is greedy decoding; so is anything below ``MIN_TEMPERATURE`` (stored as 0.0)."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches ``top_p``
    (sampled rows only; 1.0 keeps every token)."""
    stop: tuple[str, ...] = ()
    """Strings at which the reply ends (cut from the text; no delta ever shows part of one). A single
    string or a list is accepted; empty strings are dropped."""
    seed: int | None = None
    """Seeds the row's own ``torch.Generator``, so a seeded request samples the same tokens alone or in
    any batch; None draws a fresh seed."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time it already occurs in the reply."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once it occurs in the reply at all."""
    n: int = 1
    """Choices to generate; choice i samples with ``choice_seed(seed, i)`` (see :meth:`for_choice`)."""
    logprobs: int | None = None
    """Record every sampled token's logprob and this many top alternatives; None records nothing."""
    ignore_eos: bool = False
    """Benchmarks: decode exactly ``max_tokens`` tokens (EOS and stop strings ignored)."""

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_CHOICES:
            raise ValueError(f"n: expected 1 <= n <= {MAX_CHOICES}; got {self.n!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected >= 1; got {self.max_tokens!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        temperature = float(self.temperature or 0.0)
        set_ = object.__setattr__  # normalised once, on a frozen dataclass
        set_(self, "stop", tuple(s for s in stop if s))
        set_(self, "temperature", 0.0 if temperature < MIN_TEMPERATURE else temperature)
        set_(self, "top_p", float(self.top_p))
        set_(self, "frequency_penalty", float(self.frequency_penalty))
        set_(self, "presence_penalty", float(self.presence_penalty))
        set_(self, "max_tokens", int(self.max_tokens))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def single(self) -> SamplingParams:
        """These parameters, for a call that gives one choice (refused when ``n`` asks for more)."""
        if self.n != 1:
            raise ValueError(f"expected one choice (n=1); got n={self.n}; use stream_choices for several")
        return self

    def for_choice(self, index: int) -> SamplingParams:
        """The parameters of choice ``index`` alone: ``n=1`` and the choice's own seed."""
        return dataclasses.replace(self, n=1, seed=choice_seed(self.seed, index))

    def logits_processors(self, prompt_len: int) -> Any:
        """The transformers ``LogitsProcessorList`` a row applies to its logits each step: penalties,
        then (sampled rows) temperature and top-p. ``prompt_len``: the row's prompt tokens, which the
        penalties leave alone."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        processors = LogitsProcessorList()
        if self.frequency_penalty or self.presence_penalty:
            processors.append(Penalties(prompt_len, self.frequency_penalty, self.presence_penalty))
        if not self.greedy:
            processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The row's random generator (None for greedy rows), seeded with ``seed`` when given."""
        if self.greedy:
            return None
        import torch

        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(self.seed))
        return generator

    def to_generate_kwargs(self, pad_token_id: int | None) -> dict[str, Any]:
        """These parameters as keyword arguments of transformers' ``generate`` (the engine's batched
        greedy path). Only greedy decoding of ``max_tokens`` maps onto it exactly; anything else is
        the scheduler's and is refused here rather than run differently."""
        unsupported = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "max_tokens" and getattr(self, f.name) != f.default
        }
        if unsupported:
            raise ValueError(
                f"to_generate_kwargs: expected greedy decoding with only max_tokens set; got {unsupported}"
            )
        return {
            "max_new_tokens": self.max_tokens,
            "pad_token_id": pad_token_id,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }


class Penalties:
    """A transformers LogitsProcessor with OpenAI's frequency and presence penalties.

    For every token t already generated (the reply so far, not the prompt, as vLLM does):
    ``logit[t] -= frequency * count(t) + presence * (count(t) > 0)``. Positive values discourage
    repetition, negative ones encourage it; both 0 leaves decoding unchanged.
    """

    def __init__(self, prompt_len: int, frequency: float, presence: float) -> None:
        self.prompt_len, self.frequency, self.presence = prompt_len, float(frequency), float(presence)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        generated = input_ids[:, self.prompt_len :]  # (B, T_new)
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device)
        )  # (B, V)
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)
