"""One RateLimiterActor holds the whole cluster's calls to its concurrency limit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import ray

from actors.config import LimiterSettings, Purpose, Settings, SimulatorSettings
from actors.llm import LLMClient, RateLimiterActor, RemoteLimiter
from actors.sim.simulator import SimulatorServer

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0)
class Caller:
    """A small stand-in for an agent: one LLMClient sharing the cluster's limiter."""

    def __init__(self, settings: Settings, limiter: ray.actor.ActorHandle, base_url: str) -> None:
        self._limiter = RemoteLimiter(limiter)
        self._client = LLMClient(settings, limiter=self._limiter, base_url=base_url)

    async def ask(self, count: int, tag: str) -> list[bool]:
        async def one(index: int) -> bool:
            answer = await self._client.complete(Purpose.RESEARCH, "Be brief.", f"{tag} {index}")
            return bool(answer.text) and answer.simulated

        return list(await asyncio.gather(*(one(index) for index in range(count))))

    async def close(self) -> int:
        """Hand the allowance back; the calls this caller made to the limiter."""
        await self._limiter.close()
        return self._limiter.actor_calls


async def _forty_calls(limiter_settings: LimiterSettings) -> tuple[list[bool], dict, Any, int]:
    """Two callers make 20 calls each at once: answers, simulator stats, limiter, round trips."""
    settings = Settings(limiter=limiter_settings)
    suffix = uuid.uuid4().hex[:8]
    created: list[ray.actor.ActorHandle] = []
    with SimulatorServer(SimulatorSettings(latency="fixed", median_s=0.2)) as sim:
        try:
            limiter = RateLimiterActor.options(name=f"test-limiter-{suffix}").remote(
                limiter_settings
            )
            created.append(limiter)
            callers = [
                Caller.options(name=f"test-caller-{suffix}-{n}").remote(settings, limiter, sim.url)
                for n in range(2)
            ]
            created.extend(callers)
            results = await asyncio.gather(
                *(caller.ask.remote(20, f"caller {n}") for n, caller in enumerate(callers))
            )
            stats = sim.stats()
            round_trips = sum(await asyncio.gather(*(caller.close.remote() for caller in callers)))
            snapshot = await RemoteLimiter(limiter).snapshot()
        finally:
            for handle in created:
                ray.kill(handle)
    answers = [ok for batch in results for ok in batch]
    assert len(answers) == 40 and all(answers)
    assert stats["requests"] == 40
    assert snapshot.granted_total == 40 and snapshot.in_flight == 0
    assert snapshot.outcomes == {"ok": 40}
    return answers, stats, snapshot, round_trips


async def test_forty_calls_from_two_actors_never_exceed_the_shared_limit(ray_session) -> None:
    _, stats, _, round_trips = await _forty_calls(LimiterSettings(max_concurrency=8))
    assert 2 <= stats["peak_concurrency"] <= 8
    assert round_trips <= 84  # at the limit every call asks: an acquire and a release each


async def test_far_from_the_limits_calls_are_served_from_allowances(ray_session) -> None:
    _, stats, _, round_trips = await _forty_calls(LimiterSettings(max_concurrency=64))
    assert 2 <= stats["peak_concurrency"] <= 40
    assert round_trips <= 16  # 80 if every call asked
