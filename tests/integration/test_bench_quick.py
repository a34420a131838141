"""A tiny benchmark run: two contestants, one 6-microtask DAG, the real simulator, SDK and Ray."""

from __future__ import annotations

import json

import pytest

from actors.bench.harness import BenchConfig, Harness, Scenario
from actors.bench.results import write
from actors.bench.workloads import LatencyKind, LatencyModel, layered
from actors.config import Settings
from actors.models import Role

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


async def test_two_contestants_report_every_figure(ray_session, tmp_path):
    one_each = dict.fromkeys(Role, 1)
    workload = layered("tiny-6", (2, 2, 1, 1), one_each)
    fixed = LatencyModel(LatencyKind.FIXED, median_s=0.1)
    config = BenchConfig(
        mode="test",
        latency_scale=0.1,
        scenarios=[
            Scenario(workload, LatencyModel(LatencyKind.ZERO), "big"),
            Scenario(workload, fixed, "massive"),
        ],
        backups_workload=workload,
        backups_latency=LatencyModel(LatencyKind.LOGNORMAL, median_s=0.1, sigma=0.9),
        backups_runs=1,
        contestants=("asyncio", "ray"),
    )
    lines: list[str] = []
    results = await Harness(config, Settings(), lines.append).run()

    assert {(r.scenario, r.contestant) for r in results.rows} == {
        (s.name, c) for s in config.scenarios for c in ("asyncio", "ray")
    }
    for row in results.rows:
        assert row.failed == 0, row
        assert row.microtasks == 6 and row.makespan_s > 0 and row.wall_s >= row.makespan_s * 0.5
        assert row.p99_s >= row.p50_s > 0
        # With zero latency there is no sequential time to speed up: its speedup is 0.
        assert (row.speedup == 0) == (row.latency == "zero")
        assert row.overhead_ms == row.overhead_ms  # not NaN
        assert row.efficiency <= 1.2, row  # no contestant beats the bound (no backups can win)
    timed = [r for r in results.rows if r.latency != "zero"]
    assert all(r.ideal_s == pytest.approx(0.4) and r.efficiency > 0 for r in timed)
    # Six 0.1 s calls one after another against four levels: 1.5x at best (with the same
    # 20 % slack as the efficiency bound above), never more.
    assert all(0 < r.speedup <= 0.6 / 0.4 * 1.2 and r.sequential_estimated for r in timed)
    assert [b.variant for b in results.backups] == ["backups off", "backups on"]
    assert all(b.runs == 1 and b.p99_s > 0 for b in results.backups)
    assert results.ray_start_s > 0 and results.peak_rss_mb > 0 and results.peak_processes > 1
    assert {c.target for c in results.checks}  # every target has a line
    cpu = results.cpu  # measured on the system's zero-latency run
    assert cpu is not None and cpu.scenario == config.scenarios[0].name and cpu.microtasks == 6
    assert cpu.ms_per_microtask["agents"] > 0 and cpu.ms_per_microtask["orchestrator"] > 0
    assert cpu.idle_processes["agents"] == 4 and sum(cpu.idle_cores.values()) > 0
    assert lines and any("ray" in line for line in lines)  # progress was reported

    paths = write(results, tmp_path)
    assert [p.name for p in paths] == ["results.md", "results.png", "results.json"]
    assert "Where the CPU goes" in paths[0].read_text()
    assert all(p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[2].read_text())["rows"][0]["contestant"] == "asyncio"
    assert "efficiency" in paths[0].read_text()
