"""One task's run: its work, then a finishing step that no cancel interrupts.

Cancelling a task cancels its work (planning, dispatch, merge) and nothing else. Once
the work has ended, done, failed or cancelled, the record is *finishing*: the report
is built, recorded (the orchestrator writes it to the store) and announced by the one
``DONE`` event in a shielded step, so every task ends with ``DONE`` and ``finished``
set, and a cancel that arrives meanwhile is a no-op. Without this, a cancel landing
on the store write left the task without ``DONE`` forever: ``wait`` and every later
cancel hung and the task held a running slot for good.

Example::

    runner = asyncio.create_task(lifecycle.run(record, work(record), record_report))
    await lifecycle.cancel(record, runner)  # True: cancelled; False: it was ending anyway
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from actors.engine import merger
from actors.engine.report import TaskRecord, build_report
from actors.models import EventKind, TaskState

log = logging.getLogger(__name__)

# Records a finished task's report (e.g. in the store); given the record and the time.
RecordReport = Callable[[TaskRecord, float], Awaitable[None]]


async def run(
    record: TaskRecord,
    work: Coroutine[Any, Any, None],
    record_report: RecordReport,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run ``work`` for ``record``, then finish the task exactly once, whatever happens."""
    try:
        await work
    except asyncio.CancelledError:
        state, why = TaskState.CANCELLED, "cancelled by the caller"
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # handled here: the finishing step must not see it
    except Exception as exc:  # say what happened, keep what was done
        log.exception("task %s failed", record.task_id)
        state, why = TaskState.FAILED, f"{type(exc).__name__}: {exc}"
    else:
        state, why = TaskState.DONE, ""
    record.finishing = True  # from here on ``cancel`` leaves the task alone
    finishing = asyncio.ensure_future(_finish(record, state, why, record_report, clock))
    await asyncio.shield(finishing)


async def cancel(record: TaskRecord, runner: asyncio.Task[None] | None) -> bool:
    """Cancel the task's work and wait until it has finished.

    True when the task ended cancelled by this call; False, a no-op, when it had
    finished or was finishing already (then it returns once the report is recorded).
    """
    if record.finished.is_set() or runner is None:
        return False
    cancelling = not record.finishing
    if cancelling:
        runner.cancel()
    await record.finished.wait()
    return cancelling and record.state is TaskState.CANCELLED


async def _finish(
    record: TaskRecord,
    state: TaskState,
    why: str,
    record_report: RecordReport,
    clock: Callable[[], float],
) -> None:
    """The report, recorded, then ``DONE``; runs to the end even if its caller is cancelled."""
    try:
        record.state = state
        if state is not TaskState.DONE:
            record.note(why)
            results = record.ordered_results()
            fallback = merger.fallback_answer(record.text, results, merger.summarise(results))
            # A cancel keeps an answer the merge already wrote; a failure does not trust it.
            cancelled = state is TaskState.CANCELLED
            record.answer = (record.answer if cancelled else "") or fallback
            kind = EventKind.CANCELLED if cancelled else EventKind.FAILED
            await record.emit(kind, detail="" if cancelled else why)
        finished_at = clock()
        record.report = build_report(record, finished_at)
        try:
            await record_report(record, finished_at)
        except Exception:  # the caller still gets the report; only history misses it
            log.exception("task %s: could not record its report", record.task_id)
    finally:
        await record.emit(EventKind.DONE, detail=record.state.value)
        record.finished.set()
