"""The cluster's one rate limiter as a Ray actor, and the handle wrapper every client uses.

``RateLimiterActor`` wraps the pure-asyncio ``RateLimiter``; ``RemoteLimiter``
gives a client the same ``Limiter`` interface over the actor handle::

    limiter = RateLimiterActor.options(name=LIMITER_NAME).remote(settings.limiter)
    client = LLMClient(settings, limiter=RemoteLimiter(limiter))
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import ray

from actors.config import LimiterSettings
from actors.llm.limiter import DEFAULT_LEASE_TTL_S, Lease, LimiterSnapshot, Outcome, RateLimiter


@ray.remote(num_cpus=0)
class RateLimiterActor:
    """The one ``RateLimiter`` of the cluster, as an async Ray actor.

    Every waiting ``acquire`` holds one actor call open: async actors allow 1000
    at once by default (raise it with ``.options(max_concurrency=...)``).
    ``num_cpus=0`` so it never competes with agents for a CPU.
    """

    def __init__(self, settings: LimiterSettings, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        self._limiter = RateLimiter(settings, lease_ttl_s=lease_ttl_s)

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        return await self._limiter.acquire(input_tokens, output_tokens)

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
        return await self._limiter.release(
            lease,
            outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            headers=headers,
            attempt=attempt,
        )

    async def snapshot(self) -> LimiterSnapshot:
        return await self._limiter.snapshot()


class RemoteLimiter:
    """A ``Limiter`` backed by a ``RateLimiterActor`` handle, so callers hold one interface."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self._handle = handle

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        ref: ray.ObjectRef[Lease] = self._handle.acquire.remote(input_tokens, output_tokens)
        try:
            lease: Lease = await ref
        except asyncio.CancelledError:
            # If the grant raced the cancel, the limiter reclaims it after its lease TTL.
            ray.cancel(ref)
            raise
        return lease

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
        ref: ray.ObjectRef[float] = self._handle.release.remote(
            lease,
            outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            headers=_limiter_headers(headers),
            attempt=attempt,
        )
        if outcome is Outcome.OK:
            # A success never asks the caller to wait: don't spend a round trip on it.
            # Calls from one caller to one actor run in order, so the limiter still
            # sees this release before that caller's next acquire.
            return 0.0
        wait: float = await ref
        return wait

    async def snapshot(self) -> LimiterSnapshot:
        snapshot: LimiterSnapshot = await self._handle.snapshot.remote()
        return snapshot


def _limiter_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Only the headers the limiter reads, as a plain dict (cheap to pickle)."""
    if not headers:
        return None
    wanted: dict[str, Any] = {
        key.lower(): value
        for key, value in headers.items()
        if key.lower().startswith(("anthropic-ratelimit-", "retry-after"))
    }
    return wanted or None
