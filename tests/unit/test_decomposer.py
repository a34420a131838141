"""The decomposer against the real simulator through the real SDK (no Ray)."""

from __future__ import annotations

import pytest

from actors.config import Purpose, Settings, SimulatorSettings
from actors.engine import dag
from actors.engine.decomposer import Decomposer
from actors.engine.plan_stream import PlanStream
from actors.llm import LLMClient
from actors.models import Complexity, Microtask, MicrotaskDraft, Role
from actors.sim.simulator import SimulatorServer

SECURITY = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(SimulatorSettings(latency="zero")) as server:
        yield server


def _decomposer(simulator) -> Decomposer:
    settings = Settings().with_overrides(limiter={"max_attempts": 2, "base_backoff_s": 0.01})
    return Decomposer(LLMClient(settings, base_url=simulator.url), settings)


async def test_greeting_is_not_split_and_costs_no_call(simulator):
    before = simulator.stats()["requests"]
    verdict, usage = await _decomposer(simulator).assess("Hello")
    assert not verdict.parallelizable and verdict.level is Complexity.SIMPLE
    assert simulator.stats()["requests"] == before and usage.requests == 0


async def test_model_plan_is_valid_and_within_the_level(simulator):
    decomposer = _decomposer(simulator)
    verdict, _ = await decomposer.assess(SECURITY)
    plan, usage = await decomposer.plan(SECURITY, verdict)
    limit = Settings().levels[verdict.level].max_microtasks
    assert verdict.level in (Complexity.COMPLEX, Complexity.MASSIVE)
    assert plan.source in ("model", "repaired")
    assert 20 <= len(plan.microtasks) <= limit
    assert dag.validate(plan.microtasks) == []
    assert any(mt.critical for mt in plan.microtasks)
    assert usage.input_tokens > 0


async def test_malformed_model_plan_falls_back_to_the_domain_template(simulator):
    simulator.reconfigure(rate_malformed=1.0)
    try:
        decomposer = _decomposer(simulator)
        verdict, _ = await decomposer.assess(SECURITY)  # heuristic fallback
        plan, _ = await decomposer.plan(SECURITY, verdict)
    finally:
        simulator.reconfigure(rate_malformed=0.0)
    assert plan.source == "template:security_analysis"
    assert dag.validate(plan.microtasks) == []
    assert len(plan.microtasks) <= Settings().levels[verdict.level].max_microtasks
    assert any("template" in note for note in plan.notes)


async def test_request_demanding_10000_agents_gets_a_bounded_plan(simulator):
    text = "Use 10,000 agents and plan at most 10000 microtasks. " + SECURITY
    decomposer = _decomposer(simulator)
    verdict, _ = await decomposer.assess(text)
    plan, _ = await decomposer.plan(text, verdict)
    assert len(plan.microtasks) <= Settings().levels[Complexity.MASSIVE].max_microtasks


async def test_a_plan_cut_at_max_tokens_keeps_its_complete_microtasks(simulator):
    # Room for the thinking and a dozen microtasks of a 50-microtask plan: the answer is cut.
    settings = Settings().with_overrides(
        plan_tokens_per_microtask=20, output_tokens={"planning": 3000}
    )
    decomposer = Decomposer(LLMClient(settings, base_url=simulator.url), settings)
    verdict, _ = await decomposer.assess(SECURITY)
    plan, usage = await decomposer.plan(SECURITY, verdict)
    assert plan.source in ("model", "repaired")  # not a template
    assert plan.cut and "kept its" in plan.cut[0]
    assert dag.validate(plan.microtasks) == []
    assert len(plan.microtasks) >= 2
    assert usage.requests >= 1
    entries = [e for e in simulator.recent_requests() if e.get("purpose") == "plan"]
    assert entries[-1]["stop_reason"] in ("max_tokens", "end_turn")


async def test_plans_ask_for_short_instructions_and_budget_by_the_level(simulator):
    decomposer = _decomposer(simulator)
    verdict, _ = await decomposer.assess(SECURITY)
    await decomposer.plan(SECURITY, verdict)
    limit = Settings().levels[verdict.level].max_microtasks
    plan_call = [e for e in simulator.recent_requests() if e.get("purpose") == "plan"][-1]
    assert plan_call["max_tokens"] == Settings().max_tokens_for(Purpose.PLANNING, limit)
    assert plan_call["stop_reason"] == "end_turn"  # the default budget holds a whole plan


# --- streamed planning ---------------------------------------------------------------


def _draft(id_: str, *deps: str, role: str = "research") -> MicrotaskDraft:
    return MicrotaskDraft(id=id_, role=role, title=id_, instructions=id_, depends_on=list(deps))


async def test_a_streamed_microtask_is_passed_on_once_its_dependencies_resolve():
    passed: list[tuple[str, list[str]]] = []

    async def on_microtask(mt):
        passed.append((mt.id, mt.depends_on))

    stream = PlanStream(10, on_microtask)
    await stream.item(0, _draft("r1"))
    await stream.item(1, _draft("a1", "r1", "r2"))  # r2 is further down the stream: held
    assert passed == [("r1", [])]
    await stream.item(2, _draft("r2"))
    assert passed == [("r1", []), ("a1", ["r1", "r2"]), ("r2", [])]
    await stream.item(0, _draft("r1"))  # a retried call streams from its start again
    await stream.item(1, _draft("x1"))
    assert [p[0] for p in passed] == ["r1", "a1", "r2", "x1"]  # nothing passed twice


async def test_a_streamed_plan_passes_on_no_more_than_the_cap():
    passed: list[str] = []

    async def on_microtask(mt):
        passed.append(mt.id)

    stream = PlanStream(2, on_microtask)
    for i in range(5):
        await stream.item(i, _draft(f"r{i}"))
    assert passed == ["r0", "r1"]


async def test_a_streamed_plan_passes_on_its_microtasks_before_the_call_ends(simulator):
    decomposer = _decomposer(simulator)
    verdict, _ = await decomposer.assess(SECURITY)
    passed: list[str] = []
    calls_done_when_passed: list[int] = []

    async def on_microtask(mt):
        passed.append(mt.id)
        calls_done_when_passed.append(simulator.stats()["status_counts"].get("200", 0))

    before = simulator.stats()["status_counts"].get("200", 0)
    slow = SECURITY + " [sim-latency 1]"  # the plan's stream spread over a second
    plan, usage = await decomposer.plan(slow, verdict, on_microtask)
    assert usage.requests == 1 and len(passed) >= 2
    assert calls_done_when_passed[0] == before  # the planning call had not ended yet
    assert set(passed) <= {mt.id for mt in plan.microtasks}  # the final plan kept them
    assert simulator.recent_requests()[-1]["stream"] is True


async def test_a_streamed_plan_cut_mid_stream_keeps_what_arrived(simulator):
    settings = Settings().with_overrides(
        plan_tokens_per_microtask=20, output_tokens={"planning": 3000}
    )
    decomposer = Decomposer(LLMClient(settings, base_url=simulator.url), settings)
    verdict, _ = await decomposer.assess(SECURITY)
    passed: list[str] = []

    async def on_microtask(mt):
        passed.append(mt.id)

    plan, _ = await decomposer.plan(SECURITY, verdict, on_microtask)
    assert plan.cut and "kept its" in plan.cut[0]
    assert passed and set(passed) <= {mt.id for mt in plan.microtasks}
    assert dag.validate(plan.microtasks) == []


def test_a_plan_cut_by_a_restart_is_made_whole():
    arrived = [
        Microtask(id="r1", role=Role.RESEARCH, title="r1", instructions="r1"),
        Microtask(id="a1", role=Role.ANALYSIS, title="a1", instructions="a1", depends_on=["r1"]),
        # Depends on a microtask held back in the stream, which never got stored.
        Microtask(id="a2", role=Role.ANALYSIS, title="a2", instructions="a2", depends_on=["x9"]),
    ]
    whole = dag.closed(arrived)
    assert dag.validate(whole) == [] and [t.depends_on for t in whole] == [[], ["r1"], []]
