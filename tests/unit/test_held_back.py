"""A microtask's deadline counts its own work, not the time the rate limiter holds it back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actors.config import LimiterSettings, Purpose, SimulatorSettings
from actors.llm import Outcome, RateLimiter, Release
from actors.llm.held_back import held_back, within
from actors.sim.simulator import SimulatorServer
from tests.unit.test_client_stream import client_for


async def test_time_held_back_moves_the_deadline_out() -> None:
    async def work() -> str:
        with held_back():
            await asyncio.sleep(0.3)  # three times the deadline, all of it held back
        await asyncio.sleep(0.02)
        return "done"

    result, held = await within(work(), 0.1)
    assert result == "done" and held >= 0.3


async def test_own_work_past_the_deadline_times_out_and_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(work(), 0.05)
    assert cancelled.is_set()


async def test_a_hold_still_going_on_when_the_deadline_comes_counts() -> None:
    release = asyncio.Event()

    async def work() -> str:
        with held_back():
            await release.wait()
        return "through"

    waiting = asyncio.ensure_future(within(work(), 0.05))
    await asyncio.sleep(0.2)  # well past the deadline, all of it in the hold
    assert not waiting.done()
    release.set()
    assert (await waiting)[0] == "through"


async def test_cancelling_the_caller_cancels_the_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(within(work(), 10))
    await started.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert cancelled.is_set()


def test_outside_a_deadline_a_hold_is_nothing() -> None:
    with held_back():
        pass


async def test_a_call_queued_behind_the_limiter_is_not_timed_out(tmp_path: Path) -> None:
    limiter = RateLimiter(LimiterSettings(max_concurrency=1, min_concurrency=1))
    with SimulatorServer(SimulatorSettings(latency="zero", seed=4)) as sim:
        client = client_for(sim, tmp_path, limiter)
        lease = await limiter.acquire(10, 10)  # another caller holds the only slot
        call = asyncio.ensure_future(
            within(client.complete(Purpose.RESEARCH, "Be brief.", "Hello?"), 0.2)
        )
        await asyncio.sleep(0.5)
        assert not call.done()  # queued: not timed out
        await limiter.release(Release(lease, Outcome.OK))
        completion, held = await call
        assert completion.text and held >= 0.5
