"""Event cursors: they survive a restart, never replay in a loop, never let a follower spin."""

from __future__ import annotations

import asyncio

from actors.engine.report import SEQ_SPAN, TaskRecord, end_event, start_index
from actors.models import Complexity, EventKind, ProgressEvent, RunReport, TaskState

GUARD_S = 10.0  # only so a regression fails instead of hanging the suite


def _record(incarnation: int) -> TaskRecord:
    record = TaskRecord(task_id="t1", text="follow me")
    record.seq_base = incarnation * SEQ_SPAN
    return record


async def _still_waiting(call: asyncio.Task[list[ProgressEvent]]) -> bool:
    for _ in range(20):  # let the loop run; an answer at once would be here by now
        await asyncio.sleep(0)
    return not call.done()


def test_a_cursor_names_its_incarnation():
    base = 3 * SEQ_SPAN
    assert start_index(0, base) == 0  # a new follower
    assert start_index(2 * SEQ_SPAN + 17, base) == 0  # from before a restart: from the start
    assert start_index(base + 5, base) == 5
    assert start_index(base + SEQ_SPAN, base) is None  # past a stored task's end


async def test_a_follower_from_before_a_restart_gets_each_resumed_event_once():
    record = _record(incarnation=2)
    for kind in (EventKind.PLANNED, EventKind.STARTED, EventKind.FINISHED):
        await record.emit(kind)
    old_cursor = 1 * SEQ_SPAN + 40  # it had seen 40 events of the first incarnation

    first = await record.follow(old_cursor, timeout_s=GUARD_S)
    assert [e.kind for e in first] == [EventKind.PLANNED, EventKind.STARTED, EventKind.FINISHED]
    assert first[0].seq == 2 * SEQ_SPAN

    waiting = asyncio.create_task(record.follow(first[-1].next_after, timeout_s=GUARD_S))
    assert await _still_waiting(waiting)  # no replay of the three
    await record.emit(EventKind.MERGING)
    assert [e.kind for e in await asyncio.wait_for(waiting, GUARD_S)] == [EventKind.MERGING]


async def test_a_follower_past_done_waits_instead_of_spinning():
    record = _record(incarnation=1)
    await record.emit(EventKind.DONE, detail="done")
    record.finished.set()
    after_done = record.events[-1].next_after

    waiting = asyncio.create_task(record.follow(after_done, timeout_s=GUARD_S))
    assert await _still_waiting(waiting)
    waiting.cancel()
    assert await record.follow(after_done, timeout_s=0.0) == []


def test_a_stored_task_ends_with_one_done_event_every_cursor_reaches():
    report = RunReport(
        task_id="t1", state=TaskState.CANCELLED, complexity=Complexity.SIMPLE,
        plan_source="given", microtasks=3, agents=1, max_parallel=1, wall_s=1.0, work_s=1.0,
        speedup=1.0, succeeded=2, failed=1, retries=0, backups=0, input_tokens=1,
        output_tokens=1, cost_usd=0.0, simulated=True, result="partial", confidence=0.5,
    )  # fmt: skip
    base = 4 * SEQ_SPAN
    end = end_event(report, base)
    assert end.kind is EventKind.DONE and end.detail == "cancelled"
    assert (end.done, end.total) == (3, 3)
    # Any cursor of this incarnation (the task was followed in memory before it was
    # forgotten) or of an older one is at or before it; the one after it is past the end.
    assert start_index(base + 999, base) is not None and base + 999 <= end.seq
    assert start_index(end.next_after, base) is None
