"""The orchestrator actor: request → plan → dispatch → merge → report, for many tasks at once.

It owns each task's record and lifecycle: intake check, the plan (``planning``), the DAG
run (``dispatch``), reconciling and the synthesis (``merge_step``) and the report. Callers
follow a task through ``events`` (long polling), ``status`` and ``wait``; ``cancel`` keeps
what finished.

Why ~600 lines: a Ray actor's remote API lives on its class, and this one has some twenty
methods (submit, events, cancel, status, the queries); what each phase does is in the
modules beside it (``planning``, ``dispatch``, ``merge_step``, ``lifecycle``, ``recall``,
``resume``, ``admission``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections import OrderedDict

import ray

from actors import home_lock
from actors.agents.agent import build_prompt, microtask_system
from actors.agents.leases import PoolLeases
from actors.config import NAMESPACE, Purpose, Settings, pool_actor_name
from actors.engine import dag, lifecycle
from actors.engine.admission import DAY_S, Admission
from actors.engine.decomposer import Decomposer
from actors.engine.dispatch import Dispatcher
from actors.engine.documents import Document, attach
from actors.engine.estimate import for_level
from actors.engine.intake import clean_request
from actors.engine.merge_step import MergeStep
from actors.engine.planning import Planning
from actors.engine.recall import recall
from actors.engine.report import SEQ_SPAN, TaskRecord, end_event, settled
from actors.engine.resume import resumed_record
from actors.engine.sections import SectionedAnswer
from actors.engine.store import Store
from actors.errors import (
    UnknownTaskError,
    UserInputError,
)
from actors.llm import LLMClient, RemoteLimiter, ledger
from actors.models import (
    AgentOutput,
    EventKind,
    Microtask,
    MicrotaskRequest,
    MicrotaskResult,
    PoolSnapshot,
    ProgressEvent,
    Role,
    RunReport,
    TaskState,
    Usage,
)
from actors.observe import tracing
from actors.observe.ray_metrics import OrchestratorMetrics
from actors.observe.stats import Stats, StatsSnapshot

log = logging.getLogger(__name__)

_KEEP_FINISHED = 1_000  # finished tasks kept in memory for status queries
_EXPIRY_EVERY_S = 3600.0  # how often stale conversations are deleted (and at start)
# Reads and idempotent calls are retried by Ray across an orchestrator restart, so a
# caller waiting on a task simply gets its answer from the resumed orchestrator.
_retried = ray.method(max_task_retries=-1)


@ray.remote(num_cpus=0, max_restarts=-1)
class Orchestrator:
    """Runs many tasks at once, each a DAG of microtasks on the four pools."""

    def __init__(self, settings: Settings, resume_since: float | None = None) -> None:
        # The limiter and pools are looked up by name rather than passed in, so a
        # restarted orchestrator finds them again from plain constructor arguments.
        self._settings = settings
        # One orchestrator per home; a restart waits for its old process to let go.
        home_lock.hold(settings.home, home_lock.ORCHESTRATOR_LOCK, wait_s=home_lock.EXIT_WAIT_S)
        self._resume_since = resume_since  # set for a private run: resume only its own tasks
        tracing.configure(settings, "orchestrator")
        self._pools = {
            role: ray.get_actor(pool_actor_name(role), namespace=NAMESPACE) for role in Role
        }
        # Microtasks run on the agents the pools lease out: one hop, orchestrator → agent.
        self._leases = {role: PoolLeases(pool) for role, pool in self._pools.items()}
        self._foreseen: dict[str, dict[Role, int]] = {}  # task -> widths told to the pools
        limiter = RemoteLimiter(settings=settings.limiter)  # by name, again after a restart
        self._client = LLMClient(settings, limiter=limiter)
        self._decomposer = Decomposer(self._client, settings)
        self._merger = MergeStep(settings, self._call_pool)
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._rng = random.Random()
        self._store = Store(settings.home / "store.sqlite3")
        self._planning = Planning(
            settings, self._decomposer, self._client, self._store, self._dispatcher, self._foresee
        )
        # Each start gets a new number from the store; event seqs carry it (``events``).
        self._seq_base = self._store.next_incarnation(time.time()) * SEQ_SPAN
        self._stats = Stats(totals=self._store.totals())
        # Limits and the day's spending, in memory: the store is read once, here.
        self._admission = Admission(settings, self._store.spending_since(time.time() - DAY_S))
        # Idempotency keys being recorded right now: (user, key) -> the first task's id.
        self._keying: dict[tuple[str | None, str], asyncio.Future[str]] = {}
        self._ray_metrics = OrchestratorMetrics()
        if settings.ledger_folder is not None:
            ledger.forget_older_than(settings.ledger_folder, settings.call_ledger_days * DAY_S)
        self._resumed: asyncio.Task[None] | None = None  # reloading unfinished tasks
        self._expired_at = 0.0  # when stale conversations were last deleted

    # --- public API -------------------------------------------------------------

    async def submit(
        self,
        text: str | bytes,
        plan: list[Microtask] | None = None,
        user: str | None = None,
        idempotency_key: str | None = None,
        quick: bool | None = None,
        documents: list[Document] | None = None,
        cost_limit_usd: float | None = None,
        conversation_id: str | None = None,
    ) -> str:
        """Accept a request and start it; returns the task id at once.

        ``plan`` skips the planner and runs the given microtasks (benchmarks and
        experiments use it so every contestant runs the same DAG). ``user`` (e.g.
        ``telegram:42``) owns the task and is counted against the per-user limit.
        A repeated ``idempotency_key`` of the same user (e.g. a Telegram update id)
        returns the first task's id and starts nothing, across restarts too. ``quick``:
        a quick take first when the request goes to the DAG (None: ``quick_answer``).
        ``documents`` follow the request in its text (``actors.engine.documents.attach``), so every
        agent and a resumed task see them. ``cost_limit_usd``: the task stops there (if
        below ``task_budget_usd``) and merges what finished. ``conversation_id``: the task
        follows up in that conversation of ``user``, its prompts carrying the earlier turns
        (``actors.conversation``); None: it opens a conversation whose id is the task id.
        Raises ``UserInputError`` for unusable text, ``CapacityError`` past a limit,
        ``UnknownConversationError`` for a conversation ``user`` does not have.
        """
        await self._ensure_resumed()
        clean = self._checked(text, documents, plan, cost_limit_usd)
        key = None if idempotency_key is None else (user, idempotency_key)
        if key is not None and (first := await self._task_with_key(*key)) is not None:
            return first
        task_id = uuid.uuid4().hex[:12]
        record = TaskRecord(
            task_id=task_id,
            text=clean,
            given_plan=plan,
            user=user,
            conversation_id=conversation_id or task_id,
            observer=self._observe,
            quick=self._settings.quick_answer if quick is None else quick,
            budget_usd=cost_limit_usd,
        )
        # Checked and counted in one step, with no await in between: concurrent submits
        # cannot all pass through one free slot.
        self._admission.admit(record)
        task_id = await self._recorded(record, idempotency_key, conversation_id)
        if task_id != record.task_id:  # the key was recorded first by another orchestrator
            self._admission.withdraw(record)
            return task_id
        self._start(record)
        log.info("task %s accepted (%d chars)", task_id, len(clean))
        await self._expire_conversations()
        return task_id

    def _checked(
        self,
        text: str | bytes,
        documents: list[Document] | None,
        plan: list[Microtask] | None,
        cost_limit_usd: float | None,
    ) -> str:
        """The request with its documents attached, or ``UserInputError`` for what is unusable."""
        clean = clean_request(text, self._settings.max_request_chars)
        clean = attach(clean, documents or [], self._settings)
        if cost_limit_usd is not None and not cost_limit_usd > 0:
            raise UserInputError(f"the cost limit must be above $0, not {cost_limit_usd!r}")
        if plan is not None:
            problems = dag.validate(plan)
            if problems:
                raise UserInputError("the given plan is invalid: " + "; ".join(problems[:5]))
        return clean

    async def _recorded(
        self, record: TaskRecord, idempotency_key: str | None, conversation_id: str | None
    ) -> str:
        """Store an admitted task (withdrawn if that fails); returns the id stored under its
        idempotency key, which is another task's when that submit recorded it first."""
        key = None if idempotency_key is None else (record.user, idempotency_key)
        keyed: asyncio.Future[str] | None = None
        if key is not None:
            keyed = self._keying[key] = asyncio.get_running_loop().create_future()
        try:
            task_id = await asyncio.to_thread(
                self._store.task_started,
                record.task_id,
                record.started_at,
                record.text,
                record.user,
                idempotency_key,
                record.budget_usd,
                conversation_id,
            )
        except BaseException:
            self._admission.withdraw(record)
            if keyed is not None:
                keyed.cancel()  # a submit waiting on this key looks again
            raise
        finally:
            if key is not None:
                self._keying.pop(key, None)
        if keyed is not None:
            keyed.set_result(task_id)
        return task_id

    @_retried
    async def latest_conversation(self, user: str | None = None) -> str | None:
        """``user``'s most recently used conversation (to follow up on), if any."""
        return await asyncio.to_thread(self._store.latest_conversation, user)

    async def forget(self, user: str | None = None) -> int:
        """Delete ``user``'s conversations and the texts of their finished tasks from the
        store and from memory; returns how many conversations were deleted."""
        for task_id, record in list(self._tasks.items()):
            if record.user == user and record.finished.is_set():
                del self._tasks[task_id]
        deleted = await asyncio.to_thread(self._store.forget, user)
        log.info("forgot %d conversations of a user on request", deleted)
        return deleted

    async def _expire_conversations(self) -> None:
        """Delete conversations unused for ``conversation_retention_days``, at most hourly."""
        now = time.time()
        if now - self._expired_at < _EXPIRY_EVERY_S:
            return
        self._expired_at = now
        before = now - self._settings.conversation_retention_days * DAY_S
        expired = await asyncio.to_thread(self._store.expire_conversations, before)
        if expired:
            log.info("deleted %d conversations unused for the retention period", expired)

    async def estimate(self, text: str | bytes, documents: list[Document] | None = None) -> dict:
        """What ``text`` would cost, before it is submitted (``actors.engine.estimate``): its
        complexity verdict (one call to the fastest model, not counted to any task) and the
        level's typical plan. Keys: complexity, direct, microtasks, cost_usd, low_usd,
        high_usd. Raises ``UserInputError`` as ``submit`` would."""
        clean = attach(
            clean_request(text, self._settings.max_request_chars), documents or [], self._settings
        )
        verdict, _ = await self._decomposer.assess(clean)
        direct = not verdict.parallelizable
        return for_level(self._settings, verdict.level, clean, direct).model_dump(mode="json")

    async def _task_with_key(self, user: str | None, idempotency_key: str) -> str | None:
        """The task ``user`` first submitted with ``idempotency_key``, if there is one."""
        key = (user, idempotency_key)
        while True:
            if (keying := self._keying.get(key)) is not None:
                await asyncio.wait([keying])  # a submit with this key is being recorded
                if not keying.cancelled():
                    return keying.result()
                continue  # that submit failed: nothing was recorded
            stored = await asyncio.to_thread(self._store.task_for_key, user, idempotency_key)
            if stored is not None or key not in self._keying:
                return stored
            # else a submit with this key began while the store was read: wait for it

    async def run(self, text: str | bytes, plan: list[Microtask] | None = None) -> RunReport:
        """Submit and wait for the report."""
        return await self._report_when_done(await self.submit(text, plan), None)

    @_retried
    async def wait(self, task_id: str, timeout_s: float | None = None) -> RunReport:
        """The task's report once it has finished (done, failed or cancelled)."""
        return await self._report_when_done(task_id, timeout_s)

    async def _report_when_done(self, task_id: str, timeout_s: float | None) -> RunReport:
        await self._ensure_resumed()
        if task_id not in self._tasks and (stored := self._store.report(task_id)):
            return stored
        record = self._record(task_id)
        await asyncio.wait_for(record.finished.wait(), timeout_s)
        assert record.report is not None
        return record.report

    @_retried
    async def events(self, task_id: str, after: int = 0, timeout_s: float = 10.0) -> list:
        """Progress events from cursor ``after`` on; waits up to ``timeout_s`` for new ones.

        Start with ``after=0`` and go on with the last event's ``seq + 1``. Seqs carry
        the orchestrator's incarnation, so a cursor from before a restart gets the resumed
        task's events from the start, once. A task known only from the store (finished
        before a restart, or long ago) answers with one ``DONE`` event; a call past the
        end waits out its timeout, so a follower never spins.
        """
        await self._ensure_resumed()
        if task_id not in self._tasks:
            stored = await asyncio.to_thread(self._store.report, task_id)
            if stored is not None:
                end = end_event(stored, self._seq_base)
                if after <= end.seq:
                    return [end]
                await asyncio.sleep(timeout_s)
                return []
        return await self._record(task_id).follow(after, timeout_s)

    async def answer(self, task_id: str, attempt: int, piece: str) -> None:
        """A piece of a task's answer as its writer streams it (``actors.llm.answer_relay``):
        an ``ANSWER`` event for its followers. Pieces after the merge are dropped."""
        record = self._tasks.get(task_id)
        if record is not None and record.state is TaskState.MERGING and not record.finishing:
            await record.emit(EventKind.ANSWER, attempt=attempt, detail=piece)

    @_retried
    async def cancel(self, task_id: str) -> bool:
        """Cancel a running task; what finished is kept in its report.

        Returns once the task has ended: True if this call cancelled it, False if it
        had finished or was already finishing (a no-op).
        """
        await self._ensure_resumed()
        if task_id not in self._tasks:
            stored = await asyncio.to_thread(self._store.report, task_id)
            if stored is not None:
                return False  # finished long ago or before a restart
        return await lifecycle.cancel(self._record(task_id), self._runners.get(task_id))

    @_retried
    async def status(self, task_id: str) -> dict:
        """State, progress and (when finished) the report of one task."""
        await self._ensure_resumed()
        if task_id not in self._tasks and (stored := self._store.report(task_id)):
            return {
                "task_id": task_id,
                "user": self._store.user_of(task_id),
                "conversation_id": stored.conversation_id,
                "state": stored.state.value,
                "complexity": stored.complexity.value,
                "done": stored.succeeded + stored.failed,
                "total": stored.microtasks,
                "microtasks": {e.id: e.status.value for e in stored.timeline},
                "report": stored.model_dump(mode="json"),
            }
        return self._record(task_id).status()

    @_retried
    async def tasks(self, user: str | None = None) -> list[dict]:
        """A line of status for every task kept in memory (only ``user``'s when given),
        newest last; each names its ``user``."""
        records = self._tasks.values()
        return [r.status(brief=True) for r in records if user is None or r.user == user]

    @_retried
    async def active(self) -> list[dict]:
        """Tasks still running, with their progress and ``user``."""
        await self._ensure_resumed()
        return [r.status(brief=True) for r in self._tasks.values() if not r.finished.is_set()]

    @_retried
    async def history(self, limit: int = 50, user: str | None = None) -> list[dict]:
        """Finished and running tasks from the durable store (only ``user``'s when given),
        newest first; each names its ``user``, requests shortened."""
        return await asyncio.to_thread(self._store.recent, limit, user)

    @_retried
    async def daily(self, days: int = 30) -> list[dict]:
        """Trends per UTC day of the last ``days`` from the durable store (``Store.daily``)."""
        return await asyncio.to_thread(self._store.daily, days)

    @_retried
    async def stats(self) -> StatsSnapshot:
        """Sliding-window rates and long-term totals (for /status and /metrics)."""
        running = sum(1 for r in self._tasks.values() if not r.finished.is_set())
        return self._stats.snapshot(active_tasks=running)

    @_retried
    async def pools(self) -> list[PoolSnapshot]:
        """Every pool's snapshot, in role order."""
        return list(await asyncio.gather(*(p.snapshot.remote() for p in self._pools.values())))

    @_retried
    async def ping(self) -> bool:
        """Liveness; the first call after a restart also resumes unfinished tasks."""
        await self._ensure_resumed()
        return True

    @_retried
    async def pid(self) -> int:
        """The orchestrator's process id (for chaos tests and operators)."""
        return os.getpid()

    # --- admission and resume ------------------------------------------------------

    def _start(self, record: TaskRecord) -> None:
        """Run an admitted task; whatever ends its runner, admission hears of it."""
        self._tasks[record.task_id] = record
        runner = asyncio.create_task(self._run(record))
        # A callback, not a line in _run: it runs even if the runner itself is cancelled.
        runner.add_done_callback(lambda _: self._admission.settle(record))
        self._runners[record.task_id] = runner
        self._forget_old()

    async def _ensure_resumed(self) -> None:
        """Once per process: reload every unfinished task from the store and run it on."""
        if self._resumed is None:
            self._resumed = asyncio.create_task(self._resume())
        await asyncio.shield(self._resumed)

    async def _resume(self) -> None:
        for task in await asyncio.to_thread(self._store.unfinished):
            if task.task_id in self._tasks:
                continue
            if self._resume_since is not None and task.created_at < self._resume_since:
                continue  # another run's task: its own orchestrator (or the next start) resumes it
            record = resumed_record(task, self._observe)
            # Accepted before the restart, so never refused now; but it counts against the
            # limits on running tasks and, with what it spent, against the daily budget.
            self._admission.register(record)
            self._start(record)
            log.info(
                "task %s resumed: %d of %d microtasks were done",
                task.task_id,
                len(task.results),
                len(task.microtasks),
            )
        await self._expire_conversations()

    # --- one task ----------------------------------------------------------------

    def _observe(self, event: ProgressEvent) -> None:
        self._stats.observe(event)
        self._ray_metrics.observe(event)

    def _record(self, task_id: str) -> TaskRecord:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise UnknownTaskError(f"no task with id {task_id!r}") from None

    def _forget_old(self) -> None:
        finished = [tid for tid, r in self._tasks.items() if r.finished.is_set()]
        for tid in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._tasks[tid]
            self._runners.pop(tid, None)

    async def _run(self, record: TaskRecord) -> None:
        record.seq_base = self._seq_base
        try:
            await lifecycle.run(record, self._work(record), self._record_report)
        finally:
            self._runners.pop(record.task_id, None)
            self._foresee(record, done=True)
        assert record.report is not None
        log.info("task %s %s in %.1f s", record.task_id, record.state, record.report.wall_s)

    async def _work(self, record: TaskRecord) -> None:
        """Plan, dispatch, merge: each phase within its own deadline. A streamed plan is
        dispatched while it arrives; its dispatch is sealed with the final plan and then
        bounded by the level's time limit like any other."""
        # The task span ends before the report is published, so a caller whose
        # ``run`` returned finds the whole trace exported.
        with tracing.span("task", task_id=record.task_id) as span:
            dispatching: asyncio.Task[None] | None = None
            sections: SectionedAnswer | None = None  # answer_mode "sections"
            following: asyncio.Task[None] | None = None  # its follower, during the dispatch
            try:
                await recall(record, self._store, self._client, self._settings)
                streamed, dispatching = await self._planning.make(record)
                span.set_attributes(
                    {
                        "complexity": record.complexity.value,
                        "microtasks": len(record.microtasks),
                        "plan_source": record.plan_source,
                    }
                )
                self._foresee(record)
                await record.emit(EventKind.PLANNED, detail=record.plan_source)
                if streamed is not None:  # sealed after PLANNED: what starts now is after it
                    streamed.seal(record.microtasks)
                if self._settings.answer_mode == "sections" and record.plan_source != "direct":
                    sections = self._merger.sectioned(record)
                    if sections.active:
                        following = asyncio.create_task(sections.follow())
                await self._dispatch(record, dispatching)
            finally:
                if sections is not None:
                    sections.close()
                for task in (dispatching, following):
                    if task is not None and not task.done():
                        task.cancel()  # the dispatch: cancelled while planning
                        await asyncio.gather(task, return_exceptions=True)
            await self._merge(record, sections)

    async def _dispatch(self, record: TaskRecord, dispatching: asyncio.Task[None] | None) -> None:
        """Run the plan (or await the streamed plan's dispatch) within the level's limit."""
        record.state = TaskState.RUNNING
        limit = self._settings.levels[record.complexity].time_limit_s
        try:
            await asyncio.wait_for(dispatching or self._dispatcher(record).run(), limit)
        except TimeoutError:
            record.note(f"time limit of {limit:.0f} s reached; merging what finished")

    async def _merge(self, record: TaskRecord, sections: SectionedAnswer | None) -> None:
        """Reconcile and write the answer; the quick take ends with it."""
        try:
            record.state = TaskState.MERGING
            await record.emit(EventKind.MERGING)
            with tracing.span("merge", task_id=record.task_id):
                await self._merger.run(record, sections)
        finally:
            if sections is not None:
                sections.stop()
            if record.quick_task is not None:  # the full answer is ready (or the task ended)
                record.quick_task.cancel()
                await asyncio.gather(record.quick_task, return_exceptions=True)

    def _foresee(self, record: TaskRecord, done: bool = False) -> None:
        """Predictive allocation: tell each pool how many of the task's microtasks its plan
        (so far) will run at once, so agents start before the microtasks are ready; when
        the task is done, that it needs none."""
        told = self._foreseen.setdefault(record.task_id, {})
        cap = self._settings.levels[record.complexity].max_agents
        widths = {} if done else dag.role_widths(record.microtasks, cap)
        for role, pool in self._pools.items():
            width = widths.get(role, 0)
            if width != told.get(role, 0):
                told[role] = width
                pool.expect.remote(record.task_id, width)
        if done:
            del self._foreseen[record.task_id]

    async def _record_report(self, record: TaskRecord, finished_at: float) -> None:
        """Count a finished task and store its report before anyone is told it ended."""
        assert record.report is not None
        folder = self._settings.ledger_folder
        if folder is not None:  # what the ledger saw paid, earlier incarnations and dead agents too
            summary = await asyncio.to_thread(ledger.read, folder, [record.task_id])
            record.report = settled(record.report, summary)
        self._stats.task_finished(record.report, finished_at)
        self._ray_metrics.task_finished(record.report)
        await asyncio.to_thread(
            self._store.task_finished, record.report, record.text, record.started_at, finished_at
        )

    def _dispatcher(self, record: TaskRecord, open_plan: bool = False) -> Dispatcher:
        return Dispatcher(
            record,
            self._settings,
            self._call_pool,
            self._rng,
            on_result=self._keep_result,
            idle_agents=self._idle_agents,
            open_plan=open_plan,
            warm=self._warm,
        )

    async def _keep_result(self, result: MicrotaskResult) -> None:
        """Write a microtask result to the store before the task counts it done."""
        try:
            await asyncio.to_thread(self._store.result_made, result)
        except Exception:  # still used in memory; only a restart would redo it
            log.exception("task %s: could not store %s", result.task_id, result.microtask_id)

    async def _call_pool(
        self, role: Role, request: MicrotaskRequest, delay: float
    ) -> MicrotaskResult:
        if delay:
            await asyncio.sleep(delay)
        return await self._leases[role].run(request)

    async def _warm(self, request: MicrotaskRequest) -> Usage:
        """Write the prefix ``request`` shares with its role's other microtasks to the
        prompt cache, exactly as the agents will send it (system prompt, request, format)."""
        role = request.microtask.role
        with ledger.attributed(request.task_id, f"warm-{role.value}"):
            return await self._client.warm(
                Purpose(role.value), microtask_system(role), build_prompt(request)[:1], AgentOutput
            )

    async def _idle_agents(self, role: Role) -> int:
        idle: int = await self._pools[role].idle_agents.remote()
        return idle
