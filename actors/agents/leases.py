"""The orchestrator's side of one pool: lease an agent, call it directly, end the lease.

A microtask's request and result travel one actor hop, orchestrator → agent. The pool
only says who runs it (``AgentPool.lease``: its queue, balancer, scaling and health as
before) and learns when the lease ends. The ends are batched: they ride on the next lease
request to the pool, or go on their own a moment later when none comes, so the pool gets
about one small control call per microtask and none of the data.

    leases = PoolLeases(pool_handle)
    result = await leases.run(request)      # lease, agent.run, end (or raise)

The agent keeps the microtask's deadline on its own work (``actors.llm.held_back``); past
it, the agent is asked whether it still answers, and only one that says nothing is given
up on (``MicrotaskTimeoutError``). An agent that died is reported to its pool with the end
of its lease (``AgentLostError`` here); a death of another actor under the agent (the
limiter) leaves the agent its place.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.agents.pool import PING_TIMEOUT_S, AgentLease, LeaseEnd
from actors.errors import AgentLostError, MicrotaskTimeoutError
from actors.models import MicrotaskRequest, MicrotaskResult

log = logging.getLogger(__name__)

_END_FLUSH_S = 0.02  # lease ends wait this long for a lease request to ride on


class PoolLeases:
    """Runs microtasks on the agents one pool hands out."""

    def __init__(self, pool: ray.actor.ActorHandle) -> None:
        self._pool = pool
        self._ended: list[LeaseEnd] = []
        self._flush: asyncio.TimerHandle | None = None
        self._orphans: set[asyncio.Task[None]] = set()  # leases given up on, ended unused

    async def run(self, request: MicrotaskRequest) -> MicrotaskResult:
        """``request`` run on an agent of the pool; its errors as the agent raised them."""
        lease = await self._lease(request)
        started = time.monotonic()
        ref: ray.ObjectRef = lease.handle.run.remote(request)
        end = LeaseEnd(lease.lease_id, ok=False)
        try:
            result = await self._result_of(lease, ref, request)
            end = LeaseEnd(lease.lease_id, ok=True, duration_s=time.monotonic() - started)
            return result
        except asyncio.CancelledError:
            ray.cancel(ref)
            end = LeaseEnd(lease.lease_id, ok=None)
            raise
        except TimeoutError:
            ray.cancel(ref)
            raise MicrotaskTimeoutError(
                f"agent {lease.agent_id} stopped answering while running "
                f"{request.task_id}/{request.microtask.id}"
            ) from None
        except RayActorError as exc:
            if not _died(lease, exc):
                # The agent is alive; an actor it called (the limiter) died under it. The
                # dispatcher retries the microtask; the agent keeps its place.
                log.warning(
                    "agent %s lost %s/%s to another actor's death: %s",
                    lease.agent_id, request.task_id, request.microtask.id, _first_line(exc),
                )  # fmt: skip
                raise
            end = LeaseEnd(lease.lease_id, ok=False, died=True)
            raise AgentLostError(
                f"agent {lease.agent_id} died while running "
                f"{request.task_id}/{request.microtask.id}"
            ) from None
        finally:
            self._end(end)

    async def _lease(self, request: MicrotaskRequest) -> AgentLease:
        """An agent for ``request``, with the lease ends gathered so far riding along."""
        ended, self._ended = self._ended, []
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        # The pool reads only what it balances on: the context stays here.
        looked_at = request.model_copy(update={"context": [], "request_text": ""})
        ref: ray.ObjectRef = self._pool.lease.remote(looked_at, ended)
        try:
            lease: AgentLease = await ref
        except asyncio.CancelledError:
            # Not ray.cancel: the ends riding on the call must arrive. The pool drops the
            # queued request, or the lease it already granted is ended unused.
            self._pool.withdraw.remote(request.attempt_key)
            orphan = asyncio.ensure_future(self._end_unused(ref))
            self._orphans.add(orphan)
            orphan.add_done_callback(self._orphans.discard)
            raise
        return lease

    async def _end_unused(self, ref: ray.ObjectRef) -> None:
        try:
            lease: AgentLease = await ref
        except Exception:  # withdrawn, or the pool is gone: nothing was handed out
            return
        self._end(LeaseEnd(lease.lease_id, ok=None))

    def _end(self, end: LeaseEnd) -> None:
        self._ended.append(end)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(_END_FLUSH_S, self._send_ends)

    def _send_ends(self) -> None:
        self._flush = None
        ended, self._ended = self._ended, []
        if ended:
            self._pool.end_leases.remote(ended)

    @staticmethod
    async def _result_of(
        lease: AgentLease, ref: ray.ObjectRef, request: MicrotaskRequest
    ) -> MicrotaskResult:
        """The agent's result; past its deadline (which the agent keeps), the agent is
        asked whether it still answers, and one that says nothing raises TimeoutError."""
        future = asyncio.ensure_future(ref)
        deadline = request.timeout_s
        wait_s = None if deadline is None else deadline + PING_TIMEOUT_S
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=wait_s)
                if done:
                    result: MicrotaskResult = future.result()
                    return result
                # Raises TimeoutError when it says nothing, RayActorError when it died.
                await asyncio.wait_for(lease.handle.ping.remote(), PING_TIMEOUT_S)
                wait_s = deadline
        finally:
            future.cancel()  # a no-op once done; else nobody waits for it any more


def _died(lease: AgentLease, exc: RayActorError) -> bool:
    """Whether ``exc`` from the leased agent's call says that *this* agent died.

    A ``RayActorError`` raised by the agent's own code (wrapped in ``RayTaskError``: the
    agent ran and raised it) or naming another actor is some other actor's death.
    """
    if isinstance(exc, RayTaskError):
        return False
    return exc.actor_id is None or exc.actor_id == lease.handle._actor_id.hex()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
