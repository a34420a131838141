"""The durable store: what a restart needs is there, a newer schema is refused."""

from __future__ import annotations

import sqlite3
import time

import pytest

from actors.engine.store import _MIGRATIONS, SCHEMA_VERSION, Store
from actors.errors import ConfigurationError
from actors.models import (
    Complexity,
    Microtask,
    MicrotaskResult,
    Role,
    RunReport,
    TaskState,
    Usage,
)
from tests.unit.factories import report


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
    return report(
        task_id=task_id, plan_source="given", microtasks=2, wall_s=1.0, work_s=1.0,
        succeeded=2, input_tokens=20, output_tokens=10, cost_usd=cost, confidence=0.8,
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


def test_a_cost_limit_is_kept_for_the_restart(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.task_started("cheap", time.time(), "plan me", "u", None, 0.25)
    store.task_started("default", time.time(), "plan me")
    store.close()
    limits = {t.task_id: t.cost_limit_usd for t in Store(tmp_path / "s.sqlite3").unfinished()}
    assert limits == {"cheap": 0.25, "default": None}


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


def test_spending_since_lists_what_finished_tasks_cost_in_the_window(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    now = time.time()
    store.task_started("old", now - 2 * 86400, "yesterday")
    store.task_finished(_report("old", 5.0), "yesterday", now - 2 * 86400, now - 2 * 86400)
    store.task_started("done", now - 10, "today")
    store.task_finished(_report("done", 0.25), "today", now - 10, now)
    store.task_started("running", now, "today too")  # counted as a resumed running task
    store.result_made(_result("running", "a", cost=0.05))
    assert store.spending_since(now - 86400) == [(now, 0.25)]


def test_a_long_request_survives_the_store_whole(tmp_path):
    request = "".join(f"part {n:05d}; " for n in range(1400))[:15_000] + "THE END"
    assert len(request) > 15_000
    store = Store(tmp_path / "s.sqlite3")
    store.task_started("long", time.time(), request)
    store.close()
    [task] = Store(tmp_path / "s.sqlite3").unfinished()  # what a resume plans from
    assert task.request == request
    store = Store(tmp_path / "s.sqlite3")
    store.task_finished(_report("long", 0.1), request, task.created_at, time.time())
    [row] = store.recent(5)
    assert row["request"] == request[:200]  # listings shorten; the store does not
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        [(kept,)] = db.execute("SELECT request FROM tasks").fetchall()
    assert kept == request


def test_a_repeated_idempotency_key_finds_the_first_task_after_a_reopen(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    assert store.task_started("first", time.time(), "hi", "telegram:1", "update-7") == "first"
    store.close()
    store = Store(tmp_path / "s.sqlite3")  # a restarted orchestrator
    assert store.task_for_key("telegram:1", "update-7") == "first"
    assert store.task_started("second", time.time(), "hi", "telegram:1", "update-7") == "first"
    assert [t.task_id for t in store.unfinished()] == ["first"]  # nothing second was stored
    # Keys are per user: the same key from someone else is a new task.
    assert store.task_for_key("telegram:2", "update-7") is None
    assert store.task_started("other", time.time(), "hi", "telegram:2", "update-7") == "other"


def test_the_owner_of_a_task_is_kept_through_its_report_and_listings(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    now = time.time()
    store.task_started("a", now, "alice's", "http:alice")
    store.task_started("b", now + 1, "bob's", "http:bob")
    store.task_finished(_report("a", 0.1), "alice's", now, now + 2)
    assert store.user_of("a") == "http:alice" and store.user_of("nope") is None
    assert [t.user for t in store.unfinished()] == ["http:bob"]
    assert [r["task_id"] for r in store.recent(10, user="http:alice")] == ["a"]
    assert {r["user"] for r in store.recent(10)} == {"http:alice", "http:bob"}


def test_a_store_of_the_first_schema_is_migrated_and_keeps_its_tasks(tmp_path):
    path = tmp_path / "s.sqlite3"
    with sqlite3.connect(path) as db:  # as version 1 left it
        db.executescript(_MIGRATIONS[1])
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute(
            "INSERT INTO tasks (task_id, created_at, state, request) VALUES ('old', 1, 'x', 'r')"
        )
    store = Store(path)
    [task] = store.unfinished()
    assert task.task_id == "old" and task.user is None and task.cost_limit_usd is None
    assert store.task_started("new", time.time(), "r", "u", "k", 1.0) == "new"


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigurationError, match="newer than this program"):
        Store(path)


def test_each_orchestrator_start_gets_a_larger_incarnation_across_reopening(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    first = store.next_incarnation(time.time())
    store.close()
    again = Store(tmp_path / "s.sqlite3")  # the next process on the same home
    assert again.next_incarnation(time.time()) > first >= 1


def test_daily_trends_count_each_utc_day_of_the_window(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    day = 86_400
    midnight = 20_000 * day  # 2024-10-04 00:00 UTC
    finished = [  # (task, finished at, wall_s, state, failed, cost)
        ("y1", midnight - 3600, 4.0, TaskState.DONE, 0, 0.10),  # yesterday, 23:00
        ("y2", midnight - 60, 9.0, TaskState.FAILED, 2, 0.30),
        ("t1", midnight + 10, 1.0, TaskState.DONE, 0, 0.01),  # today
        ("t2", midnight + 20, 2.0, TaskState.DONE, 1, 0.02),  # done, but a microtask failed
        ("t3", midnight + 30, 3.0, TaskState.DONE, 0, 0.03),
        ("t4", midnight + 40, 40.0, TaskState.DONE, 0, 0.04),
        ("old", midnight - 5 * day, 1.0, TaskState.DONE, 0, 9.0),  # before the window
    ]
    for task_id, at, wall_s, state, failed, cost in finished:
        store.task_started(task_id, at - wall_s, "r")
        changes = {"state": state, "failed": failed, "wall_s": wall_s, "cost_usd": cost}
        store.task_finished(report(task_id=task_id, **changes), "r", at - wall_s, at)
    store.task_started("running", midnight + 50, "not finished: not counted")

    before, yesterday, today = store.daily(days=3, now=midnight + 3600)
    assert before == {
        "day": "2024-10-02", "tasks": 0, "succeeded": 0, "success_rate": None,
        "p50_wall_s": None, "p95_wall_s": None, "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0,
    }  # fmt: skip
    assert yesterday["day"] == "2024-10-03" and today["day"] == "2024-10-04"
    assert (yesterday["tasks"], yesterday["succeeded"], yesterday["success_rate"]) == (2, 1, 50.0)
    assert (yesterday["p50_wall_s"], yesterday["p95_wall_s"]) == (4.0, 9.0)
    assert yesterday["cost_usd"] == pytest.approx(0.40)
    assert (today["tasks"], today["succeeded"], today["success_rate"]) == (4, 3, 75.0)
    assert (today["p50_wall_s"], today["p95_wall_s"]) == (2.0, 40.0)  # nearest rank
    assert (today["input_tokens"], today["output_tokens"]) == (40, 40)  # 10 + 10 per task
    assert today["cost_usd"] == pytest.approx(0.10)
    assert len(store.daily(days=10_000, now=midnight)) == 365  # the window is capped
