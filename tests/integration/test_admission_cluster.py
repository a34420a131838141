"""Admission on real Ray: concurrent submits, owners and idempotency keys across a restart.

The orchestrator is an async actor, so submits that arrive together run interleaved;
these tests send them together and check what a caller sees: exactly as many accepted
as the limits allow, clear refusals for the rest, one task per idempotency key, and a
resumed task that keeps its owner, its whole request and its place against the limits.
"""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest
import ray
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.config import Settings
from actors.errors import CapacityError
from actors.models import Microtask, Role, TaskState
from actors.runtime.system import start_system, stop_system


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return tiny_settings(
        1,
        3,
        home=tmp_path_factory.mktemp("admission-home"),
        max_running_tasks=3,
        max_tasks_per_user=2,
    )


@pytest.fixture(scope="module")
def system(ray_session, settings):
    system = start_system(settings)
    yield system
    stop_system(system)


def _plan(seconds: float) -> list[Microtask]:
    return [
        Microtask(id="quick", role=Role.RESEARCH, title="quick", instructions="[sim-latency 0.05]"),
        Microtask(
            id="slow",
            role=Role.ANALYSIS,
            title="slow",
            instructions=f"[sim-latency {seconds}]",
            depends_on=["quick"],
        ),
    ]


def _outcomes(refs: list[ray.ObjectRef]) -> tuple[list[str], list[CapacityError]]:
    accepted, refused = [], []
    for ref in refs:
        try:
            accepted.append(ray.get(ref, timeout=60))
        except CapacityError as exc:
            refused.append(exc)
    return accepted, refused


def _finish(orchestrator, task_ids: list[str]) -> None:
    for task_id in task_ids:
        report = ray.get(orchestrator.wait.remote(task_id), timeout=120)
        assert report.state is TaskState.DONE and report.failed == 0


def test_twenty_submits_at_once_against_three_slots_accept_exactly_three(system):
    orchestrator = system.orchestrator
    refs = [orchestrator.submit.remote(f"at once {n}", _plan(2.0)) for n in range(20)]
    accepted, refused = _outcomes(refs)
    assert len(accepted) == 3 and len(set(accepted)) == 3
    assert len(refused) == 17
    for error in refused:  # each says which limit, and when to ask again
        assert "tasks are running, the limit is 3" in str(error)
        assert error.retry_after_s is not None and error.retry_after_s > 0
    _finish(orchestrator, accepted)  # and nothing accepted is lost


def test_one_idempotency_key_sent_five_times_at_once_makes_one_task(system):
    orchestrator = system.orchestrator
    refs = [
        orchestrator.submit.remote("once only", _plan(0.1), "telegram:9", "update-500")
        for _ in range(5)
    ]
    accepted, refused = _outcomes(refs)
    assert not refused and len(set(accepted)) == 1
    mine = ray.get(orchestrator.tasks.remote("telegram:9"))
    assert [t["task_id"] for t in mine] == accepted[:1] and mine[0]["user"] == "telegram:9"
    _finish(orchestrator, accepted[:1])
    # A different user's identical key is their own task.
    other = ray.get(
        orchestrator.submit.remote("once only", _plan(0.1), "telegram:10", "update-500")
    )
    assert other != accepted[0]
    _finish(orchestrator, [other])


def test_a_resumed_task_keeps_its_owner_its_key_its_request_and_its_slot(system, settings):
    orchestrator = system.orchestrator
    long_request = ("Compare these in depth. " * 700)[:15_000] + " THE END OF THE REQUEST"
    first = ray.get(orchestrator.submit.remote(long_request, _plan(3.0), "owner", "update-1"))
    second = ray.get(orchestrator.submit.remote("and this", _plan(3.0), "owner"))

    os.kill(ray.get(orchestrator.pid.remote()), signal.SIGKILL)
    wait_until(lambda: ray.get(orchestrator.ping.remote(), timeout=60))  # restarted, resumed

    # The bot retrying its submit (same update id) finds the first task, not a new one.
    again = ray.get(orchestrator.submit.remote(long_request, _plan(3.0), "owner", "update-1"))
    assert again == first
    # Both resumed tasks are still the owner's: the per-user limit of 2 refuses a third.
    with pytest.raises(CapacityError, match="you have 2 tasks running, the limit is 2 per user"):
        ray.get(orchestrator.submit.remote("one more", _plan(0.1), "owner"))
    assert ray.get(orchestrator.status.remote(first))["user"] == "owner"
    assert {t["user"] for t in ray.get(orchestrator.active.remote())} == {"owner"}

    _finish(orchestrator, [first, second])
    history = ray.get(orchestrator.history.remote(10, "owner"))
    assert {row["task_id"] for row in history} == {first, second}
    with sqlite3.connect(settings.home / "store.sqlite3") as db:
        [(stored,)] = db.execute("SELECT request FROM tasks WHERE task_id = ?", (first,))
    assert stored == long_request  # the resumed task ran and was recorded with all of it
