"""A follow-up's earlier turns, recalled from the store into its record before planning.

``actors.conversation`` says what a conversation carries into prompts; this module fetches
it for one task: the summary and the turns after it, one cheap summarising call when they
outgrow ``conversation_max_tokens`` (its cost is the task's, held against its budget like
any other call), and the rendered block kept with the task, so a resume gives it the same.
"""

from __future__ import annotations

import asyncio

from actors import conversation
from actors.config import Purpose, Settings
from actors.engine import admission
from actors.engine.merge_step import paid_usage
from actors.engine.report import TaskRecord
from actors.engine.store import Store
from actors.errors import ModelBehaviorError, ProviderError, TaskBudgetError
from actors.llm import LLMClient, ledger
from actors.models import CallKind, Microtask, MicrotaskRequest, Role


async def recall(record: TaskRecord, store: Store, client: LLMClient, settings: Settings) -> None:
    """Set ``record.conversation`` to the earlier turns its prompts will carry. Past the
    bound the oldest are summarised once (within ``planning_timeout_s``) and the summary
    stands for them from then on; if that call fails, only the newest that fit are carried
    (noted). A task that opens its conversation, or was resumed with its turns, is left."""
    if record.conversation_id in (None, record.task_id) or record.conversation:
        return
    assert record.conversation_id is not None
    history = await asyncio.to_thread(store.conversation_history, record.conversation_id)
    bound = settings.conversation_max_tokens
    folding = conversation.fold(history, bound)
    summary = history.summary
    if folding.fold:
        try:
            async with asyncio.timeout(settings.planning_timeout_s):
                summary = await _summarise(record, client, settings, summary, folding.fold)
            await asyncio.to_thread(
                store.conversation_summarised, record.conversation_id, summary, folding.through
            )
        except (TimeoutError, ModelBehaviorError, ProviderError, TaskBudgetError) as exc:
            record.note(
                f"the conversation's {len(folding.fold)} older turns could not be "
                f"summarised ({type(exc).__name__}); carried the newest turns only"
            )
    carried = conversation.clipped(folding.keep, bound)
    record.conversation = conversation.render(summary, carried)
    await asyncio.to_thread(store.task_context, record.task_id, record.conversation)


async def _summarise(
    record: TaskRecord,
    client: LLMClient,
    settings: Settings,
    summary: str,
    turns: list[conversation.Turn],
) -> str:
    """One call to the summary model folding ``turns`` into ``summary``."""
    prompt = conversation.summary_prompt(summary, turns)
    call = Microtask(id="summary", role=Role.GENERATION, title="Summary", instructions=prompt)
    hold = MicrotaskRequest(task_id=record.task_id, microtask=call, kind=CallKind.SUMMARY)
    with admission.held(record, settings, hold), ledger.attributed(record.task_id, "summary"):
        try:
            answer = await client.complete(
                Purpose.SUMMARY, conversation.SUMMARY_SYSTEM, prompt, max_paid_calls=2
            )
        except Exception as exc:
            record.usage += paid_usage(exc)
            raise
        record.usage += answer.usage
    return answer.text.strip()
