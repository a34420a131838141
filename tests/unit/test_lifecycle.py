"""A task's run and its cancel: every task ends with one DONE, whenever a cancel lands.

The report writer is passed in, so a test can hold the finishing write open and cancel
exactly then (the orchestrator's writer is the SQLite store).
"""

from __future__ import annotations

import asyncio

from actors.engine import lifecycle
from actors.engine.report import TaskRecord
from actors.models import EventKind, Microtask, Role, TaskState

GUARD_S = 10.0  # only so a regression fails instead of hanging the suite


class SlowWriter:
    """A report writer that holds each write open until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.written: list[str] = []

    async def __call__(self, record: TaskRecord, finished_at: float) -> None:
        self.entered.set()
        await self.release.wait()
        assert record.report is not None
        self.written.append(record.report.state.value)


def _record() -> TaskRecord:
    record = TaskRecord(task_id="t1", text="finish me")
    record.set_plan([Microtask(id="r1", role=Role.RESEARCH, title="r1", instructions="x")])
    return record


async def _quick_work(record: TaskRecord) -> None:
    record.answer = "the answer"


async def _endless_work(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


def _kinds(record: TaskRecord) -> list[EventKind]:
    return [event.kind for event in record.events]


async def test_a_cancel_during_the_finishing_write_is_a_no_op_and_the_task_ends():
    record, writer = _record(), SlowWriter()
    runner = asyncio.create_task(lifecycle.run(record, _quick_work(record), writer))
    await asyncio.wait_for(writer.entered.wait(), GUARD_S)  # the report is being written

    cancel = asyncio.create_task(lifecycle.cancel(record, runner))
    await asyncio.sleep(0)  # the cancel has landed while the write is open
    writer.release.set()

    assert await asyncio.wait_for(cancel, GUARD_S) is False  # it was finishing: a no-op
    await asyncio.wait_for(record.finished.wait(), GUARD_S)  # what ``wait`` awaits
    assert record.state is TaskState.DONE and record.report is not None
    assert record.report.result == "the answer"
    assert writer.written == ["done"]  # the write was not cut off
    assert _kinds(record) == [EventKind.DONE]
    assert record.events[-1].detail == "done"
    # A later cancel returns at once, and so does the runner.
    assert await asyncio.wait_for(lifecycle.cancel(record, runner), GUARD_S) is False
    await asyncio.wait_for(runner, GUARD_S)


async def test_a_cancel_during_the_work_cancels_and_keeps_what_finished():
    record, writer = _record(), SlowWriter()
    writer.release.set()
    started = asyncio.Event()
    runner = asyncio.create_task(lifecycle.run(record, _endless_work(started), writer))
    await asyncio.wait_for(started.wait(), GUARD_S)

    assert await asyncio.wait_for(lifecycle.cancel(record, runner), GUARD_S) is True
    assert record.state is TaskState.CANCELLED and record.finished.is_set()
    assert _kinds(record) == [EventKind.CANCELLED, EventKind.DONE]
    assert record.events[-1].detail == "cancelled"
    assert record.report is not None and "cancelled by the caller" in record.report.result
    assert writer.written == ["cancelled"]


async def test_two_cancels_at_once_both_return_when_the_task_has_ended():
    record, writer = _record(), SlowWriter()
    started = asyncio.Event()
    runner = asyncio.create_task(lifecycle.run(record, _endless_work(started), writer))
    await asyncio.wait_for(started.wait(), GUARD_S)

    first = asyncio.create_task(lifecycle.cancel(record, runner))
    await asyncio.wait_for(writer.entered.wait(), GUARD_S)  # the first is being finished
    second = asyncio.create_task(lifecycle.cancel(record, runner))
    await asyncio.sleep(0)
    writer.release.set()

    assert await asyncio.wait_for(first, GUARD_S) is True
    assert await asyncio.wait_for(second, GUARD_S) is False
    assert _kinds(record).count(EventKind.DONE) == 1


async def test_a_failing_task_and_a_failing_writer_still_end_with_done():
    record = _record()

    async def broken_work() -> None:
        raise RuntimeError("the planner broke")

    async def broken_writer(record: TaskRecord, finished_at: float) -> None:
        raise OSError("disk full")

    await asyncio.wait_for(lifecycle.run(record, broken_work(), broken_writer), GUARD_S)
    assert record.state is TaskState.FAILED and record.finished.is_set()
    assert _kinds(record) == [EventKind.FAILED, EventKind.DONE]
    assert record.report is not None and "RuntimeError: the planner broke" in record.notes
