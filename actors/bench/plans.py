"""The two benchmark programmes: ``quick`` (under 3 minutes here) and ``full`` (under 20).

Full sizes follow issue 8: wide-100 on 50 agents; the four-level shape at the
complex (50) and massive (100) sizes on 100 agents, so each level fits its
pool and the ideal bound is reachable; a chain; a diamond-heavy DAG; a
1,000-microtask DAG on 100 agents. Quick keeps the shapes at a tenth of the
size and a quarter of the latency.
"""

from __future__ import annotations

from actors.bench.harness import BenchConfig, Scenario
from actors.bench.workloads import LatencyKind, LatencyModel, chain, diamonds, layered, wide
from actors.models import Role

R, A, V, G = Role.RESEARCH, Role.ANALYSIS, Role.VALIDATION, Role.GENERATION


def _latencies(scale: float) -> tuple[LatencyModel, LatencyModel, LatencyModel]:
    return (
        LatencyModel(LatencyKind.ZERO),
        LatencyModel(LatencyKind.FIXED, median_s=1.0 * scale),
        LatencyModel(LatencyKind.LOGNORMAL, median_s=1.0 * scale, sigma=0.9),
    )


def full(backups_runs: int = 10) -> BenchConfig:
    zero, fixed, tail = _latencies(1.0)
    fifty = {R: 20, A: 15, V: 10, G: 5}
    hundred = {R: 40, A: 35, V: 20, G: 5}
    wide100 = wide(100, fifty)
    complex50 = layered("four-level-50", (20, 15, 10, 5), hundred)
    massive = layered("four-level-100", (40, 35, 20, 5), hundred)
    chain10 = chain(10, hundred)
    diamond = diamonds(6, 6, hundred)
    big = layered("dag-1000", (100,) * 10, hundred)
    no_sequential = ("asyncio", "ray", "ray-no-backups", "langgraph")
    # The 100-agent scenarios first: the system starts at that size once, and the
    # wide workload then only shrinks the pools (retiring agents is instant).
    scenarios = [
        Scenario(massive, zero, "massive"),
        Scenario(complex50, zero),
        Scenario(chain10, zero),
        Scenario(diamond, zero),
        Scenario(big, zero, "big", no_sequential),
        Scenario(massive, fixed, "massive"),
        Scenario(massive, tail, "massive"),
        Scenario(complex50, fixed),
        Scenario(complex50, tail),
        Scenario(chain10, fixed),
        Scenario(diamond, fixed),  # (its heavy tail is left to quick mode: 20 minutes here)
        Scenario(wide100, zero, "wide"),
        Scenario(wide100, fixed, "wide"),
    ]
    return BenchConfig(
        mode="full",
        latency_scale=1.0,
        scenarios=scenarios,
        backups_workload=massive,
        backups_latency=tail,
        backups_runs=backups_runs,
        sequential_budget_s=30.0,  # longer sequential runs are estimated (see bench/README.md)
    )


def quick(backups_runs: int = 3) -> BenchConfig:
    scale = 0.25
    zero, fixed, tail = _latencies(scale)
    eight = {R: 3, A: 3, V: 1, G: 1}
    wide16 = wide(16, eight)
    four = layered("four-level-8", (3, 3, 1, 1), eight)
    chain6 = chain(6, eight)
    diamond = diamonds(2, 3, eight)
    big = layered("dag-200", (20,) * 10, eight)
    no_sequential = ("asyncio", "ray", "ray-no-backups", "langgraph")
    scenarios = [
        Scenario(wide16, zero, "wide"),
        Scenario(four, zero, "massive"),
        Scenario(chain6, zero),
        Scenario(diamond, zero),
        Scenario(big, zero, "big", no_sequential),
        Scenario(wide16, fixed, "wide"),
        Scenario(four, fixed, "massive"),
        Scenario(four, tail, "massive"),
        Scenario(chain6, fixed),
        Scenario(diamond, tail),
    ]
    return BenchConfig(
        mode="quick",
        latency_scale=scale,
        scenarios=scenarios,
        backups_workload=four,
        backups_latency=tail,
        backups_runs=backups_runs,
        sequential_budget_s=30.0,
        notes=[
            "quick mode: the issue's shapes at about a tenth of the size on 8 agents, latencies "
            "scaled by 0.25; the targets are checked on these analogues",
        ],
    )
