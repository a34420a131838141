"""Benchmark workloads: shapes, seeded latencies, hints, and the limit math (no Ray)."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from actors.bench import plans
from actors.bench.results import BenchResults, Row, markdown, percentile
from actors.bench.workloads import (
    LatencyKind,
    LatencyModel,
    chain,
    diamonds,
    draw_latencies,
    greedy_makespan,
    ideal_makespan,
    layered,
    split_by_capacity,
    wide,
    with_hints,
)
from actors.engine import dag
from actors.models import Role
from actors.sim.fake_content import latency_hint

R, A, V, G = Role.RESEARCH, Role.ANALYSIS, Role.VALIDATION, Role.GENERATION
FIFTY = {R: 20, A: 15, V: 10, G: 5}
HUNDRED = {R: 40, A: 35, V: 20, G: 5}


def test_wide_is_independent_and_split_like_the_pools():
    w = wide(100, FIFTY)
    assert w.size == 100 and w.agents == 50
    assert all(not t.depends_on for t in w.microtasks)
    counts = {role: sum(1 for t in w.microtasks if t.role is role) for role in Role}
    assert counts == {R: 40, A: 30, V: 20, G: 10}
    assert dag.validate(w.microtasks) == []


def test_split_by_capacity_always_adds_up():
    for n in (1, 7, 22, 101):
        assert sum(split_by_capacity(n, {R: 3, A: 3, V: 1, G: 1}).values()) == n
    # Quotas 2.625, 2.625, 0.875, 0.875: the three left go to V, G, then R (ties in order).
    assert split_by_capacity(7, {R: 3, A: 3, V: 1, G: 1}) == {R: 3, A: 2, V: 1, G: 1}
    assert split_by_capacity(5, {R: 0, A: 4, V: 1, G: 0}) == {R: 0, A: 4, V: 1, G: 0}


def test_four_level_massive_has_the_issue_shape():
    w = layered("four-level-100", (40, 35, 20, 5), HUNDRED)
    assert w.size == 100
    levels = dag.levels(w.microtasks)
    assert [len(level) for level in levels] == [40, 35, 20, 5]
    roles = [{next(t.role for t in w.microtasks if t.id == i) for i in level} for level in levels]
    assert roles == [{R}, {A}, {V}, {G}]
    by_id = {t.id: t for t in w.microtasks}
    for level_before, level in itertools.pairwise(levels):
        for tid in level:
            deps = by_id[tid].depends_on
            assert 2 <= len(deps) <= 4 and set(deps) <= set(level_before)
    assert any(t.critical for t in w.microtasks)  # the planner's longest path is marked


def test_layered_is_the_same_for_the_same_seed():
    a = layered("x", (20, 15, 10, 5), HUNDRED, seed=3)
    b = layered("x", (20, 15, 10, 5), HUNDRED, seed=3)
    assert [t.depends_on for t in a.microtasks] == [t.depends_on for t in b.microtasks]


def test_chain_and_diamonds_shapes():
    c = chain(10, HUNDRED)
    assert [len(level) for level in dag.levels(c.microtasks)] == [1] * 10
    d = diamonds(6, 6, HUNDRED)
    assert d.size == 1 + 6 * 7
    assert [len(level) for level in dag.levels(d.microtasks)] == [1] + [6, 1] * 6


def test_latencies_are_seeded_and_shaped():
    w = layered("four-level-100", (40, 35, 20, 5), HUNDRED)
    tail = LatencyModel(LatencyKind.LOGNORMAL, median_s=1.0, sigma=0.9)
    first = draw_latencies(w.microtasks, tail, seed=1)
    assert first == draw_latencies(w.microtasks, tail, seed=1)
    assert first != draw_latencies(w.microtasks, tail, seed=2)
    assert set(draw_latencies(w.microtasks, LatencyModel(LatencyKind.ZERO), 1).values()) == {0.0}
    fixed = LatencyModel(LatencyKind.FIXED, median_s=0.5)
    assert set(draw_latencies(w.microtasks, fixed, 1).values()) == {0.5}
    # Many draws: the median near 1 s and a tail about 8x the median at p99.
    many = list(draw_latencies(layered("big", (100,) * 50, HUNDRED).microtasks, tail, 5).values())
    assert 0.8 < statistics.median(many) < 1.25
    assert 5 < percentile(many, 0.99) < 13


def test_hints_reach_the_simulator_first():
    w = chain(3, HUNDRED)
    latencies = {"c001": 1.25, "c002": 0.0, "c003": 7.5}
    hinted = with_hints(w.microtasks, latencies)
    for task in hinted:
        # Context from dependencies comes later in the prompt; the simulator takes the first.
        body = {"messages": [{"role": "user", "content": task.instructions + " [sim-latency 9]"}]}
        assert latency_hint(body) == latencies[task.id]
    assert [t.depends_on for t in hinted] == [t.depends_on for t in w.microtasks]


def test_ideal_and_greedy_on_known_shapes():
    w = wide(100, FIFTY)
    ones = dict.fromkeys((t.id for t in w.microtasks), 1.0)
    assert ideal_makespan(w, ones) == pytest.approx(2.0)
    assert greedy_makespan(w.microtasks, ones, w.capacity) == pytest.approx(2.0)
    massive = layered("m", (40, 35, 20, 5), HUNDRED)
    ones = dict.fromkeys((t.id for t in massive.microtasks), 1.0)
    assert ideal_makespan(massive, ones) == pytest.approx(4.0)  # each level fits its pool
    assert greedy_makespan(massive.microtasks, ones, massive.capacity) == pytest.approx(4.0)
    c = chain(5, HUNDRED)
    durations = {t.id: float(i + 1) for i, t in enumerate(c.microtasks)}
    assert ideal_makespan(c, durations) == greedy_makespan(c.microtasks, durations, c.capacity)
    assert ideal_makespan(c, durations) == pytest.approx(15.0)


def test_greedy_is_never_below_the_ideal_bound():
    tail = LatencyModel(LatencyKind.LOGNORMAL, median_s=1.0, sigma=0.9)
    small = {R: 3, A: 2, V: 1, G: 1}
    for seed in range(5):
        w = layered("m", (12, 9, 5, 2), small, seed=seed)
        lat = draw_latencies(w.microtasks, tail, seed)
        ideal = ideal_makespan(w, lat)
        greedy = greedy_makespan(w.microtasks, lat, w.capacity)
        assert ideal <= greedy + 1e-9
        assert greedy <= sum(lat.values()) + 1e-9  # never worse than one agent
    one_agent = {R: 1, A: 1, V: 1, G: 1}
    w = wide(8, one_agent)
    ones = dict.fromkeys((t.id for t in w.microtasks), 1.0)
    assert greedy_makespan(w.microtasks, ones, one_agent) == pytest.approx(2.0)


def test_programmes_are_valid_and_sized_as_the_issue_says():
    full = plans.full()
    names = {s.workload.name: s.workload for s in full.scenarios}
    assert names["wide-100"].agents == 50
    assert names["four-level-100"].size == 100 and names["four-level-50"].size == 50
    assert names["dag-1000"].size == 1000 and names["dag-1000"].agents == 100
    for config in (full, plans.quick()):
        assert config.scenarios[0].latency.kind is LatencyKind.ZERO  # sequential cost first
        for scenario in config.scenarios:
            assert dag.validate(scenario.workload.microtasks) == []
            assert all(
                scenario.workload.capacity.get(t.role, 0) > 0 for t in scenario.workload.microtasks
            )


def test_markdown_has_every_figure():
    row = Row(
        scenario="wide-4 / zero", workload="wide-4", latency="zero", contestant="ray",
        microtasks=4, agents=2, makespan_s=0.1, wall_s=0.2, ideal_s=0.0, greedy_s=0.0,
        sequential_s=0.05, sequential_estimated=False, speedup=0.5, efficiency=0.0,
        schedule_efficiency=0.0, overhead_ms=25.0, p50_s=0.01, p99_s=0.02,
    )  # fmt: skip
    results = BenchResults(
        mode="test", cpus=2, latency_scale=1.0, ray_start_s=3.0, warmups_s={"2 agents": 1.0},
        rows=[row], peak_rss_mb=900.0, peak_processes=12,
    )  # fmt: skip
    text = markdown(results)
    for needle in ("makespan", "speedup", "efficiency", "overhead", "p99", "peak RSS", "warm-up"):
        assert needle in text
    assert math.isclose(percentile([1.0, 2.0, 3.0], 0.5), 2.0)
