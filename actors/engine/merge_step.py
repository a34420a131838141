"""The last phase of a task: claims reconciled by meaning, then one answer written.

``MergeStep.run`` fills ``record.summary`` and ``record.answer``. A validation agent
reconciles the claims (``actors.engine.reconcile``, batches side by side); a generation agent
writes the synthesis. Both go through the pools like microtasks, within
``synthesis_timeout_s`` (reconciling may take half of it, so a hung reconciler — whose
batches fall back to topic names — still leaves the writer time), and each call first
holds its estimated cost against the task budget (``admission.held``). When the writer
fails, times out, is cut twice or the budget is spent, the answer is stitched from the
parts (``merger.fallback_answer``): finished work is never lost.

An answer the plan wrote in sections (``actors.engine.sections``) gets no writer: its claims are
reconciled while the sections are written, and a fast model adds a short overview (if
that fails, the sections stand without it).
"""

from __future__ import annotations

import asyncio

from actors.config import Settings
from actors.engine import admission, merger
from actors.engine.claims import MergeSummary
from actors.engine.dispatch import CallPool
from actors.engine.reconcile import reconcile
from actors.engine.report import TaskRecord
from actors.engine.sections import SectionedAnswer
from actors.errors import MicrotaskTimeoutError, TaskCancelledError, TruncatedAnswerError
from actors.models import (
    CallKind,
    EventKind,
    Microtask,
    MicrotaskRequest,
    MicrotaskResult,
    Reconciliation,
    Role,
    Usage,
)
from actors.observe import tracing


class MergeStep:
    """Reconcile and write for the orchestrator; ``call_pool`` is its way to the pools."""

    def __init__(self, settings: Settings, call_pool: CallPool) -> None:
        self._settings = settings
        self._call_pool = call_pool

    def sectioned(self, record: TaskRecord) -> SectionedAnswer:
        """The follower of a task whose plan writes its answer in sections (inactive when
        the plan has none); its reconciliation is this step's."""

        async def reconcile_early(results: list[MicrotaskResult], missing: list[str]):
            return await self._reconcile(record, results, missing)

        return SectionedAnswer(record, reconcile_early)

    async def run(self, record: TaskRecord, sections: SectionedAnswer | None = None) -> None:
        """Set ``record.summary`` and ``record.answer`` from the task's results."""
        results = record.ordered_results()
        if record.plan_source == "direct":
            record.summary = merger.summarise(results, missing=record.missing_titles())
            record.answer = results[0].content if results else ""
            if not results:
                record.answer = merger.fallback_answer(record.text, results, record.summary)
            return
        if sections is not None and sections.active:
            await sections.advance()  # the dispatch is over: whatever is left goes now
            if sections.sent:
                await self._close_sections(record, sections)
                return
            if sections.reconciling is not None:  # no section came through: one writer
                sections.reconciling.cancel()
        budget = self._settings.synthesis_timeout_s
        started = asyncio.get_running_loop().time()
        summary = await self._reconcile(record, results, record.missing_titles())
        record.summary = summary
        record.notes.extend(summary.notes)
        # A follow-up's writer reads the turns it follows first, as every agent did.
        prompt = record.conversation + merger.synthesis_prompt(
            record.text, results, summary, quick_take=record.quick_answer
        )
        synthesis = Microtask(
            id="synthesis", role=Role.GENERATION, title="Synthesis", instructions=prompt
        )
        try:
            result = await self._side_call(record, synthesis, CallKind.SYNTHESIS, started + budget)
        except (asyncio.CancelledError, TaskCancelledError):
            raise
        except (TimeoutError, MicrotaskTimeoutError):
            record.note(f"synthesis timed out after {budget:g} s; answer stitched from parts")
            record.answer = merger.fallback_answer(record.text, results, summary)
            return
        except Exception as exc:
            if isinstance(exc, TruncatedAnswerError):
                record.cut.append("synthesis: cut at max_tokens twice; answer stitched from parts")
            record.note(f"synthesis failed ({type(exc).__name__}); answer stitched from parts")
            record.answer = merger.fallback_answer(record.text, results, summary)
            return
        record.answer = result.content + "\n\n" + merger.render_footer(summary)

    async def _reconcile(
        self, record: TaskRecord, results: list[MicrotaskResult], missing: list[str]
    ) -> MergeSummary:
        """The claims of ``results`` reconciled by meaning within half the synthesis budget."""
        deadline = asyncio.get_running_loop().time() + self._settings.synthesis_timeout_s / 2
        with tracing.span("reconcile", task_id=record.task_id):
            return await reconcile(
                results,
                missing,
                lambda prompt: self._reconcile_batch(record, prompt, deadline),
                batch_claims=self._settings.reconcile_batch_claims,
            )

    async def _close_sections(self, record: TaskRecord, sections: SectionedAnswer) -> None:
        """A sectioned answer: its reconciliation (begun during the dispatch), then the
        overview, within ``synthesis_timeout_s``; the answer is the sections, the overview
        and the footer."""
        budget = self._settings.synthesis_timeout_s
        started = asyncio.get_running_loop().time()
        if sections.reconciling is None:  # the dispatch ended before the groundwork did
            work = [r for r in record.ordered_results() if r.microtask_id not in sections.ids]
            summary = await self._reconcile(record, work, record.missing_titles())
        else:
            summary = await sections.reconciling
        summary = summary.model_copy(update={"missing": record.missing_titles()})
        record.summary = summary
        record.notes.extend(summary.notes)
        texts = sections.texts()
        prompt = merger.overview_prompt(record.text, texts, summary, quick_take=record.quick_answer)
        overview = Microtask(
            id="overview", role=Role.GENERATION, title="Overview", instructions=prompt
        )
        closing = ""
        try:
            result = await self._side_call(record, overview, CallKind.OVERVIEW, started + budget)
            closing = "## In short\n\n" + result.content.strip()
            await record.emit(EventKind.ANSWER, attempt=1, detail=closing + "\n\n")
        except (asyncio.CancelledError, TaskCancelledError):
            raise
        except Exception as exc:  # the sections stand on their own
            record.note(f"overview failed ({type(exc).__name__}); the sections stand without it")
        body = "\n\n".join([*texts, closing] if closing else texts)
        record.answer = body + "\n\n" + merger.render_footer(summary)

    async def _reconcile_batch(
        self, record: TaskRecord, prompt: str, deadline: float
    ) -> Reconciliation:
        """One batch of claims reconciled by a validation agent (structured output),
        answered by ``deadline`` (event-loop time) or ``TimeoutError``."""
        batch = Microtask(
            id="reconcile", role=Role.VALIDATION, title="Reconcile claims", instructions=prompt
        )
        waited = deadline - asyncio.get_running_loop().time()
        try:
            result = await self._side_call(record, batch, CallKind.RECONCILE, deadline)
        except TimeoutError:
            raise TimeoutError(f"no answer within {waited:.0f} s") from None
        return Reconciliation.model_validate_json(result.content)

    async def _side_call(
        self, record: TaskRecord, microtask: Microtask, kind: CallKind, deadline: float
    ) -> MicrotaskResult:
        """One call outside the plan (reconciling, writing, the overview) on its role's pool,
        due by ``deadline`` (event-loop time, else ``TimeoutError``), its estimated cost held
        against the task's budget until its usage — a failed call's too — is counted."""
        request = self._side_request(record, microtask, kind, deadline)
        with admission.held(record, self._settings, request):
            try:
                async with asyncio.timeout_at(deadline):
                    result = await self._call_pool(microtask.role, request, 0.0)
            except Exception as exc:
                record.usage += paid_usage(exc)
                raise
            record.usage += result.usage
        record.simulated = record.simulated or result.simulated
        return result

    def _side_request(
        self, record: TaskRecord, microtask: Microtask, kind: CallKind, deadline: float
    ) -> MicrotaskRequest:
        """A request for a call outside the plan, due by ``deadline`` (event-loop time); the
        pool gets the same bound, so it frees the agent even when the orchestrator is gone."""
        return MicrotaskRequest(
            task_id=record.task_id,
            microtask=microtask,
            request_text=record.text,
            kind=kind,
            max_paid_calls=2,  # an answer and one retry with a larger budget
            timeout_s=max(0.001, deadline - asyncio.get_running_loop().time()),
            trace_context=tracing.inject(),
        )


def paid_usage(error: BaseException) -> Usage:
    """The answers a failed call paid for (errors of model calls carry them)."""
    usage = getattr(error, "usage", None)
    return usage if isinstance(usage, Usage) else Usage()
