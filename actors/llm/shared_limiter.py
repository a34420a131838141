"""The cluster's one rate limiter as a restartable Ray actor, found by name.

``RateLimiterActor`` wraps the pure-asyncio ``RateLimiter`` and tags every id it hands out
with its incarnation, so a lease or allowance of an earlier life never touches one of
this life. Callers reach it through ``RemoteLimiter`` (``actors.llm.limiter_actor``).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

import ray

from actors.config import LimiterSettings
from actors.llm.limiter import (
    DEFAULT_LEASE_TTL_S,
    Allowance,
    AllowanceReport,
    Lease,
    LimiterSnapshot,
    RateLimiter,
    Release,
)

_EPOCH_SHIFT = 32  # lease ids are <incarnation> << 32 | <id within the incarnation>


# Restartable: every caller finds it again by name; a restart re-runs __init__ (fresh state).
@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimiterActor:
    """The one ``RateLimiter`` of the cluster, as an async Ray actor.

    Every waiting ``acquire`` holds one actor call open: async actors allow 1000
    at once by default (raise it with ``.options(max_concurrency=...)``).
    ``num_cpus=0`` so it never competes with agents for a CPU.
    """

    def __init__(
        self,
        settings: LimiterSettings,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = RateLimiter(settings, clock, lease_ttl_s=lease_ttl_s)
        # Lease ids restart at 1 in every process: tagged with this incarnation, a lease
        # granted before a restart can never release one granted after it.
        self._epoch = secrets.randbits(30) + 1

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        lease = await self._limiter.acquire(input_tokens, output_tokens)
        return lease.model_copy(update={"id": self._tag(lease.id)})

    async def borrow(
        self,
        input_tokens: int,
        output_tokens: int,
        slots: int,
        carry: list[int],
        report: AllowanceReport | None = None,
    ) -> Allowance | Lease | None:
        """Settle ``report``, then lend an allowance for ``slots`` more calls (taking over
        the caller's running leases ``carry``) or, near a limit, grant one lease. None, at
        once, instead of waiting for that lease when ``carry`` is not empty: the caller
        holds their releases until it hears whether they were carried."""
        if report is not None:
            self._limiter.settle(self._own_report(report))
        lent = self._limiter.lend(
            input_tokens, output_tokens, slots=slots, carry=[self._own(key) for key in carry]
        )
        if lent is None and carry:
            return None
        if lent is None:
            return await self.acquire(input_tokens, output_tokens)
        return lent.model_copy(
            update={
                "id": self._tag(lent.id),
                "first_call_id": self._tag(lent.first_call_id),
                "carried": [self._tag(key) for key in lent.carried],
            }
        )

    async def settle(self, report: AllowanceReport) -> None:
        """Take an allowance back (its holder's calls still running become leases)."""
        self._limiter.settle(self._own_report(report))

    async def release(self, done: Release) -> float:
        # A lease of an earlier life holds nothing here, but its outcome still teaches.
        lease = done.lease.model_copy(update={"id": self._own(done.lease.id)})
        return await self._limiter.release(replace(done, lease=lease))

    async def snapshot(self) -> LimiterSnapshot:
        return await self._limiter.snapshot()

    async def pid(self) -> int:
        """This process's id (chaos tests kill it)."""
        return os.getpid()

    def _tag(self, key: int) -> int:
        return self._epoch << _EPOCH_SHIFT | key

    def _own(self, key: int) -> int:
        """The id within this incarnation; -1 (held by nobody) for one of an earlier life."""
        return key & ((1 << _EPOCH_SHIFT) - 1) if key >> _EPOCH_SHIFT == self._epoch else -1

    def _own_report(self, report: AllowanceReport) -> AllowanceReport:
        return report.model_copy(
            update={
                "id": self._own(report.id),
                "running": [(self._own(key), i, o) for key, i, o in report.running],
                "finished": [(self._own(key), i, o) for key, i, o in report.finished],
            }
        )
