"""Live counters of the orchestrator: sliding-window rates and long-term totals.

The orchestrator feeds every progress event and every finished report in;
``/status`` and ``/metrics`` read one ``StatsSnapshot``, so all replicas of
the HTTP app and every scrape see the same, cluster-wide figures.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from typing import Any

from pydantic import BaseModel, Field

from actors.models import EventKind, ProgressEvent, Role, RunReport, TaskState, used_tokens

# Upper bounds (seconds) of the microtask-duration histogram buckets; +Inf is implied.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Upper bounds (seconds) of the task time-to-answer (wall_s) histogram; +Inf is implied.
TASK_DURATION_BUCKETS: tuple[float, ...] = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class StatsSnapshot(BaseModel):
    """Everything the status page and the metrics endpoint need, at one instant."""

    window_s: float
    active_tasks: int
    tasks_per_min: float = Field(description="tasks finished per minute over the window")
    microtasks_per_min: float
    avg_latency_s: float = Field(description="mean wall time of tasks finished in the window")
    success_rate: float = Field(description="percent of tasks in the window done with no failure")
    tasks_total: dict[str, int]
    microtasks_total: dict[str, dict[str, int]] = Field(description="role -> status -> count")
    retries_total: int
    backups_total: int
    input_tokens_total: int
    output_tokens_total: int
    cost_usd_total: float
    cache_write_tokens_total: int = Field(default=0, description="since this orchestrator started")
    cache_read_tokens_total: int = Field(default=0, description="since this orchestrator started")
    cache_saved_usd_total: float = Field(
        default=0.0, description="what prompt caching saved, since this orchestrator started"
    )
    token_multiple: float | None = Field(
        default=None,
        description="tokens the finished tasks used against one agent answering each "
        "directly, since this orchestrator started (None before the first)",
    )
    duration_buckets: dict[str, list[int]] = Field(
        description="role -> count per bucket of DURATION_BUCKETS plus +Inf (not cumulative)"
    )
    duration_sum: dict[str, float]
    task_duration_buckets: list[int] = Field(
        description="finished tasks per bucket of TASK_DURATION_BUCKETS plus +Inf, by wall_s "
        "(not cumulative; since this orchestrator started)"
    )
    task_duration_sum: float


class Stats:
    """Counters and a sliding window, updated by the orchestrator's event loop."""

    def __init__(self, window_s: float = 300.0, totals: dict[str, Any] | None = None) -> None:
        totals = totals or {}
        self.window_s = window_s
        self._finished: deque[tuple[float, float, bool]] = deque()  # (at, wall_s, succeeded)
        self._microtasks_done: deque[float] = deque()  # finish times, for the rate
        self._tasks_total: dict[str, int] = dict(totals.get("tasks_by_state", {}))
        self._microtasks: dict[str, dict[str, int]] = {r.value: {} for r in Role}
        self._retries = int(totals.get("retries", 0))
        self._backups = int(totals.get("backups", 0))
        self._input_tokens = int(totals.get("input_tokens", 0))
        self._output_tokens = int(totals.get("output_tokens", 0))
        self._cost = float(totals.get("cost_usd", 0.0))
        self._cache = [0, 0, 0.0]  # written tokens, read tokens, saved USD (since start)
        self._tokens = [0.0, 0.0]  # tokens used, and what single direct answers would use
        self._buckets = {r.value: [0] * (len(DURATION_BUCKETS) + 1) for r in Role}
        self._duration_sum = {r.value: 0.0 for r in Role}
        self._task_buckets = [0] * (len(TASK_DURATION_BUCKETS) + 1)
        self._task_duration_sum = 0.0

    def observe(self, event: ProgressEvent) -> None:
        """Count one progress event of any task."""
        if event.role is None:
            return
        role = event.role.value
        if event.kind is EventKind.FINISHED:
            self._count(role, "done")
            self._microtasks_done.append(event.at)
            if event.duration_s is not None:
                index = bisect.bisect_left(DURATION_BUCKETS, event.duration_s)
                self._buckets[role][index] += 1
                self._duration_sum[role] += event.duration_s
        elif event.kind is EventKind.FAILED:
            self._count(role, "failed")
        elif event.kind is EventKind.RETRIED:
            self._retries += 1
            self._count(role, "retried")
        elif event.kind is EventKind.BACKUP:
            self._backups += 1

    def task_finished(self, report: RunReport, at: float | None = None) -> None:
        """Count one finished task."""
        at = time.time() if at is None else at
        ok = report.state is TaskState.DONE and report.failed == 0
        self._finished.append((at, report.wall_s, ok))
        self._task_buckets[bisect.bisect_left(TASK_DURATION_BUCKETS, report.wall_s)] += 1
        self._task_duration_sum += report.wall_s
        state = report.state.value
        self._tasks_total[state] = self._tasks_total.get(state, 0) + 1
        self._input_tokens += report.input_tokens
        self._output_tokens += report.output_tokens
        self._cost += report.cost_usd
        self._cache[0] += report.cache_write_tokens
        self._cache[1] += report.cache_read_tokens
        self._cache[2] += report.cache_saved_usd
        if report.token_multiple:
            used = used_tokens(report)
            self._tokens[0] += used
            self._tokens[1] += used / report.token_multiple

    def snapshot(self, active_tasks: int, now: float | None = None) -> StatsSnapshot:
        now = time.time() if now is None else now
        horizon = now - self.window_s
        while self._finished and self._finished[0][0] < horizon:
            self._finished.popleft()
        while self._microtasks_done and self._microtasks_done[0] < horizon:
            self._microtasks_done.popleft()
        finished = list(self._finished)
        minutes = self.window_s / 60.0
        return StatsSnapshot(
            window_s=self.window_s,
            active_tasks=active_tasks,
            tasks_per_min=round(len(finished) / minutes, 2),
            microtasks_per_min=round(len(self._microtasks_done) / minutes, 2),
            avg_latency_s=round(sum(w for _, w, _ in finished) / len(finished), 3)
            if finished
            else 0.0,
            success_rate=round(100.0 * sum(ok for *_, ok in finished) / len(finished), 1)
            if finished
            else 100.0,
            tasks_total=dict(self._tasks_total),
            microtasks_total={role: dict(c) for role, c in self._microtasks.items()},
            retries_total=self._retries,
            backups_total=self._backups,
            input_tokens_total=self._input_tokens,
            output_tokens_total=self._output_tokens,
            cost_usd_total=round(self._cost, 6),
            cache_write_tokens_total=int(self._cache[0]),
            cache_read_tokens_total=int(self._cache[1]),
            cache_saved_usd_total=round(self._cache[2], 6),
            token_multiple=round(self._tokens[0] / self._tokens[1], 1) if self._tokens[1] else None,
            duration_buckets={role: list(b) for role, b in self._buckets.items()},
            duration_sum={role: round(s, 6) for role, s in self._duration_sum.items()},
            task_duration_buckets=list(self._task_buckets),
            task_duration_sum=round(self._task_duration_sum, 6),
        )

    def _count(self, role: str, status: str) -> None:
        counts = self._microtasks[role]
        counts[status] = counts.get(status, 0) + 1
