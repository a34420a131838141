"""The orchestrator actor: request → plan → dependency-driven dispatch → merge → report.

Dispatch reads like ``graphlib``: submit everything ready, wait for the first
result or the next deadline, mark done, repeat. A microtask starts the moment
its own dependencies finish; there are no level barriers. Each attempt is a
call to its role's pool; past its deadline it is cancelled and retried (on
another agent: the pool remembers who tried) with exponential backoff and
jitter. A critical microtask running past the observed p90 gets a backup
copy; the first result wins and the other copy is cancelled.

``ray.wait`` blocks the event loop of an async actor, so this actor uses its
asyncio form: ``asyncio.wait`` over the awaited object refs, with a timeout at
the next deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
import uuid
from collections import OrderedDict

import ray

from actors import dag, merger
from actors.config import LIMITER_NAME, NAMESPACE, Settings, pool_actor_name
from actors.dag import DagScheduler
from actors.decomposer import Decomposer
from actors.errors import TaskCancelledError, UnknownTaskError, UserInputError
from actors.intake import clean_request
from actors.llm import LLMClient, RemoteLimiter
from actors.models import (
    Complexity,
    EventKind,
    Microtask,
    MicrotaskRequest,
    MicrotaskResult,
    PoolSnapshot,
    Role,
    RunReport,
    TaskState,
    Usage,
)
from actors.report import TaskRecord, build_report

log = logging.getLogger(__name__)

_KEEP_FINISHED = 1_000  # finished tasks kept in memory for status queries


class _Attempt:
    """One call of one microtask to its pool."""

    __slots__ = ("backup", "deadline", "microtask", "number", "timed_out")

    def __init__(self, microtask: Microtask, number: int, backup: bool, deadline: float) -> None:
        self.microtask = microtask
        self.number = number  # 1-based, counting retries and backups
        self.backup = backup
        self.deadline = deadline  # time.monotonic() after which it is cancelled
        self.timed_out = False


@ray.remote(num_cpus=0, max_restarts=-1)
class Orchestrator:
    """Runs many tasks at once, each a DAG of microtasks on the four pools."""

    def __init__(self, settings: Settings, base_url: str | None) -> None:
        # The limiter and pools are looked up by name rather than passed in, so a
        # restarted orchestrator finds them again from plain constructor arguments.
        self._settings = settings
        self._pools = {
            role: ray.get_actor(pool_actor_name(role), namespace=NAMESPACE) for role in Role
        }
        limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
        client = LLMClient(settings, limiter=RemoteLimiter(limiter), base_url=base_url)
        self._decomposer = Decomposer(client, settings)
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._rng = random.Random()

    # --- public API -------------------------------------------------------------

    async def submit(self, text: str | bytes, plan: list[Microtask] | None = None) -> str:
        """Accept a request and start it; returns the task id at once.

        ``plan`` skips the planner and runs the given microtasks (benchmarks and
        experiments use it so every contestant runs the same DAG).
        """
        clean = clean_request(text, self._settings.max_request_chars)
        if plan is not None:
            problems = dag.validate(plan)
            if problems:
                raise UserInputError("the given plan is invalid: " + "; ".join(problems[:5]))
        task_id = uuid.uuid4().hex[:12]
        record = TaskRecord(task_id=task_id, text=clean, given_plan=plan)
        self._tasks[task_id] = record
        self._runners[task_id] = asyncio.create_task(self._run(record))
        self._forget_old()
        log.info("task %s accepted (%d chars)", task_id, len(clean))
        return task_id

    async def run(self, text: str | bytes, plan: list[Microtask] | None = None) -> RunReport:
        """Submit and wait for the report."""
        return await self.wait(await self.submit(text, plan))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> RunReport:
        """The task's report once it has finished (done, failed or cancelled)."""
        record = self._record(task_id)
        await asyncio.wait_for(record.finished.wait(), timeout_s)
        assert record.report is not None
        return record.report

    async def events(self, task_id: str, after: int = 0, timeout_s: float = 10.0) -> list:
        """Progress events with ``seq >= after``; waits up to ``timeout_s`` for new ones."""
        record = self._record(task_id)
        if timeout_s > 0:
            await record.wait_for_events(after, timeout_s)
        return record.events[after:]

    async def cancel(self, task_id: str) -> bool:
        """Cancel a running task; what finished is kept in its report."""
        record = self._record(task_id)
        runner = self._runners.get(task_id)
        if record.finished.is_set() or runner is None:
            return False
        runner.cancel()
        await record.finished.wait()
        return True

    async def status(self, task_id: str) -> dict:
        """State, progress and (when finished) the report of one task."""
        return self._record(task_id).status()

    async def tasks(self) -> list[dict]:
        """A line of status for every task kept in memory, newest last."""
        return [record.status(brief=True) for record in self._tasks.values()]

    async def pools(self) -> list[PoolSnapshot]:
        """Every pool's snapshot, in role order."""
        return list(await asyncio.gather(*(p.snapshot.remote() for p in self._pools.values())))

    async def ping(self) -> bool:
        return True

    # --- one task ----------------------------------------------------------------

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
            if record.given_plan is not None:
                record.plan_source = "given"
                record.complexity = self._level_for(len(record.given_plan))
                record.set_plan(dag.assign_branches(record.given_plan))
            else:
                await self._plan(record)
            await record.emit(EventKind.PLANNED, detail=record.plan_source)
            record.state = TaskState.RUNNING
            limit = self._settings.levels[record.complexity].time_limit_s
            try:
                await asyncio.wait_for(self._execute(record), limit)
            except TimeoutError:
                record.note(f"time limit of {limit:.0f} s reached; merging what finished")
            record.state = TaskState.MERGING
            await record.emit(EventKind.MERGING)
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
            record.report = build_report(record, time.time())
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
        record.set_plan(plan.microtasks)

    def _level_for(self, size: int) -> Complexity:
        """The smallest complexity level whose bounds hold ``size`` microtasks."""
        for level, bounds in self._settings.levels.items():
            if size <= bounds.max_microtasks:
                return level
        return Complexity.MASSIVE

    async def _execute(self, record: TaskRecord) -> None:
        """Run every microtask of the plan, each as soon as its dependencies are done."""
        settings = self._settings
        scheduler = DagScheduler(record.microtasks)
        inflight: dict[asyncio.Task[MicrotaskResult], _Attempt] = {}
        durations: list[float] = []

        def launch(mt: Microtask, backup: bool = False, delay: float = 0.0) -> None:
            number = record.attempts.get(mt.id, 0) + 1
            record.attempts[mt.id] = number
            request = MicrotaskRequest(
                task_id=record.task_id,
                microtask=mt,
                context=[record.results[d] for d in mt.depends_on if d in record.results],
                request_text=record.text,
                attempt=number,
                affinity_key=mt.branch,
            )
            call = asyncio.create_task(self._call_pool(mt.role, request, delay))
            deadline = time.monotonic() + delay + settings.microtask_timeout_s
            inflight[call] = _Attempt(mt, number, backup, deadline)

        try:
            while scheduler.is_active():
                for mt in scheduler.ready():
                    launch(mt)
                    await record.emit(EventKind.STARTED, microtask=mt, attempt=1)
                if not inflight:
                    break
                done, _ = await asyncio.wait(
                    inflight,
                    timeout=self._next_wakeup(inflight, durations),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for call in done:
                    attempt = inflight.pop(call)
                    await self._settle(record, scheduler, inflight, call, attempt, launch)
                    if call.done() and not call.cancelled() and call.exception() is None:
                        durations.append(call.result().duration_s)
                await self._enforce_deadlines(record, inflight)
                if settings.backups:
                    await self._start_backups(record, inflight, durations, launch)
        finally:
            for call in inflight:
                call.cancel()

    async def _settle(self, record, scheduler, inflight, call, attempt, launch) -> None:
        """Record one finished attempt: a result, a retry, or a final failure."""
        mt = attempt.microtask
        if mt.id in record.results or mt.id in record.failures:
            return  # another copy already decided this microtask
        error: BaseException | None
        if call.cancelled():
            error = TimeoutError(f"deadline of {self._settings.microtask_timeout_s:.0f} s passed")
        else:
            error = call.exception()
        if error is None:
            result: MicrotaskResult = call.result()
            record.results[mt.id] = result
            record.usage += result.usage
            scheduler.done(mt.id)
            for other, other_attempt in list(inflight.items()):
                if other_attempt.microtask.id == mt.id:  # the losing copy of a backup pair
                    other.cancel()
                    inflight.pop(other)
            await record.emit(
                EventKind.FINISHED, microtask=mt, agent=result.agent_id, attempt=attempt.number
            )
            return
        if any(a.microtask.id == mt.id for a in inflight.values()):
            return  # its twin is still running; let that one decide
        log.warning(
            "task %s microtask %s attempt %d failed: %s",
            record.task_id,
            mt.id,
            attempt.number,
            error,
        )
        if record.attempts[mt.id] < self._settings.max_attempts:
            record.retries += 1
            base = self._settings.retry_backoff_s * 2 ** (record.attempts[mt.id] - 1)
            launch(mt, delay=self._rng.uniform(0, base))
            await record.emit(
                EventKind.RETRIED,
                microtask=mt,
                attempt=attempt.number + 1,
                detail=f"{type(error).__name__}: {error}",
            )
        else:
            record.failures[mt.id] = f"{type(error).__name__}: {error}"
            scheduler.failed(mt.id)
            await record.emit(
                EventKind.FAILED,
                microtask=mt,
                attempt=attempt.number,
                detail=record.failures[mt.id],
            )

    async def _enforce_deadlines(self, record: TaskRecord, inflight: dict) -> None:
        now = time.monotonic()
        for call, attempt in inflight.items():
            if not attempt.timed_out and now >= attempt.deadline:
                attempt.timed_out = True
                call.cancel()  # _call_pool cancels the pool call, which cancels the agent's
                log.warning(
                    "task %s microtask %s passed its deadline", record.task_id, attempt.microtask.id
                )

    async def _start_backups(self, record, inflight, durations, launch) -> None:
        if len(durations) < self._settings.backup_min_samples:
            return
        p90 = statistics.quantiles(durations, n=10)[-1]
        now = time.monotonic()
        running = {a.microtask.id for a in inflight.values()}
        backed_up = {a.microtask.id for a in inflight.values() if a.backup}
        for attempt in list(inflight.values()):
            mt = attempt.microtask
            started = attempt.deadline - self._settings.microtask_timeout_s
            if (
                mt.critical
                and mt.id in running
                and mt.id not in backed_up
                and now - started > p90
                and record.attempts[mt.id] < self._settings.max_attempts
            ):
                backed_up.add(mt.id)
                record.backups += 1
                launch(mt, backup=True)
                await record.emit(
                    EventKind.BACKUP,
                    microtask=mt,
                    attempt=record.attempts[mt.id],
                    detail=f"running past p90 ({p90:.2f} s)",
                )

    def _next_wakeup(self, inflight: dict, durations: list[float]) -> float:
        """Seconds until the next deadline or backup check."""
        soonest = min(a.deadline for a in inflight.values()) - time.monotonic()
        if self._settings.backups and len(durations) >= self._settings.backup_min_samples:
            soonest = min(soonest, 0.1)
        return max(0.0, soonest)

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

    async def _merge(self, record: TaskRecord) -> None:
        """Synthesis by a generation agent; a stitched answer if that fails."""
        results = record.ordered_results()
        summary = merger.summarise(results, missing=record.missing_titles())
        record.summary = summary
        if record.plan_source == "direct":
            record.answer = results[0].content if results else ""
            if not results:
                record.answer = merger.fallback_answer(record.text, results, summary)
            return
        prompt = merger.synthesis_prompt(record.text, results, summary)
        synthesis = Microtask(
            id="synthesis", role=Role.GENERATION, title="Synthesis", instructions=prompt
        )
        request = MicrotaskRequest(
            task_id=record.task_id, microtask=synthesis, request_text=record.text, synthesis=True
        )
        try:
            result = await self._call_pool(Role.GENERATION, request, 0.0)
        except (asyncio.CancelledError, TaskCancelledError):
            raise
        except Exception as exc:
            record.note(f"synthesis failed ({type(exc).__name__}); answer stitched from parts")
            record.answer = merger.fallback_answer(record.text, results, summary)
            return
        record.usage += result.usage
        record.simulated = record.simulated or result.simulated
        record.answer = result.content + "\n\n" + merger.render_footer(summary)


__all__ = ["Orchestrator", "Usage"]
