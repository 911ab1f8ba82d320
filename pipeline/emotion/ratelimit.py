"""Request pacing shared by the network backends: a requests/tokens-per-minute limiter,
adaptive concurrency, and retries with exponential backoff, jitter and the server's wait.

The service's rules (FACTS.md): Gemini's 429 carries its wait in the JSON body
(``google.rpc.RetryInfo.retryDelay``) and names the quota (``google.rpc.QuotaFailure``
``violations[].quotaId``); it sends no Retry-After header. A per-minute quota slows the stage
down (``AdaptiveConcurrency`` halves the requests in flight, then grows back one at a time);
a per-day quota cannot be waited out inside a run: ``QuotaExhausted`` stops the stage after
the requests already in flight, and a later run finishes the rest.

All of it lives on the executor's one asyncio loop, so one limiter paces every request of
the stage however many items the runner has in flight.
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
    """A failure worth retrying (rate limit, server error, timeout); may carry the server's wait.

    ``throttled`` marks a rate limit (429 or a per-minute quota): the stage should send fewer
    requests at once, not only wait."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None,
                 throttled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.throttled = throttled


class StopStage(Exception):
    """No later item of this stage can succeed in this run (the message says why and what to do)."""


class ServiceUnreachable(StopStage):
    """Nothing answers at the configured address."""


class QuotaExhausted(StopStage):
    """A quota that resets only later (per day): no retry inside this run can succeed."""

    def __init__(self, quota: str, retry_after: float | None):
        self.quota = quota
        self.retry_after = retry_after
        super().__init__(f"quota {quota} exhausted; {when_to_retry(retry_after)}")


def when_to_retry(retry_after: float | None, now: float | None = None) -> str:
    """'try again after 08:00 UTC (in 3 h 12 min)'. Daily quotas reset at midnight Pacific time."""
    now = time.time() if now is None else now
    if retry_after is None:  # no hint in the body: the next midnight in US Pacific time
        from datetime import datetime, timedelta
        from zoneinfo import ZoneInfo

        pt = datetime.fromtimestamp(now, ZoneInfo("America/Los_Angeles"))
        reset = (pt + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        retry_after = reset.timestamp() - now
    at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + retry_after))
    mins = int(retry_after // 60)
    left = f"{mins // 60} h {mins % 60} min" if mins >= 60 else f"{max(1, mins)} min" if retry_after >= 60 else f"{retry_after:.0f} s"
    return f"try again after {at} (in {left})"


def parse_duration(value: object) -> float | None:
    """A google.protobuf.Duration as JSON ("29s", "1.5s", or {"seconds": 29, "nanos": 0})."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    s = str(value).strip()
    if s.endswith("s"):
        s = s[:-1]
    try:
        return max(0.0, float(s))
    except ValueError:
        return None


def rpc_wait_and_quota(body: object) -> tuple[float | None, list[str]]:
    """(RetryInfo.retryDelay in seconds, QuotaFailure quota ids) from a Google API error body."""
    err = body.get("error", body) if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    delay, quotas = None, []
    for d in details if isinstance(details, list) else []:
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            delay = parse_duration(d.get("retryDelay", d.get("retry_delay")))
        elif kind.endswith("google.rpc.QuotaFailure"):
            for v in d.get("violations") or []:
                if isinstance(v, dict) and (v.get("quotaId") or v.get("quota_id")):
                    quotas.append(str(v.get("quotaId") or v.get("quota_id")))
    return delay, quotas


def is_daily(quota_id: str) -> bool:
    return "perday" in quota_id.lower().replace("_", "").replace("-", "")


class AdaptiveConcurrency:
    """At most ``limit`` requests in flight; the limit halves on a rate limit and grows by one
    after ``limit`` successes in a row (AIMD), between 1 and ``ceiling``.

    ``stop(exc)`` makes every later ``acquire`` raise ``exc`` (a daily quota: requests already
    in flight finish, no new one starts)."""

    def __init__(self, ceiling: int):
        self.ceiling = max(1, int(ceiling))
        self.limit = self.ceiling
        self.in_flight = 0
        self._ok_streak = 0
        self._cond: asyncio.Condition | None = None
        self.stopped: BaseException | None = None

    def _c(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def __aenter__(self):
        async with self._c():
            await self._c().wait_for(lambda: self.stopped is not None or self.in_flight < self.limit)
            if self.stopped is not None:
                raise self.stopped
            self.in_flight += 1
        return self

    async def __aexit__(self, *exc):
        async with self._c():
            self.in_flight -= 1
            self._c().notify_all()
        return False

    def throttled(self) -> None:
        new = max(1, self.limit // 2)
        if new < self.limit:
            log.info("rate limited: %d requests in flight at most (was %d)", new, self.limit)
        self.limit, self._ok_streak = new, 0

    async def succeeded(self) -> None:
        self._ok_streak += 1
        if self.limit < self.ceiling and self._ok_streak >= self.limit:
            self.limit, self._ok_streak = self.limit + 1, 0
            async with self._c():
                self._c().notify_all()

    async def stop(self, exc: BaseException) -> None:
        if self.stopped is None:
            self.stopped = exc
        async with self._c():
            self._c().notify_all()


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
    on_transient: Callable[[TransientError], None] | None = None,
) -> T:
    """Await ``call()``; on an error that ``classify`` marks transient, wait and try again.

    The last transient error is re-raised after ``policy.max_retries`` retries; any other error
    (``classify`` may also raise, e.g. QuotaExhausted) propagates at once.
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
            if on_transient is not None:
                on_transient(t)
            if attempt >= policy.max_retries:
                raise t from None
            d = policy.delay(attempt, t.retry_after, rng)
            log.info("%s: %s; retry %d/%d in %.2f s", what, t, attempt + 1, policy.max_retries, d)
            if stats is not None:
                stats.retries += 1
                stats.waited_s += d
            await asyncio.sleep(d)
            attempt += 1
