"""A task's plan: the one it had before a restart, a given one, or the model's.

The model's verdict and plan come from the ``decomposer`` within ``planning_timeout_s``
(a domain template past it); with ``stream_plan`` each microtask is handed to a dispatch
as soon as it is complete in the stream, and what has arrived is stored, so a restart
resumes with it. Once the plan is known its cost is estimated against the task's budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.config import Settings
from actors.engine import admission, complexity, dag
from actors.engine.decomposer import Decomposer
from actors.engine.dispatch import Dispatcher
from actors.engine.estimate import for_plan
from actors.engine.plan_stream import STREAMING_PLAN, OnMicrotask
from actors.engine.quick_take import quick_take
from actors.engine.report import TaskRecord
from actors.engine.store import Store
from actors.llm import LLMClient, ledger
from actors.models import Complexity, ComplexityAssessment, Microtask, Role, Usage
from actors.observe import tracing


class Planning:
    """Plans tasks for the orchestrator, which owns them."""

    def __init__(
        self,
        settings: Settings,
        decomposer: Decomposer,
        client: LLMClient,
        store: Store,
        dispatcher: Callable[[TaskRecord, bool], Dispatcher],
        foresee: Callable[[TaskRecord], None],
    ) -> None:
        self._settings = settings
        self._client = client  # for the quick take beside the planning call
        self._store = store
        self._decomposer = decomposer
        self._dispatcher = dispatcher  # (record, open_plan) -> a dispatcher for its plan
        self._foresee = foresee  # tells the pools how wide the plan so far runs

    async def make(self, record: TaskRecord) -> tuple[Dispatcher | None, asyncio.Task[None] | None]:
        """The task's plan, stored, and its cost estimate: the plan it had before a restart,
        a given one, or the model's. With ``stream_plan`` the model's plan is dispatched as
        it arrives: the dispatcher (to seal with the final plan) and its run are returned."""
        streamed: Dispatcher | None = None
        dispatching: asyncio.Task[None] | None = None
        if record.microtasks:  # resumed, with the plan it had before a restart
            self._estimate_from_plan(record)
            return None, None
        if record.given_plan is not None:
            record.plan_source = "given"
            record.complexity = self._level_for(len(record.given_plan))
            record.set_plan(dag.assign_branches(record.given_plan))
        else:
            streamed, dispatching = await self._plan_streamed(record)
        try:
            await asyncio.to_thread(
                self._store.plan_made,
                record.task_id,
                record.complexity,
                record.plan_source,
                record.microtasks,
            )
            self._estimate_from_plan(record)
        except BaseException:  # the streamed dispatch must not outlive a failed plan
            if dispatching is not None:
                dispatching.cancel()
                await asyncio.gather(dispatching, return_exceptions=True)
            raise
        return streamed, dispatching

    async def _plan_streamed(
        self, record: TaskRecord
    ) -> tuple[Dispatcher | None, asyncio.Task[None] | None]:
        """Plan the task; with ``stream_plan``, dispatch each microtask as it arrives and
        return that dispatcher (to seal with the final plan) and its run, to await."""
        plan_span = tracing.span("plan", task_id=record.task_id)
        if not self._settings.stream_plan:
            with plan_span, ledger.attributed(record.task_id, "plan"):
                await self._plan(record)
            return None, None
        dispatcher = self._dispatcher(record, True)
        dispatching = asyncio.create_task(dispatcher.run())

        async def arrived(mt: Microtask) -> None:
            record.microtasks.append(mt)
            dispatcher.add(mt)
            self._foresee(record)
            # What has arrived is stored, so a restart resumes with it.
            await asyncio.to_thread(
                self._store.plan_made,
                record.task_id,
                record.complexity,
                STREAMING_PLAN,
                list(record.microtasks),
            )

        try:
            with plan_span, ledger.attributed(record.task_id, "plan"):
                await self._plan(record, arrived)
        except BaseException:
            dispatching.cancel()
            await asyncio.gather(dispatching, return_exceptions=True)
            raise
        return dispatcher, dispatching

    async def _plan(self, record: TaskRecord, on_microtask: OnMicrotask | None = None) -> None:
        """The verdict and the plan within ``planning_timeout_s``; a template past it."""
        limit = self._settings.planning_timeout_s
        assessment: ComplexityAssessment | None = None
        try:
            async with asyncio.timeout(limit):
                assessment, usage = await self._decomposer.assess(record.text, record.conversation)
                record.usage += usage
                record.complexity = assessment.level
                if not assessment.parallelizable:
                    record.plan_source = "direct"
                    answer = Microtask(
                        id="answer",
                        role=Role.GENERATION,
                        title="Answer",
                        # The request (and its documents) opens the prompt already.
                        instructions="Answer the request above directly.",
                    )
                    record.set_plan([answer])
                    return
                if record.quick:  # beside the planning call, not after it
                    record.quick_task = asyncio.create_task(
                        quick_take(record, self._settings, self._client)
                    )
                plan, usage = await self._decomposer.plan(
                    record.text, assessment, on_microtask, record.conversation
                )
        except TimeoutError:
            # As when the planning call fails: the heuristic verdict if the model gave
            # none, then the domain template; no further model call.
            fallback = complexity.assess(record.text, follow_up=bool(record.conversation))
            level = (assessment or fallback).level
            why = f"planning timed out after {limit:g} s"
            plan = self._decomposer.template_plan(record.text, level, why)
            record.complexity = level
            usage = Usage()
        record.usage += usage
        record.plan_source = plan.source
        record.notes.extend(f"plan: {note}" for note in plan.notes)
        record.cut.extend(plan.cut)
        record.set_plan(plan.microtasks)

    def _estimate_from_plan(self, record: TaskRecord) -> None:
        """The task's cost estimate now that its plan is known; a note when it is over the
        request's cost limit (the task stops at the limit and merges what finished)."""
        if record.plan_source == "direct":
            return
        estimate = for_plan(
            self._settings,
            record.complexity,
            record.conversation + record.text,
            record.microtasks,
        )
        record.estimated_usd = estimate.cost_usd
        budget, named = admission.budget_of(record, self._settings)
        if estimate.low_usd > budget:
            record.note(
                f"the plan's estimated cost (${estimate.low_usd:.2f} to "
                f"${estimate.high_usd:.2f}) is over {named}: the answer will merge what it pays for"
            )

    def _level_for(self, size: int) -> Complexity:
        """The smallest complexity level whose bounds hold ``size`` microtasks."""
        for level, bounds in self._settings.levels.items():
            if size <= bounds.max_microtasks:
                return level
        return Complexity.MASSIVE
