"""The rate limiter on its own: admission, fairness, windows, AIMD, retry waits, learned limits."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from actors.config import LimiterSettings
from actors.llm.limiter import Outcome, RateLimiter, Release, retry_after_s


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, **changes: object) -> RateLimiter:
    settings = LimiterSettings.model_validate({"jitter_s": 0.0, **changes})
    if clock is None:
        return RateLimiter(settings, rng=random.Random(7))
    return RateLimiter(settings, clock=clock, rng=random.Random(7))


async def pending(task: asyncio.Task[object]) -> bool:
    """True when ``task`` is still blocked after the loop had every chance to run it."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


async def test_concurrency_blocks_until_release_and_serves_in_order() -> None:
    limiter = make(max_concurrency=2)
    first = await limiter.acquire(10, 10)
    await limiter.acquire(10, 10)
    third = asyncio.create_task(limiter.acquire(10, 10))
    fourth = asyncio.create_task(limiter.acquire(10, 10))
    assert await pending(third) and await pending(fourth)
    assert (await limiter.snapshot()).waiting == 2

    await limiter.release(Release(first, Outcome.OK))
    lease = await third
    assert await pending(fourth)  # one slot freed, one waiter admitted: the first in line
    await limiter.release(Release(lease, Outcome.OK))
    await fourth
    snap = await limiter.snapshot()
    assert snap.in_flight == 2 and snap.waiting == 0 and snap.granted_total == 4


async def test_big_request_at_the_head_is_not_starved_by_small_ones() -> None:
    clock = FakeClock()
    limiter = make(clock, input_tokens_per_minute=1000)
    small = await limiter.acquire(600, 0)
    big = asyncio.create_task(limiter.acquire(900, 0))
    tiny = asyncio.create_task(limiter.acquire(100, 0))  # would fit, but must queue behind big
    assert await pending(big) and await pending(tiny)
    await limiter.release(Release(small, Outcome.OK, input_tokens=50, output_tokens=1))
    await big  # the real usage (50) replaced the estimate (600): room for 900 now
    assert await pending(tiny)
    tiny.cancel()


async def test_requests_window_slides_without_any_release() -> None:
    limiter = RateLimiter(LimiterSettings(requests_per_minute=2), window_s=0.3)
    await limiter.acquire(1, 1)
    await limiter.acquire(1, 1)
    third = asyncio.create_task(limiter.acquire(1, 1))
    assert await pending(third)
    lease = await asyncio.wait_for(third, timeout=30)  # woken by the timer alone
    assert lease.waited_s > 0.1


async def test_an_estimate_above_the_whole_budget_still_runs_alone() -> None:
    limiter = make(FakeClock(), output_tokens_per_minute=100)
    lease = await limiter.acquire(10, 5000)
    assert lease.waited_s == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    limiter = make(max_concurrency=1)
    held = await limiter.acquire(1, 1)
    leaving = asyncio.create_task(limiter.acquire(1, 1))
    staying = asyncio.create_task(limiter.acquire(1, 1))
    assert await pending(leaving)
    leaving.cancel()
    await limiter.release(Release(held, Outcome.OK))
    await asyncio.wait_for(staying, timeout=30)
    assert (await limiter.snapshot()).in_flight == 1


async def test_a_burst_of_429s_cuts_concurrency_once_then_it_recovers() -> None:
    clock = FakeClock()
    limiter = make(clock, max_concurrency=16, min_concurrency=2, decrease_factor=0.5)
    leases = [await limiter.acquire(1, 1) for _ in range(10)]
    for lease in leases:
        await limiter.release(Release(lease, Outcome.RATE_LIMITED))
    snap = await limiter.snapshot()
    assert snap.concurrency_limit == 8  # ten simultaneous 429s, one cut
    assert snap.throttled_total == 10 and snap.pressure == pytest.approx(8 / 14)

    for _ in range(5):
        clock.now += 1.5
        await limiter.release(Release(await limiter.acquire(1, 1), Outcome.OVERLOADED))
    assert (await limiter.snapshot()).concurrency_limit == 2  # floored at min_concurrency
    assert (await limiter.snapshot()).pressure == 1

    for _ in range(200):
        await limiter.release(Release(await limiter.acquire(1, 1), Outcome.OK))
    snap = await limiter.snapshot()
    assert snap.concurrency_limit == 16 and snap.pressure == 0


async def test_retry_after_is_capped_jittered_and_makes_everyone_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        LimiterSettings(max_retry_wait_s=10, jitter_s=0.5), clock=clock, rng=random.Random(1)
    )
    lease = await limiter.acquire(1, 1)
    wait = await limiter.release(
        Release(lease, Outcome.RATE_LIMITED, headers={"retry-after": "60"})
    )
    assert 10 <= wait <= 10.5
    assert (await limiter.snapshot()).cooldown_remaining_s == pytest.approx(10)

    other = asyncio.create_task(limiter.acquire(1, 1))
    assert await pending(other)  # nobody calls the provider during the cooldown
    other.cancel()
    clock.now += 10.1
    assert (await limiter.acquire(1, 1)).waited_s == 0


async def test_backoff_without_header_grows_and_stays_capped() -> None:
    limiter = make(FakeClock(), base_backoff_s=0.5, max_retry_wait_s=3)
    waits: dict[int, list[float]] = {}
    for attempt in (1, 2, 3, 6):
        waits[attempt] = []
        for _ in range(50):
            lease = await limiter.acquire(1, 1)
            wait = await limiter.release(Release(lease, Outcome.SERVER_ERROR, attempt=attempt))
            waits[attempt].append(wait)
    assert all(0 <= w <= 0.5 for w in waits[1])
    assert all(0 <= w <= 1.0 for w in waits[2]) and max(waits[2]) > 0.5
    assert all(0 <= w <= 3.0 for w in waits[6]) and max(waits[6]) > 2.0
    # A 5xx is not a throttle signal: concurrency is untouched.
    assert (await limiter.snapshot()).concurrency_limit == 64


async def test_ok_and_malformed_ask_for_no_wait() -> None:
    limiter = make(FakeClock())
    assert await limiter.release(Release(await limiter.acquire(1, 1), Outcome.OK)) == 0
    assert await limiter.release(Release(await limiter.acquire(1, 1), Outcome.MALFORMED)) == 0


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"Retry-After": "2"}) == 2
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after_s({"retry-after": later}) or 0) <= 30
    assert retry_after_s({}) is None
    assert retry_after_s({"retry-after": "soon"}) is None


async def test_limits_learned_from_headers_tighten_admission() -> None:
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=100)
    lease = await limiter.acquire(1, 1)
    headers = {
        "anthropic-ratelimit-requests-limit": "2",
        "anthropic-ratelimit-requests-remaining": "1",
        "anthropic-ratelimit-input-tokens-limit": "500000",
    }
    await limiter.release(Release(lease, Outcome.OK, headers=headers))
    snap = await limiter.snapshot()
    assert snap.learned_limits == {"requests": 2, "input-tokens": 500000}
    await limiter.acquire(1, 1)
    third = asyncio.create_task(limiter.acquire(1, 1))
    assert await pending(third)  # min(configured 100, header 2)
    third.cancel()


async def test_remaining_zero_cools_down_until_reset_capped() -> None:
    clock = FakeClock()
    limiter = make(clock, max_retry_wait_s=5)
    reset = (datetime.now(UTC) + timedelta(seconds=40)).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": reset,
    }
    await limiter.release(Release(await limiter.acquire(1, 1), Outcome.OK, headers=headers))
    assert (await limiter.snapshot()).cooldown_remaining_s == pytest.approx(5)


async def test_a_lease_never_released_is_reclaimed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(LimiterSettings(max_concurrency=1), clock=clock, lease_ttl_s=30)
    await limiter.acquire(1, 1)  # its holder "crashes" and never releases
    clock.now += 31
    lease = await asyncio.wait_for(limiter.acquire(1, 1), timeout=30)
    assert lease.waited_s == 0
