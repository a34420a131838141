"""The key figures in Ray's own metrics system too.

They appear on each node's metrics export port as ``ray_parallel_agents_*`` and in
the Ray dashboard's metrics view. ``/metrics`` on the HTTP app stays the one
consistent cluster-wide view; these are for people who already watch Ray.
Ray metric objects live in the process that records them, so each actor makes its own.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from actors.models import EventKind, PoolSnapshot, ProgressEvent, RunReport
from actors.observe.stats import DURATION_BUCKETS


class OrchestratorMetrics:
    """Task and microtask counters, recorded by the orchestrator."""

    def __init__(self) -> None:
        self._tasks = Counter(
            "parallel_agents_tasks_finished", "Finished tasks by state", tag_keys=("state",)
        )
        self._events = Counter(
            "parallel_agents_microtask_events",
            "Microtask events (started, finished, retried, backup, failed) by role",
            tag_keys=("role", "kind"),
        )
        self._durations = Histogram(
            "parallel_agents_microtask_duration_s",
            "Agent-side duration of finished microtasks",
            boundaries=list(DURATION_BUCKETS),
            tag_keys=("role",),
        )

    def observe(self, event: ProgressEvent) -> None:
        if event.role is None:
            return
        tags = {"role": event.role.value, "kind": event.kind.value}
        self._events.inc(1.0, tags)
        if event.kind is EventKind.FINISHED and event.duration_s is not None:
            self._durations.observe(event.duration_s, {"role": event.role.value})

    def task_finished(self, report: RunReport) -> None:
        self._tasks.inc(1.0, {"state": report.state.value})


class PoolMetrics:
    """Size, load and queue of one pool, set by the pool on every upkeep tick."""

    def __init__(self) -> None:
        tags = ("pool",)
        self._size = Gauge("parallel_agents_pool_size", "Agents in the pool", tag_keys=tags)
        self._busy = Gauge("parallel_agents_pool_busy", "Agents running a microtask", tag_keys=tags)
        self._queued = Gauge("parallel_agents_pool_queued", "Microtasks waiting", tag_keys=tags)

    def update(self, snapshot: PoolSnapshot) -> None:
        tags = {"pool": snapshot.role.value}
        self._size.set(snapshot.size, tags)
        self._busy.set(snapshot.busy, tags)
        self._queued.set(snapshot.queued, tags)
