"""The whole system stopped and started again with a task half done: it finishes."""

from __future__ import annotations

import time

import ray

from actors.config import Settings
from actors.models import Microtask, Role, TaskState
from actors.system import start_system, stop_system


def test_task_half_done_finishes_after_a_full_restart(ray_session, tmp_path):
    settings = Settings().with_overrides(
        home=tmp_path,
        pools={role.value: {"min": 1, "max": 2} for role in Role},
        simulator={"latency": "fixed", "median_s": 0.05},
        backups=False,
    )
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
    task_id = ray.get(first.orchestrator.submit.remote("survive a restart", plan))
    deadline = time.monotonic() + 60
    while ray.get(first.orchestrator.status.remote(task_id))["done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop_system(first)  # everything goes: pools, agents, orchestrator, limiter, simulator

    second = start_system(settings)
    try:
        report = ray.get(second.orchestrator.wait.remote(task_id), timeout=120)
        assert report.state is TaskState.DONE and report.failed == 0
        assert report.succeeded == 3
        assert {e.id: e.attempts for e in report.timeline}["r0"] == 1  # not run again
    finally:
        stop_system(second)
