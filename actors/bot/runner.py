"""Runs the bot's stored jobs: a few at a time per user, live progress, each answer sent once.

``bot.py`` turns chat messages into ``Job`` rows (``actors.bot.jobs``) and hands
them to a ``JobRunner``, which submits each to the orchestrator (or re-attaches
to its task after a restart), shows the task's progress and then its answer as
it is written (``actors.bot.progress``), and delivers the final answer in
parts, recording each part sent, its cost on a footer line.

Before a request runs, the runner asks the orchestrator what it would cost
(``Orchestrator.estimate``); above ``confirm_cost_usd``, and unless one agent would
answer it directly, it asks the user first, with "Run it" and "Cancel" buttons
(``confirmation_keyboard``; ``bot.py`` handles the press). A confirmed job runs under
the estimate's upper bound as its cost limit.

``send_markdown`` is the one way a Markdown text reaches a chat: formatted with
entities (``actors.bot.telegram_format``), and as plain text when Telegram refuses
a part's entities, so no formatting problem can lose a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from ray.exceptions import RayActorError, RayError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import TelegramError

from actors.bot import telegram_format as fmt
from actors.bot.jobs import Job, JobKind, JobState, JobStore
from actors.bot.progress import ChatProgress, TaskProgress, formatted
from actors.errors import (
    CapacityError,
    ConfigurationError,
    UnknownConversationError,
    UnknownTaskError,
    UserInputError,
)
from actors.models import PoolSnapshot, ProgressEvent, RunReport, TaskState
from actors.runtime.system import System

log = logging.getLogger("bot")

T = TypeVar("T")
_FINAL = {TaskState.DONE: JobState.ANSWERED, TaskState.CANCELLED: JobState.CANCELLED}


_SECRET_CHARS = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as secret_token
# A button's callback data: "confirm:<update id>:run" or "confirm:<update id>:cancel".
CONFIRM_PATTERN = r"^confirm:\d+:(run|cancel)$"
_RUN, _CANCEL = "run", "cancel"


def confirmation_keyboard(update_id: int) -> InlineKeyboardMarkup:
    """The "Run it" and "Cancel" buttons under the question about job ``update_id``."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Run it", callback_data=f"confirm:{update_id}:{_RUN}"),
                InlineKeyboardButton("Cancel", callback_data=f"confirm:{update_id}:{_CANCEL}"),
            ]
        ]
    )


def pressed(data: str) -> tuple[int, bool]:
    """(the job's update id, whether "Run it" was pressed) from a button's ``CONFIRM_PATTERN``
    callback data."""
    _, update_id, choice = data.split(":")
    return int(update_id), choice == _RUN


@dataclass(frozen=True)
class BotConfig:
    """Settings only the bot uses, from ``PARALLEL_AGENTS_TELEGRAM_*`` variables.

    Webhook mode (``webhook_url`` set) needs ``webhook_secret``: without it anyone who
    finds the URL can post forged updates that pass the allowlist.
    """

    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    webhook_secret: str | None = None
    edit_interval_s: float = 2.0
    tasks_per_user: int = 1
    poll_timeout_s: int = 10
    rate_limit_retries: int = 5  # 429s waited out per request before giving up
    call_timeout_s: float = 30.0  # longest wait for any one orchestrator call
    telegram_timeout_s: float = 20.0  # PTB's connect/read/write/pool timeouts per Bot API call
    concurrent_updates: int = 32  # updates handled at once (per-user order is kept by the runner)
    quick_answer: bool = True  # a quick take first for requests that go to the DAG
    confirm_cost_usd: float = 1.0  # ask before a request estimated above this (0: never)

    def __post_init__(self) -> None:
        if self.webhook_url and not self.webhook_secret:
            raise ConfigurationError(
                "PARALLEL_AGENTS_TELEGRAM_WEBHOOK_URL is set but "
                "PARALLEL_AGENTS_TELEGRAM_WEBHOOK_SECRET is not: webhook mode needs a secret "
                "(1-256 characters of A-Z, a-z, 0-9, _ and -) so forged updates are refused"
            )
        if self.webhook_secret is not None and not _SECRET_CHARS.match(self.webhook_secret):
            raise ConfigurationError(
                "PARALLEL_AGENTS_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of "
                "A-Z, a-z, 0-9, _ and -"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BotConfig:
        """Read the bot's variables; ``ConfigurationError`` names any that is unusable."""

        def get(name: str) -> str | None:
            return env.get(f"PARALLEL_AGENTS_TELEGRAM_{name}") or None

        def number(name: str, kind: type[int] | type[float], default: float, least: float) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or value < least:
                raise ConfigurationError(
                    f"PARALLEL_AGENTS_TELEGRAM_{name}={raw!r}: expected a {kind.__name__} "
                    f">= {least:g}"
                )
            return value

        def flag(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigurationError(
                    f"PARALLEL_AGENTS_TELEGRAM_{name}={raw!r}: expected true or false"
                )
            return raw.strip().lower() in ("1", "true", "yes", "on")

        return cls(
            webhook_url=get("WEBHOOK_URL"),
            webhook_listen=get("WEBHOOK_LISTEN") or cls.webhook_listen,
            webhook_port=number("WEBHOOK_PORT", int, cls.webhook_port, 1),
            webhook_secret=get("WEBHOOK_SECRET"),
            edit_interval_s=number("EDIT_INTERVAL_S", float, cls.edit_interval_s, 0),
            tasks_per_user=number("TASKS_PER_USER", int, cls.tasks_per_user, 1),
            call_timeout_s=number("CALL_TIMEOUT_S", float, cls.call_timeout_s, 0.1),
            telegram_timeout_s=number("REQUEST_TIMEOUT_S", float, cls.telegram_timeout_s, 0.1),
            concurrent_updates=number("CONCURRENT_UPDATES", int, cls.concurrent_updates, 1),
            quick_answer=flag("QUICK_ANSWER", cls.quick_answer),
            confirm_cost_usd=number("CONFIRM_COST_USD", float, cls.confirm_cost_usd, 0),
        )


async def send_markdown(
    bot: Bot,
    chat_id: int,
    markdown: str,
    first_part: int = 0,
    footer: str | None = None,
    reply_to: int | None = None,
) -> AsyncIterator[tuple[int, Message]]:
    """Send ``markdown`` formatted, from part ``first_part`` on, the plain line ``footer``
    ending the last part, the first part a reply to message ``reply_to`` (if it is still
    there); yields the parts sent so far and the message just sent.

    ``async for sent, message in send_markdown(bot, chat, text): ...`` records progress.
    """
    parts = fmt.message_parts(markdown)
    if footer:
        parts = fmt.with_footer(parts, footer)
    for index in range(first_part, len(parts)):
        replying = reply_to if index == 0 else None
        yield index + 1, await send_part(bot, chat_id, parts[index], replying)


async def send_part(
    bot: Bot, chat_id: int, part: fmt.MessagePart, reply_to: int | None = None
) -> Message:
    """Send one part with its entities; as plain text if Telegram refuses the entities."""
    send = partial(bot.send_message, chat_id)
    if reply_to is not None:  # a deleted request message does not stop the answer
        send = partial(
            send, reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True)
        )
    return await formatted(send, part, chat_id)


class JobRunner:
    """Runs stored jobs: a few at a time per user, with live progress, each answer sent once.

    Every orchestrator call is bounded by ``call_timeout_s``: a hung orchestrator
    gives the user a clear "taking too long" message instead of holding the bot.
    """

    def __init__(self, bot: Bot, system: System, store: JobStore, config: BotConfig) -> None:
        self._bot = bot
        self._orchestrator = system.orchestrator
        self._store = store
        self._config = config
        self._queues: dict[int, asyncio.Queue[Job]] = {}  # one queue per user
        self._load: dict[int, int] = {}  # jobs queued or running per user
        self._workers: list[asyncio.Task[None]] = []
        self._no_drafts: set[int] = set()  # chats that refused a message draft

    def enqueue(self, job: Job) -> int:
        """Queue ``job`` behind the user's other jobs; returns how many must finish first."""
        queue = self._queues.get(job.user_id)
        if queue is None:
            queue = self._queues[job.user_id] = asyncio.Queue()
            for _ in range(self._config.tasks_per_user):
                self._workers.append(asyncio.create_task(self._work(job.user_id, queue)))
        load = self._load.get(job.user_id, 0)
        self._load[job.user_id] = load + 1
        queue.put_nowait(job)
        return max(0, load - self._config.tasks_per_user + 1)

    def resume(self) -> int:
        """Queue every job whose answer has not fully reached its chat (after a restart);
        a job waiting for its user's confirmation waits on."""
        jobs = [
            job
            for job in self._store.undelivered()
            if job.state is not JobState.AWAITING_CONFIRMATION
        ]
        for job in jobs:
            log.info("resuming job %s (task %s, %s)", job.update_id, job.task_id, job.state)
            self.enqueue(job)
        return len(jobs)

    async def overview(self) -> tuple[list[PoolSnapshot], list[dict]]:
        """The pools' snapshots and the orchestrator's tasks, for /status and /parallel_status."""
        pools: list[PoolSnapshot]
        tasks: list[dict]
        pools, tasks = await asyncio.gather(
            self._ask(self._orchestrator.pools.remote()),
            self._ask(self._orchestrator.tasks.remote()),
        )
        return pools, tasks

    async def cancel(self, user_id: int) -> str | None:
        """Cancel the user's running task; its id, or None when nothing runs."""
        job = self._store.running(user_id)
        if job is None or job.task_id is None:
            return None
        with contextlib.suppress(UnknownTaskError):
            await self._ask(self._orchestrator.cancel.remote(job.task_id))
        return job.task_id

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _ask(self, call: Awaitable[T], extra_s: float = 0.0) -> T:
        """Await one orchestrator call for at most ``call_timeout_s`` (+ ``extra_s``).

        Raises ``TimeoutError``; the call itself may still finish on the orchestrator.
        """
        return await asyncio.wait_for(call, self._config.call_timeout_s + extra_s)

    async def _work(self, user_id: int, queue: asyncio.Queue[Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self.run(job)
            except Exception:  # this is the user's only worker: it must outlive any one job
                log.exception("job %s: failed; kept undelivered for the next start", job.update_id)
                with contextlib.suppress(TelegramError):
                    await self._bot.send_message(job.chat_id, fmt.JOB_KEPT)
            finally:
                self._load[user_id] -= 1

    async def run(self, job: Job) -> None:
        """Take ``job`` from wherever it stopped to its answer, delivered once.

        Failures of the task or of the orchestrator become the job's answer (an
        apology); anything else (e.g. the job store failing) propagates and leaves
        the job as it was stored, so the next start resumes it.
        """
        if job.answer is None:
            if await self._asked_first(job):
                return  # it runs when its user presses "Run it" (``bot.py``)
            text, state, footer = await self._answer(job)
            self._store.finished(job.update_id, state, text, footer)
        try:
            await self.deliver(self._store.get(job.update_id) or job)
        except TelegramError:
            log.exception("job %s: delivery failed; it is retried at the next start", job.update_id)

    async def deliver(self, job: Job) -> None:
        """Send the job's stored Markdown text formatted, in parts, each part once."""
        assert job.answer is not None
        sending = send_markdown(
            self._bot, job.chat_id, job.answer, job.parts_sent, job.footer, job.message_id
        )
        async for sent, message in sending:
            self._store.sent(job.chat_id, message.message_id, job.update_id)
            self._store.part_sent(job.update_id, sent)
        self._store.delivered(job.update_id)

    async def _asked_first(self, job: Job) -> bool:
        """Ask the user before an expensive request runs; True when the question was sent.

        Only a request not asked about before (no cost limit yet) and not yet submitted is
        estimated; when the estimate fails, the request runs without asking.
        """
        threshold = self._config.confirm_cost_usd
        if job.kind is not JobKind.REQUEST or job.task_id or job.cost_limit_usd is not None:
            return False
        if threshold == 0:
            return False
        try:
            estimate: dict = await self._ask(
                self._orchestrator.estimate.remote(job.text, documents=job.documents or None)
            )
        except Exception:  # an estimate only decides whether to ask: never lose the request
            log.warning(
                "job %s: no estimate; running it without asking", job.update_id, exc_info=True
            )
            return False
        log.info("job %s: estimated %s", job.update_id, estimate)
        if estimate["direct"] or not estimate["cost_usd"] > threshold:
            return False
        # Sent before it is stored: a bot that dies in between asks again at the next start
        # (a press on the first question still works), where the other order could leave a
        # job waiting on a question that was never shown.
        await self._bot.send_message(
            job.chat_id,
            fmt.confirmation_question(estimate),
            reply_markup=confirmation_keyboard(job.update_id),
        )
        self._store.asked(job.update_id, float(estimate["high_usd"]))
        return True

    async def _answer(self, job: Job) -> tuple[str, JobState, str | None]:
        """The text to deliver for ``job``, its final state and its footer line (what it
        cost); orchestrator failures included."""
        try:
            report = await self._report(job)
        except UserInputError as exc:
            return f"I can't take that request: {exc}.", JobState.FAILED, None
        except CapacityError as exc:
            return f"Not now: {exc}. Please try again later.", JobState.FAILED, None
        except TimeoutError:
            task_id = self._task_id(job)
            log.warning("job %s (task %s): the orchestrator took too long", job.update_id, task_id)
            if task_id is not None:  # the user is told it stopped: don't let it run on, paid
                self._orchestrator.cancel.remote(task_id)
            return fmt.too_slow_text(task_id), JobState.FAILED, None
        except RayError:  # the orchestrator failed, or stayed unreachable through the retries
            task_id = self._task_id(job)
            log.exception("job %s (task %s) failed", job.update_id, task_id)
            return (
                f"Sorry, that request failed (task {task_id or 'not started'}). "
                "Please try again in a moment.",
                JobState.FAILED,
                None,
            )
        state = _FINAL.get(report.state, JobState.FAILED)
        if job.kind is JobKind.PARALLEL_TEST:  # its report states the cost already
            return fmt.parallel_test_report(report), state, None
        return fmt.answer_text(report), state, fmt.cost_line(report)

    def _task_id(self, job: Job) -> str | None:
        return (self._store.get(job.update_id) or job).task_id

    async def _report(self, job: Job) -> RunReport:
        failures = 0
        while True:
            try:
                return await self._attach_or_submit(self._store.get(job.update_id) or job)
            except RayActorError:  # the orchestrator is restarting
                failures += 1
                if failures == 3:
                    raise
                log.warning("job %s: orchestrator unavailable, retrying", job.update_id)
                await asyncio.sleep(failures)

    async def _attach_or_submit(self, job: Job) -> RunReport:
        task_id = job.task_id
        if task_id is not None:
            try:
                await self._ask(self._orchestrator.status.remote(task_id))
                log.info("job %s: re-attached to task %s", job.update_id, task_id)
            except UnknownTaskError:
                log.info("job %s: task %s is gone; resubmitting", job.update_id, task_id)
                task_id = None
        if task_id is None:
            task_id = await self._submit(job)
        with contextlib.suppress(TelegramError):
            await self._bot.send_chat_action(job.chat_id, ChatAction.TYPING)
        await self._follow(job, task_id)
        report: RunReport = await self._ask(self._orchestrator.wait.remote(task_id))
        return report

    async def _submit(self, job: Job) -> str:
        """Submit ``job`` in its conversation (a new one if that is gone, and its user is
        told); its task id, recorded, and its conversation the chat's latest thread."""
        try:
            task_id = await self._submit_once(job)
        except UnknownConversationError:  # forgotten or expired since: nothing was submitted
            log.info("job %s: conversation %s is gone", job.update_id, job.conversation_id)
            self._store.conversation_gone(job.update_id)
            job = job.model_copy(update={"conversation_id": None})
            with contextlib.suppress(TelegramError):
                await self._bot.send_message(job.chat_id, fmt.CONVERSATION_GONE)
            task_id = await self._submit_once(job)
        self._store.started(job.update_id, task_id)
        if job.kind is JobKind.REQUEST:
            self._store.follow(job.chat_id, job.user_id, job.conversation_id or task_id)
        log.info("job %s: task %s submitted", job.update_id, task_id)
        return task_id

    async def _submit_once(self, job: Job) -> str:
        # The key makes a repeated submit (the orchestrator died inside it, or this bot
        # died before recording the task id) return the task the first one started.
        submitted: Awaitable[str] = self._orchestrator.submit.remote(
            job.text,
            user=job.submitter,
            idempotency_key=job.idempotency_key,
            quick=self._config.quick_answer,
            documents=job.documents or None,
            cost_limit_usd=job.cost_limit_usd,
            conversation_id=job.conversation_id,
        )
        return str(await self._ask(submitted))

    async def forget(self, chat_id: int, user_id: int, submitter: str) -> int:
        """``/forget``: the user's conversations deleted from the orchestrator's store and
        their delivered jobs in this chat from the job store; how many conversations."""
        forgotten: int = await self._ask(self._orchestrator.forget.remote(submitter))
        self._store.forget(chat_id, user_id)
        return forgotten

    async def _follow(self, job: Job, task_id: str) -> None:
        """Show live progress, then the answer as it is written, until the task ends.

        Only multi-microtask plans get a progress message before the answer.
        """
        task = TaskProgress()
        private = job.chat_id == job.user_id  # a private chat's id is its user's id
        drafts = private and job.chat_id not in self._no_drafts  # drafts work only there
        chat = ChatProgress(self._bot, job, self._store, self._config.edit_interval_s, drafts)
        after = 0
        while True:
            events: list[ProgressEvent] = await self._ask(
                self._orchestrator.events.remote(task_id, after, self._config.edit_interval_s),
                extra_s=self._config.edit_interval_s,  # the call itself waits that long
            )
            after = events[-1].next_after if events else after
            for event in events:
                task.add(event)
            if task.finished:
                break
            if task.answer:
                await chat.answer(task.answer)
                continue
            # The quick take, if any, in the draft; where drafts do not work, under the
            # progress in the progress message.
            quick = task.quick and not await chat.draft(task.quick)
            if task.planned_many and chat.wait_s() == 0:
                pools = await self._ask(self._orchestrator.pools.remote())
                text = fmt.progress_text(task_id, task.done, task.total, pools, roles=task.roles())
                await (chat.answer(text + "\n\n" + task.quick) if quick else chat.progress(text))
        if chat.drafts_refused:
            self._no_drafts.add(job.chat_id)
        await chat.finish(fmt.progress_text(task_id, task.done, task.total, [], finished=True))
