"""One pool per role: owns its agent actors, queues microtasks, autoscales, heals.

The pool is not on a microtask's data path. The orchestrator asks for an agent
(``lease``): the request waits in the pool's queue until the load balancer
assigns it an agent with a free slot, and the agent's handle comes back; the
orchestrator calls the agent itself (``actors.agents.leases``) and ends the
lease when the microtask is done (``end_leases``, batched), which frees the
slot and teaches the balancer. A lease on an agent that dies is revoked.
A background loop keeps the number of agents between the pool's min and max
(``actors.agents.scaling``), polls the rate limiter for provider pressure and
health-checks agents, replacing dead ones.

Why not ``ray.util.ActorPool``: it allows one call in flight per actor, lives
in the driver (not shareable by the orchestrator and the HTTP app), and drops
dead actors instead of replacing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError

from actors.agents.agent import Agent
from actors.agents.balancer import AgentSlot, LoadBalancer
from actors.agents.scaling import Autoscaler
from actors.config import NAMESPACE, PoolSize, Settings, Strategy, agent_actor_name
from actors.errors import AgentLostError
from actors.llm import RemoteLimiter
from actors.models import (
    AgentInfo,
    AgentState,
    MicrotaskRequest,
    PoolSnapshot,
    Role,
)
from actors.observe import tracing
from actors.observe.ray_metrics import PoolMetrics

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 15.0  # a live async agent answers a ping in milliseconds, even when busy
_PRESSURE_POLL_S = 1.0
_PRESSURE_TIMEOUT_S = 2.0  # upkeep (health checks, scaling) never waits longer on the limiter
_TRIED_KEYS = 10_000
# A lease its agent is not running this long after it was handed out is taken as lost
# with its holder; a live holder calls the agent within milliseconds.
_LEASE_START_S = 10.0
_EXPECT_FOR_S = 900.0  # a plan's expected width lapses after this (longer than any task)


@dataclass
class _Member:
    """One agent as the pool sees it."""

    slot: AgentSlot  # the balancer's view: capacity, in-flight, history
    handle: ray.actor.ActorHandle
    index: int  # number in the actor name; never reused
    node_id: str | None = None
    ready: bool = False  # answered its first ping; only ready agents get work


@dataclass
class _Job:
    request: MicrotaskRequest
    assigned: asyncio.Future[str]  # resolved with an agent id by the dispatcher
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Held:
    """A lease handed out: whose slot it holds, and for what (the balancer learns from it)."""

    member: _Member
    request: MicrotaskRequest
    granted_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class AgentLease:
    """An agent handed out for one microtask: the caller calls ``handle.run`` itself."""

    lease_id: int
    agent_id: str
    handle: ray.actor.ActorHandle


@dataclass(frozen=True)
class LeaseEnd:
    """How a lease ended. ``ok`` None: the agent was never called (its caller gave up);
    ``died``: the agent itself died under the call."""

    lease_id: int
    ok: bool | None
    duration_s: float = 0.0
    died: bool = False


# Restartable: a restarted pool (whose old agents died with it) starts afresh on its
# next call; calls that were in flight fail and the orchestrator retries them.
@ray.remote(num_cpus=0, max_restarts=-1)
class AgentPool:
    """The agents of one role, kept between the configured min and max."""

    def __init__(
        self,
        role: Role,
        settings: Settings,
    ) -> None:
        self.role = role
        self._settings = settings
        # The pool makes no spans, but created first it refuses an unusable exporter
        # before any agent is spawned (an agent failing in __init__ would be respawned).
        tracing.configure(settings, "pool")
        # Found by name (again after it restarts), only to read provider pressure.
        self._limiter = RemoteLimiter(settings=settings.limiter)
        size = settings.pools[role]
        self._min, self._max = size.min, size.max
        self._autoscaler = Autoscaler(
            size.min,
            size.max,
            settings.target_per_agent,
            settings.upscale_delay_s,
            settings.downscale_delay_s,
        )
        self._balancer = LoadBalancer(settings.strategy)
        self._members: dict[str, _Member] = {}
        self._queue: list[_Job] = []
        self._next_index = 0
        self._pressure = 0.0
        self._completed = 0
        self._failed = 0
        self._replaced = 0
        self._maintainer: asyncio.Task[None] | None = None
        self._startup: asyncio.Task[None] | None = None  # the first agents coming up
        self._starting: set[asyncio.Task[None]] = set()  # agents being started
        # Each agent start costs seconds of CPU (the SDK import alone ~2 s). Started all at
        # once on a small machine, every start outlasts the ready timeout and the pool kills
        # and respawns them in a loop; a few at a time, each is up in seconds.
        self._start_slots = asyncio.Semaphore(settings.agent_start_concurrency)
        self._queued_starts = 0  # agents asked for, waiting for a start slot
        self._ray_metrics = PoolMetrics()
        # Agents that already ran (or are running) each microtask, so a retry or a
        # backup lands elsewhere; bounded, oldest microtasks forgotten first.
        self._tried: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        self._leases: dict[int, _Held] = {}  # handed out and not yet ended
        # task id -> (its microtasks of this role at once, when told)
        self._expected: dict[str, tuple[int, float]] = {}
        # Tagged with this process's incarnation: an end sent to a pool that restarted
        # since can never end one of the new process's leases.
        self._lease_ids = itertools.count((secrets.randbits(30) + 1) << 32)

    # --- public API -----------------------------------------------------------

    async def start(self) -> PoolSnapshot:
        """Create the minimum number of agents, wait until they answer, start upkeep."""
        await asyncio.shield(self._ensure_started())
        return self.snapshot()

    def _ensure_started(self) -> asyncio.Task[None]:
        if self._startup is None:
            self._startup = asyncio.create_task(self._start_up())
        return self._startup

    async def _start_up(self) -> None:
        await asyncio.gather(*self._add_agents(max(self._min, 1) - len(self._members)))
        self._maintainer = asyncio.create_task(self._maintain())

    async def lease(self, request: MicrotaskRequest, ended: Sequence[LeaseEnd] = ()) -> AgentLease:
        """Queue ``request`` until the balancer gives it an agent with a free slot, and hand
        that agent out; the caller runs the microtask on it and ends the lease (``ended``
        of a later call, or ``end_leases``). ``request`` is only looked at, never run here:
        the caller may send it without its context."""
        self.end_leases(ended)
        self._ensure_started()  # after a restart, the first call brings agents back
        job = _Job(request, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._dispatch()
        try:
            agent_id = await job.assigned
        except asyncio.CancelledError:
            self._withdraw(job)
            raise
        member = self._members.get(agent_id)
        if member is None:  # died between being picked and this coroutine resuming
            raise AgentLostError(f"agent {agent_id} died before it could take the microtask")
        self._remember(request, agent_id)
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Held(member, request)
        return AgentLease(lease_id=lease_id, agent_id=agent_id, handle=member.handle)

    def withdraw(self, attempt_key: str) -> None:
        """Take a queued lease request out of the queue (its caller gave up on it)."""
        for job in self._queue:
            if job.request.attempt_key == attempt_key:
                self._withdraw(job)
                job.assigned.cancel()
                return

    def end_leases(self, ended: Sequence[LeaseEnd]) -> None:
        """Leases whose microtask finished: free their slots, learn, hand out queued work."""
        for end in ended:
            held = self._leases.pop(end.lease_id, None)
            if held is None:
                continue  # revoked when its agent died, or granted by a previous pool process
            member = held.member
            member.slot.in_flight -= 1
            if end.ok is not None:
                if end.ok:
                    member.slot.completed += 1
                    self._completed += 1
                else:
                    self._failed += 1
                self._balancer.record(member.slot.agent_id, held.request, end.duration_s, end.ok)
            if end.died:
                self._mark_dead(member)
        self._dispatch()

    def _withdraw(self, job: _Job) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(job)

    def expect(self, task_id: str, width: int) -> None:
        """Predictive allocation: ``task_id``'s plan will run ``width`` microtasks of this
        role at once (0: no longer); the pool grows towards that now."""
        if width > 0:
            self._expected[task_id] = (width, time.monotonic())
        else:
            self._expected.pop(task_id, None)
        if self._maintainer is not None:  # started: scale now rather than on the next tick
            self._scale(time.monotonic())

    def idle_agents(self) -> int:
        """Free slots on ready agents that no queued microtask is waiting for."""
        free = sum(m.slot.free for m in self._members.values() if m.ready and m.slot.alive)
        return max(0, free - len(self._queue))

    def configure(
        self,
        min_agents: int | None = None,
        max_agents: int | None = None,
        strategy: Strategy | None = None,
    ) -> PoolSnapshot:
        """Change bounds or balancing strategy while running (experiments, operators).

        The autoscaler moves the pool into the new bounds on its next tick.
        """
        size = PoolSize(
            min=self._min if min_agents is None else min_agents,
            max=self._max if max_agents is None else max_agents,
        )
        self._min, self._max = size.min, size.max
        self._autoscaler = Autoscaler(
            size.min,
            size.max,
            self._settings.target_per_agent,
            self._settings.upscale_delay_s,
            self._settings.downscale_delay_s,
        )
        if strategy is not None:
            self._balancer = LoadBalancer(Strategy(strategy))
        return self.snapshot()

    def snapshot(self) -> PoolSnapshot:
        """Sizes, load and every agent's state."""
        members = list(self._members.values())
        ready = [m for m in members if m.ready]
        running = sum(m.slot.in_flight for m in ready)
        capacity = sum(m.slot.capacity for m in ready)
        agents = [
            AgentInfo(
                agent_id=m.slot.agent_id,
                node_id=m.node_id,
                state=_state(m),
                in_flight=m.slot.in_flight,
                completed=m.slot.completed,
                failed=m.slot.failures,
            )
            for m in members
        ]
        busy = sum(1 for a in agents if a.state is AgentState.BUSY)
        return PoolSnapshot(
            role=self.role,
            min=self._min,
            max=self._max,
            size=len(members),
            busy=busy,
            idle=sum(1 for a in agents if a.state is AgentState.IDLE),
            queued=len(self._queue),
            running=running,
            utilization=round(100.0 * running / capacity, 1) if capacity else 0.0,
            completed=self._completed,
            failed=self._failed,
            replaced=self._replaced,
            pressure=self._pressure,
            agents=agents,
        )

    async def pid(self) -> int:
        """The pool's own process id (for chaos tests and operators)."""
        return os.getpid()

    async def agent_pids(self) -> dict[str, int]:
        """Process id of every ready agent (for chaos tests and debugging)."""
        pids: dict[str, int] = {}
        for member in list(self._members.values()):
            if member.ready:
                with contextlib.suppress(RayActorError):
                    pids[member.slot.agent_id] = (await member.handle.ping.remote())["pid"]
        return pids

    async def shutdown(self) -> None:
        """Stop upkeep and kill every agent."""
        if self._maintainer is not None:
            self._maintainer.cancel()
        for member in list(self._members.values()):
            self._retire(member)

    # --- dispatch ---------------------------------------------------------------

    def _dispatch(self) -> None:
        """Assign queued jobs to free agents until one of the two runs out."""
        while self._queue:
            slots = [m.slot for m in self._members.values() if m.ready and m.slot.alive]
            if not any(s.free > 0 for s in slots):
                return
            first = self._balancer.next_index([job.request for job in self._queue])
            order = [first, *(i for i in range(len(self._queue)) if i != first)]
            for i in order:
                job = self._queue[i]
                agent_id = self._balancer.pick(slots, self._reachable(job.request, slots))
                if agent_id is not None:
                    del self._queue[i]
                    self._members[agent_id].slot.in_flight += 1
                    job.assigned.set_result(agent_id)
                    break
            else:
                return

    def _reachable(self, request: MicrotaskRequest, slots: list[AgentSlot]) -> MicrotaskRequest:
        """``request`` excluding the agents that already tried it, where others exist."""
        tried = self._tried.get((request.task_id, request.microtask.id), set())
        exclude = tried.union(request.exclude_agents)
        if not exclude:
            return request
        # When every agent of a small pool is excluded, any agent beats waiting forever.
        if all(s.agent_id in exclude for s in slots):
            exclude = set()
        return request.model_copy(update={"exclude_agents": sorted(exclude)})

    def _remember(self, request: MicrotaskRequest, agent_id: str) -> None:
        key = (request.task_id, request.microtask.id)
        self._tried.setdefault(key, set()).add(agent_id)
        self._tried.move_to_end(key)
        while len(self._tried) > _TRIED_KEYS:
            self._tried.popitem(last=False)

    # --- membership -------------------------------------------------------------

    def _spawn(self) -> _Member:
        while True:
            index = self._next_index
            self._next_index += 1
            agent_id = agent_actor_name(self.role, index)
            options: dict[str, object] = {"name": agent_id, "namespace": NAMESPACE}
            if self._settings.spread_agents:
                options["scheduling_strategy"] = "SPREAD"
            try:
                handle = Agent.options(**options).remote(  # type: ignore[attr-defined]
                    agent_id, self.role, self._settings
                )
                break
            except ValueError:  # the name is still held by an agent of a previous life
                continue
        slot = AgentSlot(agent_id=agent_id, capacity=self._settings.agent_concurrency)
        member = _Member(slot=slot, handle=handle, index=index)
        self._members[agent_id] = member
        return member

    def _add_agents(self, count: int) -> list[asyncio.Task[None]]:
        """Start ``count`` agents, at most ``agent_start_concurrency`` at a time."""
        tasks = []
        for _ in range(count):
            self._queued_starts += 1
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)  # keep a reference until it is done
            task.add_done_callback(self._starting.discard)
            tasks.append(task)
        return tasks

    async def _start_one(self) -> None:
        try:
            await self._start_slots.acquire()
        finally:
            self._queued_starts -= 1
        try:
            await self._await_ready(self._spawn())
        finally:
            self._start_slots.release()

    async def _await_ready(self, member: _Member) -> None:
        try:
            info: dict = await asyncio.wait_for(member.handle.ping.remote(), timeout=120)
        except (RayActorError, TimeoutError):
            log.warning("agent %s did not start", member.slot.agent_id)
            self._mark_dead(member)
            return
        member.node_id = info["node_id"]
        member.ready = True
        member.handle.warm_up.remote()  # in the background: it may take work meanwhile
        self._dispatch()

    def _mark_dead(self, member: _Member) -> None:
        if self._members.pop(member.slot.agent_id, None) is None:
            return
        member.slot.alive = False
        self._revoke_leases(member)
        self._balancer.forget(member.slot.agent_id)
        self._replaced += 1
        log.warning("agent %s of pool %s is dead; replacing it", member.slot.agent_id, self.role)
        with contextlib.suppress(Exception):
            ray.kill(member.handle)

    def _reclaim_leases(self, member: _Member, running: set[str]) -> None:
        """End the leases on ``member`` that it is not running though it has had time to
        start them: their holder died (an orchestrator killed mid-task) and will never end
        them, and their slots would be lost for good."""
        now = time.monotonic()
        lost = [
            lease_id
            for lease_id, held in self._leases.items()
            if held.member is member
            and held.request.attempt_key not in running
            and now - held.granted_at > _LEASE_START_S
        ]
        if lost:
            log.warning("pool %s: %d leases on %s were never ended; reclaimed",
                        self.role, len(lost), member.slot.agent_id)  # fmt: skip
            self.end_leases([LeaseEnd(lease_id, ok=None) for lease_id in lost])

    def _revoke_leases(self, member: _Member) -> None:
        """Forget the leases on a dead agent: their callers see its death in their call."""
        for lease_id in [i for i, held in self._leases.items() if held.member is member]:
            del self._leases[lease_id]

    def _retire(self, member: _Member) -> None:
        self._members.pop(member.slot.agent_id, None)
        self._balancer.forget(member.slot.agent_id)
        with contextlib.suppress(Exception):
            ray.kill(member.handle)

    # --- upkeep -----------------------------------------------------------------

    async def _maintain(self) -> None:
        """Scale, poll provider pressure and health-check, forever."""
        last_pressure = last_health = 0.0
        while True:
            await asyncio.sleep(self._settings.scale_interval_s)
            now = time.monotonic()
            try:
                if now - last_pressure >= _PRESSURE_POLL_S:
                    last_pressure = now
                    await self._poll_pressure()
                self._scale(now)
                self._ray_metrics.update(self.snapshot())
                if now - last_health >= self._settings.health_interval_s:
                    last_health = now
                    await self._health_check()
            except Exception:  # upkeep must never die; the next round retries
                log.exception("pool %s upkeep failed", self.role)

    async def _poll_pressure(self) -> None:
        """Provider pressure from the limiter; the last value stands while it does not answer."""
        try:
            snapshot = await asyncio.wait_for(self._limiter.snapshot(), _PRESSURE_TIMEOUT_S)
        except TimeoutError:
            return
        self._pressure = snapshot.pressure

    def _scale(self, now: float) -> None:
        current = len(self._members) + self._queued_starts
        running = sum(m.slot.in_flight for m in self._members.values())
        # An expectation its orchestrator never withdrew (it died) lapses.
        self._expected = {t: e for t, e in self._expected.items() if now - e[1] < _EXPECT_FOR_S}
        expected = sum(width for width, _ in self._expected.values())
        target = self._autoscaler.decide(
            now, current, len(self._queue), running, self._pressure, expected
        )
        if target > current:
            log.info("pool %s scales up %d -> %d", self.role, current, target)
            self._add_agents(target - current)
        elif target < current:
            idle = [m for m in self._members.values() if m.ready and m.slot.in_flight == 0]
            idle.sort(key=lambda m: m.index, reverse=True)
            for member in idle[: current - target]:
                self._retire(member)
            log.info("pool %s scales down %d -> %d", self.role, current, len(self._members))

    async def _health_check(self) -> None:
        members = [m for m in self._members.values() if m.ready]
        replies = await asyncio.gather(
            *(asyncio.wait_for(m.handle.ping.remote(), PING_TIMEOUT_S) for m in members),
            return_exceptions=True,
        )
        for member, reply in zip(members, replies, strict=True):
            if isinstance(reply, BaseException):
                self._mark_dead(member)
            else:
                self._reclaim_leases(member, set(reply.get("running", ())))
        # Replacements come from the autoscaler: below min it restores min at once.


def _state(member: _Member) -> AgentState:
    if not member.ready:
        return AgentState.STARTING
    return AgentState.BUSY if member.slot.in_flight else AgentState.IDLE
