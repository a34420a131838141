"""The simulator is as unkind as the real API: thinking, cuts at max_tokens, refusals, 400s,
latency that grows with the answer. Through the real SDK over loopback (no Ray)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pydantic_core
import pytest

from actors.config import SimulatorSettings
from actors.models import AgentOutput, MicrotaskDraft, PlanDraft, Reconciliation
from actors.sim.fake_content import estimate_tokens
from actors.sim.simulator import SimulatorServer
from actors.sim.simulator_state import LOG_FIELDS

OPUS = "claude-opus-5-5"  # thinks always, no forced tools, medium effort by default
SONNET = "claude-sonnet-5-5"  # thinks unless disabled, high effort by default
HAIKU = "claude-haiku-5-5"
OLD = "claude-haiku-4-5"  # thinks only with a budget, takes no effort
REQUEST = "Compare Postgres and MySQL replication for a fintech startup, including costs and risks"
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def agent_prompt(role: str = "analysis", extra: str = "") -> str:
    return (
        f"<request>\n{REQUEST}\n</request>\n\n"
        f"Your microtask (x1, {role}): Weigh the risks of replication{extra}"
    )


def plan_prompt(limit: int) -> str:
    return (
        f"<request>\n{REQUEST}\n</request>\n\nComplexity: complex. Plan at most {limit} microtasks"
    )


def json_format(model: type[Any], **extra: Any) -> dict[str, Any]:
    schema = dict(anthropic.transform_schema(model))
    return {"format": {"type": "json_schema", "schema": schema}, **extra}


def forced(model: type[Any]) -> dict[str, Any]:
    return {
        "tools": [{"name": "answer", "input_schema": model.model_json_schema()}],
        "tool_choice": {"type": "tool", "name": "answer"},
    }


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --- thinking ----------------------------------------------------------------------------


async def test_thinking_comes_first_and_counts_as_output(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(
        model=SONNET, max_tokens=8000, messages=ask("Explain replication [sim-output-tokens 200]")
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert text.type == "text" and text.text.startswith("[simulated] ")
    assert 180 <= estimate_tokens(text.text) <= 200  # the marker sets the visible size
    entry = sim.recent_requests()[-1]
    assert entry["thinking_tokens"] > 0 and entry["effort"] == "high"  # Sonnet 5.5's default
    assert message.usage.output_tokens == entry["thinking_tokens"] + estimate_tokens(text.text)


async def test_thinking_grows_with_effort(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    for effort in (None, *EFFORTS):
        config = {"effort": effort} if effort else {}
        await client.messages.create(
            model=OPUS,
            max_tokens=20_000,
            messages=ask(plan_prompt(8)),
            output_config=json_format(PlanDraft, **config),
        )
    default, *by_effort = sim.recent_requests()
    thought = [entry["thinking_tokens"] for entry in by_effort]
    assert thought == sorted(thought) and len(set(thought)) == len(EFFORTS)
    assert [entry["effort"] for entry in by_effort] == list(EFFORTS)
    assert default["effort"] == "medium" and default["thinking_tokens"] == thought[1]
    assert {entry["purpose"] for entry in by_effort} == {"plan"}


async def test_thinking_can_be_disabled_where_the_model_allows(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    off = await client.messages.create(
        model=SONNET, max_tokens=2000, messages=ask(REQUEST), thinking={"type": "disabled"}
    )
    old = await client.messages.create(model=OLD, max_tokens=2000, messages=ask(REQUEST))
    assert [b.type for b in off.content] == [b.type for b in old.content] == ["text"]
    assert [entry["thinking_tokens"] for entry in sim.recent_requests()] == [0, 0]
    budget = await client.messages.create(
        model=OLD,
        max_tokens=4000,
        messages=ask(REQUEST),
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert budget.content[0].type == "thinking"
    assert 0 < sim.recent_requests()[-1]["thinking_tokens"] <= 1024


@pytest.mark.parametrize(
    ("model", "extra", "fragment"),
    [
        (OPUS, {"thinking": {"type": "disabled"}}, "always on"),
        (OPUS, {"thinking": {"type": "enabled", "budget_tokens": 2000}}, "always on"),
        (OPUS, forced(AgentOutput), "output_config.format"),
        ("claude-fable-5-1", {**forced(AgentOutput), "tool_choice": {"type": "any"}}, "forced"),
        (SONNET, {"output_config": {"effort": "extreme"}}, "output_config.effort"),
        (OLD, {"output_config": {"effort": "low"}}, "not supported"),
        (OLD, {"thinking": {"type": "adaptive"}}, "budget_tokens"),
        (SONNET, {"thinking": {"type": "enabled", "budget_tokens": 500}}, "1024"),
        (SONNET, {"thinking": {"type": "enabled", "budget_tokens": 5000}}, "max_tokens"),
    ],
)
async def test_what_the_model_refuses_is_a_400(
    sim: SimulatorServer,
    client: anthropic.AsyncAnthropic,
    model: str,
    extra: dict[str, Any],
    fragment: str,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model=model, max_tokens=4000, messages=ask(agent_prompt()), **extra
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]
    assert sim.stats()["status_counts"] == {"400": 1}


# --- cuts at max_tokens --------------------------------------------------------------------


async def test_json_output_is_cut_mid_value(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    prompt = ask(agent_prompt(extra=" [sim-output-tokens 3000]"))
    config = json_format(AgentOutput)
    whole = await client.messages.create(
        model=SONNET, max_tokens=8000, messages=prompt, output_config=config
    )
    cut = await client.messages.create(
        model=SONNET, max_tokens=1500, messages=prompt, output_config=config
    )
    assert whole.stop_reason == "end_turn"
    AgentOutput.model_validate_json(text_of(whole))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 1500
    assert text_of(whole).startswith(text_of(cut))  # the same answer, written up to the limit
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(cut))
    assert [entry["stop_reason"] for entry in sim.recent_requests()] == ["end_turn", "max_tokens"]


async def test_forced_tool_cut_keeps_only_what_was_complete(
    client: anthropic.AsyncAnthropic,
) -> None:
    async def plan(max_tokens: int) -> anthropic.types.Message:
        return await client.messages.create(
            model=SONNET, max_tokens=max_tokens, messages=ask(plan_prompt(20)), **forced(PlanDraft)
        )

    whole, cut = await plan(12_000), await plan(3000)
    assert whole.stop_reason == "tool_use" and cut.stop_reason == "max_tokens"
    [full] = [block.input for block in whole.content if block.type == "tool_use"]
    [part] = [block.input for block in cut.content if block.type == "tool_use"]
    assert isinstance(full, dict) and isinstance(part, dict)
    items, kept = full["microtasks"], part["microtasks"]
    assert 0 < len(kept) < len(items)
    assert kept[:-1] == items[: len(kept) - 1]  # complete items, exactly as written
    assert kept[-1].items() <= items[len(kept) - 1].items()  # the last holds finished fields


async def test_fifty_microtask_plan_fits_its_budget_and_a_small_one_is_cut(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    # The project's budget: 8192 for thinking plus 150 per microtask the level allows.
    for effort in ("high", "max"):
        message = await client.messages.create(
            model=OPUS,
            max_tokens=8192 + 150 * 50,
            messages=ask(plan_prompt(50)),
            output_config=json_format(PlanDraft, effort=effort),
        )
        assert message.stop_reason == "end_turn"
        plan = PlanDraft.model_validate_json(text_of(message))
        assert 40 <= len(plan.microtasks) <= 50
    small = await client.messages.create(
        model=OPUS,
        max_tokens=4000,
        messages=ask(plan_prompt(50)),
        output_config=json_format(PlanDraft, effort="high"),
    )
    assert small.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(small))
    partial = pydantic_core.from_json(text_of(small), allow_partial=True)["microtasks"]
    complete = [MicrotaskDraft.model_validate(item) for item in partial[:-1]]
    assert len(complete) >= 5
    assert [task.id for task in complete] == [task.id for task in plan.microtasks][: len(complete)]
    log = sim.recent_requests()
    assert [entry["purpose"] for entry in log] == ["plan"] * 3
    assert [entry["stop_reason"] for entry in log] == ["end_turn", "end_turn", "max_tokens"]


# --- refusals --------------------------------------------------------------------------------


async def test_refusal_marker_and_knob(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(
        model=SONNET,
        max_tokens=4000,
        messages=ask(agent_prompt(extra=" [sim-refuse]")),
        **forced(AgentOutput),
    )
    assert message.stop_reason == "refusal"
    assert message.stop_details is not None and message.stop_details.type == "refusal"
    assert [block.type for block in message.content] in (["thinking"], [])
    assert 0 < message.usage.output_tokens <= 50
    sim.reconfigure(rate_refusal=1.0)
    plain = await client.messages.create(model=HAIKU, max_tokens=2000, messages=ask(REQUEST))
    assert plain.stop_reason == "refusal" and text_of(plain) == ""
    assert sim.stats()["stop_reasons"] == {"refusal": 2}


# --- sizes and the project's schemas --------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "low", "high"),
    [("research", 250, 450), ("analysis", 400, 700), ("validation", 250, 400)],
)
async def test_microtask_results_are_several_hundred_tokens(
    client: anthropic.AsyncAnthropic, role: str, low: int, high: int
) -> None:
    message = await client.messages.parse(
        model=HAIKU, max_tokens=4096, messages=ask(agent_prompt(role)), output_format=AgentOutput
    )
    assert message.parsed_output is not None and message.stop_reason == "end_turn"
    content = message.parsed_output.content
    assert content.startswith("[simulated] Weigh the risks of replication")
    assert low * 0.9 <= estimate_tokens(content) <= high


async def test_synthesis_is_long_and_sectioned(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    results = "".join(
        f'<result id="{i}" role="{role}" confidence="0.80">\n[simulated] Point {i}. More.\n'
        "</result>\n"
        for i, role in [("r1", "research"), ("a1", "analysis"), ("v1", "validation")]
    )
    prompt = f"<request>\n{REQUEST}\n</request>\n<results>\n{results}</results>\nAnswer."
    message = await client.messages.create(
        model=OPUS, max_tokens=32_000, messages=ask(prompt), output_config={"effort": "high"}
    )
    text = text_of(message)
    assert message.stop_reason == "end_turn" and 2000 <= estimate_tokens(text) <= 3500
    assert text.startswith("[simulated] Simulated synthesis: ")
    for heading in ("Findings (1 parts):", "Analysis (1 parts):", "Checks (1 parts):"):
        assert heading in text
    entry = sim.recent_requests()[-1]
    assert entry["purpose"] == "synthesis" and entry["thinking_tokens"] > 1000


async def test_reconciliation_schema_is_answered_from_the_claims(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    claims = (
        '<claim id="c1" topic="replication cost">Replication costs less.</claim>\n'
        '<claim id="c2" topic="cost of replication">Replication costs less.</claim>\n'
    )
    message = await client.messages.parse(
        model=SONNET, max_tokens=8192, messages=ask(claims), output_format=Reconciliation
    )
    assert message.parsed_output is not None and message.parsed_output.groups
    ids = {i for g in message.parsed_output.groups for p in g.positions for i in p.claim_ids}
    assert ids == {"c1", "c2"}
    assert sim.recent_requests()[-1]["purpose"] == "reconcile"


async def test_every_log_entry_has_the_fields(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    await client.messages.create(model=HAIKU, max_tokens=2000, messages=ask(REQUEST))
    entry = sim.recent_requests()[-1]
    # A bare SDK call names no microtask, sends no call id and follows up on no conversation.
    unnamed = {name for name in LOG_FIELDS if entry[name] is None}
    assert unnamed == {"microtask", "call_id", "conversation"}
    assert entry["max_tokens"] == 2000 and entry["purpose"] == "text"


# --- latency -----------------------------------------------------------------------------------


async def delays(config: SimulatorSettings, *texts: str) -> list[dict[str, Any]]:
    """The log entries of ``texts`` asked one by one of a fresh simulator."""
    with SimulatorServer(config) as server:
        client = anthropic.AsyncAnthropic(api_key="sim", base_url=server.url, max_retries=0)
        for text in texts:
            await client.messages.create(
                model=HAIKU, max_tokens=8000, messages=ask(text), thinking={"type": "disabled"}
            )
        await client.close()
        return server.recent_requests()


async def test_realistic_latency_grows_with_output_and_time_scale() -> None:
    short, long = "Explain [sim-output-tokens 50]", "Explain [sim-output-tokens 5000]"
    small, large = await delays(SimulatorSettings(time_scale=0.01), short, long)
    assert large["output_tokens"] > 50 * small["output_tokens"]
    assert large["delay_s"] > 3 * small["delay_s"]  # generous: the spread is lognormal
    for entry in (small, large):
        assert entry["latency_s"] >= entry["delay_s"] > 0
    [twice] = await delays(SimulatorSettings(time_scale=0.02), short)  # same seed, same draw
    assert twice["delay_s"] == pytest.approx(2 * small["delay_s"], rel=1e-3)


async def test_latency_marker_is_literal_seconds() -> None:
    [entry] = await delays(SimulatorSettings(time_scale=0.1), "hi [sim-latency 0.3]")
    assert entry["delay_s"] == 0.3 and entry["latency_s"] >= 0.3
