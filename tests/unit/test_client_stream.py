"""LLMClient's streamed calls through the real SDK against the real simulator (no Ray)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from actors.config import Purpose, Settings, SimulatorSettings
from actors.errors import ConfigurationError, ProviderTimeoutError
from actors.llm import LLMClient, Outcome, RateLimiter, ledger
from actors.llm.streaming import ItemFeed
from actors.models import MicrotaskDraft, PlanDraft
from actors.sim.simulator import SimulatorServer
from tests.unit.test_client import RecordingLimiter, limiter_settings

PLAN = "<request>\nAudit every service\n</request>\n\nPlan at most 30 microtasks."


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=4)) as server:
        yield server


def client_for(
    sim: SimulatorServer,
    tmp_path: Path,
    limiter: RateLimiter | None = None,
    structured_mode: str = "json_schema",
) -> LLMClient:
    settings = Settings(home=tmp_path, limiter=limiter.settings if limiter else limiter_settings())
    return LLMClient(settings, limiter=limiter, base_url=sim.url, structured_mode=structured_mode)


class Items:
    """What ``on_item`` received, and how many requests the simulator had ended by then."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.seen: list[tuple[int, BaseModel]] = []
        self.ended_before: list[int] = []

    async def __call__(self, index: int, item: BaseModel) -> None:
        self.seen.append((index, item))
        self.ended_before.append(len(self.sim.recent_requests()))


async def test_stream_text_grows_the_answer_and_costs_what_complete_costs(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    client = client_for(sim, tmp_path)
    texts: list[str] = []

    async def on_text(text: str) -> None:
        texts.append(text)

    streamed = await client.stream_text(
        Purpose.SYNTHESIS, "Write.", "Explain the tides.", on_text=on_text
    )
    plain = await client.complete(Purpose.SYNTHESIS, "Write.", "Explain the tides.")
    await client.close()
    assert len(texts) > 10 and texts[-1] == streamed.text == plain.text
    assert all(a == b[: len(a)] and len(a) < len(b) for a, b in itertools.pairwise(texts))
    assert streamed.usage == plain.usage and streamed.usage.cost_usd > 0
    assert streamed.simulated and streamed.model == plain.model
    assert streamed.stop_reason == "end_turn"
    assert streamed.first_token_s is not None and plain.first_token_s is None
    assert [entry["stream"] for entry in sim.recent_requests()] == [True, False]


@pytest.mark.parametrize("mode", ["json_schema", "tool"])
async def test_stream_structured_delivers_each_microtask_before_the_stream_ends(
    sim: SimulatorServer, tmp_path: Path, mode: str
) -> None:
    # The marker spreads 0.5 s over the stream: the first items are out long before its end.
    client = client_for(sim, tmp_path, structured_mode=mode)
    items = Items(sim)
    plan = await client.stream_structured(
        Purpose.ANALYSIS, "Plan.", PLAN + " [sim-latency 0.5]", PlanDraft,
        items="microtasks", on_item=items,
    )  # fmt: skip
    await client.close()
    (entry,) = sim.recent_requests()
    assert entry["kind"] == mode and entry["status"] == 200
    assert items.ended_before[0] == 0  # the simulator had not yet logged the request's end
    assert [index for index, _ in items.seen] == list(range(len(plan.value.microtasks)))
    assert [item for _, item in items.seen] == plan.value.microtasks
    assert len(plan.value.microtasks) >= 3 and not plan.cut
    assert plan.first_token_s is not None and plan.usage.requests == 1


async def test_a_cut_plan_stream_keeps_its_complete_items(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    client = client_for(sim, tmp_path)
    items = Items(sim)
    plan = await client.stream_structured(
        Purpose.PLANNING, "Plan.", PLAN, PlanDraft, items="microtasks", on_item=items,
        max_tokens=4000, partial=True,
    )  # fmt: skip
    await client.close()
    assert plan.cut and plan.usage.requests == 1
    assert 3 <= len(plan.value.microtasks) < 30
    assert [item for _, item in items.seen] == plan.value.microtasks


async def test_a_mid_stream_error_is_retried_from_the_first_item(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    sim.reconfigure(rate_stream_error=1.0)

    def heal(releases: list[tuple[Outcome, float]]) -> None:
        sim.reconfigure(rate_stream_error=0.0)

    limiter = RecordingLimiter(limiter_settings(), on_release=heal)
    client = client_for(sim, tmp_path, limiter)
    items = Items(sim)
    with ledger.attributed("task-s"):
        plan = await client.stream_structured(
            Purpose.PLANNING, "Plan.", PLAN, PlanDraft, items="microtasks", on_item=items
        )
    await client.close()
    assert [outcome for outcome, _ in limiter.releases] == [Outcome.OVERLOADED, Outcome.OK]
    assert [entry["status"] for entry in sim.recent_requests()] == [529, 200]
    indices = [index for index, _ in items.seen]
    restart = indices.index(0, 1)  # the second attempt delivers from index 0 again
    assert restart > 0 and indices[restart:] == list(range(len(plan.value.microtasks)))
    assert plan.usage.requests == 1  # the broken stream was not paid for
    folder = tmp_path / "ledger"
    assert sorted(call.state for call in ledger.read(folder, ["task-s"]).calls) == [
        "paid",
        "refused",
    ]


async def test_a_streamed_call_is_paid_in_the_ledger(sim: SimulatorServer, tmp_path: Path) -> None:
    client = client_for(sim, tmp_path)
    with ledger.attributed("task-t", "m1"):
        answer = await client.stream_text(Purpose.RESEARCH, "Be brief.", "Hello?", on_text=_nothing)
    await client.close()
    (call,) = ledger.read(tmp_path / "ledger", ["task-t"]).calls
    assert call.state == "paid" and call.usage == answer.usage and call.microtask_id == "m1"
    assert sim.recent_requests()[0]["call_id"] == call.call_id


async def test_a_hung_stream_times_out_by_the_deadline(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    sim.reconfigure(rate_hang=1.0, hang_s=30)
    client = client_for(sim, tmp_path, RateLimiter(limiter_settings(max_attempts=2)))
    with ledger.attributed("task-h"), pytest.raises(ProviderTimeoutError) as caught:
        await client.stream_text(
            Purpose.RESEARCH, "Be brief.", "Hello?", on_text=_nothing, timeout_s=0.3
        )
    await client.close()
    assert caught.value.attempts == 2 and "0.3 s" in str(caught.value)
    calls = ledger.read(tmp_path / "ledger", ["task-h"]).calls
    assert [call.state for call in calls] == ["unknown", "unknown"]


async def test_a_trickling_stream_ends_at_the_deadline(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    # 20 s spread over ~1,000 tokens: a delta every few hundredths of a second keeps every
    # read well inside the SDK's timeout, so only the attempt's own deadline can end it.
    settings = Settings(
        home=tmp_path,
        limiter=limiter_settings(max_attempts=1),
        models={Purpose.RESEARCH: "claude-haiku-4-5"},  # no thinking: text from the start
    )
    client = LLMClient(settings, base_url=sim.url)
    texts: list[str] = []

    async def on_text(text: str) -> None:
        texts.append(text)

    prompt = "Explain the tides [sim-output-tokens 1000] [sim-latency 20]"
    with pytest.raises(ProviderTimeoutError):
        await client.stream_text(Purpose.RESEARCH, "Write.", prompt, on_text=on_text, timeout_s=2)
    await client.close()
    assert texts  # text was arriving when the deadline came
    await _wait_logged(sim)
    (entry,) = sim.recent_requests()
    assert entry["status"] == 499 and entry["first_token_s"] is not None


async def test_items_must_name_a_list_of_models(sim: SimulatorServer, tmp_path: Path) -> None:
    client = client_for(sim, tmp_path)
    with pytest.raises(ConfigurationError, match=r"PlanDraft\.steps"):
        await client.stream_structured(
            Purpose.PLANNING, "Plan.", PLAN, PlanDraft, items="steps", on_item=Items(sim)
        )
    await client.close()
    assert sim.stats()["requests"] == 0


async def test_the_feed_skips_an_invalid_element_and_waits_for_each_to_close() -> None:
    seen: list[tuple[int, str]] = []

    async def on_item(index: int, item: BaseModel) -> None:
        assert isinstance(item, MicrotaskDraft)
        seen.append((index, item.id))

    good = {"id": "a", "role": "research", "title": "t", "instructions": "i"}
    text = json.dumps({"microtasks": [good, {"id": "b"}, {**good, "id": "c"}]})
    feed = ItemFeed(MicrotaskDraft, "microtasks", on_item)
    delivered_at: list[int] = []
    for end in range(1, len(text) + 1):
        before = len(seen)
        await feed.update(text[:end])
        delivered_at += [end] * (len(seen) - before)
    assert seen == [(0, "a"), (2, "c")]  # "b" fails validation: skipped, its index kept
    assert text[delivered_at[0] - 1] == "{"  # "a" went out once the next element began
    assert delivered_at[1] == len(text)  # "c", the last, once the list was closed


async def _nothing(text: str) -> None:
    pass


async def _wait_logged(sim: SimulatorServer) -> None:
    """Wait (bounded) until the simulator noticed the client leaving and logged it."""
    for _ in range(200):
        if sim.recent_requests():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the request was never logged")
