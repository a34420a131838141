"""Traces across real actors: every process appends its spans to one JSONL file.

The orchestrator, the agents and their LLM clients run in separate Ray worker
processes; the span tree is rebuilt from the file alone, by ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.config import Settings
from actors.models import Microtask, Role, RunReport, TaskState
from actors.runtime.system import start_system, stop_system

Span = dict[str, Any]


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("traces") / "traces.jsonl"


@pytest.fixture(scope="module")
def system(ray_session, trace_file):
    settings = Settings().with_overrides(
        pools={role.value: {"min": 1, "max": 1} for role in Role},
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 11},
        trace_exporter="jsonl",
        trace_file=str(trace_file),
        microtask_timeout_s=30.0,
        backups=False,
    )
    system = start_system(settings)
    yield system
    stop_system(system)


def _mt(id_: str, role: Role, deps: tuple[str, ...] = ()) -> Microtask:
    return Microtask(
        id=id_, role=role, title=f"step {id_}", instructions=f"Do {id_}.", depends_on=list(deps)
    )


def _run(system, text: str, plan: list[Microtask] | None = None) -> RunReport:
    report: RunReport = ray.get(system.orchestrator.run.remote(text, plan), timeout=120)
    assert report.state is TaskState.DONE
    return report


def _trace_of(trace_file: Path, task_id: str) -> tuple[Span, list[Span]]:
    """The task's root span and every span of its trace, from the file."""
    spans = [json.loads(line) for line in trace_file.read_text().splitlines()]  # lines whole
    [task] = [s for s in spans if s["name"] == "task" and s["attributes"]["task_id"] == task_id]
    return task, [s for s in spans if s["trace_id"] == task["trace_id"]]


def _named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s["name"] == name]


def test_a_given_plan_traces_as_one_tree(system, trace_file) -> None:
    plan = [
        _mt("a", Role.RESEARCH),
        _mt("b", Role.ANALYSIS, ("a",)),
        _mt("c", Role.VALIDATION, ("a",)),
    ]
    report = _run(system, "Trace a three-step plan.", plan)
    task, spans = _trace_of(trace_file, report.task_id)
    by_id = {s["span_id"]: s for s in spans}

    assert task["parent_id"] is None and task["service"] == "orchestrator"
    assert task["attributes"]["microtasks"] == 3 and task["attributes"]["complexity"] == "simple"
    orphans = [s["name"] for s in spans if s is not task and s["parent_id"] not in by_id]
    assert orphans == []

    microtasks = _named(spans, "microtask")
    attempts = {e.id: e.attempts for e in report.timeline}
    assert len(microtasks) == sum(attempts.values())  # one span per attempt
    assert {s["attributes"]["microtask_id"] for s in microtasks} == {"a", "b", "c"}
    for span in microtasks:
        assert span["parent_id"] == task["span_id"]
        assert span["service"] == "agent" and span["pid"] != task["pid"]
        assert span["attributes"]["task_id"] == report.task_id
        assert span["attributes"]["agent_id"].startswith(span["attributes"]["role"])
        assert span["attributes"]["attempt"] >= 1
    # b and c ran on their own agents, after a had finished.
    a_end = next(s["end"] for s in microtasks if s["attributes"]["microtask_id"] == "a")
    assert all(s["start"] >= a_end for s in microtasks if s["attributes"]["microtask_id"] != "a")

    [merge] = _named(spans, "merge")
    [synthesis] = _named(spans, "synthesis")
    assert merge["parent_id"] == task["span_id"] and synthesis["parent_id"] == merge["span_id"]
    # The orchestrator's reconcile span, under the merge, holds the validation agent's span.
    step, call_span = sorted(
        _named(spans, "reconcile"), key=lambda s: s["service"] != "orchestrator"
    )
    assert step["parent_id"] == merge["span_id"] and call_span["parent_id"] == step["span_id"]

    calls = _named(spans, "llm.call")
    assert len(calls) == len(microtasks) + 2  # one per attempt, reconciling, the synthesis
    for call in calls:
        assert by_id[call["parent_id"]]["name"] in ("microtask", "reconcile", "synthesis")
        assert call["attributes"]["status"] == "ok" and call["attributes"]["retries"] == 0
        assert call["attributes"]["input_tokens"] > 0 and call["attributes"]["output_tokens"] > 0
    tokens = sum(c["attributes"]["output_tokens"] for c in calls)
    assert tokens == report.output_tokens  # the trace accounts for every token of the report


def test_the_planner_calls_sit_under_the_plan_span(system, trace_file) -> None:
    report = _run(system, "What is the capital of France, and why did it become the capital?")
    task, spans = _trace_of(trace_file, report.task_id)
    by_id = {s["span_id"]: s for s in spans}

    [plan] = _named(spans, "plan")
    assert plan["parent_id"] == task["span_id"]
    planner_calls = [s for s in _named(spans, "llm.call") if s["parent_id"] == plan["span_id"]]
    assert [c["attributes"]["purpose"] for c in planner_calls] == ["assessment", "planning"]
    assert task["attributes"]["microtasks"] == report.microtasks
    assert len(_named(spans, "microtask")) == sum(e.attempts for e in report.timeline)
    assert all(s is task or s["parent_id"] in by_id for s in spans)
