"""The scheduler: dependency order over a whole plan and over one still arriving."""

from __future__ import annotations

import pytest

from actors.engine.scheduler import DagScheduler
from actors.models import Role
from tests.unit.test_dag import diamond, task


def test_scheduler_releases_a_microtask_only_after_all_its_dependencies():
    scheduler = DagScheduler(diamond())
    assert [t.id for t in scheduler.ready()] == ["r1", "r2"]
    assert scheduler.ready() == []  # each returned once
    scheduler.done("r1")
    assert [t.id for t in scheduler.ready()] == ["a1"]
    scheduler.done("a1")
    assert scheduler.ready() == []  # g1 still waits for a2
    scheduler.done("r2")
    assert [t.id for t in scheduler.ready()] == ["a2"]
    scheduler.done("a2")
    assert [t.id for t in scheduler.ready()] == ["g1"]
    assert scheduler.is_active()
    scheduler.done("g1")
    assert not scheduler.is_active() and scheduler.ready() == []


def test_fast_branch_runs_ahead_of_a_slow_sibling():
    tasks = [task("slow"), task("fast"), task("fast2", ["fast"]), task("fast3", ["fast2"])]
    scheduler = DagScheduler(tasks)
    scheduler.ready()
    scheduler.done("fast")
    assert [t.id for t in scheduler.ready()] == ["fast2"]
    scheduler.done("fast2")
    assert [t.id for t in scheduler.ready()] == ["fast3"]  # "slow" never finished


def test_scheduler_orders_ready_by_critical_then_priority_then_id():
    tasks = [task("c"), task("b", priority=1), task("a"), task("z", critical=True)]
    assert [t.id for t in DagScheduler(tasks).ready()] == ["z", "b", "a", "c"]


def test_failed_microtask_releases_dependents_and_names_them():
    scheduler = DagScheduler(diamond())
    scheduler.ready()
    assert scheduler.failed("r1") == ["a1", "g1"]
    assert [t.id for t in scheduler.ready()] == ["a1"]
    assert scheduler.is_active()  # r2, a1, a2 and g1 still to finish


def test_scheduler_rejects_bad_plans_and_bad_calls():
    with pytest.raises(ValueError, match="cycle"):
        DagScheduler([task("a", ["b"]), task("b", ["a"])])
    scheduler = DagScheduler(diamond())
    with pytest.raises(ValueError):
        scheduler.done("g1")  # not ready yet
    scheduler.ready()
    scheduler.done("r1")
    with pytest.raises(ValueError):
        scheduler.done("r1")  # twice


def test_scheduler_on_an_empty_plan_is_inactive():
    scheduler = DagScheduler([])
    assert not scheduler.is_active() and scheduler.ready() == []


# --- a plan still arriving ----------------------------------------------------------


def test_an_arriving_microtask_runs_as_soon_as_its_dependencies_are_done():
    scheduler = DagScheduler.open()
    assert scheduler.is_active() and scheduler.ready() == []  # nothing yet, not finished
    scheduler.add(task("r1", role=Role.RESEARCH))
    assert [t.id for t in scheduler.ready()] == ["r1"]  # before the plan is complete
    scheduler.add(task("a1", ["r1"]))
    assert scheduler.ready() == []
    scheduler.done("r1")
    assert [t.id for t in scheduler.ready()] == ["a1"]
    scheduler.done("a1")
    assert scheduler.is_active()  # more may arrive


def test_a_dependency_not_seen_yet_waits_for_it():
    scheduler = DagScheduler.open()
    scheduler.add(task("a1", ["r9"]))  # names a microtask the stream has not reached
    assert scheduler.ready() == []
    scheduler.add(task("r9", role=Role.RESEARCH))
    assert [t.id for t in scheduler.ready()] == ["r9"]
    scheduler.done("r9")
    assert [t.id for t in scheduler.ready()] == ["a1"]


def test_sealing_drops_what_the_repair_removed_and_names_the_running_ones():
    scheduler = DagScheduler.open()
    for mt in (task("r1"), task("r2"), task("x", ["r1"])):
        scheduler.add(mt)
    scheduler.ready()  # r1 and r2 run
    scheduler.done("r1")
    assert [t.id for t in scheduler.ready()] == ["x"]
    # The final plan drops x (running) and r2 (running), adds g1 after r1.
    dropped = scheduler.seal([task("r1"), task("g1", ["r1"])])
    assert [t.id for t in dropped] == ["r2", "x"]
    assert [t.id for t in scheduler.ready()] == ["g1"]
    scheduler.done("g1")
    assert not scheduler.is_active()


def test_a_sealed_plan_takes_no_more_and_must_be_valid():
    scheduler = DagScheduler.open()
    with pytest.raises(ValueError, match="cycle"):
        scheduler.seal([task("a", ["b"]), task("b", ["a"])])
    scheduler.seal([task("a")])
    with pytest.raises(ValueError, match="sealed"):
        scheduler.add(task("b"))


def test_an_empty_open_plan_ends_when_sealed_empty():
    scheduler = DagScheduler.open()
    assert scheduler.seal([]) == [] and not scheduler.is_active()
