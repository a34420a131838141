"""The cluster-wide rate limiter: requests and tokens per minute, concurrency, AIMD, retry waits.

One ``RateLimiter`` (pure asyncio, this module) lives inside one
``RateLimiterActor``; every ``LLMClient`` in the cluster talks to it through a
``RemoteLimiter`` (both in ``limiter_actor``). A client in a single process may
hold a ``RateLimiter`` directly. All three share the async ``Limiter`` interface::

    lease = await limiter.acquire(input_tokens=1200, output_tokens=1024)
    ...call the provider...
    wait_s = await limiter.release(Release(lease, Outcome.RATE_LIMITED, headers=response.headers))
    await asyncio.sleep(wait_s)          # then retry

A request is admitted when, all at once: fewer than ``floor(concurrency_limit)``
calls are in flight, the last 60 s hold fewer requests than the requests-per-minute
limit, their input and output tokens plus this request's estimate fit the token
limits, and no cooldown is running. Waiters are served strictly first come, first
served, and are woken on release or at the exact moment the window or cooldown
frees room (a timer, never polling).

A caller far from every limit need not ask per call: ``lend`` grants it an ``Allowance``
(a few concurrency slots, requests and tokens) that it spends on its own for
``allowance_s``, then hands back with an ``AllowanceReport`` (``settle``). The allowance's
slots count as in flight here until then; its budget is reserved in the window and
corrected to what was used. Near any limit ``lend`` says no and callers ask per call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
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
# An allowance not handed back within this many times its ttl is taken back: its holder
# settles by one ttl on its own clock (counted from before it asked); the rest is for the
# report on its way. A holder stalled longer than that could overshoot by its slots.
ALLOWANCE_EXPIRY_TTLS = 2.0
# An allowance may take a quarter of what is left of each window, so the last ones lent
# before a limit are small and the limit itself is always reached per call.
_ROOM_SHARE = 4
# Fewer free slots than this and nothing is lent: a small limit is always shared per call.
_FREE_TO_LEND = 4
_REQUESTS_PER_SLOT = 8
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
    """Permission for one call; handed back in the call's ``Release``."""

    id: int
    granted_at: float
    waited_s: float


# A dataclass, not a model: built by our own code once per call, so there is nothing to
# validate, and picklable as it is for the trip to the shared limiter.
@dataclass(frozen=True, slots=True)
class Release:
    """What one model call reports back to the limiter as it ends: ``release(Release(...))``.

    - ``lease``: the one ``acquire`` granted for this call.
    - ``outcome``: how the call ended; it drives AIMD and whether the caller waits.
    - ``input_tokens``, ``output_tokens``: what the provider counted, replacing the estimate
      the lease was granted on. Input includes cache writes, which count toward the
      provider's input-token limit (cache reads do not). Both 0 when unknown: a 429/529 then
      counts no tokens (the provider did no work), any other outcome keeps the estimate.
    - ``headers``: the response's, which teach limits, remaining budgets and retry waits.
    - ``attempt``: which try of the same request this was (1-based), for exponential backoff.
    """

    lease: Lease
    outcome: Outcome
    _: KW_ONLY
    input_tokens: int = 0
    output_tokens: int = 0
    headers: Mapping[str, str] | None = None
    attempt: int = 1


class Allowance(BaseModel):
    """Calls a caller may start on its own for ``ttl_s`` without asking the limiter."""

    id: int
    first_call_id: int  # the lease ids of its calls: first_call_id, first_call_id + 1, ...
    slots: int  # calls at once, the caller's carried calls included
    requests: int  # new calls it may start
    input_tokens: int  # estimated tokens those calls may take
    output_tokens: int
    ttl_s: float
    learned_limits: dict[str, int] = {}  # the limits known when lent (see ``headers_teach``)
    carried: list[int] = []  # the caller's running leases it took over


class AllowanceReport(BaseModel):
    """What a caller did with an allowance, handed back with it."""

    id: int
    started: int = 0  # new calls started on it
    input_tokens: int = 0  # used by the calls started and finished on it
    output_tokens: int = 0
    running: list[tuple[int, int, int]] = []  # started on it, running: (id, in, out estimated)
    finished: list[tuple[int, int, int]] = []  # carried into it, finished: (id, in, out used)
    outcomes: dict[str, int] = {}  # answered calls by outcome (the others went per call)
    headers: dict[str, str] | None = None  # the latest limit headers, nothing new in them


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
    lent: int = 0  # slots of in_flight held in callers' allowances
    lent_total: int = 0  # allowances lent so far (their calls join granted_total when settled)


class Limiter(Protocol):
    """What an ``LLMClient`` needs; every method is async, local or remote alike."""

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease: ...

    async def release(self, done: Release) -> float: ...

    async def snapshot(self) -> LimiterSnapshot: ...


@dataclass
class _Entry:
    """One admitted request in the sliding window; tokens are corrected on release."""

    at: float
    input_tokens: int
    output_tokens: int
    requests: int = 1  # an allowance's reservation counts its requests; a carried call none
    in_window: bool = True


@dataclass
class _Loan:
    """An allowance as lent: its slots are held until it is settled or expires."""

    slots: int
    entry: _Entry  # its budget, reserved in the window, corrected on settling
    expires_at: float
    calls: dict[int, _Entry]  # the caller's running leases it carries, by id
    call_ids: range  # the lease ids of the calls started on it
    # Calls released before the report listing them as running arrived (an async actor
    # may run one caller's messages out of order): id -> tokens used.
    early: dict[int, tuple[int, int]] = field(default_factory=dict)


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


def headers_teach(headers: Mapping[str, str] | None, learned: Mapping[str, int]) -> bool:
    """Whether a response's headers tell the limiter something it must hear at once: a
    retry wait, a limit other than ``learned``, or a budget a quarter full or less.

    Keys are lower case. Headers that only repeat what it knows can wait for the report.
    """
    if not headers:
        return False
    if any(key.startswith("retry-after") for key in headers):
        return True
    for kind in _LIMIT_KINDS:
        limit = headers.get(f"anthropic-ratelimit-{kind}-limit", "").strip()
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining", "").strip()
        if limit and (not limit.isdigit() or learned.get(kind) != int(limit)):
            return True
        if remaining and (not remaining.isdigit() or int(remaining) * 4 <= int(limit or "0")):
            return True
    return False


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
        self._window_requests = 0  # requests of the entries in the window
        self._leases: dict[int, tuple[float, _Entry]] = {}  # in flight: id -> (granted, entry)
        self._waiters: deque[_Waiter] = deque()  # FIFO queue of blocked acquire() calls
        self._learned: dict[str, int] = {}  # limits the provider reported in headers
        self._cooldown_until = 0.0  # nobody is admitted before this clock time
        self._last_decrease = -math.inf  # clock time of the last AIMD cut
        self._timer: asyncio.TimerHandle | None = None  # wakes waiters when time frees room
        self._loans: dict[int, _Loan] = {}  # allowances lent and not yet settled, by id
        self._ids = itertools.count(1)
        self._throttled_total = 0
        self._granted_total = 0
        self._lent_total = 0
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

    async def release(self, done: Release) -> float:
        """Take the call's lease back and learn from how it ended (``Release`` says how).

        Returns the seconds the caller should wait before retrying (0 for OK).
        """
        now = self._clock()
        outcome, used = done.outcome, (done.input_tokens, done.output_tokens)
        self._outcomes[outcome.value] = self._outcomes.get(outcome.value, 0) + 1
        entry = self._forget(done.lease.id)
        if entry is None:
            self._note_early(done.lease.id, *used)
        elif any(used):
            self._correct(entry, *used)
        elif outcome in _THROTTLED:
            self._correct(entry, 0, 0)
        headers = done.headers or {}
        self._learn(now, headers)
        wait = self._react(now, outcome, headers, done.attempt)
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
        self._expire_leases(now)
        settings = self._settings
        span = settings.max_concurrency - settings.min_concurrency
        pressure = (settings.max_concurrency - self._concurrency) / span if span > 0 else 0.0
        return LimiterSnapshot(
            concurrency_limit=round(self._concurrency, 3),
            max_concurrency=settings.max_concurrency,
            in_flight=self._held(),
            waiting=len(self._waiters),
            requests_last_minute=self._window_requests,
            input_tokens_last_minute=self._window_in,
            output_tokens_last_minute=self._window_out,
            learned_limits=dict(self._learned),
            cooldown_remaining_s=max(0.0, self._cooldown_until - now),
            throttled_total=self._throttled_total,
            granted_total=self._granted_total,
            pressure=min(1.0, max(0.0, pressure)),
            outcomes=dict(self._outcomes),
            longest_wait_s=round(self._longest_wait, 3),
            lent=sum(loan.slots for loan in self._loans.values()),
            lent_total=self._lent_total,
        )

    # --- allowances ----------------------------------------------------------------

    def lend(
        self, input_tokens: int, output_tokens: int, *, slots: int, carry: Iterable[int] = ()
    ) -> Allowance | None:
        """An allowance for ``slots`` more calls at once of about these tokens each, taking
        over the caller's running leases ``carry``; None when near any limit."""
        settings = self._settings
        now = self._clock()
        if settings.allowance_s <= 0 or self._waiters or now < self._cooldown_until:
            return None
        self._prune(now)
        self._expire_leases(now)
        free = max(1, math.floor(self._concurrency)) - self._held()
        extra = min(slots, settings.allowance_slots, free // 2)  # leave others as much
        calls = {key: self._leases[key][1] for key in carry if key in self._leases}
        wanted = (extra + len(calls)) * _REQUESTS_PER_SLOT
        requests = min(wanted, self._room(input_tokens, output_tokens))
        if free < _FREE_TO_LEND or extra < 1 or requests < 2:
            return None
        for key in calls:
            del self._leases[key]
        entry = _Entry(now, input_tokens * requests, output_tokens * requests, requests)
        self._add(entry)
        expires_at = now + settings.allowance_s * ALLOWANCE_EXPIRY_TTLS
        loan_id = next(self._ids)
        first_call_id = next(self._ids)
        for _ in range(requests - 1):  # the ids of its calls, reserved
            next(self._ids)
        call_ids = range(first_call_id, first_call_id + requests)
        self._loans[loan_id] = _Loan(extra + len(calls), entry, expires_at, calls, call_ids)
        self._lent_total += 1
        return Allowance(
            id=loan_id,
            first_call_id=first_call_id,
            slots=extra + len(calls),
            requests=requests,
            input_tokens=entry.input_tokens,
            output_tokens=entry.output_tokens,
            ttl_s=settings.allowance_s,
            learned_limits=dict(self._learned),
            carried=list(calls),
        )

    def settle(self, report: AllowanceReport) -> None:
        """Take an allowance back: count what it did, keep its running calls as leases."""
        now = self._clock()
        for outcome, count in report.outcomes.items():
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + count
        for _ in range(report.outcomes.get(Outcome.OK.value, 0)):
            self._increase()
        self._learn(now, report.headers or {})
        loan = self._loans.pop(report.id, None)
        if loan is not None:
            self._granted_total += report.started
            self._correct(loan.entry, report.input_tokens, report.output_tokens, report.started)
            for key, input_tokens, output_tokens in report.running:
                used = loan.early.get(key)
                entry = _Entry(now, *(used or (input_tokens, output_tokens)), requests=0)
                self._add(entry)
                if used is None:
                    self._leases[key] = (now, entry)
            finished = {key: (i, o) for key, i, o in report.finished}
            for key, entry in loan.calls.items():
                if key in finished:
                    self._correct(entry, *finished[key])
                else:
                    self._leases[key] = (now, entry)
        self._dispatch()

    def _room(self, input_tokens: int, output_tokens: int) -> int:
        """How many calls of these tokens a share of each window's room allows."""
        settings = self._settings
        rooms = []
        rpm = self._limit("requests", settings.requests_per_minute)
        if rpm is not None:
            rooms.append((rpm - self._window_requests) // _ROOM_SHARE)
        for limit, used, each in self._token_budgets(input_tokens, output_tokens):
            if limit is not None:
                rooms.append((limit - used) // _ROOM_SHARE // max(1, each))
        return min(rooms, default=_REQUESTS_PER_SLOT * settings.allowance_slots)

    def _held(self) -> int:
        """Slots in use: leases in flight and every slot of an allowance lent."""
        return len(self._leases) + sum(loan.slots for loan in self._loans.values())

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
        if self._held() >= slots:
            self._expire_leases(now)
            if self._held() >= slots:
                return False
        settings = self._settings
        rpm = self._limit("requests", settings.requests_per_minute)
        if rpm is not None and self._window_requests >= rpm:
            return False
        # An estimate larger than a whole minute's budget still goes through once
        # the window is empty; otherwise it would block the FIFO queue forever.
        return all(
            limit is None or used == 0 or used + wanted <= limit
            for limit, used, wanted in self._token_budgets(input_tokens, output_tokens)
        )

    def _token_budgets(
        self, input_tokens: int, output_tokens: int
    ) -> tuple[tuple[int | None, int, int], ...]:
        """(limit, used in the window, wanted) for input, output and all tokens."""
        settings, used_in, used_out = self._settings, self._window_in, self._window_out
        return (
            (self._limit("input-tokens", settings.input_tokens_per_minute), used_in, input_tokens),
            (
                self._limit("output-tokens", settings.output_tokens_per_minute),
                used_out,
                output_tokens,
            ),
            (self._limit("tokens", None), used_in + used_out, input_tokens + output_tokens),
        )

    def _grant(self, now: float, input_tokens: int, output_tokens: int, since: float) -> Lease:
        entry = _Entry(now, input_tokens, output_tokens)
        lease = Lease(id=next(self._ids), granted_at=now, waited_s=max(0.0, now - since))
        self._add(entry)
        self._leases[lease.id] = (now, entry)
        self._granted_total += 1
        return lease

    def _forget(self, lease_id: int) -> _Entry | None:
        held = self._leases.pop(lease_id, None)
        if held is not None:
            return held[1]
        for loan in self._loans.values():  # carried into an allowance as it was released
            entry = loan.calls.pop(lease_id, None)
            if entry is not None:
                loan.slots -= 1
                return entry
        return None

    def _add(self, entry: _Entry) -> None:
        self._window.append(entry)
        self._window_in += entry.input_tokens
        self._window_out += entry.output_tokens
        self._window_requests += entry.requests

    def _note_early(self, lease_id: int, input_tokens: int, output_tokens: int) -> None:
        """A call of an allowance released before the report that makes it a lease here."""
        for loan in self._loans.values():
            if lease_id in loan.call_ids:
                loan.early[lease_id] = (input_tokens, output_tokens)

    def _correct(
        self, entry: _Entry, input_tokens: int, output_tokens: int, requests: int | None = None
    ) -> None:
        """Replace an entry's estimate with real figures (only matters while in the window)."""
        requests = entry.requests if requests is None else requests
        if entry.in_window:
            self._window_in += input_tokens - entry.input_tokens
            self._window_out += output_tokens - entry.output_tokens
            self._window_requests += requests - entry.requests
        entry.input_tokens, entry.output_tokens = input_tokens, output_tokens
        entry.requests = requests

    def _prune(self, now: float) -> None:
        while self._window and self._window[0].at <= now - self._window_s:
            entry = self._window.popleft()
            entry.in_window = False
            self._window_in -= entry.input_tokens
            self._window_out -= entry.output_tokens
            self._window_requests -= entry.requests

    def _expire_leases(self, now: float) -> None:
        stale = [key for key, (at, _) in self._leases.items() if now - at >= self._lease_ttl_s]
        for key in stale:
            logger.warning("reclaiming lease %d: unreleased after %.0f s", key, self._lease_ttl_s)
            del self._leases[key]
        # Its budget stays reserved in the window: what a vanished holder spent is unknown.
        for key in [key for key, loan in self._loans.items() if now >= loan.expires_at]:
            logger.warning("reclaiming allowance %d: its holder never handed it back", key)
            del self._loans[key]

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
        moments.extend(loan.expires_at for loan in self._loans.values())
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

    def _increase(self) -> None:
        """AIMD's additive step, for one successful call."""
        ceiling = float(self._settings.max_concurrency)
        self._concurrency = min(ceiling, self._concurrency + 1 / self._concurrency)

    def _cool_down(self, now: float, seconds: float) -> None:
        self._cooldown_until = max(self._cooldown_until, now + seconds)

    def _react(
        self, now: float, outcome: Outcome, headers: Mapping[str, str], attempt: int
    ) -> float:
        """AIMD on the concurrency limit, then the wait before a retry."""
        settings = self._settings
        if outcome is Outcome.OK:
            self._increase()
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
