"""Request pacing shared by the network backends: a requests/tokens-per-minute limiter and
retries with exponential backoff, jitter and Retry-After.

Both live on one asyncio event loop (the emotion stage's), so one limiter paces every
request of the stage no matter how many runner threads call it.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

log = logging.getLogger("mikupal.emotion")
T = TypeVar("T")


class RateLimiter:
    """Two token buckets (requests and tokens), each refilled continuously per minute.

    ``acquire(tokens)`` waits until both have room; a request larger than the whole
    tokens-per-minute budget is let through alone rather than blocking forever.
    """

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic):
        self.rpm, self.tpm, self.clock = float(rpm), float(tpm), clock
        self._req = self.rpm
        self._tok = self.tpm
        self._t = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        dt, self._t = now - self._t, now
        self._req = min(self.rpm, self._req + dt * self.rpm / 60.0)
        self._tok = min(self.tpm, self._tok + dt * self.tpm / 60.0)

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait for room; returns the seconds waited."""
        if self.rpm <= 0 and self.tpm <= 0:
            return 0.0
        tokens = min(float(tokens), self.tpm) if self.tpm > 0 else 0.0
        waited = 0.0
        async with self._lock:  # FIFO: the first waiter is served first
            while True:
                self._refill()
                need_r = 0.0 if self.rpm <= 0 else max(0.0, 1.0 - self._req) * 60.0 / self.rpm
                need_t = 0.0 if self.tpm <= 0 else max(0.0, tokens - self._tok) * 60.0 / self.tpm
                wait = max(need_r, need_t)
                if wait <= 0:
                    if self.rpm > 0:
                        self._req -= 1.0
                    if self.tpm > 0:
                        self._tok -= tokens
                    return waited
                await asyncio.sleep(wait)
                waited += wait

    def refund(self, tokens: float) -> None:
        """Give back tokens reserved by an estimate that turned out too high."""
        if self.tpm > 0 and tokens > 0:
            self._tok = min(self.tpm, self._tok + tokens)


class TransientError(Exception):
    """A failure worth retrying (rate limit, server error, timeout); may carry Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when else None


@dataclass
class RetryPolicy:
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        # "Equal jitter": half fixed, half random, so bursts of clients spread out but still back off.
        base = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        d = base / 2 + rng.uniform(0, base / 2)
        if retry_after is not None:
            d = max(d, min(retry_after, max(self.max_backoff_s, retry_after)))
        return d


@dataclass
class RetryStats:
    retries: int = 0
    waited_s: float = 0.0


async def with_retries(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], TransientError | None],
    policy: RetryPolicy,
    *,
    what: str = "request",
    rng: random.Random | None = None,
    stats: RetryStats | None = None,
) -> T:
    """Await ``call()``; on an error that ``classify`` marks transient, wait and try again.

    The last transient error is re-raised after ``policy.max_retries`` retries; any other error
    propagates at once.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - classify decides
            t = classify(exc)
            if t is None:
                raise
            if attempt >= policy.max_retries:
                raise t from None
            d = policy.delay(attempt, t.retry_after, rng)
            log.info("%s: %s; retry %d/%d in %.2f s", what, t, attempt + 1, policy.max_retries, d)
            if stats is not None:
                stats.retries += 1
                stats.waited_s += d
            await asyncio.sleep(d)
            attempt += 1
