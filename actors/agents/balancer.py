"""Picks the agent for each microtask inside one pool: pure logic, no Ray.

The pool keeps one ``AgentSlot`` per agent and asks a ``LoadBalancer`` two
questions: which queued request goes next (``next_index``) and which agent
takes it (``pick``). After a microtask finishes it calls ``record`` so the
weighted and affinity strategies learn; ``forget`` drops a removed agent.

::

    lb = LoadBalancer(Strategy.LEAST_LOADED)
    slots = [AgentSlot("research-00", in_flight=1), AgentSlot("research-01")]
    lb.pick(slots, request)  # -> "research-01", the idle one
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from actors.config import Strategy
from actors.models import MicrotaskRequest

logger = logging.getLogger(__name__)

# Smoothing of per-agent duration and success rate: recent microtasks count
# most, but one outlier does not swing the weights.
_ALPHA = 0.3
# Floor for durations so an instant answer (cache, simulator) cannot make a
# weight infinite.
_MIN_DURATION_S = 1e-3
DEFAULT_MAX_AFFINITY_KEYS = 10_000


@dataclass
class AgentSlot:
    """The pool's view of one agent."""

    agent_id: str
    capacity: int = 1  # microtasks it may run at once
    in_flight: int = 0
    completed: int = 0
    failures: int = 0
    ewma_s: float | None = None  # smoothed duration of its microtasks
    alive: bool = True

    @property
    def free(self) -> int:
        """How many more microtasks it may take right now."""
        return max(0, self.capacity - self.in_flight)


@dataclass
class _Stats:
    """What ``record`` has learnt about one agent (used by the weighted strategy)."""

    ewma_s: float | None = None  # of successful microtasks only: fast failures are no merit
    success: float = 1.0  # EWMA of 1 (ok) / 0 (failed), so a recovered agent regains weight
    samples: int = 0


class LoadBalancer:
    """One strategy's choice of request and agent; holds only soft state.

    Losing this object (pool restart) costs nothing but learnt weights and
    affinity bindings.
    """

    def __init__(
        self, strategy: Strategy, max_affinity_keys: int = DEFAULT_MAX_AFFINITY_KEYS
    ) -> None:
        self.strategy = Strategy(strategy)
        self._max_affinity_keys = max_affinity_keys
        self._last_rr: str | None = None  # agent id picked last by round robin
        self._stats: dict[str, _Stats] = {}  # agent id -> learnt duration/success
        self._current: dict[str, float] = {}  # agent id -> smooth WRR current weight
        # affinity key (DAG branch) -> agent that last served it, least recent first
        self._affinity: OrderedDict[str, str] = OrderedDict()

    # --- which request -------------------------------------------------------

    def next_index(self, queue: Sequence[MicrotaskRequest]) -> int:
        """Index of the queued request to dispatch next.

        PRIORITY: critical first, then higher ``priority``, then FIFO. Every
        other strategy: FIFO (0). Raises ``ValueError`` on an empty queue.
        """
        if not queue:
            raise ValueError("next_index needs a non-empty queue")
        if self.strategy is not Strategy.PRIORITY:
            return 0
        return min(
            range(len(queue)),
            key=lambda i: (not queue[i].microtask.critical, -queue[i].microtask.priority, i),
        )

    # --- which agent ---------------------------------------------------------

    def pick(self, agents: Sequence[AgentSlot], request: MicrotaskRequest) -> str | None:
        """An alive agent with free capacity not in ``request.exclude_agents``; None if none."""
        excluded = set(request.exclude_agents)
        eligible = [a for a in agents if a.alive and a.free > 0 and a.agent_id not in excluded]
        if not eligible:
            return None
        match self.strategy:
            case Strategy.ROUND_ROBIN:
                chosen = self._round_robin(eligible)
            case Strategy.WEIGHTED:
                chosen = self._weighted(eligible)
            case Strategy.AFFINITY:
                chosen = self._affinity_pick(eligible, _affinity_key(request))
            case _:  # LEAST_LOADED, and PRIORITY whose effect is in next_index
                chosen = _least_loaded(eligible)
        return chosen.agent_id

    def record(self, agent_id: str, request: MicrotaskRequest, duration_s: float, ok: bool) -> None:
        """Learn from a finished microtask: duration, success, and the branch it served."""
        stats = self._stats.setdefault(agent_id, _Stats())
        stats.samples += 1
        stats.success = (1 - _ALPHA) * stats.success + _ALPHA * (1.0 if ok else 0.0)
        if ok:
            duration = max(duration_s, _MIN_DURATION_S)
            stats.ewma_s = (
                duration
                if stats.ewma_s is None
                else (1 - _ALPHA) * stats.ewma_s + _ALPHA * duration
            )
            key = _affinity_key(request)
            if key and self.strategy is Strategy.AFFINITY:
                self._bind(key, agent_id)

    def forget(self, agent_id: str) -> None:
        """Drop everything learnt about an agent that was removed or died."""
        self._stats.pop(agent_id, None)
        self._current.pop(agent_id, None)
        for key in [k for k, a in self._affinity.items() if a == agent_id]:
            del self._affinity[key]

    def weight(self, agent: AgentSlot) -> float | None:
        """The weighted strategy's weight for ``agent``: success rate / smoothed duration.

        None while nothing is known about it (the strategy then uses the mean).
        """
        stats = self._stats.get(agent.agent_id)
        if stats is not None and stats.ewma_s is not None:
            return stats.success / stats.ewma_s
        if agent.ewma_s is not None:
            # The pool's own counters, e.g. after this balancer was recreated.
            success = (agent.completed + 1) / (agent.completed + agent.failures + 2)
            return success / max(agent.ewma_s, _MIN_DURATION_S)
        return None

    # --- strategies ----------------------------------------------------------

    def _round_robin(self, eligible: list[AgentSlot]) -> AgentSlot:
        # Order by id so the cycle is stable when the pool adds or removes agents.
        ordered = sorted(eligible, key=lambda a: a.agent_id)
        start = 0
        if self._last_rr is not None:
            start = bisect.bisect_right([a.agent_id for a in ordered], self._last_rr)
        chosen = ordered[start % len(ordered)]
        self._last_rr = chosen.agent_id
        return chosen

    def _weighted(self, eligible: list[AgentSlot]) -> AgentSlot:
        # Smooth weighted round robin (nginx): every candidate gains its weight,
        # the richest is picked and pays back the total. Picks are spread
        # evenly and in proportion to the weights, with no bursts.
        ordered = sorted(eligible, key=lambda a: a.agent_id)
        known = {a.agent_id: w for a in ordered if (w := self.weight(a)) is not None}
        mean = sum(known.values()) / len(known) if known else 1.0
        weights = {}
        for agent in ordered:
            if agent.agent_id in known:
                weights[agent.agent_id] = known[agent.agent_id]
            else:
                # New agents get the mean; one that only failed so far gets less.
                stats = self._stats.get(agent.agent_id)
                weights[agent.agent_id] = mean * (stats.success if stats else 1.0)
        total = sum(weights.values())
        if total <= 0:
            return _least_loaded(ordered)
        best: AgentSlot | None = None
        for agent in ordered:
            current = self._current.get(agent.agent_id, 0.0) + weights[agent.agent_id]
            self._current[agent.agent_id] = current
            if best is None or current > self._current[best.agent_id]:
                best = agent
        assert best is not None  # ordered is non-empty
        self._current[best.agent_id] -= total
        return best

    def _affinity_pick(self, eligible: list[AgentSlot], key: str) -> AgentSlot:
        if not key:
            return _least_loaded(eligible)
        bound = self._affinity.get(key)
        for agent in eligible:
            if agent.agent_id == bound:
                self._affinity.move_to_end(key)
                return agent
        chosen = _least_loaded(eligible)
        self._bind(key, chosen.agent_id)
        return chosen

    def _bind(self, key: str, agent_id: str) -> None:
        self._affinity[key] = agent_id
        self._affinity.move_to_end(key)
        while len(self._affinity) > self._max_affinity_keys:
            self._affinity.popitem(last=False)


def _least_loaded(eligible: Sequence[AgentSlot]) -> AgentSlot:
    """Lowest in_flight/capacity; ties go to fewest completed, then id."""
    return min(
        eligible,
        key=lambda a: (a.in_flight / max(a.capacity, 1), a.completed, a.agent_id),
    )


def _affinity_key(request: MicrotaskRequest) -> str:
    return request.affinity_key or request.microtask.branch
