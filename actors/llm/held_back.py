"""A deadline on a microtask's own work: time the rate limiter holds it back is not counted.

Under a provider storm the cluster's limiter cuts concurrency to a call or two and makes
everyone sit out each retry-after. A microtask queued behind that has done nothing wrong,
and a retry would only queue it again at the back; counting the queue against its
deadline turned a storm into lost microtasks. The client marks each wait::

    with held_back():
        lease = await limiter.acquire(...)

and the agent runs the microtask under ``within(work, timeout_s)``, whose deadline moves
out by every second spent inside ``held_back`` blocks (the one running now included).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

T = TypeVar("T")


class _Holds:
    """Seconds a piece of work has been held back so far, counting a hold still going on."""

    def __init__(self) -> None:
        self._total = 0.0
        self._open = 0  # holds in progress (concurrent calls of one microtask)
        self._since = 0.0  # when the first of them began

    def begin(self) -> None:
        if self._open == 0:
            self._since = time.monotonic()
        self._open += 1

    def end(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._total += time.monotonic() - self._since

    def seconds(self) -> float:
        running = time.monotonic() - self._since if self._open else 0.0
        return self._total + running


_holds: contextvars.ContextVar[_Holds | None] = contextvars.ContextVar("held_back", default=None)


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """Marks a wait that is the limiter's doing; a no-op outside ``within``."""
    holds = _holds.get()
    if holds is None:
        yield
        return
    holds.begin()
    try:
        yield
    finally:
        holds.end()


async def within(work: Awaitable[T], timeout_s: float) -> tuple[T, float]:
    """``(result, seconds held back)`` of ``work``, or ``TimeoutError`` once it has worked
    ``timeout_s`` seconds not counting its holds. The work is cancelled on a timeout and when
    the caller is cancelled."""
    holds = _Holds()
    token = _holds.set(holds)
    try:
        task = asyncio.ensure_future(work)  # the task copies the context: it sees ``holds``
    finally:
        _holds.reset(token)
    started = time.monotonic()
    try:
        while True:
            left = started + timeout_s + holds.seconds() - time.monotonic()
            if left <= 0:
                break
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result(), holds.seconds()
    except BaseException:
        task.cancel()
        raise
    task.cancel()
    await asyncio.wait({task})  # let it unwind; a cancel of the caller still goes through
    raise TimeoutError(f"no result within {timeout_s:g} s of work")
