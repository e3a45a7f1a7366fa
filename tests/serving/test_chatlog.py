"""Opt-in chat log on a real SQLite file: consent, redaction, retention, WAL."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from serving.chatlog import ChatLog, redact

MESSAGES = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Reach me at jane.doe+help@example.co.uk or +44 20 7946 0958. I'm 42."},
]


@pytest.fixture
def log(tmp_path):
    chat_log = ChatLog(tmp_path / "logs" / "chats.db", retention_days=30)
    yield chat_log
    chat_log.close()


def _rows(path, table):
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]


def test_nothing_stored_without_consent(log):
    assert log.record("conv-1", MESSAGES, "Hello", "counseling", consent=False) is None
    assert log.record("conv-1", MESSAGES, "Hello", "counseling", consent="yes") is None  # only True counts
    assert log.count() == 0 and _rows(log.path, "exchanges") == []


def test_consented_exchange_is_stored_redacted(log):
    row_id = log.record(
        "conv-1", MESSAGES, "I'll email you at help@clinic.org, call 555-123-4567.", "counseling", True
    )
    assert row_id is not None and log.count() == 1
    (row,) = _rows(log.path, "exchanges")
    stored = json.loads(row["messages_json"])
    assert [m["role"] for m in stored] == ["system", "user"]
    assert stored[1]["content"] == "Reach me at [email] or [phone]. I'm 42."
    assert row["reply"] == "I'll email you at [email], call [phone]."
    assert row["adapter"] == "counseling" and row["conversation_id"] == "conv-1"
    raw = log.path.read_bytes() + log.path.with_name("chats.db-wal").read_bytes()
    assert b"7946" not in raw and b"jane.doe" not in raw


def test_wal_mode(log):
    assert log.journal_mode == "wal"
    log.record("c", MESSAGES, "ok", "math", True)
    assert log.path.with_name("chats.db-wal").exists()
    with sqlite3.connect(log.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_retention_purge(log):
    now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    log.record("old", MESSAGES, "a", "math", True, now=now - timedelta(days=31))
    log.record("recent", MESSAGES, "b", "math", True, now=now - timedelta(days=29))
    log.record_safety_event("crisis", "pattern:suicide", now=now - timedelta(days=40))
    log.record_safety_event("crisis", "pattern:suicide", now=now)
    assert log.purge_expired(now=now) == 2
    assert [r["conversation_id"] for r in _rows(log.path, "exchanges")] == ["recent"]
    assert log.count("safety_events") == 1
    assert log.purge_expired(now=now) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        log.purge_expired(now=datetime(2025, 6, 1))


def test_safety_events_store_no_content_by_default(tmp_path, log):
    text = "I want to end my life, call me on 07700 900123"
    log.record_safety_event("crisis", "pattern:end_my_life", "conv-1", text=text, consent=True)
    (event,) = _rows(log.path, "safety_events")
    assert (
        event["kind"] == "crisis" and event["matched"] == "pattern:end_my_life" and event["content"] is None
    )

    opted_in = ChatLog(tmp_path / "opt.db", retention_days=7, log_safety_content=True)
    opted_in.record_safety_event("crisis", "pattern:end_my_life", "c", text=text, consent=False)
    opted_in.record_safety_event("crisis", "pattern:end_my_life", "c", text=text, consent=True)
    contents = [e["content"] for e in _rows(opted_in.path, "safety_events")]
    assert contents == [None, "I want to end my life, call me on [phone]"]
    opted_in.close()


def test_concurrent_writers(log):
    def work(i):
        for j in range(25):
            log.record(f"c{i}", MESSAGES, f"reply {j}", "math", True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 100


def test_bad_arguments(tmp_path, log):
    with pytest.raises(ValueError, match="conversation_id"):
        log.record("x" * 200, MESSAGES, "r", "math", True)
    with pytest.raises(ValueError, match="retention_days"):
        ChatLog(tmp_path / "x.db", retention_days=0)


@pytest.mark.parametrize(
    "phone",
    [
        "+1 (555) 123-4567",
        "555-123-4567",
        "(555) 123 4567",
        "555.123.4567",
        "1-800-273-8255",
        "5551234567",
        "+44 20 7946 0958",
        "+44 7700 900123",
        "07700 900123",
        "020 7946 0958",
        "+91 98765 43210",
        "+49 30 123456",
        "0049-30-1234567",
        "+33 1 23 45 67 89",
        "0033 1 23 45 67 89",
        "+61 2 9876 5432",
        "(02) 9876 5432",
        "+353 1 234 5678",
        "+8613812345678",
        "555 1234",
    ],
)
def test_redacts_phone_numbers(phone):
    out = redact(f"call me on {phone} tonight")
    assert out == "call me on [phone] tonight"
    assert not re.search(r"\d", out)


@pytest.mark.parametrize(
    "email",
    ["jane@example.com", "john.doe+tag@mail.co.uk", "A_B-c@sub.domain.io", "x@y.org"],
)
def test_redacts_emails(email):
    assert redact(f"write to {email}, thanks") == "write to [email], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "I am 42",
        "born in 1987",
        "from 2019 to 2021",
        "in 2019 2020 2021",
        "on 2024-01-15 and 15/01/2024",
        "pi is 3.14159265",
        "it cost $1,234,567",
        "server 192.168.1.1",
        "pages 120-135",
        "I have 3 kids aged 4, 7 and 9",
        "ISBN 978-3-16-148410-0",
        "1234567 people",
        "call 988 or 116 123 or 13 11 14",
        "between 10:30 and 11:45",
        "a@b is not an address",
    ],
)
def test_keeps_ordinary_numbers(text):
    assert redact(text) == text
