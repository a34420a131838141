"""The simulator's streamed answers, read with the real SDK's stream helpers over loopback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pydantic_core
import pytest

from actors.models import PlanDraft
from actors.sim.simulator import SimulatorServer

MODEL = "claude-sonnet-5-5"  # thinks by default and takes forced tools
PLAN = "<request>\nAudit every service\n</request>\n\nPlan at most 40 microtasks."
PLAN_FORMAT = {"format": {"type": "json_schema", "schema": PlanDraft.model_json_schema()}}
PLAN_TOOL: dict[str, Any] = {
    "tools": [{"name": "plan", "input_schema": PlanDraft.model_json_schema()}],
    "tool_choice": {"type": "tool", "name": "plan"},
}


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def streamed(
    client: anthropic.AsyncAnthropic, **request: Any
) -> tuple[list[Any], anthropic.types.Message]:
    """Every event of a streamed request, and the SDK's final message."""
    async with client.messages.stream(model=MODEL, **request) as stream:
        events = [event async for event in stream]
        return events, await stream.get_final_message()


def deltas(events: list[Any], kind: str) -> str:
    """The concatenated deltas of one kind (``text`` or ``partial_json``)."""
    return "".join(
        getattr(event.delta, kind)
        for event in events
        if event.type == "content_block_delta" and hasattr(event.delta, kind)
    )


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def tool_input(message: anthropic.types.Message) -> Any:
    return next(block.input for block in message.content if block.type == "tool_use")


async def test_a_streamed_text_is_the_plain_answer_in_order(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    request: dict[str, Any] = {"max_tokens": 4000, "messages": ask("Explain the tides")}
    plain = await client.messages.create(model=MODEL, **request)
    events, final = await streamed(client, **request)

    names = [event.type for event in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names[1] == "content_block_start"  # (the SDK skips pings: see the raw test)
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.output_tokens == 1
    deltas_of_text = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas_of_text) > 10 and deltas(events, "text") == text_of(plain)
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature  # type: ignore[union-attr]
    assert text_of(final) == text_of(plain)
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.stop_reason == plain.stop_reason == "end_turn"

    first, second = sim.recent_requests()
    assert (first["stream"], second["stream"]) == (False, True)
    assert second["status"] == 200 and 0 <= second["first_token_s"] <= second["latency_s"]


async def test_the_raw_stream_is_server_sent_events(sim: SimulatorServer) -> None:
    body = {"model": MODEL, "max_tokens": 300, "messages": ask("Hi"), "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/v1/messages", json=body, headers={"x-api-key": "k"}) as response,
    ):
        raw = await response.text()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-simulated"] == "true" and response.headers["request-id"]
    frames = [frame.splitlines() for frame in raw.strip().split("\n\n")]
    for name, data in frames:  # each frame: "event: X" then "data: {... "type": X ...}"
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "event: ping" in raw


async def test_a_streamed_json_schema_answer_is_the_plain_json(
    client: anthropic.AsyncAnthropic,
) -> None:
    request = {"max_tokens": 16000, "messages": ask(PLAN), "output_config": PLAN_FORMAT}
    plain = await client.messages.create(model=MODEL, **request)
    events, final = await streamed(client, **request)
    assert deltas(events, "text") == text_of(plain) == text_of(final)
    assert PlanDraft.model_validate_json(text_of(final)).microtasks


async def test_a_forced_tool_streams_its_input_as_json_deltas(
    client: anthropic.AsyncAnthropic,
) -> None:
    request = {"max_tokens": 16000, "messages": ask(PLAN), **PLAN_TOOL}
    plain = await client.messages.create(model=MODEL, **request)
    events, final = await streamed(client, **request)
    assert json.loads(deltas(events, "partial_json")) == tool_input(plain) == tool_input(final)
    assert final.stop_reason == "tool_use"


async def test_a_cut_stream_stops_at_max_tokens_mid_value(
    client: anthropic.AsyncAnthropic,
) -> None:
    request = {"max_tokens": 3000, "messages": ask(PLAN), "output_config": PLAN_FORMAT}
    plain = await client.messages.create(model=MODEL, **request)
    events, final = await streamed(client, **request)
    cut = deltas(events, "text")
    assert cut == text_of(plain) and plain.stop_reason == final.stop_reason == "max_tokens"
    with pytest.raises(ValueError):
        json.loads(cut)  # cut mid-value, as the plain answer is
    (delta,) = [event for event in events if event.type == "message_delta"]
    assert delta.usage.output_tokens == plain.usage.output_tokens == final.usage.output_tokens

    tool_request = {"max_tokens": 3000, "messages": ask(PLAN), **PLAN_TOOL}
    plain = await client.messages.create(model=MODEL, **tool_request)
    events, final = await streamed(client, **tool_request)
    partial = deltas(events, "partial_json")
    assert final.stop_reason == "max_tokens"
    with pytest.raises(ValueError):
        json.loads(partial)
    # The plain answer's input is what was complete of the very text the stream sent.
    assert pydantic_core.from_json(partial, allow_partial=True) == tool_input(plain)


async def test_first_token_comes_after_the_thinking(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    # 0.4 s spread over the stream: the thinking tokens come first, before any text delta.
    request = {"max_tokens": 2000, "messages": ask("Explain the tides [sim-latency 0.4]")}
    await streamed(client, **request)
    (entry,) = sim.recent_requests()
    share = entry["thinking_tokens"] / entry["output_tokens"]
    assert entry["stream"] and entry["status"] == 200 and entry["delay_s"] == 0.4
    assert entry["first_token_s"] >= 0.4 * share  # thinking took its share before the text
    assert entry["first_token_s"] < entry["latency_s"]


async def test_429s_stay_http_errors_and_a_mid_stream_error_ends_the_stream(
    sim: SimulatorServer, client: anthropic.AsyncAnthropic
) -> None:
    sim.reconfigure(rate_429=1.0)
    with pytest.raises(anthropic.RateLimitError):
        await streamed(client, max_tokens=2000, messages=ask("Hello"))
    sim.reconfigure(rate_429=0.0, rate_stream_error=1.0)
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(
            model=MODEL, max_tokens=2000, messages=ask("Explain the tides")
        ) as stream:
            async for event in stream:
                seen.append(event.type)
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert "text" in seen and "message_stop" not in seen  # halfway through the answer
    assert [entry["status"] for entry in sim.recent_requests()] == [429, 529]


async def test_a_non_boolean_stream_is_refused(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="stream"):
        await client.messages.create(
            model=MODEL, max_tokens=20, messages=ask("hi"), extra_body={"stream": "yes"}
        )
