"""Drive one task's DAG: submit everything ready, wait, settle, repeat.

Like ``graphlib``'s loop: a microtask starts the moment its own dependencies
are done; there are no level barriers. Each attempt runs on an agent its role's
pool leases out (``actors.agents.leases``: the orchestrator calls the agent
itself). An attempt past its deadline — kept by the agent on its own work: time
queued for a free agent, or held back by the rate limiter, does not count —
is cancelled and retried on another agent (the pool remembers who tried) with
exponential backoff and jitter, up to ``max_attempts``; under load a microtask
may wait in its pool for minutes. The dispatcher's own backstop is
for a pool that stopped answering: past it, the pool is asked how many agents
are idle, and only a pool that gives no answer has its call cancelled (a dead
pool's call fails through Ray at once).

A microtask running past the p90 of the durations seen so far (and past twice
their median: with near-constant latencies nothing straggles) gets a backup
copy, but only on an agent of its role that is idle: a copy that has to queue
behind real work only delays it. Idle counts are asked of the pools in the
background; the loop never waits for them. Under real latencies the
critical path is whichever microtask is still running, so any straggler
qualifies; those on the planned critical path go first, then the longest
running. Copies are paid calls, so at most ``backup_max_share`` of a task's
microtasks get one. The first result wins and the other copy is cancelled.

A microtask that fails for good does not stop its siblings: its dependents run
with what there is, and the merger says what is missing. A refusal or an answer
cut at ``max_tokens`` twice (the client already retried it with a larger budget)
fails for good at once: asking another agent the same thing would be paid for
again and end the same way. Every answer paid for counts — attempts, schema
corrections, retries of cut answers and backups — against
``max_paid_calls_per_microtask``; errors carry the usage of the answers they
paid for, so failed calls count against the task budget too.

Money is held before it is spent: every attempt — first, retry or backup — reserves its
estimated cost (``actors.engine.admission.reserve``) and gives it back when it settles, its
actual usage counted instead. A first attempt that the budget cannot hold yet waits
for calls in flight to settle; once nothing is in flight the task stops and merges what
finished. A retry or a backup the budget cannot hold is not made.

``ray.wait`` would block the orchestrator's event loop, so this uses its asyncio
form: ``asyncio.wait`` over the pending calls with a timeout at the next deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from actors.config import Settings
from actors.engine import admission
from actors.engine.attempts import Attempt, running_past, straggler_threshold
from actors.engine.pool_probe import IdleAgents, PoolProbe
from actors.engine.report import TaskRecord
from actors.engine.scheduler import DagScheduler
from actors.engine.warm_ups import Warm, WarmUps, sharing
from actors.errors import ModelRefusalError, TaskBudgetError, TruncatedAnswerError
from actors.models import EventKind, Microtask, MicrotaskRequest, MicrotaskResult, Role, Usage
from actors.observe import tracing

log = logging.getLogger(__name__)

OnResult = Callable[[MicrotaskResult], Coroutine[Any, Any, None]]
CallPool = Callable[[Role, MicrotaskRequest, float], Coroutine[Any, Any, MicrotaskResult]]
_BACKUP_CHECK_S = 0.1  # how often stragglers are looked for once backups are possible
_BACKSTOP_GRACE_S = 30.0  # past twice the run deadline, the pool is asked if it still answers
# Paid answers one attempt may use: an answer and one retry (of a cut or malformed answer).
# Reserved at launch, so attempts running side by side (backups) never pass the cap together.
_PAID_PER_ATTEMPT = 2


class Dispatcher:
    """Runs the microtasks of one task record on the pools, within its agent cap."""

    def __init__(
        self,
        record: TaskRecord,
        settings: Settings,
        call_pool: CallPool,
        rng: random.Random,
        on_result: OnResult | None = None,
        idle_agents: IdleAgents | None = None,
        open_plan: bool = False,
        warm: Warm | None = None,
    ) -> None:
        self._record = record
        self._settings = settings
        self._call_pool = call_pool
        self._pools = PoolProbe(idle_agents)
        self._rng = rng
        self._on_result = on_result  # makes a result durable before it counts as done
        # An open plan is still being streamed by the planner: ``add``, then ``seal``.
        self._scheduler = DagScheduler.open() if open_plan else DagScheduler(record.microtasks)
        self._arrived = asyncio.Event()  # a streamed microtask or the seal came in
        self._inflight: dict[asyncio.Task[MicrotaskResult], Attempt] = {}
        self._waiting: list[Microtask] = []  # ready, but over the task's agent cap
        self._durations: list[float] = []  # of finished attempts, for the backup p90
        self._reserved: dict[str, int] = {}  # microtask id -> paid answers held by attempts
        self._refused = ""  # why the task budget last refused an attempt ("" never)
        self._warm_ups = WarmUps(
            record, warm if settings.warm_cache and settings.prompt_caching else None
        )

    @property
    def _cap(self) -> int:
        """Agents one task may occupy at once: its complexity level's bound (an open plan's
        level is known once the assessment is in, before any microtask arrives)."""
        return self._settings.levels[self._record.complexity].max_agents

    def add(self, microtask: Microtask) -> None:
        """One more microtask of an open plan, dispatched once its dependencies are done."""
        self._scheduler.add(microtask)
        self._arrived.set()

    def seal(self, microtasks: list[Microtask]) -> None:
        """The final plan of an open one; attempts of microtasks it dropped are cancelled."""
        dropped = {mt.id for mt in self._scheduler.seal(microtasks)}
        self._waiting = [mt for mt in self._waiting if mt.id not in dropped]
        for call, attempt in list(self._inflight.items()):
            if attempt.microtask.id in dropped:
                call.cancel()
                self._release(attempt)
                del self._inflight[call]
        if dropped:
            log.info("task %s: the final plan dropped %s", self._record.task_id, sorted(dropped))
        self._arrived.set()

    async def run(self) -> None:
        """Return when every microtask has a result or has failed for good (for an open
        plan: and the plan is sealed)."""
        try:
            while self._scheduler.is_active():
                self._arrived.clear()
                self._take_ready()
                for mt in list(self._waiting):
                    if len(self._inflight) >= self._cap:
                        break
                    if self._warm_ups.holds(mt, self._waiting):
                        continue
                    if not self._launch(mt):
                        break  # the budget is held by calls in flight: wait for them to settle
                    self._waiting.remove(mt)
                    await self._record.emit(EventKind.STARTED, microtask=mt, attempt=1)
                if not self._inflight and not self._warm_ups.pending:
                    if self._waiting:  # nothing in flight will free any budget now
                        self._note_budget()
                        break
                    if self._scheduler.sealed:
                        break
                done = await self._wait()
                self._warm_ups.count_ended()
                for call in done:
                    attempt = self._inflight.pop(call, None)
                    if attempt is not None:  # None: the losing copy of a backup pair
                        await self._settle(call, attempt)
                await self._enforce_backstops()
                if self._settings.backups:
                    await self._start_backups()
        finally:
            for call, attempt in self._inflight.items():
                call.cancel()
                self._release(attempt)  # holds must not outlive the dispatch (merge checks)
            self._pools.stop()
            self._warm_ups.stop()

    async def _wait(self) -> set[asyncio.Task[MicrotaskResult]]:
        """Wait for a call to end, the next deadline or check, or (open plan) an arrival."""
        waits: set[asyncio.Future[Any]] = {*self._inflight, *self._warm_ups.pending}
        arrival = None
        if not self._scheduler.sealed:
            arrival = asyncio.ensure_future(self._arrived.wait())
            waits.add(arrival)
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self._next_wakeup(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if arrival is not None:
                arrival.cancel()
        return {call for call in done if call in self._inflight}

    def _take_ready(self) -> None:
        """Queue newly ready microtasks; those already done (before a restart) just count."""
        while ready := self._scheduler.ready():
            for mt in ready:
                if mt.id in self._record.results:
                    self._scheduler.done(mt.id)
                else:
                    self._waiting.append(mt)

    def _note_budget(self) -> None:
        """Say once that the task budget stopped work, and why."""
        note = f"stopped at {admission.budget_of(self._record, self._settings)[1]}; "
        note += "the answer merges what finished"
        if note not in self._record.notes:
            self._record.note(note)
            log.warning("task %s: %s", self._record.task_id, self._refused)

    def _launch(self, mt: Microtask, backup: bool = False, delay: float = 0.0) -> bool:
        """Start one attempt of ``mt``; False, with nothing started, when the task budget
        cannot hold the attempt's estimated cost on top of what is spent and held."""
        record = self._record
        number = record.attempts.get(mt.id, 0) + 1
        shares_request, shares_context = sharing(self._record, mt)
        request = MicrotaskRequest(
            task_id=record.task_id,
            microtask=mt,
            context=[record.results[d] for d in mt.depends_on if d in record.results],
            request_text=record.text,
            conversation=record.conversation,
            attempt=number,
            affinity_key=mt.branch,
            timeout_s=self._settings.microtask_timeout_s,
            max_paid_calls=min(_PAID_PER_ATTEMPT, self._paid_calls_left(mt)),
            trace_context=tracing.inject(),  # the task span: each attempt's span is its child
            shares_request=shares_request,
            shares_context=shares_context,
        )
        try:
            held = admission.reserve(record, self._settings, request)
        except TaskBudgetError as exc:
            self._refused = str(exc)
            return False
        record.attempts[mt.id] = number
        call = asyncio.create_task(self._call_pool(mt.role, request, delay))
        attempt = Attempt(mt, number, backup, time.monotonic() + delay)
        attempt.reserved_usd = held
        attempt.paid_cap = request.max_paid_calls or 0
        self._reserved[mt.id] = self._reserved.get(mt.id, 0) + attempt.paid_cap
        attempt.deadline = attempt.submitted + self._backstop_s()
        self._inflight[call] = attempt
        return True

    async def _settle(self, call: asyncio.Task[MicrotaskResult], attempt: Attempt) -> None:
        """Record one finished attempt: a result, a retry, or a final failure."""
        record, mt = self._record, attempt.microtask
        self._release(attempt)
        if mt.id in record.results or mt.id in record.failures:
            return  # another copy already decided this microtask
        stopped = call.cancelled()  # by the backstop: the pool stopped answering
        error = TimeoutError("the pool stopped answering") if stopped else call.exception()
        if error is None:
            result = call.result()
            self._count(mt, result.usage)  # at once: the hold just released must not go missing
            if self._on_result is not None:
                await self._on_result(result)
            record.results[mt.id] = result
            # Whole attempt time, queue included, on both sides of the backup comparison.
            self._durations.append(time.monotonic() - attempt.submitted)
            self._scheduler.done(mt.id)
            for other, twin in list(self._inflight.items()):
                if twin.microtask.id == mt.id:  # the slower copy of a backup pair
                    other.cancel()
                    self._release(twin)  # what the cancelled copy paid for is not known here
                    del self._inflight[other]
            await record.emit(
                EventKind.FINISHED,
                microtask=mt,
                agent=result.agent_id,
                attempt=attempt.number,
                duration_s=result.duration_s,
            )
            return
        paid = getattr(error, "usage", None)
        if isinstance(paid, Usage):
            self._count(mt, paid)
        if any(a.microtask.id == mt.id for a in self._inflight.values()):
            return  # its twin is still running; let that one decide
        reason = f"{type(error).__name__}: {error}"
        log.warning(
            "task %s microtask %s attempt %d failed: %s",
            record.task_id,
            mt.id,
            attempt.number,
            reason,
        )
        final = isinstance(error, ModelRefusalError | TruncatedAnswerError)
        if isinstance(error, ModelRefusalError):
            reason = f"the model refused microtask {mt.id} ({mt.title}): {error}"
        elif isinstance(error, TruncatedAnswerError):
            record.cut.append(f"{mt.id}: cut at max_tokens twice; failed ({mt.title})")
        elif self._paid_calls_left(mt) <= 0:
            final = True
            reason += (
                f" (its cap of {self._settings.max_paid_calls_per_microtask} paid calls is spent)"
            )
        if not final and record.attempts[mt.id] < self._settings.max_attempts:
            base = self._settings.retry_backoff_s * 2 ** (record.attempts[mt.id] - 1)
            if self._launch(mt, delay=self._rng.uniform(0, base)):
                record.retries += 1
                await record.emit(
                    EventKind.RETRIED, microtask=mt, attempt=attempt.number + 1, detail=reason
                )
                return
            reason += f" (not retried: {self._refused})"
            self._note_budget()
        record.failures[mt.id] = reason
        self._scheduler.failed(mt.id)
        await record.emit(EventKind.FAILED, microtask=mt, attempt=attempt.number, detail=reason)

    def _count(self, mt: Microtask, usage: Usage) -> None:
        """Add the answers one attempt paid for to the task and to the microtask's cap."""
        self._record.usage += usage
        self._record.paid_calls[mt.id] = self._record.paid_calls.get(mt.id, 0) + usage.requests

    def _paid_calls_left(self, mt: Microtask) -> int:
        """Paid answers ``mt`` may still start: its cap less what was paid and is reserved."""
        cap = self._settings.max_paid_calls_per_microtask
        return cap - self._record.paid_calls.get(mt.id, 0) - self._reserved.get(mt.id, 0)

    def _release(self, attempt: Attempt) -> None:
        """Give back what the attempt held: paid answers of its microtask's cap, budget."""
        mt_id = attempt.microtask.id
        self._reserved[mt_id] = self._reserved.get(mt_id, 0) - attempt.paid_cap
        attempt.paid_cap = 0
        admission.release(self._record, attempt.reserved_usd)
        attempt.reserved_usd = 0.0

    def _backstop_s(self) -> float:
        """How long an attempt runs before its pool is asked whether it still answers."""
        return 2 * self._settings.microtask_timeout_s + _BACKSTOP_GRACE_S

    async def _enforce_backstops(self) -> None:
        """Cancel the attempts past their backstop whose pool no longer answers; the
        others are queued behind other work or running under the pool's deadline."""
        now = time.monotonic()
        answers: dict[Role, bool] = {}  # asked once per role and pass
        for call, attempt in list(self._inflight.items()):
            if now < attempt.deadline:
                continue
            role = attempt.microtask.role
            if role not in answers:
                answers[role] = await self._pools.answers(role)
            if answers[role]:
                attempt.deadline = time.monotonic() + self._backstop_s()
                continue
            attempt.deadline = float("inf")
            call.cancel()  # the pool call is cancelled, and with it the agent's
            log.warning(
                "task %s microtask %s: the %s pool gave no answer; its call is cancelled",
                self._record.task_id,
                attempt.microtask.id,
                role.value,
            )

    async def _start_backups(self) -> None:
        settings, record = self._settings, self._record
        if len(self._durations) < settings.backup_min_samples:
            return
        allowed = math.ceil(settings.backup_max_share * len(record.microtasks)) - record.backups
        if allowed <= 0:
            return
        threshold = straggler_threshold(self._durations)
        stragglers = running_past(
            self._inflight.values(),
            threshold,
            time.monotonic(),
            lambda mt: (
                record.attempts[mt.id] < settings.max_attempts and self._paid_calls_left(mt) > 0
            ),
        )
        for role, attempts in stragglers.items():
            room = min(allowed, self._cap - len(self._inflight))
            if self._pools.can_ask:
                room = min(room, self._pools.idle_now(role))
            for attempt in attempts[: max(0, room)]:
                mt = attempt.microtask
                if not self._launch(mt, backup=True):
                    return  # a copy is optional: the budget goes to work not yet done
                record.backups += 1
                allowed -= 1
                self._pools.took(role)
                await record.emit(
                    EventKind.BACKUP,
                    microtask=mt,
                    attempt=record.attempts[mt.id],
                    detail=f"running past {threshold:.2f} s (p90, at least twice the median); "
                    "an idle agent takes a copy",
                )

    def _next_wakeup(self) -> float | None:
        """Seconds until the next deadline or backup check (None: only results matter)."""
        deadlines = [a.deadline for a in self._inflight.values()]
        soonest = min(deadlines, default=float("inf")) - time.monotonic()
        if self._settings.backups and len(self._durations) >= self._settings.backup_min_samples:
            soonest = min(soonest, _BACKUP_CHECK_S)
        return None if soonest == float("inf") else max(0.0, soonest)
