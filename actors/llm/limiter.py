"""The cluster-wide rate limiter: requests and tokens per minute, concurrency, AIMD, retry waits.

One ``RateLimiter`` (pure asyncio, this module) lives inside one
``RateLimiterActor``; every ``LLMClient`` in the cluster talks to it through a
``RemoteLimiter`` (both in ``limiter_actor``). A client in a single process may
hold a ``RateLimiter`` directly. All three share the async ``Limiter`` interface::

    lease = await limiter.acquire(input_tokens=1200, output_tokens=1024)
    ...call the provider...
    wait_s = await limiter.release(lease, Outcome.RATE_LIMITED, headers=response.headers)
    await asyncio.sleep(wait_s)          # then retry

A request is admitted when, all at once: fewer than ``floor(concurrency_limit)``
calls are in flight, the last 60 s hold fewer requests than the requests-per-minute
limit, their input and output tokens plus this request's estimate fit the token
limits, and no cooldown is running. Waiters are served strictly first come, first
served, and are woken on release or at the exact moment the window or cooldown
frees room (a timer, never polling).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel

from actors.config import LimiterSettings

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
# AIMD cuts at most once per this many seconds: a burst of simultaneous 429s is one signal.
DECREASE_SPACING_S = 1.0
# A lease whose holder never released it (crashed agent, cancelled remote call) is
# reclaimed after this long, so a dead caller cannot shrink capacity for good.
DEFAULT_LEASE_TTL_S = 600.0
_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


class Outcome(StrEnum):
    """How one provider call ended, as reported to ``release``."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # 429
    OVERLOADED = "overloaded"  # 529
    SERVER_ERROR = "server_error"  # other 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED = "malformed"  # answered, but not in the asked-for shape
    REJECTED = "rejected"  # other 4xx: our request was wrong; not retried


_THROTTLED = frozenset({Outcome.RATE_LIMITED, Outcome.OVERLOADED})
_ANSWERED = frozenset({Outcome.OK, Outcome.MALFORMED, Outcome.REJECTED})


class Lease(BaseModel):
    """Permission for one call; hand it back to ``release``."""

    id: int
    granted_at: float
    waited_s: float


class LimiterSnapshot(BaseModel):
    """The limiter's state, for dashboards and for pools deciding to shrink."""

    concurrency_limit: float
    max_concurrency: int
    in_flight: int
    waiting: int
    requests_last_minute: int
    input_tokens_last_minute: int
    output_tokens_last_minute: int
    learned_limits: dict[str, int]
    cooldown_remaining_s: float
    throttled_total: int
    granted_total: int
    pressure: float  # 0 = none, 1 = concurrency cut to the minimum; pools shrink on it
    outcomes: dict[str, int] = {}  # model calls by outcome ("ok", "rate_limited", ...)
    longest_wait_s: float = 0.0  # the longest retry wait handed out so far


class Limiter(Protocol):
    """What an ``LLMClient`` needs; every method is async, local or remote alike."""

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease: ...

    async def release(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        headers: Mapping[str, str] | None = None,
        attempt: int = 1,
    ) -> float: ...

    async def snapshot(self) -> LimiterSnapshot: ...


@dataclass
class _Entry:
    """One admitted request in the sliding window; tokens are corrected on release."""

    at: float
    input_tokens: int
    output_tokens: int
    in_window: bool = True


@dataclass
class _Waiter:
    future: asyncio.Future[Lease]
    input_tokens: int
    output_tokens: int
    since: float


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, then ``retry-after``
    (seconds or an HTTP date); None when absent or unreadable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _seconds_until(reset: str) -> float | None:
    """``anthropic-ratelimit-*-reset`` is an RFC 3339 time; tolerate plain seconds too."""
    try:
        return max(0.0, float(reset))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RateLimiter:
    """The limiter itself: pure asyncio, one instance per process that owns it.

    ``clock`` and ``rng`` are injectable for tests; ``window_s`` shortens the
    60 s window in tests that watch it slide.
    """

    def __init__(
        self,
        settings: LimiterSettings,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        *,
        window_s: float = WINDOW_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._window_s = window_s
        self._lease_ttl_s = lease_ttl_s
        self._concurrency = float(settings.max_concurrency)  # AIMD-managed, fractional
        self._window: deque[_Entry] = deque()  # admitted requests, oldest first
        self._window_in = 0  # input tokens of the entries in the window
        self._window_out = 0  # output tokens of the entries in the window
        self._leases: dict[int, tuple[float, _Entry]] = {}  # in flight: id -> (granted, entry)
        self._waiters: deque[_Waiter] = deque()  # FIFO queue of blocked acquire() calls
        self._learned: dict[str, int] = {}  # limits the provider reported in headers
        self._cooldown_until = 0.0  # nobody is admitted before this clock time
        self._last_decrease = -math.inf  # clock time of the last AIMD cut
        self._timer: asyncio.TimerHandle | None = None  # wakes waiters when time frees room
        self._ids = itertools.count(1)
        self._throttled_total = 0
        self._granted_total = 0
        self._outcomes: dict[str, int] = {}  # outcome -> calls released with it
        self._longest_wait = 0.0  # the longest retry wait handed out, to check the cap

    @property
    def settings(self) -> LimiterSettings:
        return self._settings

    # --- the Limiter interface -------------------------------------------------

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        """Wait until a call with these estimated tokens is allowed; return its lease."""
        now = self._clock()
        if not self._waiters and self._admissible(now, input_tokens, output_tokens):
            return self._grant(now, input_tokens, output_tokens, since=now)
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, input_tokens, output_tokens, since=now)
        self._waiters.append(waiter)
        self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._forget(future.result().id)  # granted just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._dispatch()
            raise

    async def release(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        headers: Mapping[str, str] | None = None,
        attempt: int = 1,
    ) -> float:
        """Return the lease and learn from the outcome.

        Returns the seconds the caller should wait before retrying (0 for OK).
        Reported tokens replace the estimate in the window; without them a 429/529
        counts no tokens (the provider did no work) and other failures keep the
        estimate. ``attempt`` (1-based) drives exponential backoff.
        """
        now = self._clock()
        self._outcomes[outcome.value] = self._outcomes.get(outcome.value, 0) + 1
        entry = self._forget(lease.id)
        if entry is not None:
            if input_tokens or output_tokens:
                self._correct(entry, input_tokens, output_tokens)
            elif outcome in _THROTTLED:
                self._correct(entry, 0, 0)
        headers = headers or {}
        self._learn(now, headers)
        wait = self._react(now, outcome, headers, attempt)
        self._longest_wait = max(self._longest_wait, wait)
        self._dispatch()
        return wait

    async def snapshot(self) -> LimiterSnapshot:
        """Current state (async like the rest of the interface)."""
        return self.snapshot_now()

    def snapshot_now(self) -> LimiterSnapshot:
        """The same snapshot, synchronously, for code already inside the owning loop."""
        now = self._clock()
        self._prune(now)
        settings = self._settings
        span = settings.max_concurrency - settings.min_concurrency
        pressure = (settings.max_concurrency - self._concurrency) / span if span > 0 else 0.0
        return LimiterSnapshot(
            concurrency_limit=round(self._concurrency, 3),
            max_concurrency=settings.max_concurrency,
            in_flight=len(self._leases),
            waiting=len(self._waiters),
            requests_last_minute=len(self._window),
            input_tokens_last_minute=self._window_in,
            output_tokens_last_minute=self._window_out,
            learned_limits=dict(self._learned),
            cooldown_remaining_s=max(0.0, self._cooldown_until - now),
            throttled_total=self._throttled_total,
            granted_total=self._granted_total,
            pressure=min(1.0, max(0.0, pressure)),
            outcomes=dict(self._outcomes),
            longest_wait_s=round(self._longest_wait, 3),
        )

    # --- admission ---------------------------------------------------------------

    def _limit(self, kind: str, configured: int | None) -> int | None:
        learned = self._learned.get(kind)
        if configured is None:
            return learned
        return configured if learned is None else min(configured, learned)

    def _admissible(self, now: float, input_tokens: int, output_tokens: int) -> bool:
        self._prune(now)
        if now < self._cooldown_until:
            return False
        slots = max(1, math.floor(self._concurrency))
        if len(self._leases) >= slots:
            self._expire_leases(now)
            if len(self._leases) >= slots:
                return False
        settings = self._settings
        rpm = self._limit("requests", settings.requests_per_minute)
        if rpm is not None and len(self._window) >= rpm:
            return False
        used_in, used_out = self._window_in, self._window_out
        # An estimate larger than a whole minute's budget still goes through once
        # the window is empty; otherwise it would block the FIFO queue forever.
        itpm = self._limit("input-tokens", settings.input_tokens_per_minute)
        otpm = self._limit("output-tokens", settings.output_tokens_per_minute)
        checks = (
            (used_in, input_tokens, itpm),
            (used_out, output_tokens, otpm),
            (used_in + used_out, input_tokens + output_tokens, self._limit("tokens", None)),
        )
        return all(
            limit is None or used == 0 or used + wanted <= limit for used, wanted, limit in checks
        )

    def _grant(self, now: float, input_tokens: int, output_tokens: int, since: float) -> Lease:
        entry = _Entry(now, input_tokens, output_tokens)
        lease = Lease(id=next(self._ids), granted_at=now, waited_s=max(0.0, now - since))
        self._window.append(entry)
        self._window_in += input_tokens
        self._window_out += output_tokens
        self._leases[lease.id] = (now, entry)
        self._granted_total += 1
        return lease

    def _forget(self, lease_id: int) -> _Entry | None:
        held = self._leases.pop(lease_id, None)
        return None if held is None else held[1]

    def _correct(self, entry: _Entry, input_tokens: int, output_tokens: int) -> None:
        """Replace an entry's estimate with real figures (only matters while in the window)."""
        if entry.in_window:
            self._window_in += input_tokens - entry.input_tokens
            self._window_out += output_tokens - entry.output_tokens
        entry.input_tokens, entry.output_tokens = input_tokens, output_tokens

    def _prune(self, now: float) -> None:
        while self._window and self._window[0].at <= now - self._window_s:
            entry = self._window.popleft()
            entry.in_window = False
            self._window_in -= entry.input_tokens
            self._window_out -= entry.output_tokens

    def _expire_leases(self, now: float) -> None:
        stale = [key for key, (at, _) in self._leases.items() if now - at >= self._lease_ttl_s]
        for key in stale:
            logger.warning("reclaiming lease %d: unreleased after %.0f s", key, self._lease_ttl_s)
            del self._leases[key]

    def _dispatch(self) -> None:
        """Admit waiters from the head of the queue; arm a timer for the next time-based change."""
        now = self._clock()
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled while queued
                self._waiters.popleft()
                continue
            if not self._admissible(now, head.input_tokens, head.output_tokens):
                break
            self._waiters.popleft()
            lease = self._grant(now, head.input_tokens, head.output_tokens, head.since)
            head.future.set_result(lease)
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        # The earliest moment time alone can change the answer: the cooldown ends,
        # the oldest request leaves the window, or a forgotten lease expires.
        moments = [self._cooldown_until] if self._cooldown_until > now else []
        if self._window:
            moments.append(self._window[0].at + self._window_s)
        if self._leases:
            moments.append(min(at for at, _ in self._leases.values()) + self._lease_ttl_s)
        if not moments:
            return
        delay = max(0.0, min(moments) - now) + 0.001  # a hair late beats waking early
        self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)

    # --- learning from responses ------------------------------------------------------

    def _learn(self, now: float, headers: Mapping[str, str]) -> None:
        lowered = {key.lower(): value for key, value in headers.items()}
        for kind in _LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{kind}-"
            limit = lowered.get(prefix + "limit")
            if limit is not None and limit.strip().isdigit():
                self._learned[kind] = int(limit)
            remaining, reset = lowered.get(prefix + "remaining"), lowered.get(prefix + "reset")
            if remaining is not None and remaining.strip() == "0" and reset is not None:
                seconds = _seconds_until(reset)
                if seconds is not None:
                    self._cool_down(now, min(seconds, self._settings.max_retry_wait_s))

    def _cool_down(self, now: float, seconds: float) -> None:
        self._cooldown_until = max(self._cooldown_until, now + seconds)

    def _react(
        self, now: float, outcome: Outcome, headers: Mapping[str, str], attempt: int
    ) -> float:
        """AIMD on the concurrency limit, then the wait before a retry."""
        settings = self._settings
        if outcome is Outcome.OK:
            self._concurrency = min(
                float(settings.max_concurrency), self._concurrency + 1 / self._concurrency
            )
            return 0.0
        if outcome in _ANSWERED:
            return 0.0  # the provider is fine: retry at once with a correction, or give up
        if outcome in _THROTTLED:
            self._throttled_total += 1
            if now - self._last_decrease >= DECREASE_SPACING_S:
                self._last_decrease = now
                cut = self._concurrency * settings.decrease_factor
                self._concurrency = max(float(settings.min_concurrency), cut)
                logger.info("provider throttled (%s): concurrency limit now %.2f", outcome, cut)
        asked = retry_after_s(headers)
        if asked is not None:
            capped = min(asked, settings.max_retry_wait_s)
            if outcome in _THROTTLED:
                self._cool_down(now, capped)  # everyone holds off, not just this caller
            return capped + self._rng.uniform(0, settings.jitter_s)
        ceiling = min(settings.max_retry_wait_s, settings.base_backoff_s * 2 ** max(0, attempt - 1))
        return self._rng.uniform(0, ceiling)  # full jitter
