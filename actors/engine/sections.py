"""The answer written in sections by the plan's own writers (``answer_mode="sections"``).

With one writer, the answer cannot start before the last microtask ends, and then one
model writes all of it, token after token (the real-time benchmark: a third of the time
to the full answer). In this mode the planner ends the plan with generation microtasks
that each write one section of the final answer, in reading order, and nothing depends
on them. ``SectionedAnswer.follow`` watches the task's events while the plan runs:

- each finished section goes to followers as an ``ANSWER`` event once every section
  before it is in (a failed one is skipped, and named in the answer's footer);
- once the work the sections build on has settled, its claims are reconciled
  (``reconciling``) beside the writing, not after it.

After the dispatch, the merge step waits for the reconciliation and has a fast model
write a short overview that closes the answer (``merger.overview_prompt``). A plan with
no such sections (a template, a caller's plan without a generation sink) is merged by
the single writer as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from actors.engine.claims import MergeSummary
from actors.engine.report import TaskRecord
from actors.models import EventKind, Microtask, MicrotaskResult, Role

# (results, missing parts) -> their claims reconciled
Reconcile = Callable[[list[MicrotaskResult], list[str]], Coroutine[Any, Any, MergeSummary]]
_FOLLOW_S = 5.0  # a follower's longest wait for an event before it looks again


def sections_rule(words: int) -> str:
    """What the planner is told when the plan writes the answer itself (answer_mode
    "sections", ``actors.engine.sections``)."""
    return (
        "The plan writes the answer itself: end it with 2 to 6 generation microtasks that "
        "each write one section of the final answer, in reading order, about "
        f"{words} words in all. Each one's title is its section's heading, its "
        "instructions give its length (for example 'in about 300 words') and it depends "
        "on the microtasks it draws on; nothing depends on it."
    )


def section_ids(microtasks: Sequence[Microtask]) -> list[str]:
    """The plan's sections: generation microtasks nothing depends on, in plan order.
    A plan whose only generation sink is a single one writes no sections (that is the
    single writer's job, already done by the plan)."""
    needed = {dep for mt in microtasks for dep in mt.depends_on}
    ids = [mt.id for mt in microtasks if mt.role is Role.GENERATION and mt.id not in needed]
    return ids if len(ids) >= 2 else []


def render(microtask: Microtask, result: MicrotaskResult) -> str:
    """One section as Markdown: the microtask's title as its heading, unless it has one."""
    text = result.content.strip()
    return text if text.startswith("#") else f"## {microtask.title}\n\n{text}"


class SectionedAnswer:
    """The sections of one task's answer as they arrive, and the early reconciliation."""

    def __init__(self, record: TaskRecord, reconcile: Reconcile) -> None:
        self._record = record
        self._reconcile = reconcile
        self._by_id = {mt.id: mt for mt in record.microtasks}
        self.ids = section_ids(record.microtasks)
        self.sent: list[str] = []  # sections already sent to followers, in order
        self._next = 0  # index in ids of the next section to send
        self.reconciling: asyncio.Task[MergeSummary] | None = None
        self._closed = False

    @property
    def active(self) -> bool:
        return bool(self.ids)

    def texts(self) -> list[str]:
        """The finished sections, rendered, in plan order."""
        record = self._record
        return [render(self._by_id[i], record.results[i]) for i in self.ids if i in record.results]

    async def follow(self) -> None:
        """Send sections and start the reconciliation as the plan's work settles, until
        ``close``. (The caller cancels it too; the flag is for Python 3.11's
        ``asyncio.wait_for``, which loses a cancel that lands as its wait completes.)"""
        cursor = 0
        while not self._closed:
            await self.advance()
            events = await self._record.follow(cursor, _FOLLOW_S)
            if events:
                cursor = events[-1].seq + 1

    async def advance(self) -> None:
        """Send every section whose turn has come; start reconciling when it can."""
        record, results = self._record, self._record.results
        while self._next < len(self.ids):
            section = self.ids[self._next]
            if section in results:
                piece = render(self._by_id[section], results[section]) + "\n\n"
                self.sent.append(section)
                await record.emit(EventKind.ANSWER, attempt=1, detail=piece)
            elif section not in record.failures:
                break
            self._next += 1
        groundwork = [mt for mt in record.microtasks if mt.id not in self.ids]
        if self.reconciling is None and all(
            mt.id in results or mt.id in record.failures for mt in groundwork
        ):  # everything the sections build on has settled
            work = [results[mt.id] for mt in groundwork if mt.id in results]
            missing = [f"{mt.id}: {mt.title}" for mt in groundwork if mt.id not in results]
            self.reconciling = asyncio.create_task(self._reconcile(work, missing))

    def close(self) -> None:
        """The dispatch is over: ``follow`` ends."""
        self._closed = True

    def stop(self) -> None:
        """Cancel the reconciliation if the task ends before the merge awaits it."""
        if self.reconciling is not None and not self.reconciling.done():
            self.reconciling.cancel()
