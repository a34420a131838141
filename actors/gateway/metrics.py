"""The dashboard JSON (``/status``) and Prometheus text (``/metrics``) from one set of snapshots.

Both are computed from the orchestrator's counters, the pools' and the limiter's
snapshots taken at request time: one consistent, cluster-wide view, whichever
HTTP replica answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from actors.llm.limiter import LimiterSnapshot
from actors.models import AgentState, PoolSnapshot
from actors.observe.stats import DURATION_BUCKETS, TASK_DURATION_BUCKETS, StatsSnapshot

PREFIX = "parallel_agents"


def dashboard_status(
    stats: StatsSnapshot, pools: Sequence[PoolSnapshot], limiter: LimiterSnapshot, simulated: bool
) -> dict[str, Any]:
    """The ``/status`` JSON: the fields users know, then the rest."""
    return {
        "active_agents": sum(p.busy for p in pools),
        "queued_tasks": sum(p.queued for p in pools),
        "throughput": stats.tasks_per_min,
        "avg_latency": stats.avg_latency_s,
        "success_rate": stats.success_rate,
        "pool_utilization": {p.role.value: round(p.utilization) for p in pools},
        "agents_total": sum(p.size for p in pools),
        "active_tasks": stats.active_tasks,
        "microtasks_per_min": stats.microtasks_per_min,
        "window_s": stats.window_s,
        "pools": {
            p.role.value: {
                "size": p.size,
                "min": p.min,
                "max": p.max,
                "busy": p.busy,
                "queued": p.queued,
            }
            for p in pools
        },
        "tokens": {
            "input": stats.input_tokens_total,
            "output": stats.output_tokens_total,
            "cache_write": stats.cache_write_tokens_total,
            "cache_read": stats.cache_read_tokens_total,
        },
        "cost_usd": stats.cost_usd_total,
        "cache_saved_usd": stats.cache_saved_usd_total,
        "token_multiple": stats.token_multiple,
        "totals": {
            "tasks": stats.tasks_total,
            "retries": stats.retries_total,
            "backups": stats.backups_total,
        },
        "limiter": {
            "concurrency_limit": limiter.concurrency_limit,
            "in_flight": limiter.in_flight,
            "waiting": limiter.waiting,
            "pressure": limiter.pressure,
        },
        "simulated": simulated,
    }


class _Snapshots:
    """A one-shot Prometheus collector over snapshots taken for this scrape."""

    def __init__(
        self,
        stats: StatsSnapshot,
        pools: Sequence[PoolSnapshot],
        limiter: LimiterSnapshot,
        daily_budget_usd: float,
    ) -> None:
        self._stats, self._pools, self._limiter = stats, pools, limiter
        self._daily_budget_usd = daily_budget_usd

    def collect(self) -> Iterator[Metric]:
        stats, pools, limiter = self._stats, self._pools, self._limiter
        tasks = CounterMetricFamily(f"{PREFIX}_tasks", "Finished tasks by state", labels=["state"])
        for state, count in sorted(stats.tasks_total.items()):
            tasks.add_metric([state], count)
        yield tasks
        active = GaugeMetricFamily(f"{PREFIX}_active_tasks", "Tasks running now")
        active.add_metric([], stats.active_tasks)
        yield active

        microtasks = CounterMetricFamily(
            f"{PREFIX}_microtasks", "Microtask outcomes by role", labels=["role", "status"]
        )
        for role, counts in sorted(stats.microtasks_total.items()):
            for status, count in sorted(counts.items()):
                microtasks.add_metric([role, status], count)
        yield microtasks

        durations = HistogramMetricFamily(
            f"{PREFIX}_microtask_duration_seconds",
            "Agent-side duration of finished microtasks",
            labels=["role"],
        )
        for role, per_bucket in sorted(stats.duration_buckets.items()):
            buckets = _cumulative(DURATION_BUCKETS, per_bucket)
            durations.add_metric([role], buckets, stats.duration_sum.get(role, 0.0))
        yield durations
        task_durations = HistogramMetricFamily(
            f"{PREFIX}_task_duration_seconds",
            "Time to answer of finished tasks: accepted to final report (wall_s)",
        )
        task_durations.add_metric(
            [],
            _cumulative(TASK_DURATION_BUCKETS, stats.task_duration_buckets),
            stats.task_duration_sum,
        )
        yield task_durations

        retries = CounterMetricFamily(f"{PREFIX}_retries", "Microtask attempts retried")
        retries.add_metric([], stats.retries_total)
        yield retries
        backups = CounterMetricFamily(f"{PREFIX}_backups", "Backup copies of stragglers")
        backups.add_metric([], stats.backups_total)
        yield backups

        agents = GaugeMetricFamily(
            f"{PREFIX}_agents", "Agents by pool and state", labels=["pool", "state"]
        )
        queue = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Microtasks waiting", labels=["pool"])
        utilization = GaugeMetricFamily(
            f"{PREFIX}_pool_utilization_ratio", "Busy share of pool capacity", labels=["pool"]
        )
        for pool in pools:
            for state in AgentState:
                count = sum(1 for a in pool.agents if a.state is state)
                agents.add_metric([pool.role.value, state.value], count)
            queue.add_metric([pool.role.value], pool.queued)
            utilization.add_metric([pool.role.value], pool.utilization / 100.0)
        yield agents
        yield queue
        yield utilization

        requests = CounterMetricFamily(
            f"{PREFIX}_llm_requests", "Model calls by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(limiter.outcomes.items()):
            requests.add_metric([outcome], count)
        yield requests
        tokens = CounterMetricFamily(f"{PREFIX}_tokens", "Model tokens", labels=["direction"])
        tokens.add_metric(["input"], stats.input_tokens_total)
        tokens.add_metric(["output"], stats.output_tokens_total)
        tokens.add_metric(["cache_write"], stats.cache_write_tokens_total)
        tokens.add_metric(["cache_read"], stats.cache_read_tokens_total)
        yield tokens
        cost = CounterMetricFamily(f"{PREFIX}_cost_usd", "Model cost in US dollars")
        cost.add_metric([], stats.cost_usd_total)
        yield cost
        saved = CounterMetricFamily(
            f"{PREFIX}_cache_saved_usd",
            "What prompt caching saved against sending the same input uncached, in US dollars",
        )
        saved.add_metric([], stats.cache_saved_usd_total)
        yield saved
        if stats.token_multiple is not None:
            multiple = GaugeMetricFamily(
                f"{PREFIX}_token_multiple",
                "Tokens the finished tasks used against one agent answering each directly",
            )
            multiple.add_metric([], stats.token_multiple)
            yield multiple
        budget = GaugeMetricFamily(
            f"{PREFIX}_daily_budget_usd",
            "Daily budget in US dollars: new tasks are refused once the last 24 h spent it",
        )
        budget.add_metric([], self._daily_budget_usd)
        yield budget

        for name, value, text in (
            ("limiter_concurrency_limit", limiter.concurrency_limit, "AIMD concurrency limit"),
            ("limiter_in_flight", limiter.in_flight, "Model calls in flight"),
            ("limiter_waiting", limiter.waiting, "Callers waiting for the limiter"),
            ("limiter_pressure", limiter.pressure, "Provider pressure, 0 to 1"),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", text)
            gauge.add_metric([], value)
            yield gauge


def _cumulative(bounds: Sequence[float], per_bucket: Sequence[int]) -> list[tuple[str, int]]:
    """Prometheus buckets (``le``, count at or below) from per-bucket counts with +Inf last."""
    cumulative, buckets = 0, []
    for bound, n in zip([*bounds, float("inf")], per_bucket, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return buckets


def prometheus_text(
    stats: StatsSnapshot,
    pools: Sequence[PoolSnapshot],
    limiter: LimiterSnapshot,
    *,
    daily_budget_usd: float,
) -> bytes:
    """The Prometheus exposition text for one scrape (``ops/alerts.yml`` alerts on its names)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(stats, pools, limiter, daily_budget_usd))
    return generate_latest(registry)
