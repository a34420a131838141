"""Prompt caching: where the client puts breakpoints, and the simulator's accounting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.config import Purpose, Settings, SimulatorSettings
from actors.llm import LLMClient
from actors.llm.pricing import cache_saving_usd, cost_usd
from actors.llm.prompt_parts import Part, content_blocks
from actors.sim.fake_cache import PromptCache
from actors.sim.simulator import SimulatorServer

LONG = "The payments API accepts card tokens and returns receipts. " * 300  # ~4,500 tokens


def _marked(blocks: list[dict]) -> list[bool]:
    return ["cache_control" in block for block in blocks]


def test_breakpoints_go_only_on_shared_prefixes_long_enough_for_the_model():
    parts = [Part("r" * 4000, shared=True), Part("c" * 400, shared=False), Part("own")]
    assert _marked(content_blocks("system", parts, 512)) == [True, False, False]
    assert _marked(content_blocks("system", parts, 4096)) == [False, False, False]  # too short
    assert _marked(content_blocks("system", parts, None)) == [False, False, False]  # off
    many = [Part("x" * 4000, shared=True) for _ in range(6)] + [Part("own")]
    assert _marked(content_blocks("", many, 512)) == [False, False, True, True, True, True, False]


def _body(*blocks: dict, model: str = "claude-opus-5-5") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": list(blocks)}]}


def _shared(text: str, ttl: str | None = None) -> dict:
    marker = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return {"type": "text", "text": text, "cache_control": marker}


def test_calls_sent_together_all_write_and_later_ones_read():
    cache = PromptCache()
    body = _body(_shared("d" * 8000), {"type": "text", "text": "question one"})
    first = cache.account(body, 2003, now=0.0, begins_in=1.0, time_scale=1.0)
    twin = cache.account(body, 2003, now=0.5, begins_in=1.0, time_scale=1.0)  # before it began
    later = cache.account(body, 2003, now=1.5, begins_in=1.0, time_scale=1.0)
    assert (first.written, twin.written, later.written) == (2000, 2000, 0)
    assert (first.read, twin.read, later.read) == (0, 0, 2000) and later.uncached == 3
    # The marker is not part of the key; the question after the breakpoint is not either.
    other = _body({**_shared("d" * 8000), "cache_control": {"type": "ephemeral"}})
    assert cache.account(other, 2000, now=2.0, begins_in=1.0, time_scale=1.0).read == 2000


def test_entries_expire_after_their_scaled_ttl_and_a_short_prefix_is_never_cached():
    cache = PromptCache()
    body = _body(_shared("d" * 8000))
    cache.account(body, 2000, now=0.0, begins_in=0.1, time_scale=0.1)  # 5 min x 0.1 = 30 s
    assert cache.account(body, 2000, now=29.0, begins_in=0.1, time_scale=0.1).read == 2000
    assert cache.account(body, 2000, now=58.0, begins_in=0.1, time_scale=0.1).read == 2000
    assert cache.account(body, 2000, now=90.0, begins_in=0.1, time_scale=0.1).read == 0  # gone
    haiku = _body(_shared("d" * 8000), model="claude-haiku-5-5")  # its minimum is 4,096
    assert cache.account(haiku, 2000, now=0.0, begins_in=0.1, time_scale=1.0).written == 0
    with pytest.raises(ValueError, match="maximum of 4"):
        cache.account(_body(*[_shared("x" * 4000)] * 5), 5000, 0.0, 0.1, 1.0)


def test_prices_count_writes_at_their_premium_and_reads_at_their_discount():
    full = cost_usd("claude-opus-5-5", 10_000, 0)
    cached = cost_usd("claude-opus-5-5", 0, 0, cache_read_tokens=10_000)
    assert cached == pytest.approx(full * 0.05)
    assert cache_saving_usd("claude-opus-5-5", 10_000, 0) < 0  # a write nobody reads
    assert cache_saving_usd("claude-opus-5-5", 0, 10_000) == pytest.approx(full - cached)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=3)) as server:
        yield server


async def test_a_shared_prefix_is_written_once_then_read_and_costs_less(sim: SimulatorServer):
    client = LLMClient(Settings(), base_url=sim.url)
    prompt = [Part("<request>\n" + LONG + "\n</request>\n\n", shared=True), Part("Part one.")]
    first = await client.complete(Purpose.ANALYSIS, "Be brief.", prompt)
    second = await client.complete(Purpose.ANALYSIS, "Be brief.", [*prompt[:1], Part("Two.")])
    await client.close()
    assert first.usage.cache_write_tokens > 4000 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.input_tokens < 20 and second.usage.cache_saved_usd > 0
    log = sim.recent_requests()[-2:]
    assert [(e["cache_write"], e["cache_read"]) for e in log] == [
        (first.usage.cache_write_tokens, 0),
        (0, second.usage.cache_read_tokens),
    ]


async def test_caching_off_or_a_short_prompt_sends_no_breakpoint(sim: SimulatorServer):
    off = LLMClient(Settings(prompt_caching=False), base_url=sim.url)
    on = LLMClient(Settings(), base_url=sim.url)
    prompt = [Part(LONG, shared=True), Part("Part one.")]
    for _ in range(2):
        await off.complete(Purpose.ANALYSIS, "Be brief.", prompt)
    short = await on.complete(Purpose.ANALYSIS, "Be brief.", [Part("hi", shared=True), Part("?")])
    await off.close()
    await on.close()
    assert [(e["cache_write"], e["cache_read"]) for e in sim.recent_requests()] == [(0, 0)] * 3
    assert short.usage.cache_write_tokens == 0
    assert short.usage.cost_usd == pytest.approx(
        cost_usd(short.model, short.usage.input_tokens, short.usage.output_tokens)
    )


async def test_a_warm_up_lets_a_whole_fan_out_read_what_it_wrote(sim: SimulatorServer):
    import asyncio

    from actors.models import AgentOutput

    client = LLMClient(Settings(), base_url=sim.url)
    shared = Part("<request>\n" + LONG + "\n</request>\n\n", shared=True)
    warm = await client.warm(Purpose.ANALYSIS, "Be brief.", [shared], AgentOutput)
    fan_out = await asyncio.gather(
        *(
            client.structured(Purpose.ANALYSIS, "Be brief.", [shared, Part(f"Part {n}.")],
                              AgentOutput)
            for n in range(3)
        )
    )  # fmt: skip
    short = await client.warm(Purpose.ANALYSIS, "Be brief.", [Part("hi", shared=True)])
    await client.close()
    assert warm.requests == 1 and warm.output_tokens == 0 and warm.cache_write_tokens > 4000
    assert [a.usage.cache_read_tokens for a in fan_out] == [warm.cache_write_tokens] * 3
    assert [a.usage.cache_write_tokens for a in fan_out] == [0, 0, 0]
    assert short.requests == 0  # too short to cache: nothing sent
    assert [e["max_tokens"] for e in sim.recent_requests()].count(0) == 1
