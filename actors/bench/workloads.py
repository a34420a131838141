"""Benchmark workloads: fixed plans, seeded latencies, and the limits they allow.

A ``Workload`` is a plan (``Microtask`` list) plus the agent capacity per role
it runs on. Every contestant runs the same plan with the same first-attempt
latencies: ``draw_latencies`` makes them from a seeded RNG and ``with_hints``
writes each one into the microtask's instructions as ``[sim-latency X]``, which
the simulator honours for that request.

Two limits are computed from those latencies: ``ideal_makespan`` (the lower
bound from ``actors.engine.dag``: critical path or busiest role's work per agent) and
``greedy_makespan`` (what a dependency-driven executor with zero overhead
reaches: a list schedule, longest remaining path first).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from actors.engine import dag
from actors.models import PIPELINE, Microtask, Role, apportion

_MAX_HINT_S = 3600.0  # the simulator caps hints here too


class LatencyKind(StrEnum):
    ZERO = "zero"
    FIXED = "fixed"
    LOGNORMAL = "lognormal"


@dataclass(frozen=True)
class LatencyModel:
    """How long each simulated model call takes (``median_s`` is the fixed value for FIXED)."""

    kind: LatencyKind
    median_s: float = 1.0
    sigma: float = 0.9

    @property
    def label(self) -> str:
        if self.kind is LatencyKind.ZERO:
            return "zero"
        if self.kind is LatencyKind.FIXED:
            return f"fixed {self.median_s:g} s"
        return f"lognormal median {self.median_s:g} s σ {self.sigma:g}"


@dataclass(frozen=True)
class Workload:
    """A fixed plan and the agents per role it runs on."""

    name: str
    microtasks: list[Microtask]
    capacity: dict[Role, int]
    note: str = ""
    text: str = field(default="")

    @property
    def size(self) -> int:
        return len(self.microtasks)

    @property
    def agents(self) -> int:
        return sum(self.capacity.values())

    @property
    def request_text(self) -> str:
        return self.text or f"Benchmark workload {self.name}: {self.note}"


def _task(tid: str, role: Role, depends_on: Sequence[str] = ()) -> Microtask:
    return Microtask(
        id=tid,
        role=role,
        title=f"{role.value} step {tid}",
        instructions=f"Do the {role.value} work of step {tid} in a few sentences.",
        depends_on=list(depends_on),
    )


def _finish(name: str, tasks: list[Microtask], capacity: Mapping[Role, int], note: str) -> Workload:
    # Critical flags as the planner sets them (longest path by hops), branches for affinity.
    problems = dag.validate(tasks)
    if problems:
        raise ValueError(f"workload {name} is invalid: {problems}")
    plan = dag.assign_branches(dag.mark_critical(tasks))
    return Workload(name, plan, dict(capacity), note)


def split_by_capacity(n: int, capacity: Mapping[Role, int]) -> dict[Role, int]:
    """``n`` microtasks shared among roles in proportion to their agents (largest remainder)."""
    return apportion(n, capacity)


def wide(n: int, capacity: Mapping[Role, int]) -> Workload:
    """``n`` independent microtasks, roles in proportion to the agents of each pool."""
    tasks: list[Microtask] = []
    for role, count in split_by_capacity(n, capacity).items():
        tasks += [_task(f"w{len(tasks) + i + 1:03d}", role) for i in range(count)]
    return _finish(f"wide-{n}", tasks, capacity, f"{n} independent microtasks")


def layered(
    name: str, sizes: Sequence[int], capacity: Mapping[Role, int], seed: int = 7
) -> Workload:
    """Levels research → analysis → validation → generation (roles repeat past four levels);
    each microtask depends on 2–4 random microtasks of the level before."""
    rng = random.Random(seed)
    tasks: list[Microtask] = []
    previous: list[str] = []
    for level, size in enumerate(sizes):
        role = PIPELINE[level % len(PIPELINE)]
        current = []
        for i in range(size):
            tid = f"l{level + 1}-{i + 1:03d}"
            k = min(len(previous), rng.randint(2, 4))
            tasks.append(_task(tid, role, rng.sample(previous, k)))
            current.append(tid)
        previous = current
    shape = " → ".join(str(s) for s in sizes)
    return _finish(name, tasks, capacity, f"levels {shape}, each on 2–4 of the level before")


def chain(n: int, capacity: Mapping[Role, int]) -> Workload:
    """``n`` microtasks, each on the one before (no parallelism at all)."""
    tasks = []
    for i in range(n):
        role = PIPELINE[i % len(PIPELINE)]
        tasks.append(_task(f"c{i + 1:03d}", role, [f"c{i:03d}"] if i else []))
    return _finish(f"chain-{n}", tasks, capacity, f"a chain of {n}")


def diamonds(count: int, width: int, capacity: Mapping[Role, int]) -> Workload:
    """``count`` diamonds in a row: a join fans out to ``width`` microtasks that join again."""
    tasks = [_task("d0", Role.RESEARCH)]
    join = "d0"
    for d in range(1, count + 1):
        middle_role = Role.ANALYSIS if d % 2 else Role.RESEARCH
        middles = [f"d{d}-{i + 1}" for i in range(width)]
        tasks += [_task(m, middle_role, [join]) for m in middles]
        join = f"d{d}-join"
        tasks.append(_task(join, Role.VALIDATION if d < count else Role.GENERATION, middles))
    note = f"{count} diamonds of width {width} in a row"
    return _finish(f"diamonds-{len(tasks)}", tasks, capacity, note)


# --- latencies --------------------------------------------------------------------------


def draw_latencies(
    microtasks: Sequence[Microtask], model: LatencyModel, seed: int
) -> dict[str, float]:
    """First-attempt latency of every microtask, seeded, in plan order."""
    rng = random.Random(seed)
    out: dict[str, float] = {}
    for task in microtasks:
        if model.kind is LatencyKind.ZERO:
            seconds = 0.0
        elif model.kind is LatencyKind.FIXED:
            seconds = model.median_s
        else:
            seconds = model.median_s * math.exp(model.sigma * rng.gauss(0.0, 1.0))
        out[task.id] = round(min(seconds, _MAX_HINT_S), 3)
    return out


def with_hints(microtasks: Sequence[Microtask], latencies: Mapping[str, float]) -> list[Microtask]:
    """Copies whose instructions carry ``[sim-latency X]`` (first in the prompt, so it wins)."""
    return [
        t.model_copy(
            update={"instructions": f"[sim-latency {latencies[t.id]:.3f}] {t.instructions}"}
        )
        for t in microtasks
    ]


# --- limits -----------------------------------------------------------------------------


def ideal_makespan(workload: Workload, latencies: Mapping[str, float]) -> float:
    """The lower bound: max(critical path, busiest role's work / its agents)."""
    return dag.ideal_makespan(workload.microtasks, latencies, workload.capacity)


def greedy_makespan(
    microtasks: Sequence[Microtask], durations: Mapping[str, float], capacity: Mapping[Role, int]
) -> float:
    """Makespan of a zero-overhead list schedule (ready microtask with the longest
    remaining path first, on the first free agent of its role): an achievable target."""
    if not microtasks:
        return 0.0
    by_id = {t.id: t for t in microtasks}
    children: dict[str, list[str]] = {t.id: [] for t in microtasks}
    for t in microtasks:
        for d in t.depends_on:
            children[d].append(t.id)
    tail: dict[str, float] = {}  # longest path from a microtask's start to the end
    for tid in reversed(_topological(microtasks)):
        below = max((tail[c] for c in children[tid]), default=0.0)
        tail[tid] = durations.get(tid, 1.0) + below
    waiting = {t.id: len(t.depends_on) for t in microtasks}
    free = {role: capacity.get(role, 0) for role in Role}
    ready: dict[Role, list[tuple[float, str]]] = {role: [] for role in Role}
    for t in microtasks:
        if not t.depends_on:
            heapq.heappush(ready[t.role], (-tail[t.id], t.id))
    running: list[tuple[float, str]] = []  # (finish time, id)
    now, left = 0.0, len(microtasks)
    while left:
        for role, queue in ready.items():
            while queue and free[role] > 0:
                _, tid = heapq.heappop(queue)
                free[role] -= 1
                heapq.heappush(running, (now + durations.get(tid, 1.0), tid))
        if not running:
            raise ValueError("a role with work has no capacity")
        now, tid = heapq.heappop(running)
        free[by_id[tid].role] += 1
        left -= 1
        for child in children[tid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready[by_id[child].role], (-tail[child], child))
    return now


def _topological(microtasks: Sequence[Microtask]) -> list[str]:
    return [tid for level in dag.levels(microtasks) for tid in level]
