"""LLMClient through the real SDK against the real simulator on loopback (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel, Field

from actors.config import LimiterSettings, Purpose, Settings, SimulatorSettings
from actors.errors import ModelBehaviorError, ProviderError, ProviderTimeoutError, UserInputError
from actors.llm import LLMClient, Outcome, RateLimiter
from actors.llm.limiter import Release
from actors.llm.pricing import cost_usd
from actors.models import AgentOutput
from actors.sim.simulator import SimulatorServer


class Verdict(BaseModel):
    """A small schema of our own for the structured tests."""

    answer: str
    score: int = Field(ge=0, le=10)
    tags: list[str]


class RecordingLimiter(RateLimiter):
    """A real limiter that also records each release: (outcome, wait it returned).

    ``on_release`` lets a test change the world (the simulator's fault rates) between attempts.
    """

    def __init__(
        self,
        settings: LimiterSettings,
        on_release: Callable[[list[tuple[Outcome, float]]], None] | None = None,
    ) -> None:
        super().__init__(settings)
        self.releases: list[tuple[Outcome, float]] = []
        self._on_release = on_release

    async def release(self, done: Release) -> float:
        wait = await super().release(done)
        self.releases.append((done.outcome, wait))
        if self._on_release is not None:
            self._on_release(self.releases)
        return wait


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=3)) as server:
        yield server


def limiter_settings(**changes: object) -> LimiterSettings:
    return LimiterSettings.model_validate(
        {"jitter_s": 0.0, "base_backoff_s": 0.02, "max_attempts": 4, **changes}
    )


def client_for(
    sim: SimulatorServer, limiter: RateLimiter | None = None, **changes: object
) -> LLMClient:
    settings = Settings(limiter=limiter.settings if limiter else limiter_settings())
    mode = str(changes.pop("structured_mode", "json_schema"))
    return LLMClient(settings, limiter=limiter, base_url=sim.url, structured_mode=mode, **changes)


async def test_text_answer_with_usage_and_cost(sim: SimulatorServer) -> None:
    client = client_for(sim)
    answer = await client.complete(Purpose.RESEARCH, "Be brief.", "Name three moons of Jupiter.")
    await client.close()
    assert answer.text.strip() and answer.simulated
    assert answer.model == Settings().models[Purpose.RESEARCH]
    usage = answer.usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.cost_usd == pytest.approx(
        cost_usd(answer.model, usage.input_tokens, usage.output_tokens)
    )
    assert usage.cost_usd > 0


@pytest.mark.parametrize("mode", ["json_schema", "tool"])
async def test_structured_answer_is_validated(sim: SimulatorServer, mode: str) -> None:
    client = client_for(sim, structured_mode=mode)
    verdict = await client.structured(Purpose.ANALYSIS, "Judge.", "Is the sky blue?", Verdict)
    output = await client.structured(Purpose.RESEARCH, "Research.", "Tides?", AgentOutput)
    await client.close()
    assert isinstance(verdict.value, Verdict) and 0 <= verdict.value.score <= 10
    assert isinstance(output.value, AgentOutput) and 0 <= output.value.confidence <= 1
    assert verdict.simulated and verdict.usage.requests == 1
    assert sim.stats()["kinds"] == {mode: 2}  # the request really asked in that mode


async def test_a_429_with_retry_after_is_waited_out(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_429=1.0, retry_after_s=1.0)

    def heal(releases: list[tuple[Outcome, float]]) -> None:
        sim.reconfigure(rate_429=0.0)

    limiter = RecordingLimiter(limiter_settings(), on_release=heal)
    client = client_for(sim, limiter)
    answer = await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?")
    await client.close()
    assert answer.text
    (first, first_wait), (second, _) = limiter.releases
    assert first is Outcome.RATE_LIMITED and first_wait == pytest.approx(1.0)
    assert second is Outcome.OK
    assert sim.stats()["status_counts"] == {"429": 1, "200": 1}


async def test_529s_back_off_then_succeed(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_529=1.0)

    def heal(releases: list[tuple[Outcome, float]]) -> None:
        if len(releases) == 2:
            sim.reconfigure(rate_529=0.0)

    limiter = RecordingLimiter(limiter_settings(max_concurrency=8), on_release=heal)
    client = client_for(sim, limiter)
    answer = await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?")
    await client.close()
    assert answer.text
    assert [outcome for outcome, _ in limiter.releases] == [
        Outcome.OVERLOADED,
        Outcome.OVERLOADED,
        Outcome.OK,
    ]
    assert all(0 <= wait <= 0.04 for _, wait in limiter.releases[:2])  # 0.02·2ⁿ, full jitter
    assert limiter.snapshot_now().throttled_total == 2
    assert limiter.snapshot_now().concurrency_limit < 8


async def test_a_60_second_retry_after_is_capped(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_429=1.0, retry_after_s=60)
    limiter = RecordingLimiter(limiter_settings(max_retry_wait_s=2.0, max_attempts=1))
    client = client_for(sim, limiter)
    with pytest.raises(ProviderError) as caught:
        await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?")
    await client.close()
    assert caught.value.status_code == 429 and caught.value.attempts == 1
    assert limiter.releases == [(Outcome.RATE_LIMITED, pytest.approx(2.0))]
    assert limiter.snapshot_now().cooldown_remaining_s <= 2.0


async def test_concurrency_drops_under_429s_and_recovers(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_429=0.3, retry_after_s=0.02)
    limiter = RateLimiter(limiter_settings(max_concurrency=8, max_attempts=20))
    client = client_for(sim, limiter)
    seen: list[float] = []

    async def one(n: int) -> None:
        await client.complete(Purpose.RESEARCH, "Brief.", f"q{n}")
        seen.append(limiter.snapshot_now().concurrency_limit)

    await asyncio.gather(*(one(n) for n in range(40)))
    assert min(seen) < 8 and limiter.snapshot_now().throttled_total > 0

    sim.reconfigure(rate_429=0.0)
    await asyncio.gather(*(one(n) for n in range(60)))
    await client.close()
    assert limiter.snapshot_now().concurrency_limit == 8


async def test_bad_input_is_refused_before_any_call(sim: SimulatorServer) -> None:
    client = client_for(sim)
    with pytest.raises(UserInputError, match="prompt is empty"):
        await client.complete(Purpose.RESEARCH, "Be brief.", "  \n\t ")
    with pytest.raises(UserInputError, match="prompt is empty"):
        await client.complete(Purpose.RESEARCH, "Be brief.", "\x00\x00")
    with pytest.raises(UserInputError, match=r"1,000,000 characters; the limit is 400,000"):
        await client.complete(Purpose.RESEARCH, "Be brief.", "x" * 1_000_000)
    assert sim.stats()["requests"] == 0
    answer = await client.complete(Purpose.RESEARCH, "Be brief.", "hello\x00 there")
    await client.close()
    assert answer.text


async def test_a_schema_answered_wrongly_names_the_failing_fields(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_malformed=1.0)
    limiter = RecordingLimiter(limiter_settings(max_attempts=3))
    client = client_for(sim, limiter)
    with pytest.raises(ModelBehaviorError) as caught:
        await client.structured(Purpose.ANALYSIS, "Judge.", "Is the sky blue?", Verdict)
    await client.close()
    message = str(caught.value)
    assert "answered Verdict in the wrong shape 3 times" in message
    assert any(field in message for field in ("answer", "score", "tags"))
    assert [outcome for outcome, _ in limiter.releases] == [Outcome.MALFORMED] * 3
    assert sim.stats()["requests"] == 3


async def test_a_hung_provider_times_out(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_hang=1.0, hang_s=30)
    client = client_for(sim, RateLimiter(limiter_settings(max_attempts=2)))
    with pytest.raises(ProviderTimeoutError) as caught:
        await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?", timeout_s=0.3)
    await client.close()
    assert caught.value.attempts == 2 and "0.3 s" in str(caught.value)


async def test_errors_never_carry_the_api_key() -> None:
    secret = "sk-ant-test-SECRET-1234567890"
    settings = Settings(anthropic_api_key=secret, limiter=limiter_settings(max_attempts=2))
    client = LLMClient(settings, base_url="http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ProviderError) as caught:
        await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?")
    await client.close()
    assert secret not in str(caught.value) and secret not in repr(caught.value.__reduce__())
    assert caught.value.attempts == 2


async def test_count_tokens(sim: SimulatorServer) -> None:
    client = client_for(sim)
    short = await client.count_tokens(Purpose.RESEARCH, "Be brief.", "Hi")
    long = await client.count_tokens(Purpose.RESEARCH, "Be brief.", "Hi " * 500)
    await client.close()
    assert 0 < short < long


async def test_warm_up_pays_the_first_call_costs_with_a_free_token_count(
    sim: SimulatorServer,
) -> None:
    client = client_for(sim)
    await client.warm_up(Purpose.RESEARCH, "Be brief.")
    await client.close()
    stats = sim.stats()
    assert stats["count_tokens_requests"] == 1
    assert stats["requests"] == 0  # no message was asked for: nothing billed


# --- the current models: thinking, effort, budgets, cuts, refusals ----------------------


async def test_effort_and_budget_per_purpose_reach_the_request(sim: SimulatorServer) -> None:
    settings = Settings(limiter=limiter_settings())
    client = client_for(sim)
    await client.structured(Purpose.RESEARCH, "Research.", "Tides?", AgentOutput)
    await client.complete(Purpose.SYNTHESIS, "Write.", "Sum up the tides.")
    await client.close()
    research, synthesis = sim.recent_requests()
    assert research["effort"] == settings.effort[Purpose.RESEARCH] == "low"
    assert synthesis["effort"] == settings.effort[Purpose.SYNTHESIS] == "high"
    assert research["max_tokens"] == settings.max_tokens_for(Purpose.RESEARCH)
    assert synthesis["max_tokens"] == settings.max_tokens_for(Purpose.SYNTHESIS) >= 16_000


async def test_a_forced_tool_is_never_sent_to_a_model_that_refuses_it(
    sim: SimulatorServer,
) -> None:
    client = client_for(sim, structured_mode="tool")
    plan = await client.structured(Purpose.PLANNING, "Plan.", "Plan at most 3 microtasks.", Verdict)
    await client.structured(Purpose.ANALYSIS, "Judge.", "Is the sky blue?", Verdict)
    await client.close()
    assert plan.model == "claude-opus-5-5"
    kinds = [(r["model"], r["kind"]) for r in sim.recent_requests()]
    assert kinds == [("claude-opus-5-5", "json_schema"), ("claude-sonnet-5-5", "tool")]
    assert sim.stats()["status_counts"] == {"200": 2}  # no 400 was ever provoked


async def test_thinking_tokens_are_counted_in_usage_and_cost(sim: SimulatorServer) -> None:
    client = client_for(sim)
    answer = await client.complete(Purpose.SYNTHESIS, "Write.", "Explain the tides at length.")
    await client.close()
    (entry,) = sim.recent_requests()
    visible = len(answer.text) / 4
    assert entry["thinking_tokens"] > 0
    assert answer.usage.output_tokens >= entry["thinking_tokens"] + visible * 0.9
    assert answer.usage.cost_usd == pytest.approx(
        cost_usd(answer.model, answer.usage.input_tokens, answer.usage.output_tokens)
    )
    assert "thinking" not in answer.text.lower()[:20]  # only text blocks reach the caller


async def test_an_answer_cut_twice_fails_clearly_and_costs_two_calls(
    sim: SimulatorServer,
) -> None:
    from actors.errors import TruncatedAnswerError

    client = client_for(sim)
    with pytest.raises(TruncatedAnswerError) as caught:
        await client.structured(
            Purpose.RESEARCH, "Research.", "Tides? [sim-output-tokens 3000]", AgentOutput,
            max_tokens=600,
        )  # fmt: skip
    await client.close()
    assert "cut at max_tokens twice (600 then 1200 tokens" in str(caught.value)
    assert caught.value.usage.requests == 2 and caught.value.usage.cost_usd > 0
    assert [r["max_tokens"] for r in sim.recent_requests()] == [600, 1200]


async def test_a_cut_answer_is_retried_once_with_twice_the_budget(sim: SimulatorServer) -> None:
    client = client_for(sim)
    answer = await client.structured(
        Purpose.RESEARCH, "Research.", "Tides? [sim-output-tokens 700]", AgentOutput,
        max_tokens=800,
    )  # fmt: skip
    await client.close()
    assert answer.usage.requests == 2 and not answer.cut
    assert [r["stop_reason"] for r in sim.recent_requests()] == ["max_tokens", "end_turn"]


async def test_a_cut_plan_keeps_its_complete_microtasks(sim: SimulatorServer) -> None:
    from actors.models import PlanDraft

    client = client_for(sim)
    prompt = "<request>\nAudit every service\n</request>\n\nPlan at most 40 microtasks."
    answer = await client.structured(
        Purpose.PLANNING, "Plan.", prompt, PlanDraft, max_tokens=4000, partial=True
    )
    await client.close()
    assert answer.cut and answer.usage.requests == 1
    assert 3 <= len(answer.value.microtasks) < 40
    assert all(mt.instructions and mt.role for mt in answer.value.microtasks)


async def test_a_refusal_fails_at_once_and_says_so(sim: SimulatorServer) -> None:
    from actors.errors import ModelRefusalError

    client = client_for(sim)
    with pytest.raises(ModelRefusalError, match="refused") as caught:
        await client.structured(Purpose.RESEARCH, "Research.", "Do it [sim-refuse]", AgentOutput)
    await client.close()
    assert caught.value.usage.requests == 1 and sim.stats()["requests"] == 1


async def test_the_paid_call_cap_stops_schema_corrections(sim: SimulatorServer) -> None:
    sim.reconfigure(rate_malformed=1.0)
    client = client_for(sim, RateLimiter(limiter_settings(max_attempts=6)))
    with pytest.raises(ModelBehaviorError, match="cap of 2 paid calls") as caught:
        await client.structured(
            Purpose.ANALYSIS, "Judge.", "Is the sky blue?", Verdict, max_paid_calls=2
        )
    await client.close()
    assert caught.value.usage.requests == 2 and sim.stats()["requests"] == 2
