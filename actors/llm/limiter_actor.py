"""The cluster's one rate limiter as a Ray actor, and the client side every caller uses.

``RateLimiterActor`` wraps the pure-asyncio ``RateLimiter``; ``RemoteLimiter`` gives a
client the same ``Limiter`` interface and finds the actor by its name
(``config.LIMITER_NAME``)::

    RateLimiterActor.options(name=LIMITER_NAME, namespace=NAMESPACE).remote(settings.limiter)
    client = LLMClient(settings, limiter=RemoteLimiter(settings=settings.limiter))

The actor is restartable and starts afresh after a restart (an empty window, full
concurrency: the provider's next 429 teaches it again). A caller whose call fails because
the actor died looks it up again by name, waits a bounded time for it to answer, and asks
once more. If it stays gone, the caller degrades to a limiter of its own process with a
warning and asks for the shared one again a little later: a lost limiter costs cluster-wide
coordination for a while (each process keeps its own concurrency bound and AIMD on 429s),
never every model call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.config import LIMITER_NAME, NAMESPACE, LimiterSettings
from actors.llm.limiter import DEFAULT_LEASE_TTL_S, Lease, LimiterSnapshot, Outcome, RateLimiter

log = logging.getLogger(__name__)

# How long a caller waits for a lost limiter to answer again before going local: a
# restart takes a few seconds on a busy small machine.
FIND_WAIT_S = 10.0
# How long a caller that went local keeps its own limiter before asking for the shared one.
LOCAL_FOR_S = 30.0
_FIND_POLL_S = 0.2
_EPOCH_SHIFT = 32  # lease ids are <incarnation> << 32 | <id within the incarnation>


# Restartable: every caller finds it again by name; a restart re-runs __init__ (fresh state).
@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimiterActor:
    """The one ``RateLimiter`` of the cluster, as an async Ray actor.

    Every waiting ``acquire`` holds one actor call open: async actors allow 1000
    at once by default (raise it with ``.options(max_concurrency=...)``).
    ``num_cpus=0`` so it never competes with agents for a CPU.
    """

    def __init__(self, settings: LimiterSettings, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        self._limiter = RateLimiter(settings, lease_ttl_s=lease_ttl_s)
        # Lease ids restart at 1 in every process: tagged with this incarnation, a lease
        # granted before a restart can never release one granted after it.
        self._epoch = secrets.randbits(30) + 1

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        lease = await self._limiter.acquire(input_tokens, output_tokens)
        return lease.model_copy(update={"id": self._epoch << _EPOCH_SHIFT | lease.id})

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
        mine = lease.id >> _EPOCH_SHIFT == self._epoch
        # A lease of an earlier life holds nothing here, but its outcome still teaches.
        own_id = lease.id & ((1 << _EPOCH_SHIFT) - 1) if mine else -1
        return await self._limiter.release(
            lease.model_copy(update={"id": own_id}),
            outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            headers=headers,
            attempt=attempt,
        )

    async def snapshot(self) -> LimiterSnapshot:
        return await self._limiter.snapshot()

    async def pid(self) -> int:
        """This process's id (chaos tests kill it)."""
        return os.getpid()


def _find_by_name(name: str) -> Callable[[], ray.actor.ActorHandle]:
    return lambda: ray.get_actor(name, namespace=NAMESPACE)


class RemoteLimiter:
    """A ``Limiter`` backed by the cluster's ``RateLimiterActor``, found by name.

    ``settings`` configure the local limiter used while the shared one is gone. ``handle``
    is for a limiter at hand that is not the system's (tests that run their own);
    ``find`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        handle: ray.actor.ActorHandle | None = None,
        *,
        settings: LimiterSettings | None = None,
        name: str = LIMITER_NAME,
        find: Callable[[], ray.actor.ActorHandle] | None = None,
        find_wait_s: float = FIND_WAIT_S,
        local_for_s: float = LOCAL_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handle = handle  # the shared limiter as last found; None until found again
        self._find_handle = find or _find_by_name(name)
        self._find_wait_s = find_wait_s
        self._local_for_s = local_for_s
        self._clock = clock
        self._local = RateLimiter(settings or LimiterSettings())  # while the shared one is gone
        self._local_leases: set[int] = set()  # ids of leases the local limiter granted
        self._local_until = float("-inf")  # clock time before which we do not look again
        self._finding: asyncio.Task[ray.actor.ActorHandle | None] | None = None

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        for _ in range(2):  # the first try, and once more after finding the limiter again
            handle = await self._shared()
            if handle is None:
                break
            ref: ray.ObjectRef[Lease] = handle.acquire.remote(input_tokens, output_tokens)
            try:
                lease: Lease = await ref
                return lease
            except asyncio.CancelledError:
                # If the grant raced the cancel, the limiter reclaims it after its lease TTL.
                ray.cancel(ref)
                raise
            except RayActorError as exc:
                self._lost(handle, exc)
        lease = await self._local.acquire(input_tokens, output_tokens)
        self._local_leases.add(lease.id)
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
        wanted = _limiter_headers(headers)
        counts = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        handle = self._handle
        if lease.id in self._local_leases or handle is None:
            # Granted here, or granted by a limiter that has died since: the local one
            # learns from the outcome and says how long to wait.
            self._local_leases.discard(lease.id)
            return await self._local.release(
                lease, outcome, **counts, headers=wanted, attempt=attempt
            )
        ref: ray.ObjectRef[float] = handle.release.remote(
            lease, outcome, **counts, headers=wanted, attempt=attempt
        )
        if outcome is Outcome.OK:
            # A success never asks the caller to wait: don't spend a round trip on it.
            # Calls from one caller to one actor run in order, so the limiter still
            # sees this release before that caller's next acquire.
            return 0.0
        try:
            wait: float = await ref
            return wait
        except RayActorError as exc:
            self._lost(handle, exc)
            return await self._local.release(lease, outcome, headers=wanted, attempt=attempt)

    async def snapshot(self) -> LimiterSnapshot:
        """The shared limiter's state, or this process's own while the shared one is gone."""
        handle = await self._shared()
        if handle is not None:
            try:
                snapshot: LimiterSnapshot = await handle.snapshot.remote()
                return snapshot
            except RayActorError as exc:
                self._lost(handle, exc)
        return await self._local.snapshot()

    # --- finding the shared limiter ----------------------------------------------

    async def _shared(self) -> ray.actor.ActorHandle | None:
        """The shared limiter, found by name if need be; None while this process is local.

        After a loss, callers wait (boundedly) for the limiter to come back. Once local,
        they do not wait: every ``local_for_s`` a search runs in the background.
        """
        if self._handle is not None:
            return self._handle
        local = self._local_until > float("-inf")
        if self._finding is None and (not local or self._clock() >= self._local_until):
            self._finding = asyncio.ensure_future(self._find())
        if local or self._finding is None:
            return None
        # Shielded: many calls await one search, and a cancelled caller must not end it.
        return await asyncio.shield(self._finding)

    async def _find(self) -> ray.actor.ActorHandle | None:
        """Look the limiter up by name until it answers, for at most ``find_wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._find_wait_s
        was_local = self._local_until > float("-inf")
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    handle = await asyncio.to_thread(self._find_handle)
                    await asyncio.wait_for(handle.pid.remote(), left)
                except (ValueError, RayActorError, TimeoutError):
                    # ValueError: no actor has the name (yet); RayActorError: it is
                    # restarting or dead; TimeoutError: it did not answer in time.
                    await asyncio.sleep(min(_FIND_POLL_S, max(0.0, deadline - loop.time())))
                    continue
                if was_local:
                    log.info("the shared rate limiter is back; this process uses it again")
                self._handle, self._local_until = handle, float("-inf")
                return handle
            log.warning(
                "the shared rate limiter did not answer within %g s; this process limits its "
                "own calls for the next %g s, then looks for it again",
                self._find_wait_s,
                self._local_for_s,
            )
            self._local_until = self._clock() + self._local_for_s
            return None
        finally:
            self._finding = None

    def _lost(self, handle: ray.actor.ActorHandle, exc: RayActorError) -> None:
        """Forget ``handle`` (once, however many calls saw it fail): the next call finds it."""
        if self._handle is handle:
            self._handle = None
            log.warning("the shared rate limiter was lost (%s); finding it again", _first(exc))


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


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
