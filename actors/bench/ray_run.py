"""The Ray contestant: this system, through all its layers, on a given plan.

One system serves every workload: the pools are resized with
``pool.configure`` between workloads (agents that already run are kept), and
the time that takes is reported as warm-up, apart from makespans. Warm-up ends
with one microtask on every agent through both orchestrators: an agent's first
call costs ~50 ms of CPU more than later ones (the SDK's first request, Ray's
first calls between a pair of actors), which would otherwise land on whichever
workload runs first. Backups are
a setting of the orchestrator, so a second orchestrator with backups off is
started beside the system's own; both use the same pools, limiter and agents.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import ray

from actors.bench.inprocess import RunOutcome
from actors.config import NAMESPACE, Settings
from actors.engine.orchestrator import Orchestrator
from actors.models import AgentState, EventKind, Microtask, PoolSnapshot, Role
from actors.runtime.system import System, start_system, stop_system

log = logging.getLogger(__name__)

NO_BACKUPS_NAME = "bench-orchestrator-no-backups"
_WARM_TIMEOUT_S = 600.0
_SETTLED = (EventKind.FINISHED, EventKind.FAILED)


class RaySystem:
    """A running system plus a twin orchestrator without backups."""

    def __init__(self, settings: Settings) -> None:
        started = time.perf_counter()
        self.system: System = start_system(settings)
        # Its own home: one orchestrator per home (actors.home_lock).
        twin = settings.with_overrides(backups=False, home=settings.home / "no-backups")
        self._no_backups = Orchestrator.options(  # type: ignore[attr-defined]
            name=NO_BACKUPS_NAME, namespace=NAMESPACE, get_if_exists=True
        ).remote(twin)
        ray.get(self._no_backups.ping.remote())
        self.capacity = {role: settings.pools[role].min for role in Role}
        self._warm()
        self.start_s = time.perf_counter() - started  # Ray actors + first pools, for the report

    def resize(self, capacity: Mapping[Role, int]) -> float:
        """Set every pool to exactly ``capacity`` agents; seconds until all are ready."""
        started = time.perf_counter()
        pools = self.system.pools
        ray.get(
            [
                pools[role].configure.remote(min_agents=count, max_agents=count)
                for role, count in capacity.items()
            ]
        )
        deadline = time.monotonic() + _WARM_TIMEOUT_S
        while time.monotonic() < deadline:
            snapshots: list[PoolSnapshot] = ray.get(
                [pools[role].snapshot.remote() for role in capacity]
            )
            if all(
                s.size == capacity[s.role]
                and all(a.state is not AgentState.STARTING for a in s.agents)
                for s in snapshots
            ):
                grew = any(capacity[r] > self.capacity.get(r, 0) for r in capacity)
                self.capacity = dict(capacity)
                if grew:
                    self._warm()
                return time.perf_counter() - started
            time.sleep(0.2)
        raise TimeoutError(f"pools did not reach {dict(capacity)} within {_WARM_TIMEOUT_S:g} s")

    def _warm(self) -> None:
        """One zero-latency microtask per agent, through each orchestrator; not measured."""
        plan = [
            Microtask(
                id=f"warm-{role.value}-{i}",
                role=role,
                title="warm-up",
                instructions="Warm-up call. [sim-latency 0]",
            )
            for role, count in self.capacity.items()
            for i in range(count)
        ]
        for backups in (True, False):
            self.run("Benchmark warm-up: one call per agent.", plan, backups=backups)

    def run(self, text: str, microtasks: Sequence[Microtask], backups: bool = True) -> RunOutcome:
        """Submit the plan, wait for the report; makespan from submit to the last result."""
        orchestrator = self.system.orchestrator if backups else self._no_backups
        started = time.time()
        task_id = ray.get(orchestrator.submit.remote(text, list(microtasks)))
        report = ray.get(orchestrator.wait.remote(task_id))
        wall = time.time() - started
        events = ray.get(orchestrator.events.remote(task_id, 0, 0.0))
        settled = [e.at for e in events if e.kind in _SETTLED]
        makespan = (max(settled) - started) if settled else wall
        durations = [
            e.end_s - e.start_s
            for e in report.timeline
            if e.start_s is not None and e.end_s is not None
        ]
        return RunOutcome(
            "ray" if backups else "ray-no-backups",
            makespan,
            wall,
            durations,
            failed=report.failed,
            retries=report.retries,
            backups=report.backups,
            note="" if report.state.value == "done" else f"state {report.state.value}",
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._no_backups, no_restart=True)
        stop_system(self.system)
