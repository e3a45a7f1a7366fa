"""Server settings, read from `QTHA_*` environment variables (CLI flags override them).

Every field has an environment variable of the same name in upper case with a `QTHA_` prefix, e.g.
`max_queue` <- `QTHA_MAX_QUEUE`. API keys are secrets: they are never logged, and `repr(settings)`
shows only how many there are.

Without API keys the server has no authentication, so `bind_host()` refuses to expose it beyond the
loopback interface whatever host was asked for, and returns a warning saying so.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK_HOST", "Settings"]

LOOPBACK_HOST = "127.0.0.1"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_ENV_PREFIX = "QTHA_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, repr=False)
class Settings:
    """Configuration of one `qtha-serve` process."""

    api_keys: tuple[str, ...] = ()
    """Accepted API keys (`QTHA_API_KEYS`, comma-separated). Empty: authentication is off and the
    server binds to loopback only. Clients send `Authorization: Bearer <key>`."""

    host: str = LOOPBACK_HOST
    """Interface to bind (`QTHA_HOST`). Forced to loopback when there are no API keys."""

    port: int = 8000
    """TCP port (`QTHA_PORT`); 0 asks the OS for a free one (tests)."""

    max_body_bytes: int = 64 * 1024
    """Largest accepted request body (`QTHA_MAX_BODY_BYTES`); larger ones get 413. 64 KiB holds the
    largest valid request's text many times over while keeping a flood of big bodies cheap to refuse."""

    max_queue: int = 8
    """Requests allowed to wait for a generation slot (`QTHA_MAX_QUEUE`); one more gets 429 with
    Retry-After instead of hanging."""

    max_concurrent: int = 8
    """Generations run at the same time (`QTHA_MAX_CONCURRENT`): the rows of the engine's continuous
    batch, which decode together in one forward pass per token (8 rows: about 3x one stream's
    tokens/s on 2 busy CPU cores). More requests wait in the queue."""

    max_batch_tokens: int = 16_384
    """Bound on the batch's KV cache in token slots (`QTHA_MAX_BATCH_TOKENS`): rows x the longest
    running request's prompt + max_tokens. A request that would exceed it waits for rows to leave
    (alone it always runs). 16,384 slots are about 0.75 GB of float32 cache on SmolLM2-135M."""

    request_timeout_s: float = 120.0
    """Longest a request may wait plus generate, in seconds (`QTHA_REQUEST_TIMEOUT_S`)."""

    rate_limit_per_min: int = 60
    """Requests per minute per API key (`QTHA_RATE_LIMIT_PER_MIN`), as a token bucket: a key may burst
    this many at once, then refills at this rate."""

    locale: str = "US"
    """Country code choosing the crisis resources shown to people in distress (`QTHA_LOCALE`: US, UK,
    CA, AU, ...); an unknown code falls back to the international text."""

    chat_log: Path | None = None
    """SQLite file for opt-in chat logging (`QTHA_CHAT_LOG`); None: nothing is logged. Even when set,
    a conversation is stored only when the user consented."""

    chat_log_retention_days: int = 30
    """Days a logged conversation is kept before `purge_expired` deletes it
    (`QTHA_CHAT_LOG_RETENTION_DAYS`)."""

    safety_log_content: bool = False
    """Store the text of safety events (crisis, diagnosis, dosing requests) in the chat log
    (`QTHA_SAFETY_LOG_CONTENT`). Off: only their counts are kept."""

    def __post_init__(self) -> None:
        if not isinstance(self.api_keys, tuple) or not all(isinstance(k, str) for k in self.api_keys):
            raise TypeError(f"Settings.api_keys: expected a tuple of str; got {type(self.api_keys).__name__}")
        for i, key in enumerate(self.api_keys):
            if len(key) < 8 or any(c.isspace() for c in key):
                # The key itself is never echoed, even in an error.
                raise ValueError(
                    f"Settings.api_keys[{i}]: expected at least 8 characters without spaces; "
                    f"got one of {len(key)} characters"
                )
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"Settings.host: expected a host name or address; got {self.host!r}")
        _check_range("port", self.port, 0, 65535)
        _check_range("max_body_bytes", self.max_body_bytes, 1024, 16 * 1024 * 1024)
        _check_range("max_queue", self.max_queue, 0, 10_000)
        _check_range("max_concurrent", self.max_concurrent, 1, 64)
        _check_range("max_batch_tokens", self.max_batch_tokens, 256, 10_000_000)
        _check_range("request_timeout_s", self.request_timeout_s, 0.1, 3600.0)
        _check_range("rate_limit_per_min", self.rate_limit_per_min, 1, 1_000_000)
        _check_range("chat_log_retention_days", self.chat_log_retention_days, 1, 3650)
        if not re.fullmatch(r"[A-Za-z]{2,8}", self.locale):
            raise ValueError(
                f"Settings.locale: expected a country code such as 'US' or 'UK'; got {self.locale!r}"
            )
        object.__setattr__(self, "locale", self.locale.upper())

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = f"<{len(value)} key(s)>" if f.name == "api_keys" else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    @property
    def auth_enabled(self) -> bool:
        """True when API keys are configured and every request must carry one."""
        return bool(self.api_keys)

    def bind_host(self) -> tuple[str, str | None]:
        """Return `(host to bind, warning or None)`.

        Without API keys the server is unauthenticated, so it binds to loopback whatever `host` says,
        and the warning (for the log and the console) says so.
        """
        if self.api_keys:
            return self.host, None
        if self.host in _LOOPBACK_HOSTS:
            return self.host, (
                "no API keys configured (QTHA_API_KEYS): authentication is off and the server "
                f"listens on loopback ({self.host}) only"
            )
        return LOOPBACK_HOST, (
            f"no API keys configured (QTHA_API_KEYS): refusing to listen on {self.host!r} without "
            f"authentication; listening on loopback ({LOOPBACK_HOST}) only. Set QTHA_API_KEYS to serve "
            "other machines"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Build settings from `QTHA_*` variables in `environ`, then apply `overrides` (CLI flags).

        Overrides whose value is None are skipped, so an argparse flag that was not given leaves the
        environment's value. `api_keys` may be overridden by a comma-separated string or a sequence.

        Raises:
            ValueError: a variable cannot be parsed; the message names the variable and its value
                (except for API keys, which are never echoed).
            TypeError: an override names no field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(
                f"Settings.from_env: unknown setting(s) {unknown}; expected some of {sorted(names)}"
            )
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = _ENV_PREFIX + f.name.upper()
            if var in environ:
                kwargs[f.name] = _parse(f.name, var, environ[var])
        for name, value in overrides.items():
            if value is None:
                continue
            if name == "api_keys":
                value = _split_keys(value) if isinstance(value, str) else tuple(value)
            elif name == "chat_log":
                value = Path(value)
            kwargs[name] = value
        return cls(**kwargs)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Settings.{name}: expected a number; got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"Settings.{name}: expected {low} <= value <= {high}; got {value!r}")


def _split_keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _parse(name: str, var: str, raw: str) -> Any:
    """Parse environment variable `var` (raw text `raw`) into the type of field `name`."""
    if name == "api_keys":
        return _split_keys(raw)
    if name in {"host", "locale"}:
        return raw.strip()
    if name == "chat_log":
        return Path(raw.strip()) if raw.strip() else None
    if name == "safety_log_content":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{var}: expected one of 1/0, true/false, yes/no, on/off; got {raw!r}")
    try:
        return float(raw) if name == "request_timeout_s" else int(raw.strip())
    except ValueError:
        kind = "a number" if name == "request_timeout_s" else "an integer"
        raise ValueError(f"{var}: expected {kind}; got {raw!r}") from None
