"""The answer written in sections by the plan (answer_mode "sections") on real Ray.

The simulator runs at realistic speed (first token + tokens / speed, x0.02), so sections
take the time their length asks for. The order of calls is read from its request log.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import ray
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath

from actors.models import EventKind, Role, TaskState
from actors.runtime.system import start_system, stop_system

SECURITY = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)


@pytest.fixture(scope="module")
def system(ray_session, tmp_path_factory):
    settings = tiny_settings(
        home=tmp_path_factory.mktemp("sections-home"),
        simulator={"latency": "realistic", "time_scale": 0.02, "seed": 5},
        answer_mode="sections",
    )
    system = start_system(settings)
    yield system
    stop_system(system)


def _requests(system) -> list[dict]:
    url = ray.get(system.simulator.url.remote())
    with urllib.request.urlopen(f"{url}/requests", timeout=10) as answer:
        return json.loads(answer.read())["requests"]


def test_the_plan_writes_the_answer_in_sections_reconciled_beside_the_writing(system):
    orchestrator = system.orchestrator
    task_id = ray.get(orchestrator.submit.remote(SECURITY))
    report = ray.get(orchestrator.wait.remote(task_id, 300), timeout=320)
    assert report.state is TaskState.DONE and report.failed == 0
    sections = [e for e in report.timeline if e.role is Role.GENERATION]
    assert len(sections) >= 2 and not any(
        s.id in t.depends_on for s in sections for t in report.timeline
    )  # the last level: nothing depends on a section

    calls = [c for c in _requests(system) if c["status"] == 200]
    purposes = [c["purpose"] for c in calls]
    assert "synthesis" not in purposes and purposes.count("overview") == 1
    ends = {c["microtask"]: c["at"] + c["latency_s"] for c in calls if c["microtask"]}
    reconciling = min(c["at"] for c in calls if c["purpose"] == "reconcile")
    assert reconciling < max(ends[s.id] for s in sections)  # beside the sections' writing

    # Followers got the sections, then the overview: the answer the report carries.
    events = ray.get(orchestrator.events.remote(task_id, 0, 0.1))
    streamed = "".join(e.detail for e in events if e.kind is EventKind.ANSWER)
    assert report.result.startswith(streamed) and streamed.startswith("## ")
    headings = [line for line in streamed.splitlines() if line.startswith("## ")]
    assert len(headings) == len(sections) + 1 and headings[-1] == "## In short"
