"""Small builders of the models tests feed the merge (one copy, imported by the merge tests)."""

from __future__ import annotations

from collections.abc import Sequence

from actors.models import Claim, MicrotaskResult, Role


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
