"""Allowances: far from the limits a caller spends a batch on its own; near them it asks per call.

The shared limiter is the real ``RateLimiterActor`` code behind the fake handle of
``test_remote_limiter`` (no Ray); the clock is one the test moves by hand.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from actors.config import LimiterSettings
from actors.llm.limiter import (
    AllowanceReport,
    Lease,
    Outcome,
    RateLimiter,
    Release,
    headers_teach,
)
from actors.llm.limiter_actor import RateLimiterActor, RemoteLimiter
from tests.unit.test_remote_limiter import Directory, FakeClock, FakeLimiterActor


def _pair(
    clock: Callable[[], float] | None = None, **changes: object
) -> tuple[FakeLimiterActor, RemoteLimiter]:
    clock = clock or FakeClock()
    settings = LimiterSettings.model_validate({"jitter_s": 0.0, **changes})
    actor = FakeLimiterActor(settings, clock=clock)
    return actor, _client(actor, clock)


def _client(actor: FakeLimiterActor, clock: Callable[[], float]) -> RemoteLimiter:
    return RemoteLimiter(find=Directory(actor).find, find_wait_s=0.5, clock=clock)


def _round_trips(actor: FakeLimiterActor) -> int:
    return sum(name != "pid" for name in actor.calls)


async def pending(task: asyncio.Task[object]) -> bool:
    """True when ``task`` is still blocked after the loop had every chance to run it."""
    for _ in range(20):
        await asyncio.sleep(0)
    return not task.done()


async def delivered() -> None:
    """Let messages sent and not awaited (a release of an OK, a settle) reach the limiter."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_far_from_the_limits_costs_a_few_round_trips() -> None:
    actor, client = _pair()

    async def worker() -> None:
        for _ in range(25):
            lease = await client.acquire(100, 50)
            await asyncio.sleep(0)
            done = Release(lease, Outcome.OK, input_tokens=90, output_tokens=40)
            assert await client.release(done) == 0

    await asyncio.gather(*(worker() for _ in range(4)))  # 100 calls, 4 at a time
    await client.close()
    assert _round_trips(actor) <= 5, actor.calls  # was 200: an acquire and a release each
    assert client.actor_calls == _round_trips(actor)
    snap = actor.limiter.snapshot_now()
    assert snap.granted_total == 100 and snap.outcomes == {"ok": 100}
    assert snap.in_flight == 0 and snap.lent == 0 and snap.lent_total >= 2
    assert snap.requests_last_minute == 100  # the unused reservations came back
    assert (snap.input_tokens_last_minute, snap.output_tokens_last_minute) == (9000, 4000)


async def test_a_429_reaches_the_limiter_at_once_and_ends_the_allowance() -> None:
    actor, client = _pair(max_concurrency=16, max_retry_wait_s=5)
    first = await client.acquire(10, 10)
    second = await client.acquire(10, 10)  # on the allowance
    assert actor.calls.count("borrow") == 1 and actor.limiter.snapshot_now().lent > 0
    wait = await client.release(Release(first, Outcome.RATE_LIMITED, headers={"retry-after": "30"}))
    assert wait == 5  # capped
    snap = actor.limiter.snapshot_now()
    assert snap.throttled_total == 1 and snap.concurrency_limit == 8  # AIMD cut at once
    assert snap.cooldown_remaining_s == 5
    assert snap.lent == 0 and snap.in_flight == 1  # the other call is a lease there now
    third = asyncio.ensure_future(client.acquire(10, 10))
    assert await pending(third)  # asked the limiter: nobody starts during the cooldown
    assert actor.calls.count("borrow") == 2 and actor.calls[-1] == "acquire"  # then per call
    await client.release(Release(second, Outcome.OK))
    await delivered()
    assert actor.limiter.snapshot_now().in_flight == 0
    third.cancel()


async def test_headers_with_news_reach_the_limiter_at_once() -> None:
    actor, client = _pair()
    limits = {"anthropic-ratelimit-requests-limit": "3000"}
    lease = await client.acquire(10, 10)
    await client.release(Release(lease, Outcome.OK, headers={**limits, "x-other": "1"}))
    await delivered()
    assert actor.limiter.snapshot_now().learned_limits == {"requests": 3000}
    lease = await client.acquire(10, 10)  # a new allowance, lent knowing the limit
    trips = _round_trips(actor)
    await client.release(Release(lease, Outcome.OK, headers=limits))  # nothing new: stays local
    assert _round_trips(actor) == trips

    assert headers_teach({"retry-after": "1"}, {})
    assert headers_teach({"anthropic-ratelimit-tokens-remaining": "0"}, {})
    known, limit = {"requests": 100}, {"anthropic-ratelimit-requests-limit": "100"}
    assert not headers_teach({**limit, "anthropic-ratelimit-requests-remaining": "60"}, known)
    assert headers_teach({**limit, "anthropic-ratelimit-requests-remaining": "20"}, known)


async def test_two_callers_never_exceed_the_concurrency_limit_together() -> None:
    for limit in (2, 8):  # 2: too small to lend; 8: lent in small batches
        clock = FakeClock()
        actor = FakeLimiterActor(LimiterSettings(max_concurrency=limit), clock=clock)
        clients = [_client(actor, clock) for _ in range(2)]
        rng = random.Random(limit)
        running, peak, lent = 0, 0, 0

        async def worker(
            client: RemoteLimiter, actor: FakeLimiterActor = actor, rng: random.Random = rng
        ) -> None:
            nonlocal running, peak, lent
            for _ in range(30):
                lease = await client.acquire(10, 10)
                running += 1
                peak = max(peak, running)
                snap = actor.limiter.snapshot_now()
                assert snap.in_flight >= running  # every running call is held there
                lent = max(lent, snap.lent)
                for _ in range(rng.randrange(6)):
                    await asyncio.sleep(0)
                running -= 1
                outcome = Outcome.OVERLOADED if rng.random() < 0.05 else Outcome.OK
                await client.release(Release(lease, outcome))

        await asyncio.gather(*(worker(client) for client in clients for _ in range(5)))
        for client in clients:
            await client.close()
        await delivered()
        assert 2 <= peak <= limit  # lent slots held idle can keep it below the limit
        assert (lent > 0) == (limit == 8)
        assert actor.limiter.snapshot_now().in_flight == 0


async def test_an_allowance_never_handed_back_expires_and_its_slots_come_back() -> None:
    clock = FakeClock()
    actor = FakeLimiterActor(LimiterSettings(max_concurrency=4), clock=clock)
    gone = _client(actor, clock)
    await gone.acquire(10, 10)  # borrows two slots and "dies" holding them and a call
    assert actor.limiter.snapshot_now().in_flight == 2
    other = _client(actor, clock)
    await other.acquire(10, 10)
    await other.acquire(10, 10)  # the last two slots
    late = asyncio.ensure_future(other.acquire(10, 10))
    assert await pending(late)
    clock.now += 4.1  # twice the allowance's ttl: its holder is presumed gone
    # The next look at the slots finds them free (a timer would too, in real time).
    also = asyncio.ensure_future(_client(actor, clock).acquire(10, 10))
    await asyncio.wait_for(asyncio.gather(late, also), timeout=5)
    assert actor.limiter.snapshot_now().in_flight == 4  # the other two callers' four calls


async def test_a_call_running_past_the_deadline_is_carried_or_becomes_a_lease() -> None:
    clock = FakeClock()
    actor, client = _pair(clock)
    long = await client.acquire(10, 10)
    clock.now += 2.5  # past the allowance's deadline, the call still runs
    short = await client.acquire(10, 10)  # a new allowance that carries the long call
    assert actor.calls.count("borrow") == 2
    trips = _round_trips(actor)
    await client.release(Release(long, Outcome.OK, input_tokens=7, output_tokens=3))
    await client.release(Release(short, Outcome.OK, input_tokens=5, output_tokens=2))
    assert _round_trips(actor) == trips  # both local
    lingering = await client.acquire(10, 10)
    await client.close()  # handed back while it runs: it becomes a lease there
    assert actor.limiter.snapshot_now().in_flight == 1
    await client.release(Release(lingering, Outcome.OK, input_tokens=1, output_tokens=1))
    await delivered()
    snap = actor.limiter.snapshot_now()
    assert snap.in_flight == 0 and snap.granted_total == 3
    assert (snap.input_tokens_last_minute, snap.output_tokens_last_minute) == (13, 6)


async def test_near_the_token_limit_every_call_asks_and_accounting_is_exact() -> None:
    actor, client = _pair(output_tokens_per_minute=10_000)
    await client.release(Release(await client.acquire(10, 200), Outcome.OK, output_tokens=200))
    admitted = 1  # and the limiter is found (in a thread, which ``pending`` does not wait for)
    for _ in range(60):
        call = asyncio.ensure_future(client.acquire(10, 200))
        if await pending(call):
            call.cancel()
            break
        admitted += 1
        await client.release(Release(call.result(), Outcome.OK, input_tokens=10, output_tokens=200))
    assert admitted == 50  # exactly the budget: 50 x 200 = 10,000
    snap = actor.limiter.snapshot_now()
    assert snap.output_tokens_last_minute == 10_000 and snap.requests_last_minute == 50
    assert 3 <= actor.calls.count("borrow") < 50  # lent far from it, per call near it
    assert "release" in actor.calls or "acquire" in actor.calls or snap.lent == 0


async def test_lent_budget_shrinks_near_a_window_and_stops() -> None:
    clock = FakeClock()
    limiter = RateLimiter(LimiterSettings(requests_per_minute=100), clock=clock)
    sizes = []
    while (lent := limiter.lend(1, 1, slots=8)) is not None:
        sizes.append(lent.requests)
    assert sizes[0] == 25 and sizes == sorted(sizes, reverse=True) and sizes[-1] >= 2
    assert limiter.snapshot_now().requests_last_minute <= 100
    assert limiter.lend(1, 1, slots=8) is None


async def test_a_report_from_an_earlier_incarnation_settles_nothing() -> None:
    settings = LimiterSettings(max_concurrency=16)
    before = RateLimiterActor.__ray_actor_class__(settings)
    after = RateLimiterActor.__ray_actor_class__(settings)  # the restarted limiter
    old = await before.borrow(10, 10, 2, [])
    new = await after.borrow(10, 10, 2, [])
    assert old.id != new.id  # the same id within each life, told apart by incarnation
    await after.settle(AllowanceReport(id=old.id, started=1, running=[(old.first_call_id, 9, 9)]))
    snap = await after.snapshot()
    assert snap.lent == 2 and snap.in_flight == 2 and snap.granted_total == 0


async def test_messages_run_out_of_order_still_leave_nothing_held() -> None:
    # An async actor may run one caller's messages out of order: a release before the
    # report that makes its call a lease, a borrow before the report it follows.
    clock = FakeClock()
    limiter = RateLimiter(LimiterSettings(max_concurrency=16), clock=clock)
    lent = limiter.lend(10, 10, slots=2)
    assert lent is not None
    early, late = lent.first_call_id, lent.first_call_id + 1
    await limiter.release(
        Release(Lease(id=early, granted_at=0, waited_s=0), Outcome.OK, output_tokens=3)
    )
    again = limiter.lend(10, 10, slots=2, carry=[late])  # sent after the report, run before
    assert again is not None and again.carried == []  # so the caller releases it per call
    limiter.settle(
        AllowanceReport(id=lent.id, started=2, running=[(early, 10, 10), (late, 10, 10)])
    )
    await limiter.release(
        Release(Lease(id=late, granted_at=0, waited_s=0), Outcome.OK, output_tokens=4)
    )
    limiter.settle(AllowanceReport(id=again.id))
    snap = limiter.snapshot_now()
    assert snap.in_flight == 0 and snap.output_tokens_last_minute == 7


async def test_an_allowance_is_handed_back_at_its_deadline_on_its_own() -> None:
    actor, client = _pair(time.monotonic, allowance_s=0.05)
    lease = await client.acquire(10, 10)
    for _ in range(500):  # the deadline is a real timer: wait for its hand-back
        if "settle" in actor.calls:
            break
        await asyncio.sleep(0.01)
    assert "settle" in actor.calls
    snap = actor.limiter.snapshot_now()
    assert snap.lent == 0 and snap.in_flight == 1  # the running call is a lease there now
    await client.release(Release(lease, Outcome.OK))
    await delivered()
    assert actor.limiter.snapshot_now().in_flight == 0
