"""A lost rate limiter is found again by name, or replaced by a local one: calls never stop.

The shared limiter here is a fake handle: the real ``RateLimiterActor`` class without Ray,
behind ``.remote()`` methods that pickle their arguments and answers as Ray would and raise
Ray's own ``ActorDiedError`` once it is "killed"; the client under test is the real
``RemoteLimiter`` with the lookup and the clock passed in. These tests lend no allowances
(``allowance_s=0``): every call asks, as near a limit; ``test_limiter_allowance`` lends.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable

from ray.exceptions import ActorDiedError

from actors.config import LimiterSettings
from actors.llm.limiter import Outcome, RateLimiter, Release
from actors.llm.limiter_actor import RateLimiterActor, RemoteLimiter


class _Method:
    def __init__(self, actor: FakeLimiterActor, name: str) -> None:
        self._actor, self._name = actor, name

    def remote(self, *args, **kwargs):
        # Submitted at once, awaited or not, like a Ray actor call (whose errors nobody
        # who does not await it sees).
        task = asyncio.ensure_future(self._actor.call(self._name, *args, **kwargs))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task


class FakeLimiterActor:
    """Stands in for a ``RateLimiterActor`` handle: the actor's own code, dies on demand."""

    def __init__(
        self,
        settings: LimiterSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = settings or LimiterSettings(max_concurrency=4, allowance_s=0)
        self.actor = RateLimiterActor.__ray_actor_class__(settings, clock=clock)
        self.limiter: RateLimiter = self.actor._limiter
        self.dead = False
        self.calls: list[str] = []
        for name in ("acquire", "borrow", "settle", "release", "snapshot", "pid"):
            setattr(self, name, _Method(self, name))

    async def call(self, name: str, *args, **kwargs):
        self.calls.append(name)
        if self.dead:
            raise ActorDiedError()
        if name == "pid":
            return 4242
        args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # by value, as Ray passes
        answer = await getattr(self.actor, name)(*args, **kwargs)
        return pickle.loads(pickle.dumps(answer))


class Directory:
    """The name lookup: returns whichever fake currently holds the name."""

    def __init__(self, actor: FakeLimiterActor | None) -> None:
        self.actor = actor
        self.lookups = 0

    def find(self) -> FakeLimiterActor:
        self.lookups += 1
        if self.actor is None:
            raise ValueError("Failed to look up actor with name 'rate-limiter'")
        return self.actor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _client(directory: Directory, clock: FakeClock | None = None) -> RemoteLimiter:
    return RemoteLimiter(
        settings=LimiterSettings(max_concurrency=2),
        find=directory.find,
        find_wait_s=0.5,
        local_for_s=30.0,
        clock=clock or FakeClock(),
    )


async def test_the_limiter_is_found_by_name_and_shared():
    first = FakeLimiterActor()
    client = _client(Directory(first))
    lease = await client.acquire(10, 10)
    assert (await client.snapshot()).in_flight == 1  # the shared limiter's figures
    assert await client.release(Release(lease, Outcome.OK)) == 0.0
    assert first.calls[:2] == ["pid", "borrow"]


async def test_a_restarted_limiter_is_found_again_and_the_permit_asked_once_more(caplog):
    first = FakeLimiterActor()
    directory = Directory(first)
    client = _client(directory)
    await client.release(Release(await client.acquire(10, 10), Outcome.OK))
    first.dead = True
    second = FakeLimiterActor()  # what the name leads to after the restart
    directory.actor = second
    with caplog.at_level(logging.WARNING):
        lease = await client.acquire(10, 10)
    assert "acquire" in second.calls  # the retried permit came from the shared limiter
    assert (await client.snapshot()).granted_total == 1 == second.limiter.snapshot_now().in_flight
    assert "rate limiter was lost" in caplog.text
    await client.release(Release(lease, Outcome.OK))


async def test_a_limiter_that_stays_gone_degrades_to_a_local_one_then_rejoins(caplog):
    first = FakeLimiterActor()
    directory = Directory(first)
    clock = FakeClock()
    client = _client(directory, clock)
    await client.release(Release(await client.acquire(10, 10), Outcome.OK))
    first.dead = True
    directory.actor = None  # killed for good: nobody holds the name
    with caplog.at_level(logging.WARNING):
        lease = await client.acquire(10, 10)  # waits find_wait_s, then goes local
    assert "did not answer" in caplog.text
    lookups = directory.lookups
    assert await client.release(Release(lease, Outcome.RATE_LIMITED)) > 0  # the local one backs off
    for _ in range(3):  # while local, no call waits for (or even looks for) the limiter
        await client.release(Release(await client.acquire(10, 10), Outcome.OK))
    assert directory.lookups == lookups

    back = FakeLimiterActor()
    directory.actor = back
    clock.now += 31.0  # the local period is over: a search runs in the background
    await client.release(Release(await client.acquire(10, 10), Outcome.OK))  # still local this time
    for _ in range(500):  # the search looks the name up in a thread: give it time to land
        await client.release(Release(await client.acquire(10, 10), Outcome.OK))
        if "borrow" in back.calls:
            break
        await asyncio.sleep(0.01)
    assert "borrow" in back.calls  # shared again


async def test_a_lease_from_a_limiter_that_died_is_released_locally_with_a_backoff():
    first = FakeLimiterActor()
    directory = Directory(first)
    client = _client(directory)
    lease = await client.acquire(10, 10)
    first.dead = True
    wait = await client.release(Release(lease, Outcome.OVERLOADED, attempt=2))
    assert wait > 0  # the caller still backs off, and nothing raised
