"""One pool per role: owns its agent actors, queues microtasks, autoscales, heals.

The orchestrator calls ``submit`` and awaits the returned result; inside, the
job waits in the pool's queue until the load balancer assigns it an agent with
a free slot. A background loop keeps the number of agents between the pool's
min and max (``actors.scaling``), polls the rate limiter for provider pressure
and health-checks agents, replacing dead ones.

Why not ``ray.util.ActorPool``: it allows one call in flight per actor, lives
in the driver (not shareable by the orchestrator and the HTTP app), and drops
dead actors instead of replacing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors import tracing
from actors.agent import Agent
from actors.balancer import AgentSlot, LoadBalancer
from actors.config import NAMESPACE, PoolSize, Settings, Strategy, agent_actor_name
from actors.errors import AgentLostError, MicrotaskTimeoutError
from actors.llm import RemoteLimiter
from actors.models import (
    AgentInfo,
    AgentState,
    MicrotaskRequest,
    MicrotaskResult,
    PoolSnapshot,
    Role,
)
from actors.ray_metrics import PoolMetrics
from actors.scaling import Autoscaler

log = logging.getLogger(__name__)

_PING_TIMEOUT_S = 15.0  # a live async agent answers a ping in milliseconds, even when busy
_PRESSURE_POLL_S = 1.0
_PRESSURE_TIMEOUT_S = 2.0  # upkeep (health checks, scaling) never waits longer on the limiter
_TRIED_KEYS = 10_000


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


# Restartable: a restarted pool (whose old agents died with it) starts afresh on its
# next call; calls that were in flight fail and the orchestrator retries them.
@ray.remote(num_cpus=0, max_restarts=-1)
class AgentPool:
    """The agents of one role, kept between the configured min and max."""

    def __init__(
        self,
        role: Role,
        settings: Settings,
        base_url: str | None,
    ) -> None:
        self.role = role
        self._settings = settings
        # The pool makes no spans, but created first it refuses an unusable exporter
        # before any agent is spawned (an agent failing in __init__ would be respawned).
        tracing.configure(settings, "pool")
        self._base_url = base_url
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

    async def submit(self, request: MicrotaskRequest) -> MicrotaskResult:
        """Queue ``request``, run it on the agent the balancer picks, return the result."""
        self._ensure_started()  # after a restart, the first call brings agents back
        job = _Job(request, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._dispatch()
        try:
            agent_id = await job.assigned
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._queue.remove(job)
            raise
        member = self._members[agent_id]
        self._remember(request, agent_id)
        started = time.monotonic()
        ref: ray.ObjectRef = member.handle.run.remote(request)
        ok = False
        try:
            result = await self._result_of(member, ref, request)
            ok = True
            self._completed += 1
            return result
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except TimeoutError:
            ray.cancel(ref)
            self._failed += 1
            raise MicrotaskTimeoutError(
                f"agent {agent_id} stopped answering while running "
                f"{request.task_id}/{request.microtask.id}"
            ) from None
        except RayActorError as exc:
            self._failed += 1
            if not _died(member, exc):
                # The agent is alive; an actor it called (the limiter) died under it. The
                # dispatcher retries the microtask; the agent keeps its place.
                log.warning(
                    "agent %s lost %s/%s to another actor's death: %s",
                    agent_id, request.task_id, request.microtask.id, _first_line(exc),
                )  # fmt: skip
                raise
            self._mark_dead(member)
            mt = request.microtask
            raise AgentLostError(
                f"agent {agent_id} died while running {request.task_id}/{mt.id}"
            ) from None
        except Exception:
            self._failed += 1
            raise
        finally:
            member.slot.in_flight -= 1
            if ok:
                member.slot.completed += 1
            self._balancer.record(agent_id, request, time.monotonic() - started, ok)
            self._dispatch()

    async def _result_of(
        self, member: _Member, ref: ray.ObjectRef, request: MicrotaskRequest
    ) -> MicrotaskResult:
        """The agent's result. The agent keeps the microtask's deadline itself, on its own
        work (time the rate limiter holds it back does not count, see
        ``actors.llm.held_back``); past that deadline the agent is asked whether it still
        answers, and only one that says nothing for a while is given up on (TimeoutError)."""
        future = asyncio.ensure_future(ref)
        wait_s = request.timeout_s + _PING_TIMEOUT_S
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=wait_s)
                if done:
                    return future.result()
                # Raises TimeoutError when it says nothing, RayActorError when it died.
                await asyncio.wait_for(member.handle.ping.remote(), _PING_TIMEOUT_S)
                wait_s = request.timeout_s
        finally:
            future.cancel()  # a no-op once done; else nobody waits for it any more

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
                    agent_id, self.role, self._settings, self._base_url
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
        self._dispatch()

    def _mark_dead(self, member: _Member) -> None:
        if self._members.pop(member.slot.agent_id, None) is None:
            return
        member.slot.alive = False
        self._balancer.forget(member.slot.agent_id)
        self._replaced += 1
        log.warning("agent %s of pool %s is dead; replacing it", member.slot.agent_id, self.role)
        with contextlib.suppress(Exception):
            ray.kill(member.handle)

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
        target = self._autoscaler.decide(now, current, len(self._queue), running, self._pressure)
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
            *(asyncio.wait_for(m.handle.ping.remote(), _PING_TIMEOUT_S) for m in members),
            return_exceptions=True,
        )
        for member, reply in zip(members, replies, strict=True):
            if isinstance(reply, BaseException):
                self._mark_dead(member)
        # Replacements come from the autoscaler: below min it restores min at once.


def _died(member: _Member, exc: RayActorError) -> bool:
    """Whether ``exc`` from ``member``'s call says that *this* agent died.

    A ``RayActorError`` raised by the agent's own code (wrapped in ``RayTaskError``: the
    agent ran and raised it) or naming another actor is some other actor's death.
    """
    if isinstance(exc, RayTaskError):
        return False
    return exc.actor_id is None or exc.actor_id == member.handle._actor_id.hex()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _state(member: _Member) -> AgentState:
    if not member.ready:
        return AgentState.STARTING
    if not member.slot.alive:
        return AgentState.DEAD
    return AgentState.BUSY if member.slot.in_flight else AgentState.IDLE
