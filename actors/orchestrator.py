"""The orchestrator actor: request → plan → dispatch → merge → report, for many tasks at once.

It owns each task's lifecycle: intake check, complexity verdict and plan
(``decomposer``), the DAG run (``dispatch``), the synthesis by a generation
agent (``merger``) and the report. Callers follow a task through ``events``
(long polling), ``status`` and ``wait``; ``cancel`` keeps what finished.
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

from actors import dag, merger, tracing
from actors.config import LIMITER_NAME, NAMESPACE, Settings, pool_actor_name
from actors.decomposer import Decomposer
from actors.dispatch import Dispatcher
from actors.errors import (
    CapacityError,
    TaskCancelledError,
    TruncatedAnswerError,
    UnknownTaskError,
    UserInputError,
)
from actors.intake import clean_request
from actors.llm import LLMClient, RemoteLimiter
from actors.models import (
    CallKind,
    Complexity,
    EventKind,
    Microtask,
    MicrotaskRequest,
    MicrotaskResult,
    PoolSnapshot,
    ProgressEvent,
    Reconciliation,
    Role,
    RunReport,
    TaskState,
    Usage,
)
from actors.ray_metrics import OrchestratorMetrics
from actors.reconcile import reconcile
from actors.report import TaskRecord, build_report
from actors.stats import Stats, StatsSnapshot
from actors.store import Store

log = logging.getLogger(__name__)

_KEEP_FINISHED = 1_000  # finished tasks kept in memory for status queries
_DAY_S = 86_400.0
# Reads and idempotent calls are retried by Ray across an orchestrator restart, so a
# caller waiting on a task simply gets its answer from the resumed orchestrator.
_retried = ray.method(max_task_retries=-1)


@ray.remote(num_cpus=0, max_restarts=-1)
class Orchestrator:
    """Runs many tasks at once, each a DAG of microtasks on the four pools."""

    def __init__(self, settings: Settings, base_url: str | None) -> None:
        # The limiter and pools are looked up by name rather than passed in, so a
        # restarted orchestrator finds them again from plain constructor arguments.
        self._settings = settings
        tracing.configure(settings, "orchestrator")
        self._pools = {
            role: ray.get_actor(pool_actor_name(role), namespace=NAMESPACE) for role in Role
        }
        limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
        client = LLMClient(settings, limiter=RemoteLimiter(limiter), base_url=base_url)
        self._decomposer = Decomposer(client, settings)
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._rng = random.Random()
        self._store = Store(settings.home / "store.sqlite3")
        self._stats = Stats(totals=self._store.totals())
        self._ray_metrics = OrchestratorMetrics()
        self._resumed: asyncio.Task[None] | None = None  # reloading unfinished tasks

    # --- public API -------------------------------------------------------------

    async def submit(
        self, text: str | bytes, plan: list[Microtask] | None = None, user: str | None = None
    ) -> str:
        """Accept a request and start it; returns the task id at once.

        ``plan`` skips the planner and runs the given microtasks (benchmarks and
        experiments use it so every contestant runs the same DAG). ``user`` (e.g.
        ``telegram:42``) is counted against the per-user limit on running tasks.
        Raises ``UserInputError`` for unusable text, ``CapacityError`` past a limit.
        """
        await self._ensure_resumed()
        clean = clean_request(text, self._settings.max_request_chars)
        if plan is not None:
            problems = dag.validate(plan)
            if problems:
                raise UserInputError("the given plan is invalid: " + "; ".join(problems[:5]))
        await self._admit(user)
        task_id = uuid.uuid4().hex[:12]
        record = TaskRecord(
            task_id=task_id, text=clean, given_plan=plan, user=user, observer=self._observe
        )
        await asyncio.to_thread(self._store.task_started, task_id, record.started_at, clean)
        self._start(record)
        log.info("task %s accepted (%d chars)", task_id, len(clean))
        return task_id

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
        """Progress events with ``seq >= after``; waits up to ``timeout_s`` for new ones.

        After a restart the resumed task's events start again at 0; a caller that
        is ahead of them gets them from the start rather than waiting forever.
        """
        await self._ensure_resumed()
        if task_id not in self._tasks and self._store.report(task_id):
            return []  # finished before a restart: nothing more will happen
        record = self._record(task_id)
        if after > len(record.events):
            after = 0
        if timeout_s > 0:
            await record.wait_for_events(after, timeout_s)
        return record.events[after:]

    @_retried
    async def cancel(self, task_id: str) -> bool:
        """Cancel a running task; what finished is kept in its report."""
        await self._ensure_resumed()
        record = self._record(task_id)
        runner = self._runners.get(task_id)
        if record.finished.is_set() or runner is None:
            return False
        runner.cancel()
        await record.finished.wait()
        return True

    @_retried
    async def status(self, task_id: str) -> dict:
        """State, progress and (when finished) the report of one task."""
        await self._ensure_resumed()
        if task_id not in self._tasks and (stored := self._store.report(task_id)):
            return {
                "task_id": task_id,
                "state": stored.state.value,
                "complexity": stored.complexity.value,
                "done": stored.succeeded + stored.failed,
                "total": stored.microtasks,
                "microtasks": {e.id: e.status.value for e in stored.timeline},
                "report": stored.model_dump(mode="json"),
            }
        return self._record(task_id).status()

    @_retried
    async def tasks(self) -> list[dict]:
        """A line of status for every task kept in memory, newest last."""
        return [record.status(brief=True) for record in self._tasks.values()]

    @_retried
    async def active(self) -> list[dict]:
        """Tasks still running, with their progress."""
        await self._ensure_resumed()
        return [r.status(brief=True) for r in self._tasks.values() if not r.finished.is_set()]

    @_retried
    async def history(self, limit: int = 50) -> list[dict]:
        """Finished and running tasks from the durable store, newest first."""
        return await asyncio.to_thread(self._store.recent, limit)

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

    async def _admit(self, user: str | None) -> None:
        """Refuse, clearly, a task that would pass a limit on running tasks or on cost."""
        settings = self._settings
        running = [r for r in self._tasks.values() if not r.finished.is_set()]
        if len(running) >= settings.max_running_tasks:
            raise CapacityError(
                f"{len(running)} tasks are running, the limit is {settings.max_running_tasks}; "
                "try again when some have finished"
            )
        mine = sum(1 for r in running if user is not None and r.user == user)
        if user is not None and mine >= settings.max_tasks_per_user:
            raise CapacityError(
                f"you have {mine} tasks running, the limit is {settings.max_tasks_per_user} "
                "per user; wait for one to finish"
            )
        spent = await asyncio.to_thread(self._store.cost_since, time.time() - _DAY_S)
        if spent >= settings.daily_budget_usd:
            raise CapacityError(
                f"the daily budget of ${settings.daily_budget_usd:.2f} is spent "
                f"(${spent:.2f} in the last 24 h); the limit is PARALLEL_AGENTS_DAILY_BUDGET_USD"
            )

    def _start(self, record: TaskRecord) -> None:
        self._tasks[record.task_id] = record
        self._runners[record.task_id] = asyncio.create_task(self._run(record))
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
            record = TaskRecord(
                task_id=task.task_id,
                text=task.request,
                started_at=task.created_at,
                observer=self._observe,
            )
            if task.complexity is not None:  # planned before the restart: keep that plan
                record.complexity = task.complexity
                record.plan_source = task.plan_source
                record.set_plan(task.microtasks)
                for microtask_id, result in task.results.items():
                    record.results[microtask_id] = result
                    record.attempts[microtask_id] = result.attempt
                    record.usage += result.usage
            record.note(f"resumed after a restart with {len(task.results)} microtasks done")
            self._start(record)
            log.info(
                "task %s resumed: %d of %d microtasks were done",
                task.task_id,
                len(task.results),
                len(task.microtasks),
            )

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
        try:
            # The task span ends before the report is published, so a caller whose
            # ``run`` returned finds the whole trace exported.
            with tracing.span("task", task_id=record.task_id) as span:
                if record.microtasks:
                    pass  # resumed with the plan it had before a restart
                elif record.given_plan is not None:
                    record.plan_source = "given"
                    record.complexity = self._level_for(len(record.given_plan))
                    record.set_plan(dag.assign_branches(record.given_plan))
                else:
                    with tracing.span("plan", task_id=record.task_id):
                        await self._plan(record)
                if not record.results:
                    await asyncio.to_thread(
                        self._store.plan_made,
                        record.task_id,
                        record.complexity,
                        record.plan_source,
                        record.microtasks,
                    )
                span.set_attributes(
                    {
                        "complexity": record.complexity.value,
                        "microtasks": len(record.microtasks),
                        "plan_source": record.plan_source,
                    }
                )
                await record.emit(EventKind.PLANNED, detail=record.plan_source)
                record.state = TaskState.RUNNING
                limit = self._settings.levels[record.complexity].time_limit_s
                try:
                    await asyncio.wait_for(self._execute(record), limit)
                except TimeoutError:
                    record.note(f"time limit of {limit:.0f} s reached; merging what finished")
                record.state = TaskState.MERGING
                await record.emit(EventKind.MERGING)
                with tracing.span("merge", task_id=record.task_id):
                    await self._merge(record)
                record.state = TaskState.DONE
        except asyncio.CancelledError:
            record.state = TaskState.CANCELLED
            record.note("cancelled by the caller")
            record.answer = record.answer or merger.fallback_answer(
                record.text, record.ordered_results(), merger.summarise(record.ordered_results())
            )
            await record.emit(EventKind.CANCELLED)
        except Exception as exc:  # say what happened, keep what was done
            log.exception("task %s failed", record.task_id)
            record.state = TaskState.FAILED
            record.note(f"{type(exc).__name__}: {exc}")
            record.answer = merger.fallback_answer(
                record.text, record.ordered_results(), merger.summarise(record.ordered_results())
            )
            await record.emit(EventKind.FAILED, detail=str(exc))
        finally:
            finished_at = time.time()
            record.report = build_report(record, finished_at)
            self._stats.task_finished(record.report, finished_at)
            self._ray_metrics.task_finished(record.report)
            try:
                await asyncio.to_thread(
                    self._store.task_finished,
                    record.report,
                    record.text,
                    record.started_at,
                    finished_at,
                )
            except Exception:  # the caller still gets the report; only history misses it
                log.exception("task %s: could not write its report to the store", record.task_id)
            await record.emit(EventKind.DONE, detail=record.state.value)
            record.finished.set()
            self._runners.pop(record.task_id, None)
            log.info("task %s %s in %.1f s", record.task_id, record.state, record.report.wall_s)

    async def _plan(self, record: TaskRecord) -> None:
        assessment, usage = await self._decomposer.assess(record.text)
        record.usage += usage
        record.complexity = assessment.level
        if not assessment.parallelizable:
            record.plan_source = "direct"
            answer = Microtask(
                id="answer", role=Role.GENERATION, title="Answer", instructions=record.text
            )
            record.set_plan([answer])
            return
        plan, usage = await self._decomposer.plan(record.text, assessment)
        record.usage += usage
        record.plan_source = plan.source
        record.notes.extend(f"plan: {note}" for note in plan.notes)
        record.cut.extend(plan.cut)
        record.set_plan(plan.microtasks)

    def _level_for(self, size: int) -> Complexity:
        """The smallest complexity level whose bounds hold ``size`` microtasks."""
        for level, bounds in self._settings.levels.items():
            if size <= bounds.max_microtasks:
                return level
        return Complexity.MASSIVE

    async def _execute(self, record: TaskRecord) -> None:
        dispatcher = Dispatcher(
            record,
            self._settings,
            self._call_pool,
            self._rng,
            on_result=self._keep_result,
            idle_agents=self._idle_agents,
        )
        await dispatcher.run()

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
        ref: ray.ObjectRef = self._pools[role].submit.remote(request)
        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise

    async def _idle_agents(self, role: Role) -> int:
        idle: int = await self._pools[role].idle_agents.remote()
        return idle

    async def _merge(self, record: TaskRecord) -> None:
        """Claims reconciled, then the synthesis by a generation agent (stitched if it fails)."""
        results = record.ordered_results()
        if record.plan_source == "direct":
            record.summary = merger.summarise(results, missing=record.missing_titles())
            record.answer = results[0].content if results else ""
            if not results:
                record.answer = merger.fallback_answer(record.text, results, record.summary)
            return
        with tracing.span("reconcile", task_id=record.task_id):
            summary = await reconcile(
                results,
                record.missing_titles(),
                lambda prompt: self._reconcile_batch(record, prompt),
                batch_claims=self._settings.reconcile_batch_claims,
            )
        record.summary = summary
        record.notes.extend(summary.notes)
        prompt = merger.synthesis_prompt(record.text, results, summary)
        synthesis = Microtask(
            id="synthesis", role=Role.GENERATION, title="Synthesis", instructions=prompt
        )
        request = self._side_request(record, synthesis, CallKind.SYNTHESIS)
        try:
            result = await self._call_pool(Role.GENERATION, request, 0.0)
        except (asyncio.CancelledError, TaskCancelledError):
            raise
        except Exception as exc:
            record.usage += _paid_usage(exc)
            if isinstance(exc, TruncatedAnswerError):
                record.cut.append("synthesis: cut at max_tokens twice; answer stitched from parts")
            record.note(f"synthesis failed ({type(exc).__name__}); answer stitched from parts")
            record.answer = merger.fallback_answer(record.text, results, summary)
            return
        record.usage += result.usage
        record.simulated = record.simulated or result.simulated
        record.answer = result.content + "\n\n" + merger.render_footer(summary)

    async def _reconcile_batch(self, record: TaskRecord, prompt: str) -> Reconciliation:
        """One batch of claims reconciled by a validation agent (structured output)."""
        batch = Microtask(
            id="reconcile", role=Role.VALIDATION, title="Reconcile claims", instructions=prompt
        )
        request = self._side_request(record, batch, CallKind.RECONCILE)
        try:
            result = await self._call_pool(Role.VALIDATION, request, 0.0)
        except Exception as exc:
            record.usage += _paid_usage(exc)
            raise
        record.usage += result.usage
        record.simulated = record.simulated or result.simulated
        return Reconciliation.model_validate_json(result.content)

    def _side_request(
        self, record: TaskRecord, microtask: Microtask, kind: CallKind
    ) -> MicrotaskRequest:
        """A request for a call outside the plan (reconciling, synthesis)."""
        return MicrotaskRequest(
            task_id=record.task_id,
            microtask=microtask,
            request_text=record.text,
            kind=kind,
            max_paid_calls=2,  # an answer and one retry with a larger budget
            trace_context=tracing.inject(),
        )


def _paid_usage(error: BaseException) -> Usage:
    """The answers a failed call paid for (errors of model calls carry them)."""
    usage = getattr(error, "usage", None)
    return usage if isinstance(usage, Usage) else Usage()
