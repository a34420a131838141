"""Throughput (``parallel-agents bench --throughput``): a stream of requests at growing pools.

Issue 16: does throughput grow with the agents? Each step sends a seeded stream of medium
requests (one fixed plan of four levels, research → analysis → validation → generation,
each microtask on 2–4 of the level before, every call a fixed ``[sim-latency]``) through
the real system (``orchestrator.submit(text, plan)`` on the pools, agents and limiter of
``RaySystem``) against the simulator process, at each agent count in turn. One system
serves every step: the pools grow between steps (``pool.configure``), and that start-up
is timed apart from the figures.

The stream is sized per step so that the agents, not the arrivals, bound it: it offers
``overload`` × what the step's agents can do at best (``capacity_per_s``: the busiest role's
microtasks per task × latency over its agents) for ``span_s`` seconds. Every step then
offers the same load relative to its agents, so the last step's offer is (its agents /
the first step's) × overload × the first step's bound, above what the first step does.

Figures per step and the scaling check: ``actors.bench.throughput_figures``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import ray

from actors.bench.harness import bench_settings
from actors.bench.ray_run import RaySystem
from actors.bench.results import Check
from actors.bench.simproc import SimulatorProcess
from actors.bench.throughput_figures import (
    TaskTiming,
    ThroughputResults,
    checks,
    step_figures,
)
from actors.bench.workloads import (
    LatencyKind,
    LatencyModel,
    draw_latencies,
    layered,
    split_by_capacity,
    with_hints,
)
from actors.config import NAMESPACE, Settings
from actors.models import PIPELINE, Microtask, Role, RunReport

log = logging.getLogger(__name__)

_LEAD_S = 0.5  # the stream's first arrival, after the driver has set every timer
_MAX_RUNNING_TASKS = 100_000  # admission never refuses a task of the stream


class ArrivalKind(StrEnum):
    POISSON = "poisson"  # a Poisson process given n arrivals in the span: sorted uniform times
    EVEN = "even"  # evenly spaced over the span


@dataclass(frozen=True)
class ThroughputConfig:
    """What to run (see ``full`` and ``quick``)."""

    mode: str
    agents: tuple[int, ...]  # agents in all, per step, ascending
    levels: tuple[int, ...]  # the medium plan's level sizes
    latency_s: float  # every microtask call, fixed
    span_s: float  # each step's arrivals fall within this many seconds
    overload: float = 1.25  # offered load / the step's agent bound
    arrivals: ArrivalKind = ArrivalKind.POISSON
    seed: int = 1


def full() -> ThroughputConfig:
    """10, 20, 40 and 80 agents; a plan of 20 (8 → 6 → 4 → 2) whose roles split 10 agents
    4/3/2/1 exactly. 4 s a call: at 1 s, 80 busy agents would need 80 microtasks a second ×
    ~30 ms of CPU each (bench/README.md) = 2.4 cores, more than this machine has. Arrivals
    over 90 s, long beside one request's own 16–32 s: about 15 minutes with start-up."""
    return ThroughputConfig("full", (10, 20, 40, 80), (8, 6, 4, 2), latency_s=4.0, span_s=90.0)


def quick() -> ThroughputConfig:
    """4 and 8 agents (one, then two per role) on a plan of 12 (3 → 3 → 3 → 3), 1 s a call,
    arrivals over 15 s: under two minutes with start-up."""
    return ThroughputConfig("quick", (4, 8), (3, 3, 3, 3), latency_s=1.0, span_s=15.0)


# --- the stream, pure --------------------------------------------------------------------


def medium_plan(levels: Sequence[int], latency_s: float, seed: int = 1) -> list[Microtask]:
    """The plan every request of the stream runs, each call hinted to take ``latency_s``."""
    counts: Counter[Role] = Counter()
    for level, size in enumerate(levels):  # layered()'s roles: the order work flows in
        counts[PIPELINE[level % len(PIPELINE)]] += size
    shape = "-".join(str(n) for n in levels)
    workload = layered(f"medium-{shape}", levels, counts, seed)
    fixed = LatencyModel(LatencyKind.FIXED, median_s=latency_s)
    return with_hints(workload.microtasks, draw_latencies(workload.microtasks, fixed, seed))


def role_counts(plan: Sequence[Microtask]) -> dict[Role, int]:
    """Microtasks per role of one task."""
    return dict(Counter(mt.role for mt in plan))


def split_agents(total: int, plan: Sequence[Microtask]) -> dict[Role, int]:
    """``total`` agents over the four roles in proportion to the plan's microtasks per role
    (largest remainder, as the benchmark's workloads split theirs), at least one each: the
    merge calls a validation and a generation agent whatever the plan."""
    if total < len(PIPELINE):
        raise ValueError(f"{total} agents cannot cover the {len(PIPELINE)} roles")
    counts = role_counts(plan)
    split = split_by_capacity(total, {role: counts.get(role, 0) for role in PIPELINE})
    for role in PIPELINE:
        if split[role] == 0:  # one from the role with the most agents per microtask
            donor = max((r for r in split if split[r] > 1), key=lambda r: split[r] / counts[r])
            split[donor] -= 1
            split[role] = 1
    return {role: split[role] for role in PIPELINE}


def capacity_per_s(plan: Sequence[Microtask], split: Mapping[Role, int], latency_s: float) -> float:
    """Tasks a second these agents finish at best: the busiest role's share of each task
    (its microtasks × the latency over its agents) bounds the stream."""
    counts = role_counts(plan)
    if any(split.get(role, 0) < 1 for role in counts):
        raise ValueError("a role the plan uses has no agents")
    return min(split[role] / (n * latency_s) for role, n in counts.items())


def stream_size(config: ThroughputConfig, capacity: float) -> int:
    """Requests in a step's stream: ``overload`` × what its agents can do over the span."""
    return max(2, math.ceil(config.overload * capacity * config.span_s))


def arrival_times(n: int, span_s: float, kind: ArrivalKind, seed: int) -> list[float]:
    """Seconds from the stream's start at which each of ``n`` requests arrives, ascending."""
    if n < 1 or span_s <= 0:
        raise ValueError("a stream needs one request or more and a span above 0")
    if kind is ArrivalKind.EVEN:
        return [round(i * span_s / n, 4) for i in range(n)]
    rng = random.Random(seed)
    return sorted(round(rng.uniform(0.0, span_s), 4) for _ in range(n))


# --- the run ------------------------------------------------------------------------------


def run(config: ThroughputConfig, base: Settings, say: Callable[[str], None]) -> ThroughputResults:
    """Every step of ``config`` on one system; the figures and the scaling check."""
    started = time.perf_counter()
    plan = medium_plan(config.levels, config.latency_s, config.seed)
    splits = [split_agents(n, plan) for n in config.agents]
    results = ThroughputResults(
        mode=config.mode,
        cpus=os.cpu_count() or 1,
        latency_s=config.latency_s,
        levels=list(config.levels),
        arrivals=config.arrivals.value,
        overload=config.overload,
        span_s=config.span_s,
        seed=config.seed,
    )
    sim = SimulatorProcess()
    ray_system: RaySystem | None = None
    try:
        url = sim.start()
        home = Path(tempfile.mkdtemp(prefix="parallel-agents-throughput-"))
        # The limiter sized for the largest step, the pools for the first.
        settings = bench_settings(base, url, splits[-1], home).with_overrides(
            pools={role.value: {"min": n, "max": n} for role, n in splits[0].items()},
            max_running_tasks=_MAX_RUNNING_TASKS,
        )
        if not ray.is_initialized():
            # "local": never join (and reconfigure) a system someone else is running.
            ray.init(
                address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False
            )
        say(f"starting the system with {config.agents[0]} agents")
        ray_system = RaySystem(settings)
        results.system_start_s = round(ray_system.start_s, 2)
        for agents, split in zip(config.agents, splits, strict=True):
            startup = ray_system.start_s
            if ray_system.capacity != split:
                say(f"growing the pools to {agents} agents ({_label(split)})")
                startup = ray_system.resize(split)
            capacity = capacity_per_s(plan, split, config.latency_s)
            n = stream_size(config, capacity)
            offsets = arrival_times(n, config.span_s, config.arrivals, config.seed)
            say(f"{agents} agents: {n} requests over {config.span_s:g} s")
            sim.reset_stats()
            timings = asyncio.run(_stream(ray_system.system.orchestrator, plan, offsets))
            peak = sim.stats().get("peak_concurrency")
            step = step_figures(
                agents, split, startup, 60 * n / config.span_s, 60 * capacity, timings, peak
            )
            results.steps.append(step)
            say(f"{agents} agents: {step.tasks_per_min:.1f} tasks/min, p95 {step.p95_s:.1f} s")
    except Exception as exc:  # the steps measured so far are still reported
        log.exception("the throughput run stopped")
        results.notes.append(f"stopped early: {type(exc).__name__}: {exc}")
    finally:
        if ray_system is not None:
            ray_system.stop()
        sim.stop()
    results.scaling, results.checks = checks(results.steps)
    if not results.steps:
        results.checks.append(Check(target="a step ran", measured="none", met=False))
    results.total_s = round(time.perf_counter() - started, 1)
    return results


def _label(split: Mapping[Role, int]) -> str:
    return ", ".join(f"{role.value} {n}" for role, n in split.items() if n)


async def _stream(
    orchestrator: Any, plan: list[Microtask], offsets: list[float]
) -> list[TaskTiming]:
    """Submit one request at each offset (seconds from now), wait for every report."""
    origin = time.time() + _LEAD_S

    async def one(index: int, offset: float) -> TaskTiming:
        await asyncio.sleep(max(0.0, origin + offset - time.time()))
        submitted = time.time() - origin
        text = f"Throughput stream request {index + 1} of {len(offsets)}: a medium analysis."
        try:
            task_id = await orchestrator.submit.remote(text, plan)
            report = RunReport.model_validate(await orchestrator.wait.remote(task_id))
            done = time.time() - origin
            status = await orchestrator.status.remote(task_id)
        except Exception as exc:  # one refused or lost request must not lose the others
            log.warning("stream request %d failed: %s: %s", index + 1, type(exc).__name__, exc)
            return TaskTiming(submitted_s=submitted, done_s=time.time() - origin, state="error")
        return TaskTiming.of(report, status["started_at"] - origin, submitted, done)

    return list(await asyncio.gather(*(one(i, at) for i, at in enumerate(offsets))))
