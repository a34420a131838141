"""What a chat shows while a task runs: progress in words, then the answer as it is written.

``TaskProgress`` and the throttle are pure; ``ChatProgress`` talks to the fake Bot API
on loopback with a clock the test moves, so no test waits for real time to pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_bot_api import FakeBotAPI  # tests/integration is on sys.path
from telegram import Bot
from telegramify_markdown import utf16_len

from actors.bot.jobs import JobKind, JobStore
from actors.bot.progress import DRAFT_REFRESH_S, ChatProgress, TaskProgress
from actors.bot.telegram_format import MESSAGE_LIMIT, EditThrottle, message_parts, progress_text
from actors.models import EventKind, ProgressEvent, Role

TOKEN = "123456:TEST-secret-token-do-not-log"
USER = 4242
GROUP = -100_777
INTERVAL_S = 2.0


def _event(kind: EventKind, **fields: object) -> ProgressEvent:
    return ProgressEvent(seq=0, kind=kind, task_id="t1", **fields)  # type: ignore[arg-type]


def _covered(text: str, entity: dict) -> str:
    """The text an entity covers, counted in UTF-16 units as Telegram counts."""
    units = text.encode("utf-16-le")
    start, end = 2 * entity["offset"], 2 * (entity["offset"] + entity["length"])
    return units[start:end].decode("utf-16-le")


def _piece(attempt: int, text: str) -> ProgressEvent:
    return _event(EventKind.ANSWER, attempt=attempt, detail=text)


# --- progress in words --------------------------------------------------------------


def test_progress_says_what_is_done_per_role():
    roles = {Role.ANALYSIS: (3, 8), Role.RESEARCH: (5, 5)}
    text = progress_text("t1", 12, 34, [], roles=roles)
    assert "12/34 microtasks · research done · analysis 3/8" in text.splitlines()
    finished = progress_text("t1", 34, 34, [], finished=True, roles=roles)
    assert finished.splitlines()[-1] == "34/34 microtasks"  # nothing left to count per role


def test_task_progress_counts_microtasks_per_role_from_events():
    task = TaskProgress()
    task.add(_event(EventKind.PLANNED, done=0, total=3))
    for mt, role in (("r1", Role.RESEARCH), ("r2", Role.RESEARCH), ("a1", Role.ANALYSIS)):
        task.add(_event(EventKind.STARTED, microtask_id=mt, role=role, total=3))
    task.add(_event(EventKind.FINISHED, microtask_id="r1", role=Role.RESEARCH, done=1, total=3))
    task.add(_event(EventKind.FAILED, microtask_id="r2", role=Role.RESEARCH, done=2, total=3))
    assert task.roles() == {Role.RESEARCH: (2, 2), Role.ANALYSIS: (0, 1)}
    assert (task.done, task.total, task.planned_many, task.finished) == (2, 3, True, False)
    task.add(_event(EventKind.DONE, done=3, total=3))
    assert task.finished


def test_a_one_microtask_plan_is_not_worth_a_progress_message():
    task = TaskProgress()
    task.add(_event(EventKind.PLANNED, total=1))
    assert not task.planned_many


def test_answer_pieces_append_and_a_new_attempt_starts_over():
    task = TaskProgress()
    assert task.answer == ""
    task.add(_event(EventKind.MERGING))
    task.add(_piece(1, "The shop "))
    task.add(_piece(1, "is safe"))
    assert task.answer == "The shop is safe"
    task.add(_piece(2, "The shop "))  # the writer's call was retried
    assert task.answer == "The shop "
    task.add(_event(EventKind.PLANNED))  # a resumed task writes its answer again
    assert task.answer == ""
    task.add(_piece(1, "Again"))
    assert task.answer == "Again"


def test_the_quick_take_is_kept_apart_from_the_answer():
    task = TaskProgress()
    assert task.quick == ""
    task.add(_event(EventKind.QUICK, attempt=1, detail="Use **Postgres**"))
    assert task.quick.startswith("*Quick take*") and "Use **Postgres**" in task.quick
    task.add(_event(EventKind.QUICK, attempt=2, detail="Use SQLite"))  # started over
    assert "Postgres" not in task.quick and "Use SQLite" in task.quick


# --- the throttle ---------------------------------------------------------------------


def test_a_draft_throttle_renews_the_same_text_before_it_expires():
    throttle = EditThrottle(INTERVAL_S, refresh_s=DRAFT_REFRESH_S)
    throttle.sent("a", now=0.0)
    assert not throttle.ready("ab", now=1.0)  # too soon for new text
    assert throttle.ready("ab", now=2.0)
    assert not throttle.ready("a", now=2.0)  # the same text, shown a moment ago
    assert throttle.ready("a", now=DRAFT_REFRESH_S)  # renewed before Telegram drops it
    assert DRAFT_REFRESH_S < 30  # a draft lasts about 30 s
    plain = EditThrottle(INTERVAL_S)
    plain.sent("a", now=0.0)
    assert not plain.ready("a", now=1000.0)  # a message keeps its text: never the same again


# --- in a chat -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{fake.root}/bot") as bot:
        yield bot


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = JobStore.in_home(tmp_path)
    yield store
    store.close()


def _chat(bot: Bot, store: JobStore, chat_id: int, clock: Clock) -> ChatProgress:
    job = store.record(7, chat_id, USER, "a question", JobKind.REQUEST)
    return ChatProgress(bot, job, store, INTERVAL_S, drafts=chat_id == USER, clock=clock)


async def test_a_private_chat_sees_the_answer_typed_as_a_draft(fake, bot, store):
    clock = Clock()
    chat = _chat(bot, store, USER, clock)
    await chat.answer("## Risks\n\nThe **API")
    clock.now += 1
    await chat.answer("## Risks\n\nThe **API** leaks")  # too soon: waits for the next round
    clock.now += 1
    await chat.answer("## Risks\n\nThe **API** leaks tokens")
    clock.now += 1
    await chat.answer("## Risks\n\nThe **API** leaks tokens")  # nothing new: nothing sent
    clock.now += DRAFT_REFRESH_S
    await chat.answer("## Risks\n\nThe **API** leaks tokens")  # renewed before it expires
    drafts = fake.drafts_to(USER)
    texts = [d.params["text"] for d in drafts]
    assert texts[0].endswith("The API") and texts[1] == texts[2]
    assert texts[1].endswith("The API leaks tokens") and "**" not in texts[1]
    assert [d.at for d in drafts] == sorted(d.at for d in drafts)
    assert {d.params["draft_id"] for d in drafts} == {"7"}  # one draft, animated
    bold = [_covered(texts[1], e) for e in drafts[1].params["entities"] if e["type"] == "bold"]
    assert "API" in bold
    assert fake.calls_of("sendMessage") == [] and fake.calls_of("editMessageText") == []
    assert not chat.drafts_refused


async def test_refused_drafts_fall_back_to_editing_the_progress_message(fake, bot, store):
    fake.refuse_drafts = True
    clock = Clock()
    chat = _chat(bot, store, USER, clock)
    await chat.progress("Working on it (task t1)")
    clock.now += INTERVAL_S
    await chat.answer("The **answer")
    clock.now += 1
    await chat.answer("The **answer** grows")  # too soon after the edit
    clock.now += 1
    await chat.answer("The **answer** grows")
    clock.now += INTERVAL_S
    await chat.finish("Done (task t1)")
    assert chat.drafts_refused
    assert [c.status for c in fake.calls_of("sendMessageDraft")] == [400]  # tried once
    (progress,) = fake.calls_of("sendMessage", USER)
    edits = fake.calls_of("editMessageText", USER)
    assert [e.params["text"] for e in edits] == ["The answer", "The answer grows", "Done (task t1)"]
    assert all(e.status == 200 for e in edits)
    assert {e.params["message_id"] for e in edits} == {str(store.get(7).progress_message_id)}
    assert progress.params["text"] == "Working on it (task t1)"
    assert edits[1].params["entities"][0]["type"] == "bold"


async def test_a_group_chat_gets_no_drafts_only_throttled_edits(fake, bot, store):
    clock = Clock()
    chat = _chat(bot, store, GROUP, clock)
    for words in ("One", "One two", "One two three"):
        await chat.answer(words)
        clock.now += INTERVAL_S / 2
    assert fake.calls_of("sendMessageDraft") == []
    assert fake.texts_to(GROUP) == ["One"]  # the preview message, sent once
    assert [e.params["text"] for e in fake.calls_of("editMessageText")] == ["One two three"]


async def test_a_long_answer_shows_the_part_being_written(fake, bot, store):
    answer = "\n".join(f"**Point {i}**: " + "detail " * 12 for i in range(130))
    assert len(answer) > 10_000
    chat = _chat(bot, store, USER, Clock())
    await chat.answer(answer)
    (draft,) = fake.calls_of("sendMessageDraft", USER)
    assert draft.status == 200  # within 4096 units, every entity inside the text
    last = message_parts(answer)[-1]
    assert draft.params["text"] == last.text and utf16_len(last.text) <= MESSAGE_LIMIT
    assert draft.params["entities"] == [e.to_dict() for e in last.entities]
