"""The Telegram bot end to end: the real ``Application`` against a fake Bot API on loopback.

The system runs on the session's Ray with tiny pools and a fixed simulated
latency. Tests talk to the bot only through Telegram updates and read what a
user would see from the calls the fake server recorded. Absence ("answered
once", "nothing run") is checked after a later marker update has been answered:
updates are handled in order, so by then the earlier one has been handled too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import urllib.request
from pathlib import Path

import pytest
import ray
from fake_bot_api import Call, FakeBotAPI  # tests/integration is on sys.path (no packages)
from telegram import MessageEntity
from test_documents import PNG, pdf_with_text  # tests/unit is on sys.path too

from actors.bot import telegram_format as fmt
from actors.bot.jobs import Job, JobKind, JobState, JobStore
from actors.bot.runner import send_part
from actors.bot.telegram_format import MESSAGE_LIMIT, MessagePart, message_parts
from actors.config import Settings
from actors.models import TaskState
from actors.runtime.system import start_system, stop_system

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bot.py is a top-level script, not part of the package
    sys.path.insert(0, str(ROOT))

import bot  # noqa: E402

TOKEN = "123456:TEST-secret-token-do-not-log"
USER = 4242
MEMBER = 4343  # another allowed user, in a group chat with USER
GROUP = -100_4242
STRANGER = 666
EDIT_INTERVAL_S = 0.5
COMPLEX = (
    "Create a comprehensive threat analysis of an online shop with a public REST API, "
    "a PostgreSQL database, a payment provider and a React front end"
)
# A document for a request, under 6,000 characters: agent prompts still cut the request
# (documents included) at 8,000.
THREAT_NOTES = "# Threat notes\n\n" + "\n".join(
    f"- finding {i}: the checkout API trusts the price the client sends" for i in range(40)
)
# A medium request: planned as several microtasks, then one long answer written for it.
STREAMED = "Compare PostgreSQL and MySQL for an online shop: performance, replication and cost"


def _system_settings() -> Settings:
    return Settings().with_overrides(
        pools={
            "research": {"min": 1, "max": 2},
            "analysis": {"min": 1, "max": 1},
            "generation": {"min": 1, "max": 1},
            "validation": {"min": 1, "max": 1},
        },
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 3},
        retry_backoff_s=0.05,
        backups=False,
    )


@pytest.fixture(scope="module")
def system(ray_session):
    system = start_system(_system_settings())
    yield system
    stop_system(system)


@pytest.fixture
async def fake():
    async with FakeBotAPI(TOKEN) as fake:
        yield fake


class DyingJobStore(JobStore):
    """A job store whose first ``started`` write fails: the bot "dies" right after a submit."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.died = False

    def started(self, update_id: int, task_id: str) -> None:
        if not self.died:
            self.died = True
            raise sqlite3.OperationalError("disk I/O error")
        super().started(update_id, task_id)


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeBotAPI,
    system,
    home: Path,
    store_type=JobStore,
    allowed: tuple[int, ...] = (USER,),
    confirm_cost_usd: float = 1.0,
    **changes,
):
    settings = Settings().with_overrides(
        telegram_bot_token=TOKEN,
        telegram_api_base_url=fake.root,
        telegram_allowed_user_ids=",".join(map(str, allowed)),
        home=home,
        **changes,
    )
    store = store_type.in_home(home)
    config = bot.BotConfig(
        edit_interval_s=EDIT_INTERVAL_S, poll_timeout_s=1, confirm_cost_usd=confirm_cost_usd
    )
    app = bot.build_application(settings, system, store, config)
    try:
        async with bot.serving(app, config):
            yield app, store
    finally:
        store.close()


async def _say(fake: FakeBotAPI, text: str, user: int = USER, timeout_s: float = 30) -> str:
    """Send ``text`` as ``user`` and return the next message the bot sends to that chat."""
    before = len(fake.texts_to(user))
    fake.enqueue(fake.message_update(user, text))
    texts = await fake.wait_for(lambda: len(fake.texts_to(user)) > before, timeout_s)
    assert texts
    return fake.texts_to(user)[before]


def _texts(markdown: str) -> list[str]:
    """The texts of the messages ``markdown`` is sent as."""
    return [part.text for part in message_parts(markdown)]


def _sent_parts(job: Job) -> list[MessagePart]:
    """The messages a job's answer is sent as: its Markdown, then its footer line."""
    assert job.answer is not None and job.footer is not None
    return fmt.with_footer(message_parts(job.answer), job.footer)


def _covered(text: str, entity: dict) -> str:
    """The text an entity covers, counted in UTF-16 units as Telegram counts."""
    units = text.encode("utf-16-le")
    return units[2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])].decode(
        "utf-16-le"
    )


def _task_count(system) -> int:
    return len(ray.get(system.orchestrator.tasks.remote()))


async def test_start_registers_commands_and_greets(system, fake, tmp_path):
    async with running_bot(fake, system, tmp_path):
        commands = fake.calls_of("setMyCommands")[0].params["commands"]
        assert [c["command"] for c in commands] == [
            "start",
            "help",
            "status",
            "parallel_test",
            "parallel_status",
            "cancel",
            "new",
            "forget",
        ]
        greeting = await _say(fake, "/start")
        assert "parallel" in greeting and "/parallel_test" in greeting


async def test_status_and_parallel_status_in_both_spellings(system, fake, tmp_path):
    async with running_bot(fake, system, tmp_path):
        status = await _say(fake, "/status")
        assert "utilisation" in status and "active tasks" in status
        assert all(role in status for role in ("research", "analysis", "generation", "validation"))
        for spelling in ("/parallel_status", "/parallel-status"):
            text = await _say(fake, spelling)
            assert text.startswith("Pools") and "queue:" in text and "active tasks" in text


async def test_parallel_test_reports_its_parallelism(system, fake, tmp_path):
    async with running_bot(fake, system, tmp_path):
        assert "started" in await _say(fake, "/parallel-test")
        report = await fake.wait_for(
            lambda: [t for t in fake.texts_to(USER) if "parallelism:" in t], timeout_s=90
        )
    text = report[0]
    figures = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    assert int(figures["microtasks"].split()[0]) > 1
    assert int(figures["agents"].split()[0]) >= 2
    assert float(figures["parallelism"].split()[0]) > 0
    assert "at once on average" in figures["parallelism"]  # says what the figure is
    assert "speedup" not in text
    assert "wall time" in figures and "sum of microtask times" in figures


async def test_complex_request_gets_one_live_progress_message_then_the_answer(
    system, fake, tmp_path
):
    async with running_bot(fake, system, tmp_path) as (_, store):
        fake.enqueue(fake.message_update(USER, COMPLEX))
        await fake.wait_for(lambda: store.undelivered() == [] and store.count() == 1, 90)
        job = store.get(1000)  # the fake's first update id
    stored_answer = job.answer
    sends = [c for c in fake.calls_of("sendMessage", USER) if c.status == 200]
    progress, answer = sends[0], sends[1:]
    assert "microtasks" in progress.params["text"] and "░" in progress.params["text"]
    edits = fake.calls_of("editMessageText", USER)
    assert edits, "the progress message was never edited"
    assert all(c.status == 200 for c in edits), "an edit was refused (e.g. not modified)"
    progress_id = {int(c.params["message_id"]) for c in edits}
    assert len(progress_id) == 1  # one progress message, edited in place
    texts = [progress.params["text"]] + [c.params["text"] for c in edits]
    assert all(a != b for a, b in itertools.pairwise(texts))
    assert edits[-1].params["text"].startswith("Done")
    stamps = [progress.at] + [c.at for c in edits]
    assert all(b - a >= EDIT_INTERVAL_S - 0.05 for a, b in itertools.pairwise(stamps))
    # Then the answer, in as many parts as it needs, after the last edit, with its entities,
    # and what it cost on the last line.
    parts = _sent_parts(job)
    report = ray.get(system.orchestrator.wait.remote(job.task_id))
    assert parts[-1].text.endswith("\n\n" + fmt.cost_line(report))
    assert report.cost_usd > 0 and report.token_multiple is not None and report.token_multiple > 1
    assert [c.params["text"] for c in answer] == [p.text for p in parts]
    assert [c.params.get("entities", []) for c in answer] == [
        [e.to_dict() for e in p.entities] for p in parts
    ]
    assert answer[0].at >= edits[-1].at
    assert "Confidence" in stored_answer


@contextlib.contextmanager
def _writing_takes_seconds(system):
    """Simulated calls take time per output token: the long answer streams for seconds."""
    ray.get(system.simulator.reconfigure.remote({"per_output_token_s": 0.005}))
    try:
        yield
    finally:
        ray.get(system.simulator.reconfigure.remote({"per_output_token_s": 0.0}))


async def _answer_streamed(fake: FakeBotAPI, system, tmp_path: Path) -> list[str]:
    """Ask STREAMED with its answer streaming; the texts of the answer's messages, checked."""
    with _writing_takes_seconds(system):
        async with running_bot(fake, system, tmp_path) as (_, store):
            fake.enqueue(fake.message_update(USER, STREAMED))
            await fake.wait_for(lambda: store.undelivered() == [] and store.count() == 1, 120)
            parts = _sent_parts(store.get(1000))  # the fake's first update id
    answer = [c for c in fake.calls_of("sendMessage", USER) if c.status == 200][-len(parts) :]
    assert [c.params["text"] for c in answer] == [p.text for p in parts]
    assert [c.params.get("entities", []) for c in answer] == [
        [e.to_dict() for e in p.entities] for p in parts
    ]
    edits = fake.calls_of("editMessageText", USER)
    assert edits and edits[-1].params["text"].startswith("Done")  # the progress message
    previews = fake.calls_of("sendMessageDraft", USER) + edits
    assert all(call.at < answer[0].at for call in previews)  # then the answer, in full
    return [p.text for p in parts]


def _where(previews: list[str], parts: list[str]) -> list[tuple[int, int]]:
    """(which message of the answer, how much of it) each preview showed.

    A preview shows the message being written, so its text begins that message (but for
    its last few characters: a word or Markdown marker still being written).
    """
    return [
        next((k, len(text)) for k, part in enumerate(parts) if part.startswith(text[:-10]))
        for text in previews
    ]


async def test_a_private_chat_sees_the_answer_typed_as_a_draft_then_sent(system, fake, tmp_path):
    parts = await _answer_streamed(fake, system, tmp_path)
    quick = [d for d in fake.drafts_to(USER) if d.params["text"].startswith("Quick take")]
    drafts = [d for d in fake.drafts_to(USER) if d not in quick]
    assert quick and quick[0].at < drafts[0].at  # the quick take came first (on by default)
    assert len(drafts) >= 2, "the answer was not shown as it was written"
    where = _where([d.params["text"] for d in drafts], parts)
    assert where == sorted(set(where))  # growing, message by message
    assert len(parts) > 1 and where[-1][0] > 0  # a long answer: the draft moved on
    everything = fake.drafts_to(USER)
    assert all(b.at - a.at >= EDIT_INTERVAL_S - 0.05 for a, b in itertools.pairwise(everything))
    assert len({d.params["draft_id"] for d in everything}) == 1  # one draft, animated
    # The progress message only ever showed progress: the answer went to the draft.
    edits = fake.calls_of("editMessageText", USER)
    assert all(e.params["text"].startswith("Working on it") for e in edits[:-1])


async def test_where_drafts_are_refused_the_progress_message_shows_the_answer(
    system, fake, tmp_path
):
    fake.refuse_drafts = True
    parts = await _answer_streamed(fake, system, tmp_path)
    assert [c.status for c in fake.calls_of("sendMessageDraft", USER)] == [400]  # tried once
    edits = fake.calls_of("editMessageText", USER)
    previews = [e.params["text"] for e in edits[:-1] if not e.params["text"].startswith("Work")]
    assert previews, "the answer was not shown as it was written"
    where = _where(previews, parts)
    assert where == sorted(set(where))
    assert all(e.status == 200 for e in edits)
    assert len({e.params["message_id"] for e in edits}) == 1  # the progress message, in place
    stamps = [e.at for e in edits]
    assert all(b - a >= EDIT_INTERVAL_S - 0.05 for a, b in itertools.pairwise(stamps))


async def test_strangers_are_refused_once_and_nothing_runs(system, fake, tmp_path):
    before = _task_count(system)
    async with running_bot(fake, system, tmp_path) as (_, store):
        assert await _say(fake, "Hello", user=STRANGER) == "Sorry, this bot is private."
        fake.enqueue(fake.message_update(STRANGER, "/parallel_test"))
        await _say(fake, "/help")  # marker: the stranger's second update was handled by now
        assert fake.texts_to(STRANGER) == ["Sorry, this bot is private."]
        assert store.count() == 0
    assert _task_count(system) == before


async def test_over_long_request_is_refused_with_the_limit(system, fake, tmp_path):
    before = _task_count(system)
    async with running_bot(fake, system, tmp_path, max_request_chars=50):
        reply = await _say(fake, "x" * 80)
    assert "the limit is 50" in reply
    assert _task_count(system) == before


async def _send(fake: FakeBotAPI, update: dict, user: int = USER) -> str:
    """Send ``update`` and return the next message the bot sends to ``user``'s chat."""
    before = len(fake.texts_to(user))
    fake.enqueue(update)
    await fake.wait_for(lambda: len(fake.texts_to(user)) > before)
    return fake.texts_to(user)[before]


def _simulated_requests(system, after_seq: int = 0) -> list[dict]:
    """The simulator's request log (``GET /requests``) past ``after_seq``, oldest first."""
    url = ray.get(system.simulator.url.remote())
    with urllib.request.urlopen(f"{url}/requests", timeout=10) as answer:
        entries: list[dict] = json.load(answer)["requests"]
    return [entry for entry in entries if entry["seq"] > after_seq]


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("threat-notes.md", THREAT_NOTES.encode(), "finding 39: the checkout API"),
        (
            "shop-audit.pdf",
            pdf_with_text("Shop audit", "The checkout API trusts the price the client sends"),
            "The checkout API trusts",
        ),
    ],
    ids=["markdown", "pdf"],
)
async def test_a_document_with_its_caption_reaches_every_microtask(
    system, fake, tmp_path, name, data, says
):
    seen = max((e["seq"] for e in await asyncio.to_thread(_simulated_requests, system)), default=0)
    async with running_bot(fake, system, tmp_path) as (_, store):
        fake.enqueue(fake.document_update(USER, name, data, caption=COMPLEX))
        await fake.wait_for(lambda: store.count() == 1 and store.undelivered() == [], 90)
        job = store.get(1000)  # the fake's first update id
    assert job.state is JobState.ANSWERED and job.text == COMPLEX
    assert [d.name for d in job.documents] == [name] and says in job.documents[0].text
    assert [c.status for c in fake.calls_of("download")] == [200]
    prompts = await asyncio.to_thread(_simulated_requests, system, seen)
    microtasks = [e for e in prompts if e["purpose"] == "microtask"]
    assert len(microtasks) > 1, "the request was not planned as several microtasks"
    assert all(e["documents"] == [name] for e in microtasks), [e["documents"] for e in microtasks]


async def test_an_oversized_binary_or_captionless_document_is_refused_with_one_reply(
    system, fake, tmp_path
):
    before = _task_count(system)
    async with running_bot(fake, system, tmp_path, max_document_bytes=1_000) as (_, store):
        huge = fake.document_update(USER, "dump.md", b"x" * 10, "Summarise", file_size=5_000_000)
        fake.enqueue(huge)  # delivered twice: still one reply
        too_big = await _send(fake, huge)
        image = await _send(fake, fake.document_update(USER, "shot.png", PNG, "What is this?"))
        bare = await _send(fake, fake.document_update(USER, "notes.md", b"# notes"))
        await _say(fake, "/help")  # marker: a second reply to the twice-sent update came by now
        assert store.count() == 3 and store.undelivered() == []
    assert too_big == "Sorry, dump.md is 5 MB; the limit is 1 kB per document."
    assert "shot.png is a PNG image" in image and "Markdown (.md) or PDF" in image
    assert "notes.md" in bare and "caption" in bare
    assert fake.texts_to(USER) == [too_big, image, bare, bot.HELP]
    assert [c.params["file_id"] for c in fake.calls_of("getFile")] == ["file-2"]  # the PNG only
    assert _task_count(system) == before


async def test_long_answer_is_split_into_three_messages(system, fake, tmp_path):
    long_answer = "\n".join(f"paragraph {i}: " + "words " * 15 for i in range(100))[:9000]
    async with running_bot(fake, system, tmp_path) as (app, store):
        runner = app.bot_data["runner"]
        store.record(1, USER, USER, "long", JobKind.REQUEST)
        store.finished(1, JobState.ANSWERED, long_answer)
        await runner.deliver(store.get(1))
        # A job that died after its first part: only the rest is sent.
        store.record(2, STRANGER, STRANGER, "long", JobKind.REQUEST)
        store.finished(2, JobState.ANSWERED, long_answer)
        store.part_sent(2, 1)
        await runner.deliver(store.get(2))
    parts = fake.texts_to(USER)
    assert len(parts) == 3 and parts == _texts(long_answer)
    assert all(len(p) <= MESSAGE_LIMIT for p in parts)
    assert fake.texts_to(STRANGER) == parts[1:]


async def test_a_formatted_10000_character_answer_arrives_in_parts_with_its_entities(
    system, fake, tmp_path
):
    answer = "\n".join(f"- **Point {i}** uses `code_{i}` and *more*" for i in range(300))
    assert len(answer) > 10_000
    async with running_bot(fake, system, tmp_path) as (app, store):
        store.record(1, USER, USER, "long", JobKind.REQUEST)
        store.finished(1, JobState.ANSWERED, answer)
        await app.bot_data["runner"].deliver(store.get(1))
    calls = fake.calls_of("sendMessage", USER)
    assert len(calls) == 3 and all(c.status == 200 for c in calls)  # no entity refused
    spans = [
        (e["type"], _covered(c.params["text"], e)) for c in calls for e in c.params["entities"]
    ]
    assert [s for s in spans if s[0] == "code"] == [("code", f"code_{i}") for i in range(300)]
    assert sum(s == ("bold", "Point 7") for s in spans) == 1


async def test_a_markdown_answer_arrives_formatted(system, fake, tmp_path):
    answer = "## Findings 😀\n\nThe **main risk** is `eval()` in [the API](https://example.com)."
    async with running_bot(fake, system, tmp_path) as (app, store):
        store.record(1, USER, USER, "a question", JobKind.REQUEST)
        store.finished(1, JobState.ANSWERED, answer)
        await app.bot_data["runner"].deliver(store.get(1))
    (call,) = fake.calls_of("sendMessage", USER)
    text, entities = call.params["text"], call.params["entities"]
    assert call.status == 200 and "#" not in text and "**" not in text and "`" not in text
    assert text.endswith("Findings 😀\n\nThe main risk is eval() in the API.")
    spans = [(e["type"], _covered(text, e)) for e in entities]
    assert ("bold", "Findings 😀") in spans and ("bold", "main risk") in spans
    assert ("code", "eval()") in spans and ("text_link", "the API") in spans
    assert "parse_mode" not in call.params


async def test_refused_entities_fall_back_to_plain_text(system, fake, tmp_path, caplog):
    # An entity past the end of the text: Telegram refuses the message ("can't parse entities").
    broken = MessagePart("almost bold", (MessageEntity(MessageEntity.BOLD, 0, 99),))
    async with running_bot(fake, system, tmp_path) as (app, _):
        message = await send_part(app.bot, USER, broken)
    refused, resent = fake.calls_of("sendMessage", USER)
    assert refused.status == 400 and refused.params["entities"][0]["length"] == 99
    assert resent.status == 200 and "entities" not in resent.params
    assert message.text == resent.params["text"] == broken.text  # the message still arrived
    assert "sent as plain text" in caplog.text


async def test_the_same_update_delivered_twice_is_answered_once(system, fake, tmp_path):
    before = _task_count(system)
    async with running_bot(fake, system, tmp_path) as (_, store):
        update = fake.message_update(USER, "Hello there")
        fake.enqueue(update)
        fake.enqueue(update)
        await fake.wait_for(lambda: store.count() == 1 and store.undelivered() == [])
        await _say(fake, "/help")
    texts = fake.texts_to(USER)
    assert len(texts) == 2 and texts[1] == bot.HELP
    assert _task_count(system) == before + 1


async def test_retry_after_from_telegram_is_waited_out(system, fake, tmp_path):
    async with running_bot(fake, system, tmp_path):
        fake.fail_next("sendMessage", retry_after=1)
        assert await _say(fake, "/help") == bot.HELP
    calls = fake.calls_of("sendMessage", USER)
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 1.0


async def test_unfinished_job_with_a_lost_task_is_resubmitted(system, fake, tmp_path):
    store = JobStore.in_home(tmp_path)
    store.record(7, USER, USER, "Hello again", JobKind.REQUEST)
    store.started(7, "no-such-task")
    store.close()
    async with running_bot(fake, system, tmp_path) as (_, store):
        await fake.wait_for(lambda: store.undelivered() == [])
        job = store.get(7)
    assert job.state is JobState.ANSWERED and job.task_id != "no-such-task"
    assert len(fake.texts_to(USER)) == 1


async def test_a_bot_that_died_between_submit_and_recording_runs_the_request_once(
    system, fake, tmp_path
):
    text = "Hello, answer me only once"

    def tasks_for_text() -> list[dict]:
        return [
            t for t in ray.get(system.orchestrator.history.remote(1000)) if t["request"] == text
        ]

    async with running_bot(fake, system, tmp_path, store_type=DyingJobStore) as (_, store):
        fake.enqueue(fake.message_update(USER, text))
        assert await fake.wait_for(lambda: fake.texts_to(USER)) == [fmt.JOB_KEPT]
        job = store.get(1000)
        assert job is not None and job.task_id is None  # submitted, but not recorded
    assert len(tasks_for_text()) == 1
    # The restarted bot submits again, with the same key: the orchestrator hands back the
    # task the first submit started instead of starting another.
    async with running_bot(fake, system, tmp_path) as (_, store):
        await fake.wait_for(lambda: store.undelivered() == [], 60)
        job = store.get(1000)
    (task,) = tasks_for_text()
    assert job.state is JobState.ANSWERED and job.task_id == task["task_id"]
    report = ray.get(system.orchestrator.wait.remote(task["task_id"]))
    texts = fake.texts_to(USER)[1:]
    progress = [t for t in texts if t.startswith(("Working on it", "Done"))]
    assert all(f"(task {task['task_id']})" in t for t in progress)
    answer = [t for t in texts if t not in progress]
    parts = fmt.with_footer(message_parts(fmt.answer_text(report)), fmt.cost_line(report))
    assert answer == [p.text for p in parts]  # the one answer, once


async def test_an_expensive_request_is_asked_about_and_only_its_sender_decides(
    system, fake, tmp_path
):
    seen = max((e["seq"] for e in await asyncio.to_thread(_simulated_requests, system)), default=0)
    before = _task_count(system)

    async def asked() -> tuple[int, int]:
        """USER sends COMPLEX in the group; its update id and the question's message id."""
        update = fake.message_update(USER, COMPLEX, chat_id=GROUP)
        fake.enqueue(update)
        (question,) = await fake.wait_for(lambda: fake.with_buttons(GROUP), 60)
        waiting = JobState.AWAITING_CONFIRMATION
        await fake.wait_for(lambda: store.get(update["update_id"]).state is waiting)
        return update["update_id"], question

    def answers() -> list[dict]:
        return [c.params for c in fake.calls_of("answerCallbackQuery")]

    asking = running_bot(fake, system, tmp_path, allowed=(USER, MEMBER), confirm_cost_usd=0.1)
    async with asking as (_, store):
        update_id, question = await asked()
        assert fake.buttons(GROUP, question) == ["Run it", "Cancel"]
        (text,) = fake.texts_to(GROUP)
        assert text.startswith("This looks like a complex request: about ")
        assert " microtasks, ~$" in text and text.endswith("). Run it?")
        # Another member of the group may not decide for USER.
        fake.enqueue(fake.press(MEMBER, GROUP, question, "Run it"))
        await fake.wait_for(lambda: answers())
        assert answers()[0]["show_alert"] == "true" and "Only the person" in answers()[0]["text"]
        assert store.get(update_id).state is JobState.AWAITING_CONFIRMATION
        fake.enqueue(fake.press(USER, GROUP, question, "Cancel"))
        await fake.wait_for(lambda: fake.calls_of("editMessageText", GROUP))
        (edit,) = fake.calls_of("editMessageText", GROUP)
        assert edit.params["text"] == "Cancelled, nothing was spent on it."
        assert store.get(update_id).state is JobState.CANCELLED and store.undelivered() == []
        # Only the verdict behind the estimate reached the model: no task was started.
        calls = await asyncio.to_thread(_simulated_requests, system, seen)
        assert [e["purpose"] for e in calls] == ["assessment"]
        assert _task_count(system) == before
        # Asked again, USER runs it: the answer comes with what it cost.
        update_id, question = await asked()
        fake.enqueue(fake.press(USER, GROUP, question, "Run it"))
        await fake.wait_for(lambda: store.get(update_id).delivered, 90)
        job = store.get(update_id)
    assert job.state is JobState.ANSWERED and job.cost_limit_usd is not None
    started = [c.params["text"] for c in fake.calls_of("editMessageText", GROUP)][1]
    assert started == f"Started; it stops at ${job.cost_limit_usd:.2f} at the most."
    report = ray.get(system.orchestrator.wait.remote(job.task_id))
    assert report.state is TaskState.DONE and report.microtasks > 1
    assert report.cost_usd <= job.cost_limit_usd
    assert fake.texts_to(GROUP)[-1].endswith("\n\n" + fmt.cost_line(report))
    assert _task_count(system) == before + 1


async def _start_bot_process(fake: FakeBotAPI, home: Path, log_path: Path):
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": fake.root,
        "TELEGRAM_ALLOWED_USER_IDS": str(USER),
        "PARALLEL_AGENTS_HOME": str(home),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    commands_before = len(fake.calls_of("setMyCommands"))
    with open(log_path, "ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bot.py"), cwd=ROOT, env=env, stdout=log, stderr=log
        )
    await fake.wait_for(lambda: len(fake.calls_of("setMyCommands")) > commands_before, 60)
    return process


async def test_bot_killed_mid_task_delivers_the_answer_once_after_restart(system, fake, tmp_path):
    home, log_path = tmp_path / "home", tmp_path / "bot.log"
    process = await _start_bot_process(fake, home, log_path)
    try:
        fake.enqueue(fake.message_update(USER, "Hello [sim-latency 6]"))
        await fake.wait_for(lambda: fake.calls_of("sendChatAction", USER), 30)
        process.kill()  # SIGKILL: no clean-up of any kind
        await process.wait()
        assert fake.texts_to(USER) == []
        process = await _start_bot_process(fake, home, log_path)
        await fake.wait_for(lambda: fake.texts_to(USER), 60)
        await _say(fake, "/help")  # marker: a second answer would have come before this
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    texts = fake.texts_to(USER)
    assert len(texts) == 2 and "[simulated]" in texts[0] and texts[1] == bot.HELP
    store = JobStore.in_home(home)
    assert store.count() == 1 and store.undelivered() == []
    store.close()
    log = log_path.read_text()
    assert "re-attached to task" in log
    assert TOKEN not in log


async def _answer_to(fake: FakeBotAPI, update: dict, user: int = USER) -> Call:
    """Send ``update``; the sendMessage call of its answer (the bot's first message that
    replies to it)."""
    asked = update["message"]["message_id"]

    def answer() -> Call | None:
        for call in fake.calls_of("sendMessage", user):
            replying = call.params.get("reply_parameters") or {}
            if call.status == 200 and replying.get("message_id") == asked:
                return call
        return None

    fake.enqueue(update)
    found: Call = await fake.wait_for(answer)
    return found


def _heard(system, after_seq: int) -> list[dict | None]:
    """What each answered call since ``after_seq`` carried of a conversation."""
    return [e["conversation"] for e in _simulated_requests(system, after_seq) if e["status"] == 200]


def _last_seq(system) -> int:
    return max((e["seq"] for e in _simulated_requests(system)), default=0)


async def test_a_reply_to_an_answer_follows_up_on_it_and_new_and_forget_start_afresh(
    system, fake, tmp_path
):
    async with running_bot(fake, system, tmp_path, confirm_cost_usd=0) as (_, store):
        opening = fake.message_update(USER, "What is a REST API?")
        first = await _answer_to(fake, opening)
        first_job = store.get(opening["update_id"])
        assert first_job is not None and first_job.task_id is not None
        report = ray.get(system.orchestrator.wait.remote(first_job.task_id))
        seen = _last_seq(system)
        # A reply to the answer: the follow-up's prompts carry that answer, and one agent
        # reworks it directly.
        follow_up = fake.message_update(USER, "make it shorter", reply_to=first.message_id)
        second = await _answer_to(fake, follow_up)
        second_job = store.get(follow_up["update_id"])
        assert second_job is not None and second_job.conversation_id == report.task_id
        reworked = ray.get(system.orchestrator.wait.remote(second_job.task_id))
        assert reworked.plan_source == "direct"
        assert reworked.conversation_id == report.task_id
        heard = _heard(system, seen)
        assert heard and all(h and h["answers"] == [report.result[:120]] for h in heard)
        assert second.params["reply_parameters"]["message_id"] == follow_up["message"]["message_id"]
        # /new: the next message opens a conversation of its own and hears nothing before.
        assert await _say(fake, "/new") == fmt.NEW_CONVERSATION
        seen = _last_seq(system)
        fresh = fake.message_update(USER, "make it a table")
        await _answer_to(fake, fresh)
        fresh_job = store.get(fresh["update_id"])
        assert fresh_job is not None and fresh_job.conversation_id is None
        assert all(h is None for h in _heard(system, seen))
        # /forget: the conversations and this chat's rows are gone.
        forgot = re.match(r"Forgotten: (\d+) conversation", await _say(fake, "/forget"))
        assert forgot and int(forgot.group(1)) >= 2  # these two and the module's earlier ones
        assert ray.get(system.orchestrator.latest_conversation.remote(f"telegram:{USER}")) is None
        assert store.get(follow_up["update_id"]) is None and store.latest_thread(USER, USER) is None
        assert store.conversation_of(USER, first.message_id, USER) is None
