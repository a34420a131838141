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

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping

from actors.llm.limit_headers import headers_teach, retry_after_s
from actors.llm.limiter_state import (
    DEFAULT_LEASE_TTL_S,
    WINDOW_S,
    LimiterState,
    Loan,
    Waiter,
    WindowEntry,
)
from actors.llm.limiter_types import (
    Allowance,
    AllowanceReport,
    Lease,
    Limiter,
    LimiterSnapshot,
    Outcome,
    Release,
)

__all__ = [
    "ALLOWANCE_EXPIRY_TTLS",
    "DECREASE_SPACING_S",
    "DEFAULT_LEASE_TTL_S",
    "WINDOW_S",
    "Allowance",
    "AllowanceReport",
    "Lease",
    "Limiter",
    "LimiterSnapshot",
    "Outcome",
    "RateLimiter",
    "Release",
    "headers_teach",
    "retry_after_s",
]

logger = logging.getLogger(__name__)

# AIMD cuts at most once per this many seconds: a burst of simultaneous 429s is one signal.
DECREASE_SPACING_S = 1.0
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

_THROTTLED = frozenset({Outcome.RATE_LIMITED, Outcome.OVERLOADED})
_ANSWERED = frozenset({Outcome.OK, Outcome.MALFORMED, Outcome.REJECTED})


class RateLimiter(LimiterState):
    """The limiter itself: pure asyncio, one instance per process that owns it.

    ``clock`` and ``rng`` are injectable for tests; ``window_s`` shortens the
    60 s window in tests that watch it slide.
    """

    # --- the Limiter interface -------------------------------------------------

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        """Wait until a call with these estimated tokens is allowed; return its lease."""
        now = self._clock()
        if not self._waiters and self._admissible(now, input_tokens, output_tokens):
            return self._grant(now, input_tokens, output_tokens, since=now)
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = Waiter(future, input_tokens, output_tokens, since=now)
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
        entry = WindowEntry(now, input_tokens * requests, output_tokens * requests, requests)
        self._add(entry)
        expires_at = now + settings.allowance_s * ALLOWANCE_EXPIRY_TTLS
        loan_id = next(self._ids)
        first_call_id = next(self._ids)
        for _ in range(requests - 1):  # the ids of its calls, reserved
            next(self._ids)
        call_ids = range(first_call_id, first_call_id + requests)
        self._loans[loan_id] = Loan(extra + len(calls), entry, expires_at, calls, call_ids)
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
                entry = WindowEntry(now, *(used or (input_tokens, output_tokens)), requests=0)
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

    def _increase(self) -> None:
        """AIMD's additive step, for one successful call."""
        ceiling = float(self._settings.max_concurrency)
        self._concurrency = min(ceiling, self._concurrency + 1 / self._concurrency)

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
