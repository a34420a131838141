"""What a chat shows while its job's task runs: a progress message, then the answer as written.

``TaskProgress`` folds a task's progress events into what is worth showing: microtasks
done (overall and per role), whether the plan is big enough for a progress message, and
the answer text streamed so far (``ANSWER`` events; a new ``attempt`` starts it over).

``ChatProgress`` shows that in one chat. Before the answer: one progress message, sent
once and edited in place. While the answer is written: in a private chat a message draft
(``sendMessageDraft``: the user sees the bot typing the message), renewed before
Telegram drops it (about 30 s); where drafts are refused (group chats, or an API error,
after which the chat gets none) the progress message is edited to the answer so far.
Every update waits ``interval_s`` after the previous one. Both are previews: the final
answer is sent by the job runner in recorded parts, and the progress message is
finished with the task's summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from actors.bot import telegram_format as fmt
from actors.bot.jobs import Job, JobStore
from actors.models import EventKind, ProgressEvent, Role

log = logging.getLogger(__name__)

T = TypeVar("T")
# Telegram drops a draft about 30 s after it was last sent: renew it well before.
DRAFT_REFRESH_S = 20.0
_ENDED = (EventKind.FINISHED, EventKind.FAILED)


async def formatted(send: Callable[..., Awaitable[T]], part: fmt.MessagePart, chat_id: int) -> T:
    """``send(text, entities=...)`` with the part's entities; plain if Telegram refuses them."""
    try:
        return await send(part.text, entities=part.entities or None)
    except BadRequest as exc:
        if not part.entities or "entit" not in exc.message.lower():
            raise
        log.warning(
            "chat %s: Telegram refused the formatting (%s); sent as plain text", chat_id, exc
        )
        return await send(part.text)


class TaskProgress:
    """A task's progress events, folded into what its chat shows."""

    def __init__(self) -> None:
        self.done = 0  # microtasks ended (succeeded or failed), of ``total`` planned
        self.total = 0
        self.planned_many = False  # a plan of several microtasks: worth a progress message
        self.finished = False
        self._roles: dict[str, Role] = {}  # microtask id -> role, for those seen so far
        self._ended: set[str] = set()  # microtask ids that finished or failed
        self._attempt: int | None = None  # the writer's attempt the answer text is from
        self._pieces: list[str] = []  # the answer so far, in pieces
        self._quick_attempt: int | None = None
        self._quick: list[str] = []  # the quick take (quick_answer), in pieces

    def add(self, event: ProgressEvent) -> None:
        self.done, self.total = event.done, event.total
        self.planned_many = self.planned_many or (
            event.kind is EventKind.PLANNED and event.total > 1
        )
        self.finished = self.finished or event.kind is EventKind.DONE
        if event.microtask_id is not None and event.role is not None:
            self._roles[event.microtask_id] = event.role
            if event.kind in _ENDED:
                self._ended.add(event.microtask_id)
        if event.kind is EventKind.PLANNED:  # a resumed task writes its answer afresh
            self._attempt, self._pieces = None, []
        elif event.kind is EventKind.ANSWER:
            if event.attempt != self._attempt:  # the writer started over
                self._attempt, self._pieces = event.attempt, []
            self._pieces.append(event.detail)
        elif event.kind is EventKind.QUICK:
            if event.attempt != self._quick_attempt:
                self._quick_attempt, self._quick = event.attempt, []
            self._quick.append(event.detail)

    @property
    def answer(self) -> str:
        """The answer text streamed so far ("" before the writer starts)."""
        return "".join(self._pieces)

    @property
    def quick(self) -> str:
        """The quick take so far, under a heading saying the full answer follows ("")."""
        quick = "".join(self._quick)
        return f"*Quick take* (the full answer follows)\n\n{quick}" if quick else ""

    def roles(self) -> dict[Role, tuple[int, int]]:
        """Per role: (microtasks ended, microtasks seen so far)."""
        counts: dict[Role, tuple[int, int]] = {}
        for microtask_id, role in self._roles.items():
            done, seen = counts.get(role, (0, 0))
            counts[role] = (done + (microtask_id in self._ended), seen + 1)
        return counts


class ChatProgress:
    """One job's progress message and answer preview in its chat.

    ``drafts``: whether to try message drafts (private chats only); ``drafts_refused``
    tells the caller afterwards that this chat answered a draft with an error.
    """

    def __init__(
        self,
        bot: Bot,
        job: Job,
        store: JobStore,
        interval_s: float,
        drafts: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self._job = job
        self._store = store
        self._clock = clock
        self._message_id = job.progress_message_id
        self._message = fmt.EditThrottle(interval_s)  # the progress message
        self._draft = fmt.EditThrottle(interval_s, refresh_s=DRAFT_REFRESH_S)
        self._drafts = drafts
        self.drafts_refused = False

    def wait_s(self) -> float:
        """How long until the progress message may change again."""
        return self._message.wait_s(self._clock())

    async def progress(self, text: str) -> None:
        """Show ``text`` in the progress message (sent the first time), if it is due."""
        await self._show(fmt.MessagePart(text))

    async def answer(self, markdown: str) -> None:
        """Show the answer written so far, if an update is due."""
        if not markdown.strip():
            return
        if not await self.draft(markdown):
            await self._show(fmt.message_parts(markdown)[-1])

    async def draft(self, markdown: str) -> bool:
        """Show ``markdown`` as the chat's message draft (when due); False where drafts do
        not work. A draft holds 4096 units: it shows the part being written now, the one
        that becomes the last message (the earlier ones are complete)."""
        return self._drafts and await self._send_draft(fmt.message_parts(markdown)[-1])

    async def finish(self, text: str) -> None:
        """Leave ``text`` (the task's summary) in the progress message, if there is one."""
        if self._message_id is not None and self._message.changed(text):
            await asyncio.sleep(self.wait_s())
            await self._show(fmt.MessagePart(text))

    async def _send_draft(self, part: fmt.MessagePart) -> bool:
        """Update the draft when due; False when drafts are refused (then edit instead)."""
        now = self._clock()
        if not self._draft.ready(part.text, now) or self.wait_s() > 0:
            return True
        chat_id = self._job.chat_id
        # Any non-zero id; one per job, so two answers in a chat never animate into each other.
        send = partial(self._bot.send_message_draft, chat_id, self._job.update_id or 1)
        try:
            await formatted(send, part, chat_id)
        except BadRequest as exc:
            log.info("job %s: no drafts in chat %s: %s", self._job.update_id, chat_id, exc)
            self._drafts, self.drafts_refused = False, True
            return False
        except TelegramError as exc:  # timed out or unreachable: the next one may pass
            log.info("job %s: draft not shown: %s", self._job.update_id, exc)
        self._draft.sent(part.text, now)
        return True

    async def _show(self, part: fmt.MessagePart) -> None:
        """Send the progress message, or edit it when it exists, if due and changed."""
        if not self._message.ready(part.text, self._clock()):
            return
        job = self._job
        try:
            if self._message_id is None:
                send = partial(self._bot.send_message, job.chat_id)
                message = await formatted(send, part, job.chat_id)
                self._message_id = message.message_id
                self._store.progress_message(job.update_id, message.message_id)
                self._store.sent(job.chat_id, message.message_id, job.update_id)
            else:
                edit: Callable[..., Awaitable[Any]] = partial(
                    self._bot.edit_message_text, chat_id=job.chat_id, message_id=self._message_id
                )
                await formatted(edit, part, job.chat_id)
        except BadRequest as exc:  # e.g. "message is not modified" after a restart
            log.info("job %s: progress not shown: %s", job.update_id, exc)
        self._message.sent(part.text, self._clock())
