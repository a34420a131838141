"""A task's life on real Ray: it always ends, followers never spin, restarts lose nothing.

The orchestrator is SIGKILLed while it plans and while it merges (the plan is the
model's, not given); a ``wait`` issued before the kill returns after it, and the
simulator's request log shows that no finished microtask ran twice. A hung planner or
writer (the simulator's ``rate_hang``) is bounded by its phase's deadline. A task
finished before a restart answers its followers with a DONE event, and a follower's
cursor from before a restart gets the resumed task's events once.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest
import ray
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.models import EventKind, Microtask, ProgressEvent, Role, TaskState
from actors.runtime.system import start_system, stop_system

# Every model call of a task whose request carries this marker takes a second, so
# there is time to kill the orchestrator in the middle of a phase.
SLOW = "[sim-latency 1] "
REQUEST = "Compare three ways to back up the files of a small office: cost, effort, risk"
PLANNING_S, SYNTHESIS_S = 6.0, 8.0
HANG = {"rate_hang": 1.0, "hang_s": 120.0}


@pytest.fixture(scope="module")
def system(ray_session, tmp_path_factory):
    small = {"max_microtasks": 4, "max_agents": 4}
    settings = tiny_settings(
        home=tmp_path_factory.mktemp("lifecycle-home"),
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 5},
        levels={
            "simple": {**small, "time_limit_s": 60},
            "medium": {**small, "time_limit_s": 60},
            "complex": {**small, "time_limit_s": 60},
            "massive": {**small, "time_limit_s": 60},
        },
        planning_timeout_s=PLANNING_S,
        synthesis_timeout_s=SYNTHESIS_S,
        llm_timeout_s=120.0,  # a hang outlasts the phase deadlines, not the client's
        microtask_timeout_s=30.0,
        retry_backoff_s=0.05,
        health_interval_s=0.5,
        backups=False,
    )
    system = start_system(settings)
    yield system
    stop_system(system)


def _log(system) -> list[dict]:
    url = ray.get(system.simulator.url.remote())
    with urllib.request.urlopen(f"{url}/requests", timeout=10) as response:
        return json.loads(response.read())["requests"]


def _last_seq(system) -> int:
    return max((entry["seq"] for entry in _log(system)), default=-1)


def _since(system, seq: int) -> list[dict]:
    return [entry for entry in _log(system) if entry["seq"] > seq]


def _kill_orchestrator(system) -> None:
    os.kill(ray.get(system.orchestrator.pid.remote()), signal.SIGKILL)


def _follow(system, task_id: str, after: int, until: EventKind) -> tuple[list[ProgressEvent], int]:
    """Events from cursor ``after`` until one of kind ``until``; returns them and the cursor."""
    seen: list[ProgressEvent] = []
    while not any(event.kind == until for event in seen):
        batch = ray.get(system.orchestrator.events.remote(task_id, after, 5.0), timeout=60)
        seen.extend(batch)
        after = batch[-1].next_after if batch else after
    return seen, after


def _microtasks_asked(entries: list[dict]) -> list[str]:
    return [e["microtask"] for e in entries if e["status"] == 200 and e["microtask"]]


def _reset_faults(system) -> None:
    ray.get(system.simulator.reconfigure.remote({"rate_hang": 0.0}))


def test_orchestrator_killed_while_planning_plans_again_and_answers(system):
    start = _last_seq(system)
    task_id = ray.get(system.orchestrator.submit.remote(SLOW + REQUEST))
    waiting = system.orchestrator.wait.remote(task_id)  # in flight across the restart
    # The verdict is in: the planning call is under way now, and nothing is planned yet.
    wait_until(lambda: any(e["purpose"] == "assessment" for e in _since(system, start)))
    events = ray.get(system.orchestrator.events.remote(task_id, 0, 0.0))
    assert EventKind.PLANNED not in [event.kind for event in events]
    _kill_orchestrator(system)

    report = ray.get(waiting, timeout=180)
    assert report.state is TaskState.DONE and report.failed == 0
    assert report.plan_source in ("model", "repaired") and report.microtasks >= 2
    assert report.result.strip()
    asked = _microtasks_asked(_since(system, start))
    assert sorted(asked) == sorted(e.id for e in report.timeline)  # each exactly once


def test_orchestrator_killed_while_the_plan_streams_resumes_with_what_arrived(system):
    start = _last_seq(system)
    # At realistic speed (x0.05) the planner thinks for ~2.5 s, then writes its microtasks
    # over ~0.4 s: the first is dispatched while the rest are still being written.
    realistic = {"latency": "realistic", "time_scale": 0.05}
    ray.get(system.simulator.reconfigure.remote(realistic))
    try:
        task_id = ray.get(system.orchestrator.submit.remote(REQUEST))
        waiting = system.orchestrator.wait.remote(task_id)
        _kill_while_the_plan_streams(system, task_id)
        report = ray.get(waiting, timeout=180)
    finally:
        ray.get(system.simulator.reconfigure.remote({"latency": "fixed", "time_scale": 0.1}))
    assert report.state is TaskState.DONE and report.failed == 0
    assert report.plan_source == "streaming" and report.microtasks >= 1
    assert any("plan stream cut by a restart" in cut for cut in report.cut), report.cut
    plans = [e for e in _since(system, start) if e["purpose"] == "plan"]
    assert len(plans) == 1  # what had arrived was kept: the plan was not asked for again


def _kill_while_the_plan_streams(system, task_id: str) -> None:
    def dispatching_while_planning() -> bool:
        kinds = [e.kind for e in ray.get(system.orchestrator.events.remote(task_id, 0, 0.01))]
        return EventKind.STARTED in kinds and EventKind.PLANNED not in kinds

    wait_until(dispatching_while_planning, timeout_s=60, every_s=0.02)
    _kill_orchestrator(system)


def test_orchestrator_killed_while_merging_redoes_no_microtask(system):
    start = _last_seq(system)
    task_id = ray.get(system.orchestrator.submit.remote(SLOW + REQUEST))
    waiting = system.orchestrator.wait.remote(task_id)
    before, cursor = _follow(system, task_id, 0, until=EventKind.MERGING)
    done_before = {e.microtask_id for e in before if e.kind == EventKind.FINISHED}
    _kill_orchestrator(system)

    # The follower goes on with its cursor from the killed incarnation: the resumed
    # task's events come from their start, once, and end with one DONE.
    after, _ = _follow(system, task_id, cursor, until=EventKind.DONE)
    seqs = [event.seq for event in after]
    assert seqs == sorted(set(seqs)) and seqs[0] > cursor
    kinds = [event.kind for event in after]
    assert kinds.count(EventKind.PLANNED) == 1 and kinds.count(EventKind.DONE) == 1
    assert EventKind.STARTED not in kinds  # nothing was left to dispatch

    report = ray.get(waiting, timeout=180)
    assert report.state is TaskState.DONE and report.failed == 0
    assert report.plan_source in ("model", "repaired") and report.result.strip()
    asked = _microtasks_asked(_since(system, start))
    assert done_before == {e.id for e in report.timeline}
    for microtask_id in done_before:
        assert asked.count(microtask_id) == 1, f"{microtask_id} was paid for twice"


def test_a_task_finished_before_a_restart_ends_its_followers(system):
    plan = [Microtask(id="f1", role=Role.RESEARCH, title="f1", instructions="Do f1.")]
    task_id = ray.get(system.orchestrator.submit.remote("finish, then restart", plan))
    before = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    assert before.state is TaskState.DONE
    _, old_cursor = _follow(system, task_id, 0, until=EventKind.DONE)  # saw it all
    _kill_orchestrator(system)
    ray.get(system.orchestrator.ping.remote(), timeout=120)  # the restarted one

    # A new follower, and one with a cursor from the incarnation that ran the task:
    # both get one DONE at once (the call would otherwise wait a minute for nothing).
    for after in (0, old_cursor):
        events = ray.get(system.orchestrator.events.remote(task_id, after, 60.0), timeout=30)
        assert [(e.kind, e.detail) for e in events] == [(EventKind.DONE, "done")]
    # Past that DONE the call waits out its timeout instead of answering at once.
    call = system.orchestrator.events.remote(task_id, events[-1].next_after, 3.0)
    ready, _ = ray.wait([call], timeout=1.0)
    assert not ready
    assert ray.get(call, timeout=30) == []
    assert ray.get(system.orchestrator.wait.remote(task_id)).result == before.result
    assert ray.get(system.orchestrator.cancel.remote(task_id)) is False


def test_a_hung_planner_gives_way_to_a_template_within_the_planning_deadline(system):
    start = _last_seq(system)
    ray.get(system.simulator.reconfigure.remote(HANG))
    try:
        task_id = ray.get(system.orchestrator.submit.remote(REQUEST))
        # The verdict call is admitted (and hangs); later calls must not.
        wait_until(lambda: ray.get(system.simulator.stats.remote())["in_flight"] >= 1)
    finally:
        _reset_faults(system)
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=180)
    assert report.state is TaskState.DONE and report.failed == 0
    assert report.plan_source.startswith("template:")
    notes = ray.get(system.orchestrator.status.remote(task_id))["notes"]
    assert any(f"planning timed out after {PLANNING_S:g} s" in note for note in notes), notes
    assert not [e for e in _since(system, start) if e["purpose"] == "plan"]  # no more asking


def test_a_hung_writer_gives_way_to_a_stitched_answer_within_the_synthesis_budget(system):
    plan = [Microtask(id="w1", role=Role.RESEARCH, title="w1", instructions="[sim-latency 2]")]
    task_id = ray.get(system.orchestrator.submit.remote(REQUEST, plan))
    try:
        # The microtask is admitted (its answer comes); every call after it hangs.
        wait_until(lambda: ray.get(system.simulator.stats.remote())["in_flight"] >= 1)
        ray.get(system.simulator.reconfigure.remote(HANG))
        report = ray.get(system.orchestrator.wait.remote(task_id), timeout=180)
    finally:
        _reset_faults(system)
    assert report.state is TaskState.DONE and report.succeeded == 1
    notes = ray.get(system.orchestrator.status.remote(task_id))["notes"]
    assert any(f"synthesis timed out after {SYNTHESIS_S:g} s" in n for n in notes), notes
    assert "### w1" in report.result  # stitched from the parts
