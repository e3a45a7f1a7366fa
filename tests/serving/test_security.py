"""API keys, rate limiting, the bounded work queue, and the settings that configure them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from pathlib import Path

import pytest

import serving.security as security
from serving.security import ANONYMOUS, ApiKeyAuth, QueueFull, RateLimiter, WorkQueue, key_id
from serving.settings import LOOPBACK_HOST, Settings

KEYS = ["sk-alpha-0123456789", "sk-bravo-9876543210", "sk-charlie-5555555555"]

# --------------------------------------------------------------------------------------------------
# ApiKeyAuth
# --------------------------------------------------------------------------------------------------


def test_valid_key_gives_its_id_never_the_key():
    auth = ApiKeyAuth(KEYS)
    kid = auth.check(f"Bearer {KEYS[1]}")
    assert kid == hashlib.sha256(KEYS[1].encode()).hexdigest()[:8] == key_id(KEYS[1])
    assert KEYS[1] not in kid
    assert auth.check(f"bearer   {KEYS[0]}  ") == key_id(KEYS[0])
    assert "sk-" not in repr(auth)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer sk-alpha-012345678",  # one character short
        "Bearer sk-alpha-01234567890",  # one character long
        f"Basic {KEYS[0]}",
        KEYS[0],
        "Bearer sk-ålpha-0123456789",
        "Bearer \udcff",
    ],
)
def test_wrong_or_missing_key_is_rejected(header):
    assert ApiKeyAuth(KEYS).check(header) is None


def test_every_key_is_compared_in_constant_time(monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    auth = ApiKeyAuth(KEYS)
    assert auth.check(f"Bearer {KEYS[0]}") == key_id(KEYS[0])
    assert len(calls) == len(KEYS)  # no early exit on the first (matching) key
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: equal length whatever the key
    calls.clear()
    assert auth.check("Bearer nope-nope-nope") is None
    assert len(calls) == len(KEYS)


def test_no_keys_disables_auth():
    auth = ApiKeyAuth([])
    assert not auth.enabled
    assert auth.check(None) == ANONYMOUS and auth.check("Bearer anything") == ANONYMOUS


# --------------------------------------------------------------------------------------------------
# RateLimiter
# --------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_refuses_after_budget_and_refills():
    clock = Clock()
    limiter = RateLimiter(per_minute=3, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, True]
    allowed, retry_after = limiter.allow("a")
    assert not allowed and retry_after == pytest.approx(20.0)
    assert limiter.allow("b") == (True, 0.0)  # budgets are per key
    clock.t += 10
    allowed, retry_after = limiter.allow("a")
    assert not allowed and retry_after == pytest.approx(10.0)
    clock.t += 10
    assert limiter.allow("a") == (True, 0.0)
    clock.t += 3600
    assert [limiter.allow("a")[0] for _ in range(4)] == [True, True, True, False]  # capped at the burst


def test_rate_limiter_memory_is_bounded():
    limiter = RateLimiter(per_minute=5, max_keys=100, clock=Clock())
    for i in range(1000):
        limiter.allow(f"key{i}")
    assert len(limiter) == 100


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter(per_minute=50, clock=Clock())
    results: list[bool] = []
    lock = threading.Lock()

    def work():
        for _ in range(100):
            ok = limiter.allow("shared")[0]
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 50 and len(results) == 400


# --------------------------------------------------------------------------------------------------
# WorkQueue
# --------------------------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_queue_full_is_immediate_and_waiters_are_served_in_order():
    async def main():
        queue = WorkQueue(max_concurrent=1, max_queue=2)
        release = asyncio.Event()
        order: list[str] = []

        async def job(name: str):
            async with queue.slot(timeout_s=5):
                order.append(name)
                await release.wait()

        tasks = [asyncio.create_task(job(n)) for n in ("first", "second", "third")]
        await _settle()
        assert queue.stats() == {"in_flight": 1, "waiting": 2, "completed": 0, "rejected": 0, "timed_out": 0}

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(QueueFull) as info:
            async with queue.slot(timeout_s=5):
                pytest.fail("admitted past a full queue")
        assert loop.time() - started < 0.05
        assert info.value.retry_after_s >= 1 and info.value.waiting == 2
        assert queue.rejected == 1

        release.set()
        await asyncio.gather(*tasks)
        assert order == ["first", "second", "third"]
        assert queue.stats()["in_flight"] == 0 and queue.stats()["completed"] == 3

    asyncio.run(main())


def test_queue_timeout_and_cancel_do_not_lose_slots():
    async def main():
        queue = WorkQueue(max_concurrent=1, max_queue=4)
        release = asyncio.Event()

        async def holder():
            async with queue.slot():
                await release.wait()

        held = asyncio.create_task(holder())
        await _settle()

        with pytest.raises(asyncio.TimeoutError):
            async with queue.slot(timeout_s=0.02):
                pytest.fail("admitted while the slot was held")
        assert queue.waiting == 0 and queue.timed_out == 1

        async def waiter():
            async with queue.slot(timeout_s=5):
                pass

        cancelled = asyncio.create_task(waiter())
        await _settle()
        assert queue.waiting == 1
        cancelled.cancel()  # a client that disconnects while waiting
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert queue.waiting == 0

        release.set()
        await held
        async with queue.slot(timeout_s=0.1):  # the slot came back
            assert queue.in_flight == 1
        assert queue.in_flight == 0

    asyncio.run(main())


def test_queue_without_waiting_room():
    async def main():
        queue = WorkQueue(max_concurrent=2, max_queue=0)
        async with queue.slot(), queue.slot():
            assert queue.in_flight == 2
            with pytest.raises(QueueFull):
                async with queue.slot():
                    pass
        assert queue.in_flight == 0

    asyncio.run(main())


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def test_settings_from_env_and_overrides():
    env = {
        "QTHA_API_KEYS": f"{KEYS[0]}, {KEYS[1]} ,",
        "QTHA_PORT": "9000",
        "QTHA_MAX_QUEUE": "3",
        "QTHA_REQUEST_TIMEOUT_S": "30.5",
        "QTHA_LOCALE": "uk",
        "QTHA_CHAT_LOG": "/tmp/chats.db",
        "QTHA_SAFETY_LOG_CONTENT": "yes",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env, port=None, max_concurrent=2)
    assert s.api_keys == (KEYS[0], KEYS[1]) and s.auth_enabled
    assert (s.port, s.max_queue, s.max_concurrent, s.request_timeout_s) == (9000, 3, 2, 30.5)
    assert s.locale == "UK" and s.chat_log == Path("/tmp/chats.db") and s.safety_log_content is True
    defaults = Settings.from_env({})
    assert defaults.max_body_bytes == 64 * 1024 and defaults.rate_limit_per_min == 60
    assert (
        defaults.chat_log is None
        and defaults.chat_log_retention_days == 30
        and not defaults.safety_log_content
    )


def test_settings_repr_masks_keys():
    s = Settings.from_env({"QTHA_API_KEYS": ",".join(KEYS)})
    assert "sk-" not in repr(s) and "3 key(s)" in repr(s)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"QTHA_PORT": "eighty"}, "QTHA_PORT"),
        ({"QTHA_PORT": "70000"}, "port"),
        ({"QTHA_MAX_CONCURRENT": "0"}, "max_concurrent"),
        ({"QTHA_SAFETY_LOG_CONTENT": "maybe"}, "QTHA_SAFETY_LOG_CONTENT"),
        ({"QTHA_LOCALE": "U S"}, "locale"),
        ({"QTHA_API_KEYS": "k3y!x"}, "api_keys"),
    ],
)
def test_settings_errors_name_the_variable(env, needle):
    with pytest.raises(ValueError, match=needle) as info:
        Settings.from_env(env)
    if "QTHA_API_KEYS" in env:
        assert env["QTHA_API_KEYS"] not in str(info.value)  # a key is never echoed


def test_bind_host_forces_loopback_without_keys():
    host, warning = Settings.from_env({"QTHA_HOST": "0.0.0.0"}).bind_host()
    assert (
        host == LOOPBACK_HOST and warning is not None and "loopback" in warning and "QTHA_API_KEYS" in warning
    )
    host, warning = Settings.from_env({}).bind_host()
    assert host == LOOPBACK_HOST and warning is not None
    host, warning = Settings.from_env({"QTHA_HOST": "0.0.0.0", "QTHA_API_KEYS": KEYS[0]}).bind_host()
    assert (host, warning) == ("0.0.0.0", None)
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.from_env({}, colour="blue")
