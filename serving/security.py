"""API-key authentication, per-key rate limiting, and bounded admission of generation work.

Three small pieces the FastAPI app wires together, none of them web-framework code:

- `ApiKeyAuth`: checks `Authorization: Bearer <key>` against the configured keys in constant time and
  returns a key *id* (a hash prefix), so logs and limits never see a key.
- `RateLimiter`: a token bucket per key id (burst = the per-minute budget, refilled continuously),
  with a bounded number of buckets so a flood of ids cannot exhaust memory.
- `WorkQueue`: at most `max_concurrent` generations run; at most `max_queue` requests wait for one;
  the next one is refused at once with `QueueFull` (the app answers 429 + Retry-After) instead of
  hanging, and a waiter gives up after its timeout. A slot is held as a `Lease`, whose `release()`
  may be called any number of times and gives the slot back exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

__all__ = ["ANONYMOUS", "ApiKeyAuth", "Lease", "QueueFull", "RateLimiter", "WorkQueue", "key_id"]

ANONYMOUS = "anonymous"
"""Key id returned when authentication is off (no keys configured)."""


def key_id(key: str) -> str:
    """A loggable id for an API key: the first 8 hex digits of its sha256 (the key is not recoverable)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class ApiKeyAuth:
    """Check bearer tokens against the configured API keys.

    Args:
        keys: accepted keys; empty -> authentication is off and every request is 'anonymous'.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        keys = [k for k in keys if k]
        # Compare sha256 digests, all 32 bytes long, so the comparison time does not depend on the
        # length of the configured keys either.
        self._digests = [(hashlib.sha256(k.encode("utf-8")).digest(), key_id(k)) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(<{len(self._digests)} key(s)>)"

    def check(self, authorization_header: str | None) -> str | None:
        """Return the key id for a valid `Authorization: Bearer <key>` header, else None.

        Every configured key is compared (hmac.compare_digest, no early exit), so the time taken does
        not reveal which key, or how much of one, matched.
        """
        if not self._digests:
            return ANONYMOUS
        if not authorization_header:
            return None
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        candidate = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: str | None = None
        for digest, kid in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = kid
        return found


class RateLimiter:
    """Token bucket per key id: `per_minute` requests at once, refilled at `per_minute` per minute.

    Args:
        per_minute: budget per key id.
        max_keys: buckets kept; beyond it the least recently used is dropped (that key starts again
            with a full bucket, the price of bounded memory).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, per_minute: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"RateLimiter.per_minute: expected >= 1; got {per_minute!r}")
        if max_keys < 1:
            raise ValueError(f"RateLimiter.max_keys: expected >= 1; got {max_keys!r}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key_id: str) -> tuple[bool, float]:
        """Spend one token of `key_id`'s bucket: (True, 0.0), or (False, seconds until one is back)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                allowed, tokens, retry_after = True, tokens - 1.0, 0.0
            else:
                allowed, retry_after = False, (1.0 - tokens) / self.rate
            self._buckets[key_id] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return allowed, retry_after

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class QueueFull(Exception):
    """The work queue is full; answer 429 with `Retry-After: ceil(retry_after_s)`."""

    def __init__(self, waiting: int, retry_after_s: float) -> None:
        super().__init__(f"server busy: {waiting} request(s) already waiting; retry in {retry_after_s:.0f} s")
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class Lease:
    """One generation slot of a `WorkQueue`, held from `WorkQueue.lease()` until `release()`.

    `release()` is idempotent, so every path that ends a request (finished, failed, client gone before
    the response started or half way through it) may call it and the slot still comes back exactly
    once. Call it on the queue's event loop (from a thread: `loop.call_soon_threadsafe(lease.release)`).
    """

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue
        self._started = time.monotonic()
        self.released = False

    def release(self) -> bool:
        """Give the slot back; True the first time, False (and nothing happens) afterwards."""
        if self.released:
            return False
        self.released = True
        self._queue._release_lease(time.monotonic() - self._started)
        return True

    def __repr__(self) -> str:
        return f"Lease({'released' if self.released else 'held'})"


class WorkQueue:
    """Admission control for generation: `lease = await queue.lease(timeout_s)` ... `lease.release()`,
    or `async with queue.slot(timeout_s): ...generate...`.

    At most `max_concurrent` holders at a time, served first come first served; at most `max_queue`
    waiters. Entering raises `QueueFull` at once when all slots are taken and `max_queue` requests
    already wait, and `asyncio.TimeoutError` when no slot frees within `timeout_s`. A waiter that is
    cancelled (its client disconnected) leaves the queue; a slot is never lost.

    Use it from one event loop (the server's); it is not thread-safe.
    """

    def __init__(self, max_concurrent: int = 1, max_queue: int = 8) -> None:
        if max_concurrent < 1:
            raise ValueError(f"WorkQueue.max_concurrent: expected >= 1; got {max_concurrent!r}")
        if max_queue < 0:
            raise ValueError(f"WorkQueue.max_queue: expected >= 0; got {max_queue!r}")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._free = max_concurrent
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._mean_hold_s = 5.0  # running estimate of one generation's duration, for Retry-After
        self.completed = 0
        self.rejected = 0
        self.timed_out = 0

    @property
    def in_flight(self) -> int:
        """Slots held (generations running)."""
        return self.max_concurrent - self._free

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return sum(1 for f in self._waiters if not f.done())

    def stats(self) -> dict[str, int]:
        return {
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "completed": self.completed,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
        }

    def retry_after_s(self) -> float:
        """Estimated seconds until a new request could be admitted (at least 1)."""
        return max(1.0, math.ceil(self._mean_hold_s * (self.waiting + 1) / self.max_concurrent))

    def _release(self) -> None:
        """Hand the slot to the oldest live waiter, or return it to the pool."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    async def _acquire(self, timeout_s: float | None) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        if self.waiting >= self.max_queue:
            self.rejected += 1
            raise QueueFull(self.waiting, self.retry_after_s())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self._release()  # a slot was handed over just as we gave up: pass it on
            else:
                fut.cancel()
                if fut in self._waiters:
                    self._waiters.remove(fut)
            if isinstance(exc, asyncio.TimeoutError):
                self.timed_out += 1
            raise

    def _release_lease(self, held_s: float) -> None:
        self._mean_hold_s = 0.8 * self._mean_hold_s + 0.2 * held_s
        self.completed += 1
        self._release()

    async def lease(self, timeout_s: float | None = None) -> Lease:
        """Wait for a generation slot and return it as a `Lease`; the caller must `release()` it.

        Raises:
            QueueFull: all slots are busy and `max_queue` requests already wait.
            asyncio.TimeoutError: no slot became free within `timeout_s` seconds.
        """
        await self._acquire(timeout_s)
        return Lease(self)

    @asynccontextmanager
    async def slot(self, timeout_s: float | None = None) -> AsyncIterator[Lease]:
        """Hold one generation slot (a `Lease`) for the body of the `async with`.

        Raises:
            QueueFull: all slots are busy and `max_queue` requests already wait.
            asyncio.TimeoutError: no slot became free within `timeout_s` seconds.
        """
        lease = await self.lease(timeout_s)
        try:
            yield lease
        finally:
            lease.release()
