"""A plan as it streams in: drafts in, microtasks out as soon as they can be dispatched.

Each draft the planning call's stream completes goes to ``PlanStream.item``; what is
passed on is the prefix's repair (``dag.repair`` over the drafts so far): a microtask is
held back while any of its dependencies cannot be resolved yet (an id further down the
stream, or a cycle), and released when a later draft resolves it. At most ``limit``
microtasks are passed on; the final plan (the repair of the whole draft) may still drop
some of them, which the dispatcher then cancels.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from actors.engine import dag
from actors.models import Microtask, MicrotaskDraft, PlanDraft

OnMicrotask = Callable[[Microtask], Awaitable[None]]
# The plan source stored while a streamed plan arrives: a restart resumes with what came.
STREAMING_PLAN = "streaming"


class PlanStream:
    """Streamed drafts in, microtasks whose dependencies are all resolvable out, once each."""

    def __init__(self, limit: int, on_microtask: OnMicrotask) -> None:
        self._limit = limit
        self._on_microtask = on_microtask
        self._drafts: list[MicrotaskDraft] = []
        self._passed: set[str] = set()

    async def item(self, index: int, draft: BaseModel) -> None:
        assert isinstance(draft, MicrotaskDraft)
        if index < len(self._drafts):  # a retried call streams from its start again
            del self._drafts[index:]
        self._drafts.append(draft)
        usable = [d for d in self._drafts if d.title.strip() or d.instructions.strip()]
        # No trim here (the cap applies to what is passed on); the final repair trims.
        tasks, _ = dag.repair(PlanDraft(microtasks=usable), max(self._limit, len(usable)))
        for task, source in zip(tasks, usable, strict=True):
            if len(self._passed) >= self._limit:
                return
            # Every raw dependency resolved (none unknown yet, none dropped for a cycle).
            if task.id not in self._passed and len(task.depends_on) == len(source.depends_on):
                self._passed.add(task.id)
                await self._on_microtask(task)
