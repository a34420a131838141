"""The durable store: what a restart needs is there, a newer schema is refused."""

from __future__ import annotations

import sqlite3
import time

import pytest

from actors.errors import ConfigurationError
from actors.models import Complexity, Microtask, MicrotaskResult, Role, RunReport, TaskState, Usage
from actors.store import SCHEMA_VERSION, Store


def _mt(id_: str, deps: tuple[str, ...] = ()) -> Microtask:
    return Microtask(id=id_, role=Role.RESEARCH, title=id_, instructions="x", depends_on=list(deps))


def _result(task_id: str, id_: str, cost: float = 0.01) -> MicrotaskResult:
    now = time.time()
    return MicrotaskResult(
        task_id=task_id, microtask_id=id_, role=Role.RESEARCH, agent_id="research-00",
        node_id="n", content=f"result {id_}", confidence=0.8,
        usage=Usage(requests=1, input_tokens=10, output_tokens=5, cost_usd=cost),
        started_at=now, finished_at=now + 1,
    )  # fmt: skip


def _report(task_id: str, cost: float) -> RunReport:
    return RunReport(
        task_id=task_id, state=TaskState.DONE, complexity=Complexity.SIMPLE, plan_source="given",
        microtasks=2, agents=1, max_parallel=1, wall_s=1.0, work_s=1.0, speedup=1.0, succeeded=2,
        failed=0, retries=0, backups=0, input_tokens=20, output_tokens=10, cost_usd=cost,
        simulated=True, result="answer", confidence=0.8,
    )  # fmt: skip


def test_unfinished_task_keeps_its_plan_and_finished_results(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.task_started("t1", time.time(), "do two things")
    store.plan_made("t1", Complexity.SIMPLE, "model", [_mt("a"), _mt("b", ("a",))])
    store.result_made(_result("t1", "a"))
    store.close()

    reopened = Store(tmp_path / "s.sqlite3")  # as after a crash: a new process, same file
    [task] = reopened.unfinished()
    assert task.task_id == "t1" and task.request == "do two things"
    assert task.complexity is Complexity.SIMPLE and task.plan_source == "model"
    assert [mt.id for mt in task.microtasks] == ["a", "b"]
    assert task.microtasks[1].depends_on == ["a"]
    assert set(task.results) == {"a"} and task.results["a"].content == "result a"


def test_task_without_plan_resumes_from_planning(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.task_started("t2", time.time(), "plan me")
    [task] = store.unfinished()
    assert task.complexity is None and task.microtasks == [] and task.results == {}


def test_finished_task_is_history_not_work(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    created = time.time()
    store.task_started("t3", created, "done soon")
    store.result_made(_result("t3", "a"))
    store.task_finished(_report("t3", 0.5), "done soon", created, created + 1)
    assert store.unfinished() == []
    assert store.report("t3").result == "answer"
    assert store.recent(5)[0]["task_id"] == "t3"
    assert store.totals()["tasks_by_state"] == {"done": 1}


def test_cost_since_counts_finished_and_running_tasks(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    now = time.time()
    store.task_started("old", now - 2 * 86400, "yesterday")
    store.task_finished(_report("old", 5.0), "yesterday", now - 2 * 86400, now - 2 * 86400)
    store.task_started("done", now, "today")
    store.task_finished(_report("done", 0.25), "today", now, now)
    store.task_started("running", now, "today too")
    store.result_made(_result("running", "a", cost=0.05))
    assert store.cost_since(now - 86400) == pytest.approx(0.30)


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigurationError, match="newer than this program"):
        Store(path)
