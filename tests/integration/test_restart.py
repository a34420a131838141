"""The whole system stopped and started again with a task half done: it finishes, and a
follow-up keeps the conversation it was given and adds its turn once."""

from __future__ import annotations

import json
import urllib.request

import ray
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.engine.store import Store
from actors.models import Microtask, Role, TaskState
from actors.runtime.system import start_system, stop_system


def _heard(system) -> list[dict | None]:
    """What each answered call of the system's simulator carried of a conversation."""
    url = ray.get(system.simulator.url.remote())
    with urllib.request.urlopen(f"{url}/requests", timeout=10) as answer:
        calls = json.loads(answer.read())["requests"]
    return [c["conversation"] for c in calls if c["status"] == 200 and c["microtask"]]


def test_task_half_done_finishes_after_a_full_restart(ray_session, tmp_path):
    settings = tiny_settings(home=tmp_path)
    plan = [
        Microtask(id=f"r{i}", role=Role.RESEARCH, title=f"r{i}", instructions="[sim-latency 0.5]")
        for i in range(2)
    ] + [
        Microtask(
            id="a1",
            role=Role.ANALYSIS,
            title="a1",
            instructions="[sim-latency 3]",
            depends_on=["r0", "r1"],
        )
    ]
    first = start_system(settings)
    opening = ray.get(first.orchestrator.run.remote("Hello"))
    task_id = ray.get(
        first.orchestrator.submit.remote(
            "survive a restart", plan, conversation_id=opening.conversation_id
        )
    )
    wait_until(lambda: ray.get(first.orchestrator.status.remote(task_id))["done"] >= 2)
    stop_system(first)  # everything goes: pools, agents, orchestrator, limiter, simulator

    second = start_system(settings)
    try:
        report = ray.get(second.orchestrator.wait.remote(task_id), timeout=120)
        assert report.state is TaskState.DONE and report.failed == 0
        assert report.succeeded == 3
        assert {e.id: e.attempts for e in report.timeline}["r0"] == 1  # not run again
        assert report.conversation_id == opening.task_id
        # The resumed microtask was sent the same earlier turn as those before the restart.
        assert _heard(second) == [{"answers": [opening.result[:120]], "summary": None}]
    finally:
        stop_system(second)
    store = Store(tmp_path / "store.sqlite3")
    turns = store.conversation_history(opening.task_id).turns
    assert [t.request for t in turns] == ["Hello", "survive a restart"]
