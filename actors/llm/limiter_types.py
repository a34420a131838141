"""The limiter's vocabulary: how a call ended, leases, releases, allowances, snapshots.

Plain values shared by the ``RateLimiter``, its Ray actor and every client; the ``Limiter``
protocol is the async interface all of them offer an ``LLMClient``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel


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
