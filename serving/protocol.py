"""OpenAI-compatible request and response models (pydantic v2), with a bound on every request field.

Responses serialise to the JSON OpenAI's chat-completions API sends, key for key, so existing clients
(the OpenAI SDKs, LangChain, curl scripts) read them unchanged; they carry one extra top-level key,
`qtha`, saying which adapter answered, whether `auto` routed the request, and what the safety layer
found. Unknown request fields are ignored, as OpenAI does; every error is one shape:

    {"error": {"message": "...", "type": "invalid_request_error", "code": null, "param": "temperature"}}

No web framework types appear here: the FastAPI app validates bodies with these models and turns a
`pydantic.ValidationError` into an `ErrorResponse` with `describe_validation_errors`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .sampling import MAX_CHOICES, SamplingParams

__all__ = [
    "MAX_COMPLETION_LOGPROBS",
    "MAX_CONTENT_CHARS",
    "MAX_MESSAGES",
    "MAX_TOKENS_LIMIT",
    "MAX_TOP_LOGPROBS",
    "SSE_DONE",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "DeltaMessage",
    "ErrorDetail",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "QthaInfo",
    "ResponseMessage",
    "StreamOptions",
    "TextChoice",
    "TextCompletion",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "describe_validation_errors",
    "new_completion_id",
]

MAX_CONTENT_CHARS = 32_000
"""Longest message content. The embedded models' context is a few thousand tokens; 32k characters
leaves room for pasted text while bounding tokenisation work."""
MAX_MESSAGES = 64
MAX_TOP_LOGPROBS = 20
"""Most alternatives per token for chat (`top_logprobs`), as OpenAI allows."""
MAX_COMPLETION_LOGPROBS = 5
"""Most alternatives per token for text completions (`logprobs`), as OpenAI allows."""
MAX_TOKENS_LIMIT = 1024
"""Largest `max_tokens`: at ~14 tokens/s on CPU, 1024 tokens is over a minute of generation."""
_MAX_STOP = 4
_MAX_STOP_CHARS = 128
_NAME_CHARS = 128

FinishReason = Literal["stop", "length"]


def new_completion_id(prefix: str = "chatcmpl") -> str:
    """An OpenAI-style completion id: 'chatcmpl-' (text completions: 'cmpl-') + 32 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One message of the conversation.

    `content` may also be sent, as newer OpenAI clients do, as a list of text parts
    (`[{"type": "text", "text": "..."}]`); they are joined into one string. Other part types
    (images, audio) are refused.
    """

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(strict=True, max_length=MAX_CONTENT_CHARS)]

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for i, part in enumerate(value):
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(
                    f"content[{i}]: expected a text part {{'type': 'text', 'text': str}}; got {kind!r}"
                )
            texts.append(part["text"])
        return "".join(texts)


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: with `include_usage`, a last chunk carries the usage counts."""

    model_config = ConfigDict(extra="ignore")

    include_usage: Annotated[bool, Field(strict=True)] = False


class _GenerationRequest(BaseModel):
    """The fields chat and text completions share, with their bounds. Unknown fields are ignored.

    What each decoding field does is documented once, on `serving.sampling.SamplingParams` (which
    `sampling_params()` builds); here only what the API adds: bounds, defaults and OpenAI's spellings.
    """

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(strict=True, min_length=1, max_length=_NAME_CHARS)] = "auto"
    """An adapter's name, 'base', or 'auto' (route by domain)."""
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=MAX_TOKENS_LIMIT)] = 256
    """`max_completion_tokens` (newer OpenAI clients) is accepted as an alias."""
    temperature: Annotated[float, Field(strict=True, ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = 1.0
    frequency_penalty: Annotated[float, Field(strict=True, ge=-2.0, le=2.0)] = 0.0
    presence_penalty: Annotated[float, Field(strict=True, ge=-2.0, le=2.0)] = 0.0
    stop: (
        Annotated[
            list[Annotated[str, Field(strict=True, min_length=1, max_length=_MAX_STOP_CHARS)]],
            Field(max_length=_MAX_STOP),
        ]
        | None
    ) = None
    """Up to 4 stop strings; a single string is accepted, as OpenAI does, and stored as a one-item
    list."""
    stream: Annotated[bool, Field(strict=True)] = False
    stream_options: StreamOptions | None = None
    seed: Annotated[int, Field(strict=True, ge=-(2**63), le=2**64 - 1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=MAX_CHOICES)] = 1
    """Choices to generate; they decode together in the running batch."""

    @model_validator(mode="before")
    @classmethod
    def _openai_spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        alias = data.pop("max_completion_tokens", None)
        if data.get("max_tokens") is None and alias is not None:
            data["max_tokens"] = alias
        # OpenAI clients send explicit nulls for "use the default".
        for key in (
            "model",
            "max_tokens",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "stream",
            "n",
        ):
            if key in data and data[key] is None:
                del data[key]
        return data

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def stop_sequences(self) -> list[str]:
        """`stop` as a list (empty when None)."""
        return list(self.stop or [])

    @property
    def logprob_k(self) -> int | None:
        """Alternatives to report per token, or None when no logprobs are asked for."""
        return None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_params(self) -> SamplingParams:
        """How to decode this request: its sampling fields, `n` and the logprobs asked for."""
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop_sequences),
            seed=self.seed,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            n=self.n,
            logprobs=self.logprob_k,
        )


class ChatCompletionRequest(_GenerationRequest):
    """Body of `POST /v1/chat/completions`. Unknown fields are ignored, as OpenAI does."""

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    tools: list[Any] | None = None
    """Function calling is not supported: a non-empty list is refused (400) rather than ignored, so a
    client never takes a plain reply for a decision not to call its tools."""
    response_format: dict[str, Any] | None = None
    """Only OpenAI's default `{"type": "text"}`; JSON modes are refused (400) rather than ignored."""
    logprobs: Annotated[bool, Field(strict=True)] = False
    """Report each generated token's logprob (`choices[i].logprobs.content`)."""
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    """Alternatives per token (needs `logprobs: true`, as OpenAI does)."""

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: Any) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @property
    def logprob_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("function calling is not supported by this server; send no tools")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError(
                f"expected {{'type': 'text'}} (the only format served); got type {value.get('type')!r}"
            )
        return value


class CompletionRequest(_GenerationRequest):
    """Body of `POST /v1/completions` (OpenAI's text completions). The prompt is answered as one user
    message of a chat, so it passes the same safety checks, routing and adapters as a chat does."""

    prompt: (
        Annotated[str, Field(strict=True, min_length=1, max_length=MAX_CONTENT_CHARS)]
        | Annotated[
            list[Annotated[str, Field(strict=True, min_length=1, max_length=MAX_CONTENT_CHARS)]],
            Field(min_length=1, max_length=MAX_CHOICES),
        ]
    )
    """A string, or a list of strings: each prompt gets `n` choices (prompt p's choice j has index
    p * n + j, as OpenAI numbers them); prompts x n is at most `MAX_CHOICES`."""
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=MAX_TOKENS_LIMIT)] = 16
    """16 when not given, as OpenAI's text completions do."""
    logprobs: Annotated[int, Field(strict=True, ge=0, le=MAX_COMPLETION_LOGPROBS)] | None = None
    """Report each token's logprob and this many alternatives (`choices[i].logprobs`)."""

    @property
    def logprob_k(self) -> int | None:
        return self.logprobs

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------


class QthaInfo(BaseModel):
    """The extra top-level `qtha` key on responses."""

    adapter: str
    """Adapter that answered ('base' for the base model)."""
    routed: bool
    """True when the request asked for 'auto' and the router chose `adapter`."""
    safety: dict[str, Any] = Field(default_factory=dict)
    """The safety assessment (`SafetyAssessment.as_dict()`): crisis, kind, score, matched."""
    scores: dict[str, float] | None = None
    """Router scores per domain when `routed`."""


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    """The token's exact UTF-8 bytes (a token may hold part of a character)."""


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """Chat `choices[i].logprobs`: one entry per generated token, with its top alternatives."""

    content: list[TokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """Text completions' `choices[i].logprobs` (OpenAI's legacy shape), one list entry per token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)
    """Character offset of each token in the choice's text."""


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class _Sent(BaseModel):
    """A response model as the server sends it: fields that are None are left out (OpenAI leaves out
    what does not apply), unless the model keeps them (`_keep_none`)."""

    _keep_none: ClassVar[bool] = False

    def body(self) -> dict[str, Any]:
        """The JSON body of a plain (non-streamed) response."""
        return self.model_dump(exclude_none=not self._keep_none)

    def sse(self) -> str:
        """This object as one server-sent event (the stream ends with `SSE_DONE`)."""
        return f"data: {self.model_dump_json(exclude_none=not self._keep_none)}\n\n"


class ChatCompletion(_Sent):
    """Response of a non-streamed chat completion."""

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[Choice]
    usage: Usage
    qtha: QthaInfo


class DeltaMessage(BaseModel):
    """A streamed delta; its None keys are left out when sent, as OpenAI does (`{}` on the last chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Sent):
    """One server-sent event of a streamed completion (`data: {json}`); the stream ends `data: [DONE]`.

    Every chunk of one completion shares `id` and `created`. OpenAI sends the role in the first
    delta, content in the following ones, then an empty delta with `finish_reason`; with
    `stream_options.include_usage`, a last chunk with `choices: []` and `usage`.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    qtha: QthaInfo | None = None


SSE_DONE = "data: [DONE]\n\n"
"""The last server-sent event of every stream, as OpenAI sends it."""


class TextChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class TextCompletion(_Sent):
    """Response of `POST /v1/completions`, and (with text deltas, `usage` only at the end) each of its
    streamed events: OpenAI streams the same object, `choices: []` with `usage` last when
    `stream_options.include_usage` is set."""

    id: str = Field(default_factory=lambda: new_completion_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    qtha: QthaInfo | None = None


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "qtha"
    qtha: dict[str, Any] | None = None
    """Optional description (adapter method, domain, base model, artifact hash)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    """OpenAI's error types: invalid_request_error, authentication_error, rate_limit_error,
    server_error, ..."""
    code: str | int | None = None
    param: str | None = None


class ErrorResponse(_Sent):
    """The one error shape, for every error status and for an error inside a stream; `code` and
    `param` are always sent (null when they do not apply), as OpenAI does."""

    _keep_none: ClassVar[bool] = True

    error: ErrorDetail

    @classmethod
    def of(
        cls,
        message: str,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        param: str | None = None,
    ) -> ErrorResponse:
        return cls(error=ErrorDetail(message=message, type=type, code=code, param=param))


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _loc_to_param(loc: Iterable[Any]) -> str:
    """('body', 'messages', 0, 'role') -> 'messages[0].role'; union-member tags ('list[str]') dropped."""
    out = ""
    for p in loc:
        if p == "body" or (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p)):
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe_validation_errors(errors: list[Mapping[str, Any]]) -> tuple[str, str | None]:
    """(message, param) for `pydantic.ValidationError.errors()` (or FastAPI's `RequestValidationError`).

    The message names each bad field and what was expected, with a short preview of the value sent
    (never more than 40 characters of it, so a huge or secret value is not echoed back). `param` is
    the first bad field, in OpenAI's dotted form (`messages[0].role`).
    """
    lines = []
    first: str | None = None
    for err in errors[:5]:
        param = _loc_to_param(err.get("loc", ()))
        first = first or param or None
        preview = ""
        if "input" in err and err.get("type") != "missing":
            shown = repr(err["input"])
            preview = f" (got {shown[:40]}{'...' if len(shown) > 40 else ''})"
        where = f"{param}: " if param else ""
        lines.append(f"{where}{err.get('msg', 'invalid value')}{preview}")
    if len(errors) > 5:
        lines.append(f"... and {len(errors) - 5} more")
    return "; ".join(lines) or "invalid request", first
