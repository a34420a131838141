"""The rate limiter's bookkeeping: the sliding window, what is held, the queue, learned limits.

``LimiterState`` keeps the 60 s window of admitted requests (tokens corrected on release),
the leases in flight and allowances lent, the FIFO queue of waiters and the timer that
wakes them, and the limits and cooldowns the provider's headers taught. It decides whether
a request is admissible now; ``RateLimiter`` (``actors.llm.limiter``) builds the
``Limiter`` interface, allowances and AIMD on top of it.
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
from dataclasses import dataclass, field

from actors.config import LimiterSettings
from actors.llm.limit_headers import LIMIT_KINDS, seconds_until
from actors.llm.limiter_types import Lease

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
# A lease whose holder never released it (crashed agent, cancelled remote call) is
# reclaimed after this long, so a dead caller cannot shrink capacity for good.
DEFAULT_LEASE_TTL_S = 600.0


@dataclass
class WindowEntry:
    """One admitted request in the sliding window; tokens are corrected on release."""

    at: float
    input_tokens: int
    output_tokens: int
    requests: int = 1  # an allowance's reservation counts its requests; a carried call none
    in_window: bool = True


@dataclass
class Loan:
    """An allowance as lent: its slots are held until it is settled or expires."""

    slots: int
    entry: WindowEntry  # its budget, reserved in the window, corrected on settling
    expires_at: float
    calls: dict[int, WindowEntry]  # the caller's running leases it carries, by id
    call_ids: range  # the lease ids of the calls started on it
    # Calls released before the report listing them as running arrived (an async actor
    # may run one caller's messages out of order): id -> tokens used.
    early: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Waiter:
    """One blocked ``acquire``: its future, its estimate and when it began to wait."""

    future: asyncio.Future[Lease]
    input_tokens: int
    output_tokens: int
    since: float


class LimiterState:
    """The state one ``RateLimiter`` owns, and the admission rules that read it."""

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
        self._window: deque[WindowEntry] = deque()  # admitted requests, oldest first
        self._window_in = 0  # input tokens of the entries in the window
        self._window_out = 0  # output tokens of the entries in the window
        self._window_requests = 0  # requests of the entries in the window
        self._leases: dict[int, tuple[float, WindowEntry]] = {}  # in flight: id -> (granted, entry)
        self._waiters: deque[Waiter] = deque()  # FIFO queue of blocked acquire() calls
        self._learned: dict[str, int] = {}  # limits the provider reported in headers
        self._cooldown_until = 0.0  # nobody is admitted before this clock time
        self._last_decrease = -math.inf  # clock time of the last AIMD cut
        self._timer: asyncio.TimerHandle | None = None  # wakes waiters when time frees room
        self._loans: dict[int, Loan] = {}  # allowances lent and not yet settled, by id
        self._ids = itertools.count(1)
        self._throttled_total = 0
        self._granted_total = 0
        self._lent_total = 0
        self._outcomes: dict[str, int] = {}  # outcome -> calls released with it
        self._longest_wait = 0.0  # the longest retry wait handed out, to check the cap

    @property
    def settings(self) -> LimiterSettings:
        return self._settings

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
        entry = WindowEntry(now, input_tokens, output_tokens)
        lease = Lease(id=next(self._ids), granted_at=now, waited_s=max(0.0, now - since))
        self._add(entry)
        self._leases[lease.id] = (now, entry)
        self._granted_total += 1
        return lease

    def _forget(self, lease_id: int) -> WindowEntry | None:
        held = self._leases.pop(lease_id, None)
        if held is not None:
            return held[1]
        for loan in self._loans.values():  # carried into an allowance as it was released
            entry = loan.calls.pop(lease_id, None)
            if entry is not None:
                loan.slots -= 1
                return entry
        return None

    def _add(self, entry: WindowEntry) -> None:
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
        self, entry: WindowEntry, input_tokens: int, output_tokens: int, requests: int | None = None
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

    def _learn(self, now: float, headers: Mapping[str, str]) -> None:
        lowered = {key.lower(): value for key, value in headers.items()}
        for kind in LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{kind}-"
            limit = lowered.get(prefix + "limit")
            if limit is not None and limit.strip().isdigit():
                self._learned[kind] = int(limit)
            remaining, reset = lowered.get(prefix + "remaining"), lowered.get(prefix + "reset")
            if remaining is not None and remaining.strip() == "0" and reset is not None:
                seconds = seconds_until(reset)
                if seconds is not None:
                    self._cool_down(now, min(seconds, self._settings.max_retry_wait_s))

    def _cool_down(self, now: float, seconds: float) -> None:
        self._cooldown_until = max(self._cooldown_until, now + seconds)
