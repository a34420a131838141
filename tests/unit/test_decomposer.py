"""The decomposer against the real simulator through the real SDK (no Ray)."""

from __future__ import annotations

import pytest

from actors import dag
from actors.config import Settings, SimulatorSettings
from actors.decomposer import Decomposer
from actors.llm import LLMClient
from actors.llm.simulator import SimulatorServer
from actors.models import Complexity

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
