"""The throughput benchmark's stream, agent split, figures and scaling check (no Ray)."""

from __future__ import annotations

import itertools
import json

import pytest

from actors.bench import cli
from actors.bench.throughput import (
    ArrivalKind,
    arrival_times,
    capacity_per_s,
    full,
    medium_plan,
    quick,
    role_counts,
    split_agents,
    stream_size,
)
from actors.bench.throughput_figures import (
    Step,
    TaskTiming,
    ThroughputResults,
    checks,
    markdown,
    step_figures,
    table,
    write,
)
from actors.engine import dag
from actors.models import Role
from actors.sim.fake_content import latency_hint

R, A, V, G = Role.RESEARCH, Role.ANALYSIS, Role.VALIDATION, Role.GENERATION


# --- the stream ----------------------------------------------------------------------------


def test_even_arrivals_are_evenly_spaced_over_the_span():
    assert arrival_times(4, 10.0, ArrivalKind.EVEN, seed=1) == [0.0, 2.5, 5.0, 7.5]


def test_poisson_arrivals_are_seeded_sorted_and_inside_the_span():
    first = arrival_times(50, 60.0, ArrivalKind.POISSON, seed=3)
    assert first == arrival_times(50, 60.0, ArrivalKind.POISSON, seed=3)
    assert first != arrival_times(50, 60.0, ArrivalKind.POISSON, seed=4)
    assert len(first) == 50 and first == sorted(first)
    assert first[0] >= 0.0 and first[-1] < 60.0
    gaps = {round(b - a, 2) for a, b in itertools.pairwise(first)}
    assert len(gaps) > 10  # not evenly spaced


@pytest.mark.parametrize("n, span", [(0, 10.0), (3, 0.0)])
def test_an_empty_stream_is_refused(n, span):
    with pytest.raises(ValueError):
        arrival_times(n, span, ArrivalKind.EVEN, seed=1)


def test_the_medium_plan_has_four_levels_with_every_call_hinted():
    plan = medium_plan((8, 6, 4, 2), latency_s=4.0)
    assert len(plan) == 20 and not dag.validate(plan)
    assert [len(level) for level in dag.levels(plan)] == [8, 6, 4, 2]
    assert role_counts(plan) == {R: 8, A: 6, V: 4, G: 2}
    bodies = [{"messages": [{"role": "user", "content": mt.instructions}]} for mt in plan]
    assert {latency_hint(body) for body in bodies} == {4.0}


# --- agents and load ---------------------------------------------------------------------


@pytest.mark.parametrize("agents", [10, 20, 40, 80])
def test_full_steps_split_agents_as_the_plan_splits_its_work(agents):
    plan = medium_plan(full().levels, 1.0)
    k = agents // 10
    assert split_agents(agents, plan) == {R: 4 * k, A: 3 * k, V: 2 * k, G: k}


def test_quick_steps_give_each_role_one_then_two():
    plan = medium_plan(quick().levels, 1.0)
    assert split_agents(4, plan) == dict.fromkeys((R, A, V, G), 1)
    assert split_agents(8, plan) == dict.fromkeys((R, A, V, G), 2)


def test_every_role_gets_an_agent_for_the_merge_even_without_work():
    plan = medium_plan((6, 3, 3), 1.0)  # no generation microtask: the writer still needs one
    split = split_agents(6, plan)
    assert sum(split.values()) == 6
    assert split[G] == 1 and min(split.values()) == 1
    with pytest.raises(ValueError):
        split_agents(3, plan)


def test_the_agent_bound_is_the_busiest_roles_work_and_grows_linearly():
    plan = medium_plan(full().levels, 4.0)
    ten = capacity_per_s(plan, split_agents(10, plan), 4.0)
    assert ten == pytest.approx(10 / (20 * 4.0))  # every role exactly as busy
    eighty = capacity_per_s(plan, split_agents(80, plan), 4.0)
    assert eighty == pytest.approx(8 * ten)
    # One generation agent short: its role bounds the stream.
    assert capacity_per_s(plan, {R: 4, A: 3, V: 2, G: 1}, 1.0) == pytest.approx(0.5)
    assert capacity_per_s(plan, {R: 8, A: 6, V: 4, G: 1}, 1.0) == pytest.approx(0.5)


def test_each_stream_offers_more_than_its_agents_can_do():
    config = quick()
    plan = medium_plan(config.levels, config.latency_s)
    capacity = capacity_per_s(plan, split_agents(4, plan), config.latency_s)
    assert stream_size(config, capacity) == 7  # ceil(1.25 × 1/3 per s × 15 s)
    offered = stream_size(config, capacity) / config.span_s
    assert offered >= config.overload * capacity


# --- figures -------------------------------------------------------------------------------


def _task(submitted: float, done: float, calls=(), state="done") -> TaskTiming:
    return TaskTiming(
        submitted_s=submitted,
        done_s=done,
        state=state,
        microtasks=len(calls),
        calls=tuple(calls),
    )


def test_step_figures_from_fake_timings():
    timings = [
        _task(0.0, 10.0, [(1.0, 3.0), (3.0, 5.0)]),
        _task(5.0, 20.0, [(5.0, 8.0), (8.0, 11.0)]),
        _task(6.0, 12.0, state="failed"),
    ]
    step = step_figures(2, {R: 1, A: 1, V: 0, G: 0}, 3.0, 30.0, 24.0, timings, 4)
    assert step.tasks == 3 and step.done == 2
    assert step.window_s == 20.0
    assert step.tasks_per_min == 6.0  # 2 done over 20 s
    assert step.p50_s == 12.5  # the done ones: 10 s and 15 s
    assert step.p95_s == pytest.approx(14.75)
    assert step.microtasks_per_s == 0.4  # 4 calls from 1 s to 11 s
    assert step.middle_microtasks_per_s == 0.4  # 2 of them end within 3.5–8.5 s
    assert step.busy == 0.5  # 10 call-seconds over 2 agents × 10 s
    assert step.split == {"research": 1, "analysis": 1}
    assert step.sim_peak_concurrency == 4


def _step(agents: int, tasks_per_min: float, offered: float, done: int = 10) -> Step:
    return Step(
        agents=agents,
        split={"research": agents},
        startup_s=1.0,
        tasks=10,
        done=done,
        offered_per_min=offered,
        bound_per_min=offered / 1.25,
        tasks_per_min=tasks_per_min,
        p50_s=5.0,
        p95_s=9.0,
        microtasks_per_s=1.0,
        middle_microtasks_per_s=1.2,
        busy=0.9,
        window_s=60.0,
        microtasks=100,
        failed_microtasks=0,
        backups=0,
        retries=0,
    )


def test_the_scaling_check_is_met_at_eight_tenths_of_linear():
    scaling, found = checks([_step(10, 30.0, 40.0), _step(80, 192.0, 320.0)])
    assert scaling == pytest.approx(0.8)
    assert [c.met for c in found] == [True, True, True]
    assert "0.80 of linear" in found[0].measured


def test_the_scaling_check_is_missed_below_and_an_under_offered_stream_is_named():
    scaling, found = checks([_step(10, 30.0, 40.0), _step(40, 60.0, 100.0, done=9)])
    assert scaling == pytest.approx(0.5)
    assert [c.met for c in found] == [False, False, False]  # 100 < 4 × 30; 19 of 20 done
    assert found[2].measured == "19 of 20"


def test_one_step_has_nothing_to_compare():
    assert checks([_step(10, 30.0, 40.0)]) == (None, [])


def _results() -> ThroughputResults:
    steps = [_step(10, 30.0, 40.0), _step(80, 150.0, 320.0)]
    scaling, found = checks(steps)
    return ThroughputResults(
        mode="quick",
        cpus=2,
        latency_s=1.0,
        levels=[3, 3, 3, 3],
        arrivals="poisson",
        overload=1.25,
        span_s=15.0,
        seed=1,
        steps=steps,
        scaling=scaling,
        checks=found,
    )


def test_the_table_has_a_row_per_step_with_its_scaling():
    lines = table(_results()).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith(
        "| 10 | 10/0/0/0 | 10/10 | 40.0 | 32.0 | 30.0 | 1.00 | 5.0 | 9.0 | 1.00 | 1.20 |"
    )
    assert lines[3].startswith("| 80 | 80/0/0/0 | 10/10 | 320.0 | 256.0 | 150.0 | 0.62 |")


def test_the_report_names_a_missed_target(tmp_path):
    text = markdown(_results())
    assert "**missed**: throughput at 80 agents ≥ 0.8 × 8 × throughput at 10" in text
    assert "150.0 against 30.0 tasks/min: 0.62 of linear" in text
    paths = write(_results(), tmp_path)
    assert [p.name for p in paths] == ["throughput.md", "throughput.png", "throughput.json"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths[2].read_text())["scaling"] == pytest.approx(0.625)


def test_throughput_refuses_flags_of_other_runs(capsys):
    assert cli.main(["--throughput", "--realtime"]) == 2
    assert "--throughput takes no --realtime" in capsys.readouterr().err
