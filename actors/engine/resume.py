"""A task reloaded after a restart: its record rebuilt from what the store kept.

The request, its owner, conversation and cost limit come back as accepted; a task planned
before the restart keeps that plan (a plan whose stream the restart cut keeps the
microtasks that had arrived, closed over their dependencies) and the results already
paid for, so only what was left runs again.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.engine import dag
from actors.engine.plan_stream import STREAMING_PLAN
from actors.engine.report import TaskRecord
from actors.engine.store import Unfinished
from actors.models import ProgressEvent


def resumed_record(task: Unfinished, observer: Callable[[ProgressEvent], None]) -> TaskRecord:
    """The record of ``task`` as it stood at the restart, noted as resumed."""
    record = TaskRecord(
        task_id=task.task_id,
        text=task.request,
        user=task.user,
        conversation_id=task.conversation_id or task.task_id,
        conversation=task.context or "",  # the same turns as before the restart
        started_at=task.created_at,
        observer=observer,
        budget_usd=task.cost_limit_usd,  # the caller's limit holds after a restart too
    )
    if task.complexity is not None:  # planned before the restart: keep that plan
        record.complexity = task.complexity
        record.plan_source = task.plan_source
        microtasks = task.microtasks
        if task.plan_source == STREAMING_PLAN:  # the restart cut the plan's stream
            microtasks = dag.closed(microtasks)
            record.cut.append(
                f"plan stream cut by a restart; kept the {len(microtasks)} "
                "microtasks that had arrived"
            )
        record.set_plan(microtasks)
        for microtask_id, result in task.results.items():
            record.results[microtask_id] = result
            record.attempts[microtask_id] = result.attempt
            record.usage += result.usage
    record.note(f"resumed after a restart with {len(task.results)} microtasks done")
    return record
