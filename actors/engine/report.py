"""A task's in-memory record inside the orchestrator, and the ``RunReport`` built from it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.engine import dag
from actors.engine.estimate import token_multiple
from actors.engine.merger import Conflict, MergeSummary
from actors.llm.ledger import LedgerSummary
from actors.models import (
    Complexity,
    EventKind,
    Microtask,
    MicrotaskResult,
    MicrotaskState,
    ProgressEvent,
    RunReport,
    TaskState,
    TimelineEntry,
    Usage,
    used_tokens,
)

# Event seqs are ``incarnation * SEQ_SPAN + index``: a follower's cursor (``after``) says
# which orchestrator process it came from, so it survives a restart without replaying.
SEQ_SPAN = 1_000_000


def start_index(after: int, seq_base: int) -> int | None:
    """Where a follower with cursor ``after`` goes on in events whose seqs start at ``seq_base``.

    A cursor of an earlier incarnation (or 0) starts from the beginning: a restart began the
    events anew. ``None``: the cursor is past anything this incarnation will send (it
    followed a stored task's end, whose seq is the incarnation's last).
    """
    if after < seq_base:
        return 0
    if after >= seq_base + SEQ_SPAN:
        return None
    return after - seq_base


def end_event(report: RunReport, seq_base: int) -> ProgressEvent:
    """The terminal event of a task known only from its stored report.

    Its seq is the incarnation's last, so every cursor a follower of that task could hold
    gets it, and the cursor after it waits instead of getting it again.
    """
    return ProgressEvent(
        seq=seq_base + SEQ_SPAN - 1,
        kind=EventKind.DONE,
        task_id=report.task_id,
        done=report.succeeded + report.failed,
        total=report.microtasks,
        detail=report.state.value,
    )


@dataclass
class TaskRecord:
    """Everything known about one task while it runs (and for a while after)."""

    task_id: str
    text: str
    given_plan: list[Microtask] | None = None  # caller-supplied plan, skips the planner
    user: str | None = None  # who asked: the per-user limit, and who may read or cancel it
    conversation_id: str | None = None  # the conversation it answers in (actors.conversation)
    # The earlier turns' ``<conversation>`` block its prompts carry: recalled from the
    # store before planning ("" for a first turn, or until then).
    conversation: str = ""
    started_at: float = field(default_factory=time.time)  # wall clock, like agents' times
    state: TaskState = TaskState.PLANNING
    complexity: Complexity = Complexity.SIMPLE
    plan_source: str = ""
    microtasks: list[Microtask] = field(default_factory=list)
    results: dict[str, MicrotaskResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # microtask id -> last error
    attempts: dict[str, int] = field(default_factory=dict)  # microtask id -> attempts made
    paid_calls: dict[str, int] = field(default_factory=dict)  # microtask id -> answers paid
    retries: int = 0
    backups: int = 0
    usage: Usage = field(default_factory=Usage)
    # Estimated cost of the model calls in flight, held against the task budget until each
    # settles and its actual usage replaces it (``actors.engine.admission.reserve``/``release``).
    reserved_usd: float = 0.0
    simulated: bool = False
    answer: str = ""
    summary: MergeSummary | None = None
    notes: list[str] = field(default_factory=list)  # what went wrong, in words
    cut: list[str] = field(default_factory=list)  # answers cut at max_tokens, in words
    events: list[ProgressEvent] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    report: RunReport | None = None
    observer: Callable[[ProgressEvent], None] | None = None  # e.g. the orchestrator's stats
    seq_base: int = 0  # incarnation * SEQ_SPAN of the orchestrator running the task
    # Set once the work has ended: the report is being written and a cancel is a no-op.
    finishing: bool = False
    quick: bool = False  # a quick take first (actors.engine.quick_take)
    # The caller's cost limit for this request (None: task_budget_usd), and the estimate
    # made once the plan was known (actors.engine.estimate).
    budget_usd: float | None = None
    estimated_usd: float | None = None
    quick_answer: str = ""  # its text, once written
    quick_task: asyncio.Task[None] | None = None

    def set_plan(self, microtasks: list[Microtask]) -> None:
        self.microtasks = microtasks

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def emit(
        self,
        kind: EventKind,
        *,
        microtask: Microtask | None = None,
        agent: str | None = None,
        attempt: int | None = None,
        duration_s: float | None = None,
        detail: str = "",
    ) -> None:
        """Append a progress event and wake everyone following this task."""
        event = ProgressEvent(
            seq=self.seq_base + len(self.events),
            kind=kind,
            task_id=self.task_id,
            microtask_id=microtask.id if microtask else None,
            role=microtask.role if microtask else None,
            agent_id=agent,
            attempt=attempt,
            done=len(self.results) + len(self.failures),
            total=len(self.microtasks),
            duration_s=duration_s,
            detail=detail,
        )
        self.events.append(event)
        if self.observer is not None:
            self.observer(event)
        async with self.changed:
            self.changed.notify_all()

    async def follow(self, after: int, timeout_s: float) -> list[ProgressEvent]:
        """The events from cursor ``after`` on, waiting up to ``timeout_s`` for one.

        A follower past the last event (``DONE`` included) waits out its timeout rather
        than getting an empty list at once, so nobody can spin on a finished task.
        """
        start = start_index(after, self.seq_base)
        if start is None:
            start = SEQ_SPAN  # never reached: wait, then nothing
        if timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                async with self.changed:
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: len(self.events) > start), timeout_s
                    )
        return self.events[start:]

    def ordered_results(self) -> list[MicrotaskResult]:
        """Results in plan order."""
        return [self.results[mt.id] for mt in self.microtasks if mt.id in self.results]

    def missing_titles(self) -> list[str]:
        return [f"{mt.id}: {mt.title}" for mt in self.microtasks if mt.id not in self.results]

    def status(self, brief: bool = False) -> dict[str, Any]:
        """What ``GET /tasks/{id}`` shows."""
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "user": self.user,
            "conversation_id": self.conversation_id,
            "state": self.state.value,
            "complexity": self.complexity.value,
            "done": len(self.results) + len(self.failures),
            "total": len(self.microtasks),
            "started_at": self.started_at,
            "request": self.text[:200],
        }
        if brief:
            return out
        out["microtasks"] = {mt.id: _state_of(self, mt.id).value for mt in self.microtasks}
        out["notes"] = list(self.notes)
        out["report"] = self.report.model_dump(mode="json") if self.report else None
        return out


def _state_of(record: TaskRecord, microtask_id: str) -> MicrotaskState:
    if microtask_id in record.results:
        return MicrotaskState.DONE
    if microtask_id in record.failures:
        return MicrotaskState.FAILED
    if microtask_id in record.attempts:
        if record.state in (TaskState.CANCELLED, TaskState.FAILED, TaskState.DONE):
            return MicrotaskState.CANCELLED
        return MicrotaskState.RUNNING
    if record.state in (TaskState.CANCELLED, TaskState.FAILED, TaskState.DONE):
        return MicrotaskState.CANCELLED
    return MicrotaskState.PENDING


def _since_start(record: TaskRecord, kind: EventKind) -> float | None:
    """Seconds from the task's start to its first event of ``kind`` (None: there was none)."""
    at = next((e.at for e in record.events if e.kind is kind), None)
    return None if at is None else round(max(0.0, at - record.started_at), 3)


def build_report(record: TaskRecord, finished_at: float) -> RunReport:
    """The ``run --json`` contract, from a finished record."""
    t0 = record.started_at
    timeline = []
    for mt in record.microtasks:
        result = record.results.get(mt.id)
        timeline.append(
            TimelineEntry(
                id=mt.id,
                role=mt.role,
                depends_on=mt.depends_on,
                agent=result.agent_id if result else None,
                node=result.node_id if result else None,
                start_s=round(result.started_at - t0, 4) if result else None,
                end_s=round(result.finished_at - t0, 4) if result else None,
                attempts=record.attempts.get(mt.id, 0),
                status=_state_of(record, mt.id),
            )
        )
    results = list(record.results.values())
    wall_s = max(finished_at - t0, 1e-9)
    work_s = sum(r.duration_s for r in results)
    summary = record.summary
    answer = record.answer
    if record.notes and record.state is not TaskState.DONE:
        answer = (answer + "\n\n" if answer else "") + "Note: " + "; ".join(record.notes)
    return RunReport(
        task_id=record.task_id,
        conversation_id=record.conversation_id,
        state=record.state,
        complexity=record.complexity,
        plan_source=record.plan_source,
        microtasks=len(record.microtasks),
        agents=len({r.agent_id for r in results}),
        max_parallel=dag.max_parallel((r.started_at, r.finished_at) for r in results),
        wall_s=round(wall_s, 3),
        work_s=round(work_s, 3),
        parallelism=round(work_s / wall_s, 2),
        speedup=round(work_s / wall_s, 2),
        succeeded=len(record.results),
        failed=len(record.microtasks) - len(record.results),
        retries=record.retries,
        backups=record.backups,
        input_tokens=record.usage.input_tokens,
        output_tokens=record.usage.output_tokens,
        cache_write_tokens=record.usage.cache_write_tokens,
        cache_read_tokens=record.usage.cache_read_tokens,
        cache_saved_usd=round(record.usage.cache_saved_usd, 6),
        paid_calls=record.usage.requests,
        estimated_cost_usd=record.estimated_usd,
        token_multiple=token_multiple(used_tokens(record.usage), record.conversation + record.text),
        first_microtask_s=_since_start(record, EventKind.STARTED),
        first_answer_s=_since_start(record, EventKind.ANSWER) or round(wall_s, 3),
        cost_usd=round(record.usage.cost_usd, 6),
        simulated=record.simulated or any(r.simulated for r in results),
        result=answer,
        confidence=summary.confidence if summary else 0.0,
        conflicts=[conflict_line(c) for c in summary.conflicts] if summary else [],
        merge=summary.method if summary else "none",
        missing=record.missing_titles(),
        cut=list(record.cut),
        timeline=timeline,
    )


def settled(report: RunReport, paid: LedgerSummary) -> RunReport:
    """The report with its usage as the call ledger wrote it down.

    The in-memory usage misses answers whose process died before passing them on (an
    agent killed mid-call, a planning call before an orchestrator restart); the ledger
    has them. On a cluster, agents on other machines write their own ledgers: where the
    local one saw fewer answers than the task counted, the task's count stands.
    """
    usage = paid.usage
    if usage.requests < report.paid_calls:
        return report
    return report.model_copy(
        update={
            "paid_calls": usage.requests,
            "unsettled_calls": paid.count("unknown"),
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_saved_usd": round(usage.cache_saved_usd, 6),
            "cost_usd": round(usage.cost_usd, 6),
        }
    )


def conflict_line(conflict: Conflict) -> str:
    """``topic: “chosen” over “other”; “third”`` — both sides of a real contradiction."""
    others = "; ".join(f"“{p.statement}”" for p in conflict.positions if p is not conflict.winner)
    return f"{conflict.topic}: “{conflict.winner.statement}” over {others}"
