"""The client side of the cluster's one rate limiter, which every caller uses.

``RateLimiterActor`` (``actors.llm.shared_limiter``, importable from here too) wraps the
pure-asyncio ``RateLimiter``; ``RemoteLimiter`` gives a client the same ``Limiter``
interface and finds the actor by its name (``config.LIMITER_NAME``)::

    RateLimiterActor.options(name=LIMITER_NAME, namespace=NAMESPACE).remote(settings.limiter)
    client = LLMClient(settings, limiter=RemoteLimiter(settings=settings.limiter))

The actor is restartable and starts afresh after a restart (an empty window, full
concurrency: the provider's next 429 teaches it again). A caller whose call fails because
the actor died looks it up again by name, waits a bounded time for it to answer, and asks
once more. If it stays gone, the caller degrades to a limiter of its own process with a
warning and asks for the shared one again a little later: a lost limiter costs cluster-wide
coordination for a while (each process keeps its own concurrency bound and AIMD on 429s),
never every model call.

Far from every limit a caller does not ask per call: it borrows an ``Allowance`` (some
slots, requests and tokens for ``allowance_s``), starts calls on it and releases their
answered outcomes locally, then hands it back with what it did (``settle``), all at once.
A throttled or failed outcome, or headers with news in them, go to the limiter at once and
end the allowance; its calls still running become ordinary leases. Near a limit the limiter
lends nothing and every call asks, exactly as without allowances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.config import LIMITER_NAME, NAMESPACE, LimiterSettings
from actors.llm.allowance_spending import AllowanceCall, Spending
from actors.llm.limit_headers import limiter_headers
from actors.llm.limiter import (
    Allowance,
    AllowanceReport,
    Lease,
    LimiterSnapshot,
    Outcome,
    RateLimiter,
    Release,
    headers_teach,
)
from actors.llm.shared_limiter import RateLimiterActor

__all__ = ["FIND_WAIT_S", "LOCAL_FOR_S", "RateLimiterActor", "RemoteLimiter"]

log = logging.getLogger(__name__)

# How long a caller waits for a lost limiter to answer again before going local: a
# restart takes a few seconds on a busy small machine.
FIND_WAIT_S = 10.0
# How long a caller that went local keeps its own limiter before asking for the shared one.
LOCAL_FOR_S = 30.0
_FIND_POLL_S = 0.2
# An acquire that finds others' borrows spent before its turn stops borrowing after this many.
_BORROWS_PER_CALL = 3
# Answered calls: the limiter's one reaction is AIMD's increase on OK, which can wait.
_SETTLED_LATER = frozenset({Outcome.OK, Outcome.MALFORMED, Outcome.REJECTED})


def _find_by_name(name: str) -> Callable[[], ray.actor.ActorHandle]:
    return lambda: ray.get_actor(name, namespace=NAMESPACE)


class RemoteLimiter:
    """A ``Limiter`` backed by the cluster's ``RateLimiterActor``, found by name.

    Far from the limits it spends an allowance borrowed from the actor (module docstring),
    one per process; ``close`` hands it back early.

    ``settings`` configure the local limiter used while the shared one is gone. ``handle``
    is for a limiter at hand that is not the system's (tests that run their own);
    ``find`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        handle: ray.actor.ActorHandle | None = None,
        *,
        settings: LimiterSettings | None = None,
        name: str = LIMITER_NAME,
        find: Callable[[], ray.actor.ActorHandle] | None = None,
        find_wait_s: float = FIND_WAIT_S,
        local_for_s: float = LOCAL_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handle = handle  # the shared limiter as last found; None until found again
        self._find_handle = find or _find_by_name(name)
        self._find_wait_s = find_wait_s
        self._local_for_s = local_for_s
        self._clock = clock
        self._settings = settings or LimiterSettings()
        self._local = RateLimiter(self._settings)  # while the shared one is gone
        self._local_leases: set[int] = set()  # ids of leases the local limiter granted
        self._local_until = float("-inf")  # clock time before which we do not look again
        self._finding: asyncio.Task[ray.actor.ActorHandle | None] | None = None
        self._spending: Spending | None = None  # the allowance being spent
        self._lapse: asyncio.TimerHandle | None = None  # hands it back at its deadline
        self._calls: dict[int, AllowanceCall] = {}  # calls started on allowances, still running
        self._borrowing: asyncio.Task[Lease | None] | None = None  # the one borrow under way
        self._carrying: frozenset[int] = frozenset()  # the running calls it would carry
        self._asking = 0  # acquire calls not answered yet: how many slots to borrow
        self.actor_calls = 0  # calls made to the shared limiter, for tests and benchmarks

    async def acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        self._asking += 1
        try:
            return await self._acquire(input_tokens, output_tokens)
        finally:
            self._asking -= 1

    async def _acquire(self, input_tokens: int, output_tokens: int) -> Lease:
        for _ in range(_BORROWS_PER_CALL):
            lease = self._start(input_tokens, output_tokens)
            if lease is not None:
                return lease
            handle = await self._shared()
            if handle is None:
                break
            if self._borrowing is not None:
                await asyncio.wait({self._borrowing})  # one borrow at a time: it may lend
            elif (lease := self._start(input_tokens, output_tokens)) is not None:
                return lease  # lent while we looked for the limiter
            else:
                lease = await self._borrow(handle, input_tokens, output_tokens)
                if lease is not None:
                    return lease
            if self._spending is None and self._borrowing is None:
                break  # the limiter lent nothing: near a limit, every call asks
        return self._start(input_tokens, output_tokens) or await self._acquire_per_call(
            input_tokens, output_tokens
        )

    async def close(self) -> None:
        """Hand this process's allowance back now: its unused slots and budget."""
        report = self._end_spending()
        if report is not None and self._handle is not None:
            self.actor_calls += 1
            try:
                await self._handle.settle.remote(report)
            except RayActorError as exc:
                self._lost(self._handle, exc)

    async def _acquire_per_call(self, input_tokens: int, output_tokens: int) -> Lease:
        for _ in range(2):  # the first try, and once more after finding the limiter again
            handle = await self._shared()
            if handle is None:
                break
            ref: ray.ObjectRef[Lease] = handle.acquire.remote(input_tokens, output_tokens)
            self.actor_calls += 1
            try:
                lease: Lease = await ref
                return lease
            except asyncio.CancelledError:
                # If the grant raced the cancel, the limiter reclaims it after its lease TTL.
                _withdraw(ref)
                raise
            except RayActorError as exc:
                self._lost(handle, exc)
        lease = await self._local.acquire(input_tokens, output_tokens)
        self._local_leases.add(lease.id)
        return lease

    async def release(self, done: Release) -> float:
        # Only the headers the limiter reads travel on, to it or into a report.
        done = replace(done, headers=limiter_headers(done.headers))
        lease, outcome = done.lease, done.outcome
        call = self._calls.get(lease.id)
        if call is not None:
            spending = call.spending
            learned = spending.grant.learned_limits if spending is not None else {}
            local = outcome in _SETTLED_LATER and not headers_teach(done.headers, learned)
            if spending is None and local and lease.id in self._carrying:
                # Carried on if the borrow lends: counted there, else released then.
                call.done = done
                return 0.0
            if spending is not None and local:
                del self._calls[lease.id]
                spending.finish(call, done)
                return 0.0
            if spending is not None:
                # News for the limiter: the allowance ends first, so this call is a lease
                # there when its release arrives (one caller's calls arrive in order).
                self._settle(self._end_spending())
            del self._calls[lease.id]
        handle = self._handle
        if lease.id in self._local_leases or handle is None:
            # Granted here, or granted by a limiter that has died since: the local one
            # learns from the outcome and says how long to wait.
            self._local_leases.discard(lease.id)
            return await self._local.release(done)
        ref: ray.ObjectRef[float] = handle.release.remote(done)
        self.actor_calls += 1
        if outcome is Outcome.OK:
            # A success never asks the caller to wait: don't spend a round trip on it.
            # Calls from one caller to one actor run in order, so the limiter still
            # sees this release before that caller's next acquire.
            return 0.0
        try:
            wait: float = await ref
            return wait
        except RayActorError as exc:
            self._lost(handle, exc)
            # The local limiter never granted this lease: only the outcome and headers teach it.
            return await self._local.release(done)

    async def snapshot(self) -> LimiterSnapshot:
        """The shared limiter's state, or this process's own while the shared one is gone."""
        handle = await self._shared()
        if handle is not None:
            try:
                snapshot: LimiterSnapshot = await handle.snapshot.remote()
                return snapshot
            except RayActorError as exc:
                self._lost(handle, exc)
        return await self._local.snapshot()

    # --- allowances ------------------------------------------------------------------

    def _start(self, input_tokens: int, output_tokens: int) -> Lease | None:
        """A call on the allowance, if it covers one; no actor call."""
        spending = self._spending
        now = self._clock()
        if spending is None or not spending.covers(now, input_tokens, output_tokens):
            return None
        key = spending.start(input_tokens, output_tokens)
        self._calls[key] = AllowanceCall(input_tokens, output_tokens, spending)
        return Lease(id=key, granted_at=now, waited_s=0.0)

    async def _borrow(
        self, handle: ray.actor.ActorHandle, input_tokens: int, output_tokens: int
    ) -> Lease | None:
        """Hand back the allowance and ask for another; near a limit, a lease for this call.

        None when an allowance came (or the limiter was lost). The ask runs on even if this
        caller is cancelled while it carries running calls: whether they are on the new
        allowance must be known here.
        """
        report = self._end_spending()
        carry = [key for key, call in self._calls.items() if call.spending is None]
        slots = min(self._settings.allowance_slots, max(2, self._asking + len(carry)))
        sent_at = self._clock()
        # Sent here, not in the task: a release sent after it must arrive after it.
        ref: ray.ObjectRef[Allowance | Lease | None] = handle.borrow.remote(
            input_tokens, output_tokens, slots, carry, report
        )
        self.actor_calls += 1
        task = asyncio.ensure_future(self._answer(handle, ref, sent_at, carry))
        self._borrowing, self._carrying = task, frozenset(carry)
        task.add_done_callback(self._borrowed)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back)  # a lease granted as we left
            if not carry:
                task.cancel()
            raise

    async def _answer(
        self,
        handle: ray.actor.ActorHandle,
        ref: ray.ObjectRef[Allowance | Lease | None],
        sent_at: float,
        carry: list[int],
    ) -> Lease | None:
        """The borrow's answer: a lease, or nothing, or an allowance to spend from now on."""
        try:
            granted = await ref
        except asyncio.CancelledError:
            _withdraw(ref)
            raise
        except RayActorError as exc:
            self._lost(handle, exc)
            return None
        if granted is None or isinstance(granted, Lease):
            return granted
        # A carried call released meanwhile freed its slot there, so it counts as taken.
        spending = Spending(granted, sent_at + granted.ttl_s, carried=len(granted.carried))
        for key in granted.carried:  # the others stay leases there, released per call
            if (call := self._calls.get(key)) is not None:
                call.spending = spending
        self._spending = spending
        delay = max(0.0, spending.deadline - self._clock())
        self._lapse = asyncio.get_running_loop().call_later(delay, self._lapsed, spending)
        return None

    def _borrowed(self, task: asyncio.Task[Lease | None]) -> None:
        """The borrow answered: settle the carried calls released while it was away."""
        carried, self._borrowing, self._carrying = self._carrying, None, frozenset()
        for key in carried:
            call = self._calls.get(key)
            if call is None or call.done is None:
                continue
            del self._calls[key]
            if call.spending is not None:
                call.spending.finish(call, call.done)
            elif self._handle is not None:
                self.actor_calls += 1
                self._handle.release.remote(call.done)

    def _give_back(self, task: asyncio.Task[Lease | None]) -> None:
        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        handle = self._handle
        if handle is not None:
            self.actor_calls += 1
            handle.release.remote(Release(task.result(), Outcome.CONNECTION))

    def _lapsed(self, spending: Spending) -> None:
        """The deadline: hand the allowance back, its running calls become leases there."""
        if self._spending is spending:
            self._settle(self._end_spending())

    def _settle(self, report: AllowanceReport | None) -> None:
        handle = self._handle
        if report is not None and handle is not None:
            self.actor_calls += 1
            handle.settle.remote(report)  # not awaited: nothing comes back

    def _end_spending(self) -> AllowanceReport | None:
        """Stop spending the allowance; its report, listing the calls still running on it."""
        spending, self._spending = self._spending, None
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
        if spending is None:
            return None
        report = spending.report
        for key, call in self._calls.items():
            if call.spending is spending:
                if not call.known:
                    report.running.append((key, call.input_tokens, call.output_tokens))
                call.spending, call.known = None, True
        return report

    # --- finding the shared limiter ----------------------------------------------

    async def _shared(self) -> ray.actor.ActorHandle | None:
        """The shared limiter, found by name if need be; None while this process is local.

        After a loss, callers wait (boundedly) for the limiter to come back. Once local,
        they do not wait: every ``local_for_s`` a search runs in the background.
        """
        if self._handle is not None:
            return self._handle
        local = self._local_until > float("-inf")
        if self._finding is None and (not local or self._clock() >= self._local_until):
            self._finding = asyncio.ensure_future(self._find())
        if local or self._finding is None:
            return None
        # Shielded: many calls await one search, and a cancelled caller must not end it.
        return await asyncio.shield(self._finding)

    async def _find(self) -> ray.actor.ActorHandle | None:
        """Look the limiter up by name until it answers, for at most ``find_wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._find_wait_s
        was_local = self._local_until > float("-inf")
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    handle = await asyncio.to_thread(self._find_handle)
                    await asyncio.wait_for(handle.pid.remote(), left)
                except (ValueError, RayActorError, TimeoutError):
                    # ValueError: no actor has the name (yet); RayActorError: it is
                    # restarting or dead; TimeoutError: it did not answer in time.
                    await asyncio.sleep(min(_FIND_POLL_S, max(0.0, deadline - loop.time())))
                    continue
                if was_local:
                    log.info("the shared rate limiter is back; this process uses it again")
                self._handle, self._local_until = handle, float("-inf")
                return handle
            log.warning(
                "the shared rate limiter did not answer within %g s; this process limits its "
                "own calls for the next %g s, then looks for it again",
                self._find_wait_s,
                self._local_for_s,
            )
            self._local_until = self._clock() + self._local_for_s
            return None
        finally:
            self._finding = None

    def _lost(self, handle: ray.actor.ActorHandle, exc: RayActorError) -> None:
        """Forget ``handle`` (once, however many calls saw it fail): the next call finds it."""
        if self._handle is handle:
            self._handle = None
            self._end_spending()  # lent by a limiter that is gone: nothing to hand back
            log.warning("the shared rate limiter was lost (%s); finding it again", _first(exc))


def _withdraw(ref: Any) -> None:
    """Cancel a call not answered yet (a fake handle in tests answers with an asyncio task)."""
    if isinstance(ref, asyncio.Future):
        ref.cancel()
    else:
        ray.cancel(ref)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
