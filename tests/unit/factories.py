"""Small builders of the models tests need (one copy each, imported where used)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.models import Claim, Complexity, MicrotaskResult, Role, RunReport, TaskState


def result(
    mid: str,
    role: Role = Role.RESEARCH,
    confidence: float = 0.8,
    claims: Sequence[tuple[str, str]] = (),
    content: str = "",
) -> MicrotaskResult:
    """A finished microtask ``mid`` whose agent stated ``claims`` as (topic, statement) pairs."""
    return MicrotaskResult(
        task_id="t1",
        microtask_id=mid,
        role=role,
        agent_id=f"{role.value}-00",
        node_id="node",
        content=content or f"content of {mid}",
        claims=[Claim(topic=t, statement=s) for t, s in claims],
        confidence=confidence,
        started_at=0.0,
        finished_at=1.0,
    )


def report(**changes: Any) -> RunReport:
    """A finished simple task's report, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "task_id": "t1", "state": TaskState.DONE, "complexity": Complexity.SIMPLE,
        "plan_source": "direct", "microtasks": 1, "agents": 1, "max_parallel": 1,
        "wall_s": 0.1, "work_s": 0.1, "parallelism": 1.0, "speedup": 1.0, "succeeded": 1,
        "failed": 0, "retries": 0, "backups": 0, "input_tokens": 10, "output_tokens": 10,
        "cost_usd": 0.0, "simulated": True, "result": "answer", "confidence": 0.9,
    }  # fmt: skip
    return RunReport(**(fields | changes))
