"""Hierarchical planning against the real simulator: an outline, then branches in parallel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.config import Settings, SimulatorSettings
from actors.engine import dag
from actors.engine.decomposer import Decomposer
from actors.engine.hierarchical import _repaired, _sizes
from actors.llm import LLMClient
from actors.models import BranchDraft, Complexity, ComplexityAssessment, Microtask
from actors.sim.simulator import SimulatorServer

SECURITY = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=11)) as server:
        yield server


def _decomposer(simulator: SimulatorServer, mode: str = "hierarchical") -> Decomposer:
    settings = Settings().with_overrides(plan_mode=mode, limiter={"max_attempts": 2})
    return Decomposer(LLMClient(settings, base_url=simulator.url), settings)


async def test_a_complex_request_is_outlined_then_planned_branch_by_branch(simulator):
    decomposer = _decomposer(simulator)
    verdict, _ = await decomposer.assess(SECURITY)
    assert verdict.level in (Complexity.COMPLEX, Complexity.MASSIVE)
    seen = len(simulator.recent_requests())
    passed: list[Microtask] = []

    async def on_microtask(mt: Microtask) -> None:
        assert all(d in {p.id for p in passed} or "." in d for d in mt.depends_on)
        passed.append(mt)

    plan, usage = await decomposer.plan(SECURITY, verdict, on_microtask)
    calls = simulator.recent_requests()[seen:]
    purposes = [c["purpose"] for c in calls]
    assert purposes[0] == "outline" and purposes.count("plan") >= 2
    assert all(c["stream"] for c in calls if c["purpose"] == "plan")
    assert usage.requests == len(calls)
    assert plan.source in ("model", "repaired") and "two levels" in plan.notes[0]
    assert dag.validate(plan.microtasks) == []
    limit = Settings().levels[verdict.level].max_microtasks
    assert 2 <= len(plan.microtasks) <= limit
    branches = {mt.id.split(".")[0] for mt in plan.microtasks}
    assert len(branches) >= 2
    # The last branch builds on the others: its first microtasks wait for their last ones.
    last = max(branches, key=lambda b: int(b[1:]))
    by_id = {mt.id: mt for mt in plan.microtasks}
    roots = [mt for mt in plan.microtasks if mt.id.startswith(last + ".") and not any(
        d.startswith(last + ".") for d in mt.depends_on)]  # fmt: skip
    assert roots and all(by_id[d].id.split(".")[0] != last for r in roots for d in r.depends_on)
    assert all(r.depends_on for r in roots)
    # What was passed on while streaming is what the plan kept, with the same edges.
    assert passed and {p.id: p.depends_on for p in passed if p.id in by_id} == {
        p.id: by_id[p.id].depends_on for p in passed if p.id in by_id
    }


async def test_a_medium_request_is_still_planned_flat(simulator):
    verdict = ComplexityAssessment(level=Complexity.MEDIUM, parallelizable=True)
    seen = len(simulator.recent_requests())
    await _decomposer(simulator).plan("Compare three vector databases for RAG", verdict)
    assert [c["purpose"] for c in simulator.recent_requests()[seen:]] == ["plan"]


def test_an_outline_keeps_only_dependencies_on_earlier_branches():
    drafts = [
        BranchDraft(id="x", title="X", focus="x", depends_on=["y"]),  # a later branch
        BranchDraft(id="y", title="Y", focus="y", depends_on=["x", "y"]),
        BranchDraft(id="", title="", focus=""),  # nothing in it
    ]
    kept, notes = _repaired(drafts)
    assert [(b.id, b.depends_on) for b in kept] == [("b1", []), ("b2", ["b1"])]
    assert notes


def test_branch_sizes_fit_the_cap():
    assert _sizes([4, 6], 20) == [4, 6]
    assert sum(_sizes([30, 30, 40], 50)) <= 50 and min(_sizes([30, 30, 40], 50)) >= 1
