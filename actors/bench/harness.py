"""Run every contestant on every scenario against one simulator, and collect the figures.

Scenarios run in the order given (zero latency first, so the sequential
contestant's per-call cost is known before any sequential run is estimated).
One Ray system serves all of them; its pools are resized only when a
scenario's capacity differs from the last one's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray

from actors.bench import langgraph_run
from actors.bench.cpu import CpuMeter, idle_burn
from actors.bench.inprocess import MicrotaskCaller, RunOutcome, run_asyncio, run_sequential
from actors.bench.memory import MemoryProbe
from actors.bench.ray_run import RaySystem
from actors.bench.results import BenchResults, CpuProfile, Row, backup_variant, percentile
from actors.bench.simproc import SimulatorProcess
from actors.bench.targets import checks
from actors.bench.workloads import (
    LatencyKind,
    LatencyModel,
    Workload,
    draw_latencies,
    greedy_makespan,
    ideal_makespan,
    with_hints,
)
from actors.config import NAMESPACE, Settings
from actors.llm import LLMClient
from actors.models import Complexity, Role

log = logging.getLogger(__name__)

CONTESTANTS = ("sequential", "asyncio", "ray", "ray-no-backups", "langgraph")
_UNLIMITED = 10_000_000  # limiter bounds far above any workload, for every contestant alike


@dataclass(frozen=True)
class Scenario:
    """One workload under one latency model, run by some or all contestants."""

    workload: Workload
    latency: LatencyModel
    tag: str = ""  # what target it measures: wide, massive, big (see targets.py)
    contestants: tuple[str, ...] = CONTESTANTS

    @property
    def name(self) -> str:
        return f"{self.workload.name} / {self.latency.label}"


@dataclass
class BenchConfig:
    """What to run (see ``plans.quick`` and ``plans.full``)."""

    mode: str
    latency_scale: float
    scenarios: list[Scenario]
    backups_workload: Workload | None = None
    backups_latency: LatencyModel | None = None
    backups_runs: int = 10
    sequential_budget_s: float = 60.0  # longer sequential runs are estimated, not run
    seed: int = 1
    contestants: tuple[str, ...] = CONTESTANTS
    notes: list[str] = field(default_factory=list)


def bench_settings(settings: Settings, url: str, capacity: dict[Role, int], home: Path) -> Settings:
    """The system's settings for the bench: the bench simulator, exact pool sizes, no caps
    that a contestant without Ray would not have."""
    total = max(sum(capacity.values()), 1)
    return settings.with_overrides(
        # The bench's own simulator answers: the system starts none of its own.
        simulator={**settings.simulator.model_dump(), "mode": "external"},
        anthropic_base_url=url,
        pools={role.value: {"min": n, "max": n} for role, n in capacity.items()},
        levels={
            level.value: {"max_microtasks": 100_000, "max_agents": 100_000, "time_limit_s": 3600}
            for level in Complexity
        },
        limiter={
            "requests_per_minute": _UNLIMITED,
            "input_tokens_per_minute": _UNLIMITED * 100,
            "output_tokens_per_minute": _UNLIMITED * 100,
            "max_concurrency": max(total * 4, 64),
        },
        # The peers have no budgets: dag-1000's simulated calls cost more than the default
        # $5 a task, which stopped its last 100 microtasks (seen in the 2026-12-02 run).
        task_budget_usd=1_000_000.0,
        daily_budget_usd=1_000_000.0,
        home=home,
    )


class Harness:
    """Holds the simulator, the in-process client and the Ray system for one bench run."""

    def __init__(self, config: BenchConfig, settings: Settings, say: Callable[[str], None]) -> None:
        self.config = config
        self._say = say
        self._settings = settings
        self._contestants = [c for c in config.contestants if c in CONTESTANTS]
        self.results = BenchResults(
            mode=config.mode,
            cpus=os.cpu_count() or 1,
            latency_scale=config.latency_scale,
            ray_start_s=0.0,
            warmups_s={},
            notes=list(config.notes),
        )
        if "langgraph" in self._contestants and not langgraph_run.available():
            self._contestants.remove("langgraph")
            self.results.skipped.append(
                "langgraph: not installed (pip install 'parallel-agents[bench]')"
            )
        self._seq_per_call_s: float | None = None

    async def run(self) -> BenchResults:
        started = time.perf_counter()
        probe = MemoryProbe().start()
        sim = SimulatorProcess()
        ray_system: RaySystem | None = None
        client: LLMClient | None = None
        first = self.config.scenarios[0].workload.capacity
        try:
            url = sim.start()
            home = Path(tempfile.mkdtemp(prefix="parallel-agents-bench-"))
            settings = bench_settings(self._settings, url, first, home)
            client = LLMClient(settings, base_url=url)
            if any(c.startswith("ray") for c in self._contestants):
                if not ray.is_initialized():
                    # "local": never join (and reconfigure) a system someone else is running.
                    ray.init(
                        address="local",
                        namespace=NAMESPACE,
                        include_dashboard=False,
                        log_to_driver=False,
                    )
                probe.label = "Ray start"
                self._say(f"starting the system on Ray with {sum(first.values())} agents")
                ray_system = RaySystem(settings)
                self.results.ray_start_s = round(ray_system.start_s, 2)
            backups_after = self._backups_after()
            for index, scenario in enumerate(self.config.scenarios):
                probe.label = scenario.name
                await self._scenario(scenario, client, ray_system, sim)
                if ray_system is not None and index == backups_after:
                    probe.label = "backups"
                    self._backups(ray_system, sim)
        finally:
            if client is not None:
                await client.close()
            if ray_system is not None:
                ray_system.stop()
            sim.stop()
            probe.stop()
        self.results.peak_rss_mb = round(probe.peak_mb, 1)
        self.results.peak_processes = probe.peak_processes
        self.results.peak_during = probe.peak_label
        self.results.total_s = round(time.perf_counter() - started, 1)
        self.results.checks = checks(self.results, self.config)
        return self.results

    def _backups_after(self) -> int | None:
        """Index of the scenario after which the backups comparison runs: the last one on
        the same pools, so the pools are not resized just for it (None: no comparison)."""
        workload = self.config.backups_workload
        if workload is None:
            return None
        same = [
            i
            for i, s in enumerate(self.config.scenarios)
            if s.workload.capacity == workload.capacity
        ]
        return same[-1] if same else len(self.config.scenarios) - 1

    async def _scenario(
        self,
        scenario: Scenario,
        client: LLMClient,
        ray_system: RaySystem | None,
        sim: SimulatorProcess,
    ) -> None:
        workload = scenario.workload
        if ray_system is not None and ray_system.capacity != workload.capacity:
            label = ", ".join(f"{r.value} {n}" for r, n in workload.capacity.items())
            self._say(f"resizing pools to {label}")
            seconds = ray_system.resize(workload.capacity)
            self.results.warmups_s[f"{workload.agents} agents ({label})"] = round(seconds, 2)
        latencies = draw_latencies(workload.microtasks, scenario.latency, self.config.seed)
        plan = with_hints(workload.microtasks, latencies)
        ideal = ideal_makespan(workload, latencies)
        greedy = greedy_makespan(workload.microtasks, latencies, workload.capacity)
        sim.configure(latency="zero")  # every call's latency comes from its hint
        outcomes: list[RunOutcome] = []
        for name in self._contestants:
            if name not in scenario.contestants or name == "sequential":
                continue
            self._say(f"{scenario.name}: {name}")
            caller = MicrotaskCaller(client, workload.request_text)
            if (
                name == "ray"
                and scenario.tag == "big"
                and scenario.latency.kind is LatencyKind.ZERO
            ):
                outcome = await self._profiled(scenario, caller, plan, ray_system)
            else:
                outcome = await self._run_one(name, caller, plan, workload, ray_system)
            if outcome is not None:
                outcomes.append(outcome)
        sequential, estimated = await self._sequential(scenario, client, plan, latencies)
        if sequential is not None:
            outcomes.insert(0, sequential)
        seq_s = sequential.makespan_s if sequential is not None else estimated
        work = sum(latencies.values())
        for outcome in outcomes:
            reference = work if outcome.contestant == "sequential" else greedy
            makespan = max(outcome.makespan_s, 1e-9)
            self.results.rows.append(
                Row(
                    scenario=scenario.name,
                    workload=workload.name,
                    latency=scenario.latency.label,
                    contestant=outcome.contestant,
                    microtasks=workload.size,
                    agents=1 if outcome.contestant == "sequential" else workload.agents,
                    makespan_s=round(outcome.makespan_s, 4),
                    wall_s=round(outcome.wall_s, 4),
                    ideal_s=round(ideal, 4),
                    greedy_s=round(greedy, 4),
                    sequential_s=round(seq_s, 4),
                    sequential_estimated=sequential is None,
                    speedup=round(seq_s / makespan, 2),
                    efficiency=round(ideal / makespan, 3),
                    schedule_efficiency=round(greedy / makespan, 3),
                    overhead_ms=round(1000 * (outcome.makespan_s - reference) / workload.size, 3),
                    p50_s=round(percentile(outcome.durations, 0.5), 4),
                    p99_s=round(percentile(outcome.durations, 0.99), 4),
                    failed=outcome.failed,
                    retries=outcome.retries,
                    backups=outcome.backups,
                    note=outcome.note,
                )
            )

    async def _profiled(
        self,
        scenario: Scenario,
        caller: MicrotaskCaller,
        plan: list,
        ray_system: RaySystem | None,
    ) -> RunOutcome | None:
        """The system's run of ``scenario`` with its CPU counted per kind of process."""
        idle = idle_burn()
        with CpuMeter() as busy:
            outcome = await self._run_one("ray", caller, plan, scenario.workload, ray_system)
        size = scenario.workload.size
        idle_cores = idle.cores()
        idle_s = {kind: cores * busy.wall_s for kind, cores in idle_cores.items()}
        self.results.cpu = CpuProfile(
            scenario=scenario.name,
            microtasks=size,
            ms_per_microtask={
                kind: round(1000 * max(0.0, used - idle_s.get(kind, 0.0)) / size, 2)
                for kind, used in busy.seconds.items()
            },
            idle_ms_per_microtask={k: round(1000 * s / size, 2) for k, s in idle_s.items()},
            idle_cores={k: round(c, 3) for k, c in idle_cores.items()},
            idle_processes=idle.processes,
        )
        return outcome

    async def _run_one(
        self,
        name: str,
        caller: MicrotaskCaller,
        plan: list,
        workload: Workload,
        ray_system: RaySystem | None,
    ) -> RunOutcome | None:
        try:
            if name == "asyncio":
                return await run_asyncio(caller, plan, workload.capacity)
            if name == "langgraph":
                return await langgraph_run.run_langgraph(caller, plan, workload.capacity)
            if ray_system is not None:
                return ray_system.run(workload.request_text, plan, backups=name == "ray")
        except Exception as exc:  # one contestant failing must not lose the others' figures
            log.exception("%s failed on %s", name, workload.name)
            self.results.skipped.append(f"{name} on {workload.name}: {type(exc).__name__}: {exc}")
        return None

    async def _sequential(
        self,
        scenario: Scenario,
        client: LLMClient,
        plan: list,
        latencies: dict[str, float],
    ) -> tuple[RunOutcome | None, float]:
        """Run the one-agent contestant, or estimate it (sum of latencies + measured cost per
        call) when the run would exceed the budget or sequential is not a contestant here."""
        work, n = sum(latencies.values()), len(latencies)
        per_call = self._seq_per_call_s or 0.0
        estimate = work + n * per_call
        runnable = "sequential" in self._contestants and "sequential" in scenario.contestants
        if not runnable or estimate > self.config.sequential_budget_s:
            return None, estimate
        self._say(f"{scenario.name}: sequential")
        caller = MicrotaskCaller(client, scenario.workload.request_text)
        outcome = await run_sequential(caller, plan)
        if scenario.latency.kind is LatencyKind.ZERO:
            self._seq_per_call_s = outcome.makespan_s / max(n, 1)
        return outcome, outcome.makespan_s

    def _backups(self, ray_system: RaySystem, sim: SimulatorProcess) -> None:
        """Backups off and on, the same per-attempt draws for both in each run."""
        workload = self.config.backups_workload
        latency = self.config.backups_latency
        assert workload is not None and latency is not None
        if ray_system.capacity != workload.capacity:
            ray_system.resize(workload.capacity)
        variants = {"backups off": False, "backups on": True}
        makespans: dict[str, list[float]] = {v: [] for v in variants}
        launched = dict.fromkeys(variants, 0)
        # Real seconds: the benchmark's latency models are what they say, not scaled down.
        sim.configure(
            latency="lognormal", median_s=latency.median_s, sigma=latency.sigma, time_scale=1.0
        )
        try:
            for run in range(self.config.backups_runs):
                for variant, backups in variants.items():
                    self._say(f"backups: {variant}, run {run + 1}/{self.config.backups_runs}")
                    # Same seed for every variant of a run: the same stream of draws,
                    # taken in arrival order; a duplicate draws afresh, as with a provider.
                    sim.reseed(self.config.seed * 1000 + run)
                    outcome = ray_system.run(
                        workload.request_text, workload.microtasks, backups=backups
                    )
                    makespans[variant].append(outcome.makespan_s)
                    launched[variant] += outcome.backups
        finally:
            sim.configure(latency="zero", seed=0)
        self.results.backups_workload = f"{workload.name} / {latency.label}, drawn per attempt"
        self.results.backups = [backup_variant(v, makespans[v], launched[v]) for v in variants]
        off, on = self.results.backups[0].p99_s, self.results.backups[1].p99_s
        if off > 0:
            self.results.backups_p99_cut_pct = round(100 * (off - on) / off, 1)
