"""The embedded simulator through the real anthropic SDK over loopback (no Ray)."""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import json
import random
import re
from datetime import datetime
from typing import Any

import aiohttp
import anthropic
import jsonschema
import pydantic
import pytest
from anthropic.lib._parse._transform import transform_schema

from actors.config import SimulatorSettings
from actors.engine.complexity import assess
from actors.llm.json_instance import break_instance, build_instance
from actors.models import AgentOutput, ComplexityAssessment, PlanDraft
from actors.sim import fake_claims
from actors.sim.simulator import SimulatorServer

MODEL = "claude-haiku-5-5"
REQUEST = "Compare Postgres and MySQL replication for a fintech startup, including costs and risks"


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def agent_prompt(title: str, microtask: str = "a1") -> str:
    return f"<request>\n{REQUEST}\n</request>\n\nYour microtask ({microtask}, analysis): {title}"


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers or {}) as response,
    ):
        return response.status, await response.json()


def text_of(message: anthropic.types.Message) -> str:
    """The answer's text, picked by block type (a thinking block may come first)."""
    return "".join(block.text for block in message.content if block.type == "text")


def tool_use(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    return next(block for block in message.content if block.type == "tool_use")


async def wait_idle(sim: SimulatorServer) -> None:
    """Wait (bounded) until the server has no request in flight."""
    for _ in range(200):
        if sim.stats()["in_flight"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("requests still in flight")


# --- answers -----------------------------------------------------------------------------


async def test_text_answer_is_marked_simulated(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=2000, messages=ask("Explain Ray actor scheduling")
    )
    message = await raw.parse()
    assert raw.headers["x-simulated"] == "true"
    assert raw.headers["request-id"]
    assert message.id.startswith("msg_sim_")
    assert message.model == MODEL and message.role == "assistant"
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert text_of(message).startswith("[simulated] ")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_text_answer_respects_max_tokens(client: anthropic.AsyncAnthropic) -> None:
    # Thinking alone reaches the limit: nothing visible is left.
    message = await client.messages.create(
        model=MODEL, max_tokens=5, messages=ask("Explain Ray actor scheduling")
    )
    assert [block.type for block in message.content] == ["thinking"]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    # Without thinking the text itself is cut.
    message = await client.messages.create(
        model=MODEL,
        max_tokens=5,
        messages=ask("Explain Ray actor scheduling"),
        thinking={"type": "disabled"},
    )
    assert [block.type for block in message.content] == ["text"]
    assert len(text_of(message)) <= 20
    assert message.stop_reason == "max_tokens"


async def test_forced_tool_answer_parses_as_agent_output(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=4000,
        messages=ask(agent_prompt("Analyse the risks of replication")),
        tools=[{"name": "answer", "input_schema": AgentOutput.model_json_schema()}],
        tool_choice={"type": "tool", "name": "answer"},
    )
    block = tool_use(message)
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "thinking" and block.name == "answer"
    assert block.id.startswith("toolu_sim_")
    output = AgentOutput.model_validate(block.input)
    assert output.content.startswith("[simulated] Analyse the risks of replication")
    assert 1 <= len(output.claims) <= 3
    assert 0.5 <= output.confidence <= 0.95


@pytest.mark.parametrize("limit", [1, 3, 4, 8, 27, 100])
async def test_plan_is_a_valid_dag_within_the_limit(
    client: anthropic.AsyncAnthropic, limit: int
) -> None:
    prompt = (
        f"<request>\n{REQUEST}\n</request>\n\nComplexity: medium. Plan at most {limit} microtasks"
    )
    message = await client.messages.parse(
        model=MODEL,
        max_tokens=8192 + 150 * limit,
        messages=ask(prompt),
        output_format=PlanDraft,
        timeout=60,  # the SDK wants streaming above ~21k max_tokens unless a timeout is given
    )
    assert message.stop_reason == "end_turn"
    plan = message.parsed_output
    assert plan is not None
    ids = [task.id for task in plan.microtasks]
    assert 0.8 * limit <= len(ids) <= limit and len(set(ids)) == len(ids)
    graph = {task.id: set(task.depends_on) for task in plan.microtasks}
    assert all(deps <= set(ids) for deps in graph.values())
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    final = plan.microtasks[-1]
    assert order[-1] == final.id and final.role == "generation" and final.critical
    assert any(
        word in final.title.lower() for word in ("postgres", "mysql", "replication", "fintech")
    )
    if limit >= 4:
        roles = {task.role for task in plan.microtasks}
        assert roles == {"research", "analysis", "validation", "generation"}
        critical = [task.priority for task in plan.microtasks if task.critical]
        others = [task.priority for task in plan.microtasks if not task.critical]
        assert min(critical) > max(others, default=0)


async def test_complexity_assessment_uses_the_heuristic(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.parse(
        model=MODEL,
        max_tokens=500,
        messages=ask(f"<request>\n{REQUEST}\n</request>"),
        output_format=ComplexityAssessment,
    )
    assert message.parsed_output == assess(REQUEST)


async def test_same_request_gets_the_same_content(client: anthropic.AsyncAnthropic) -> None:
    async def once() -> tuple[str, object]:
        text = await client.messages.create(model=MODEL, max_tokens=2000, messages=ask(REQUEST))
        tool = await client.messages.create(
            model=MODEL,
            max_tokens=4000,
            messages=ask(agent_prompt("Check the costs")),
            tools=[{"name": "answer", "input_schema": AgentOutput.model_json_schema()}],
            tool_choice={"type": "tool", "name": "answer"},
        )
        assert text.stop_reason == "end_turn" and tool.stop_reason == "tool_use"
        return text_of(text), tool_use(tool).input

    assert await once() == await once()


async def test_agents_sometimes_disagree_on_a_topic(client: anthropic.AsyncAnthropic) -> None:
    sides: dict[str, set[int]] = {}  # finding -> the sides agents stated
    for i in range(16):
        message = await client.messages.create(
            model=MODEL,
            max_tokens=4000,
            messages=ask(agent_prompt(f"Analyse aspect {i}", f"a{i + 1}")),
            tools=[{"name": "answer", "input_schema": AgentOutput.model_json_schema()}],
            tool_choice={"type": "tool", "name": "answer"},
        )
        for claim in AgentOutput.model_validate(tool_use(message).input).claims:
            known = fake_claims.identify(claim.statement)
            assert known is not None  # every claim is a wording of a known finding
            sides.setdefault(known[0].id, set()).add(known[1])
    assert any(len(said) > 1 for said in sides.values())


async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    short = await client.messages.count_tokens(model=MODEL, messages=ask("x" * 40))
    long = await client.messages.count_tokens(model=MODEL, messages=ask("x" * 4000))
    assert short.input_tokens == 10 and long.input_tokens == 1000


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 5, "maximum": 7},
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 4, "maxItems": 5},
            "name": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
            "kind": {"const": "fixed"},
            "id": {"type": "string", "format": "uuid"},
            "node": {"$ref": "#/$defs/Node"},
            "step": {"type": "integer", "multipleOf": 7, "minimum": 10},
        },
        "required": ["n", "x", "tags", "name", "kind", "id", "node", "step"],
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "ok": {"type": "boolean"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["ok", "next"],
            }
        },
    },
    {"type": "array", "items": {"type": "string", "minLength": 30}, "minItems": 2},
    {"oneOf": [{"type": "integer", "minimum": 100}, {"type": "string"}]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_instances_are_valid_also_after_the_sdk_transform(schema: dict[str, Any]) -> None:
    for seed in range(25):
        jsonschema.validate(build_instance(schema, random.Random(seed)), schema)
    if schema.get("type") == "object":  # the SDK only transforms object roots
        jsonschema.validate(build_instance(transform_schema(schema), random.Random(1)), schema)
        broken = break_instance(build_instance(schema, random.Random(2)), schema)
        assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


async def test_json_schema_output_config_gets_a_valid_instance(
    client: anthropic.AsyncAnthropic,
) -> None:
    schema = SCHEMAS[0]
    message = await client.messages.create(
        model=MODEL,
        max_tokens=2000,
        messages=ask("Fill the form"),
        output_config={"format": {"type": "json_schema", "schema": transform_schema(schema)}},
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(text_of(message)), schema)


# --- faults and limits ---------------------------------------------------------------------


async def test_429_carries_retry_after(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    sim.reconfigure(rate_429=1.0, retry_after_s=2.5)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model=MODEL, max_tokens=50, messages=ask("hi"))
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "3"
    assert error.response.headers["retry-after-ms"] == "2500"
    assert isinstance(error.body, dict) and error.body["error"]["type"] == "rate_limit_error"
    assert error.request_id and error.request_id.startswith("req_sim_")


async def test_529_is_overloaded(sim: SimulatorServer, client: anthropic.AsyncAnthropic) -> None:
    sim.reconfigure(rate_529=1.0)
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(model=MODEL, max_tokens=50, messages=ask("hi"))
    assert caught.value.status_code == 529
    assert isinstance(caught.value, anthropic.OverloadedError)


async def test_reconfigure_at_runtime(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    sim.reconfigure(rate_500=1.0)
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(model=MODEL, max_tokens=50, messages=ask("hi"))
    status, config = await post(f"{sim.url}/config", {"rate_500": 0.0})
    assert status == 200 and config["rate_500"] == 0.0
    await client.messages.create(model=MODEL, max_tokens=50, messages=ask("hi"))
    status, body = await post(f"{sim.url}/config", {"rate_500": 2.0})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert sim.stats()["status_counts"] == {"500": 1, "200": 1}
    with pytest.raises(ValueError, match="unknown simulator settings"):
        sim.reconfigure(rate_999=1.0)


async def test_latency_is_applied(sim: SimulatorServer, client: anthropic.AsyncAnthropic) -> None:
    sim.reconfigure(latency="fixed", median_s=0.1, per_output_token_s=0.001, time_scale=1.0)
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=ask("hi"))
    floor = 0.1 + 0.001 * message.usage.output_tokens
    entry = sim.recent_requests()[-1]
    assert entry["delay_s"] == pytest.approx(floor) and entry["latency_s"] >= floor
    sim.reconfigure(time_scale=0.5)  # scales every mode's delay
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=ask("hi"))
    half = 0.5 * (0.1 + 0.001 * message.usage.output_tokens)
    assert sim.recent_requests()[-1]["delay_s"] == pytest.approx(half)


async def test_fault_sequence_is_reproducible_for_a_seed() -> None:
    async def statuses() -> list[int]:
        config = SimulatorSettings(latency="zero", seed=7, rate_429=0.3, rate_529=0.2)
        with SimulatorServer(config) as server:
            client = anthropic.AsyncAnthropic(api_key="sim", base_url=server.url, max_retries=0)
            for i in range(20):
                with contextlib.suppress(anthropic.APIStatusError):
                    await client.messages.create(model=MODEL, max_tokens=20, messages=ask(f"q{i}"))
            await client.close()
            return [entry["status"] for entry in server.recent_requests()]

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 529} <= set(first)


async def test_concurrency_limit_rejects_the_excess(sim: SimulatorServer) -> None:
    # Admitted requests take 30 s, so exactly two stay in flight however slow the machine is.
    sim.reconfigure(concurrency_limit=2, latency="fixed", median_s=30.0)
    client = anthropic.AsyncAnthropic(api_key="sim", base_url=sim.url, max_retries=0)
    tasks = [
        asyncio.create_task(client.messages.create(model=MODEL, max_tokens=20, messages=ask("q")))
        for _ in range(5)
    ]
    done: set[asyncio.Task[Any]] = set()
    while len(done) < 3:
        finished, _ = await asyncio.wait(set(tasks) - done, return_when=asyncio.FIRST_COMPLETED)
        done |= finished
    for task in done:
        with pytest.raises(anthropic.RateLimitError) as caught:
            task.result()
        headers = caught.value.response.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert float(headers["retry-after-ms"]) >= 0
    stats = sim.stats()
    assert stats["peak_concurrency"] == 2 and stats["in_flight"] == 2
    for task in set(tasks) - done:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await wait_idle(sim)  # the server noticed the clients leaving and freed the slots
    assert sim.stats()["status_counts"]["429"] == 3


async def test_rpm_limit_headers(sim: SimulatorServer, client: anthropic.AsyncAnthropic) -> None:
    sim.reconfigure(rpm_limit=2)
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=20, messages=ask("a")
    )
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "1"
    reset = raw.headers["anthropic-ratelimit-requests-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    datetime.fromisoformat(reset)
    await client.messages.create(model=MODEL, max_tokens=20, messages=ask("b"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model=MODEL, max_tokens=20, messages=ask("c"))
    assert 0 < int(caught.value.response.headers["retry-after"]) <= 60


async def test_hang_is_cut_by_the_client_timeout(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_hang=1.0, hang_s=60.0)
    client = anthropic.AsyncAnthropic(api_key="sim", base_url=sim.url, max_retries=0, timeout=0.5)
    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"))
    await client.close()
    await wait_idle(sim)
    assert sim.recent_requests()[-1]["status"] == 499


async def test_malformed_answers_fail_validation(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    sim.reconfigure(rate_malformed=1.0)
    with pytest.raises(pydantic.ValidationError):
        await client.messages.parse(
            model=MODEL, max_tokens=4000, messages=ask(agent_prompt("x")), output_format=AgentOutput
        )
    message = await client.messages.create(
        model=MODEL,
        max_tokens=8000,
        messages=ask(agent_prompt("x")),
        tools=[{"name": "answer", "input_schema": PlanDraft.model_json_schema()}],
        tool_choice={"type": "tool", "name": "answer"},
    )
    assert message.stop_reason == "tool_use"  # whole, but wrong
    with pytest.raises(pydantic.ValidationError):
        PlanDraft.model_validate(tool_use(message).input)
    assert {entry["stop_reason"] for entry in sim.recent_requests()} == {"end_turn", "tool_use"}


# --- protocol --------------------------------------------------------------------------------


async def test_missing_auth_is_401(sim: SimulatorServer) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": ask("hi")}
    status, error = await post(f"{sim.url}/v1/messages", body)
    assert status == 401
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    assert error["request_id"].startswith("req_sim_")
    status, _ = await post(f"{sim.url}/v1/messages", body, {"x-api-key": "k"})
    assert status == 200
    status, _ = await post(f"{sim.url}/v1/messages", body, {"Authorization": "Bearer k"})
    assert status == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": MODEL, "messages": ask("hi")}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 10, "messages": []}, "at least one message"),
        ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 10, "messages": ask("")}, "non-empty content"),
        (
            {
                "model": MODEL,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}],
            },
            "text content blocks must be non-empty",
        ),
    ],
)
async def test_invalid_requests_are_400(
    sim: SimulatorServer, body: dict[str, Any], fragment: str
) -> None:
    status, error = await post(f"{sim.url}/v1/messages", body, {"x-api-key": "k"})
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]


async def test_stats_request_log_and_reset(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    for text in ("one", "two", "one"):
        await client.messages.create(model=MODEL, max_tokens=20, messages=ask(text))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.url}/requests?limit=2") as response:
            log = (await response.json())["requests"]
        async with session.get(f"{sim.url}/stats") as response:
            stats = await response.json()
        async with session.get(f"{sim.url}/health") as response:
            assert response.status == 200 and response.headers["x-simulated"] == "true"
    assert [entry["seq"] for entry in log] == [2, 3]
    assert log[1]["kind"] == "text" and log[1]["model"] == MODEL and log[1]["status"] == 200
    assert log[1]["purpose"] == "text" and log[1]["max_tokens"] == 20
    assert log[1]["effort"] == "medium" and log[1]["stop_reason"] == "max_tokens"
    assert 0 < log[1]["thinking_tokens"] <= log[1]["output_tokens"] == 20
    assert sim.recent_requests()[0]["prompt_sha"] == log[1]["prompt_sha"]
    assert stats["requests"] == 3 and stats["status_counts"] == {"200": 3}
    assert stats["kinds"] == {"text": 3} and stats["output_tokens"] > 0
    assert stats["stop_reasons"] == {"max_tokens": 3} and stats["purposes"] == {"text": 3}
    status, _ = await post(f"{sim.url}/stats/reset", {})
    assert status == 200
    assert sim.stats()["requests"] == 0 and sim.recent_requests() == []


@pytest.mark.parametrize(
    ("text", "greeting"),
    [
        ("hi", True),
        ("Good afternoon, bot", True),  # the simulator's rule alone once said yes
        ("thanks!", True),  # the heuristic's rule alone once said yes
        ("Hello, compare PostgreSQL and MySQL for a write-heavy workload", False),
    ],
)
def test_the_simulator_greets_exactly_what_the_heuristic_calls_a_greeting(text, greeting):
    from actors.sim import fake_text
    from actors.sim.fake_request import Markers, Prompt

    reply = fake_text.plain_answer(Prompt(0, "", text, "", 1024, Markers()), random.Random(0))
    assert (reply == fake_text.SIMULATED_PREFIX + fake_text.GREETING_REPLY) is greeting
    if greeting:
        assert assess(text).reason == "greeting or very short"
    else:
        assert assess(text).reason != "greeting or very short"
