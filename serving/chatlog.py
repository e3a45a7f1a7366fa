"""Opt-in chat logging to SQLite, with consent, redaction and a retention period.

Off unless the operator sets `QTHA_CHAT_LOG`; even then a conversation is stored only when the user
consented (`consent=True`), with e-mail addresses and phone numbers replaced by `[email]` and
`[phone]`, and deleted by `purge_expired` once older than the retention period. Safety events
(crisis, diagnosis, medication requests) are recorded as kind + time only; their text is kept only
when the operator opted in (`log_safety_content`) *and* the user consented.

Tables (sqlite-utils, WAL journal so the server's writes do not block readers):

    exchanges(id, conversation_id, created_at, adapter, messages_json, reply)
    safety_events(id, conversation_id, created_at, kind, matched, content)

`created_at` is UTC epoch seconds.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

__all__ = ["ChatLog", "redact"]

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# A phone-number candidate: optional + or 00, then digits with single separators (space, dot, hyphen,
# slash, parentheses) between them. Candidates are then judged by `_is_phone`.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+/.,-])(?:\+|\b00)?\(?\d(?:(?:[ .\-/]|\) ?| ?\()?\d){5,18}(?![\w/]|[.,]\d)"
)
_YEAR = re.compile(r"(?:19|20)\d\d")
_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")


_ROW = {"id": int, "conversation_id": str, "created_at": float}
_TABLES: dict[str, dict[str, type]] = {
    "exchanges": {**_ROW, "adapter": str, "messages_json": str, "reply": str},
    "safety_events": {**_ROW, "kind": str, "matched": str, "content": str},
}
"""The tables and their columns (see the module docstring); each is indexed on `created_at`."""


def _is_phone(candidate: str) -> bool:
    """Decide whether a digit run found by `_PHONE_CANDIDATE` is a phone number.

    Phone numbers have 7..15 digits (E.164 caps them at 15). Without a + / 00 prefix we also require
    the shape of a written phone number, so ordinary numbers stay: a bare digit run must have 10+
    digits (a mobile written without spaces); a separated one must not be a date, a decimal, a list
    of years or of single digits.
    """
    digits = re.sub(r"\D", "", candidate)
    if not 7 <= len(digits) <= 15:
        return False
    if candidate.startswith(("+", "00")):
        return True
    groups = re.findall(r"\d+", candidate)
    if len(groups) == 1:
        return len(digits) >= 10
    if _DATE.fullmatch(candidate) or re.fullmatch(r"\d+\.\d+", candidate):
        return False
    if all(_YEAR.fullmatch(g) for g in groups):
        return False
    if sum(len(g) == 1 for g in groups) > 1:
        return False
    return max(len(g) for g in groups) >= 3


def redact(text: str) -> str:
    """Replace e-mail addresses with '[email]' and phone numbers with '[phone]'.

    Ordinary numbers (ages, counts, years, prices, dates, decimals) are left alone; see `_is_phone`.
    """
    text = _EMAIL.sub("[email]", text)
    return _PHONE_CANDIDATE.sub(lambda m: "[phone]" if _is_phone(m.group(0)) else m.group(0), text)


def _epoch(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError(f"ChatLog: expected a timezone-aware datetime for `now`; got naive {now!r}")
        return now.timestamp()
    return float(now)


def _check_conversation_id(conversation_id: str) -> str:
    if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 128:
        raise ValueError(
            f"ChatLog: expected a conversation_id of 1..128 characters; got {conversation_id!r:.60}"
        )
    return conversation_id


class ChatLog:
    """SQLite store of consented conversations.

    Args:
        path: database file (created with its parent folder).
        retention_days: rows older than this are deleted by `purge_expired`.
        log_safety_content: keep the (redacted) text of safety events when the user consented.

    Thread-safe: one connection shared under a lock (the server writes from its worker threads).
    """

    def __init__(self, path: str | Path, retention_days: int = 30, log_safety_content: bool = False) -> None:
        if retention_days < 1:
            raise ValueError(f"ChatLog.retention_days: expected >= 1; got {retention_days!r}")
        self.path = Path(path)
        self.retention_days = retention_days
        self.log_safety_content = log_safety_content
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()
        self.db = sqlite_utils.Database(self._conn)
        self.db.enable_wal()
        for name, columns in _TABLES.items():
            table = self.db.table(name)
            if not table.exists():
                table.create(columns, pk="id")
                table.create_index(["created_at"])

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def record(
        self,
        conversation_id: str,
        messages: Sequence[Mapping[str, Any] | Any],
        reply: str,
        adapter: str,
        consent: bool,
        now: datetime | float | None = None,
    ) -> int | None:
        """Store one exchange (the request's messages and the reply), redacted, if `consent` is True.

        Returns the row id, or None when nothing was stored (no consent).
        """
        if consent is not True:
            return None
        stored = []
        for m in messages:
            role = m.get("role") if isinstance(m, Mapping) else getattr(m, "role", None)
            content = m.get("content") if isinstance(m, Mapping) else getattr(m, "content", None)
            stored.append({"role": str(role), "content": redact(content if isinstance(content, str) else "")})
        row = {
            "conversation_id": _check_conversation_id(conversation_id),
            "created_at": _epoch(now),
            "adapter": adapter,
            "messages_json": json.dumps(stored, ensure_ascii=False),
            "reply": redact(reply),
        }
        with self._lock:
            return self.db.table("exchanges").insert(row).last_pk

    def record_safety_event(
        self,
        kind: str,
        matched: str | None = None,
        conversation_id: str | None = None,
        text: str | None = None,
        consent: bool = False,
        now: datetime | float | None = None,
    ) -> int:
        """Store a safety event: kind, rule matched and time; the redacted text only when both the
        operator (`log_safety_content`) and the user (`consent`) opted in."""
        content = redact(text) if (text and self.log_safety_content and consent is True) else None
        row = {
            "conversation_id": _check_conversation_id(conversation_id) if conversation_id else None,
            "created_at": _epoch(now),
            "kind": kind,
            "matched": matched,
            "content": content,
        }
        with self._lock:
            return self.db.table("safety_events").insert(row).last_pk

    def purge_expired(self, now: datetime | float | None = None) -> int:
        """Delete exchanges and safety events older than `retention_days`; return how many rows went."""
        cutoff = _epoch(now) - self.retention_days * 86_400
        deleted = 0
        with self._lock, self._conn:
            for table in _TABLES:
                deleted += self._conn.execute(f"DELETE FROM {table} WHERE created_at < ?", (cutoff,)).rowcount
        return deleted

    def count(self, table: str = "exchanges") -> int:
        """Rows in `table` ('exchanges' or 'safety_events')."""
        if table not in _TABLES:
            raise ValueError(f"ChatLog.count: expected one of {', '.join(_TABLES)}; got {table!r}")
        with self._lock:
            return self.db.table(table).count

    def close(self) -> None:
        with self._lock:
            self._conn.close()
