"""The bot under faults: a hung orchestrator, a failing job store, forged webhook updates.

The real python-telegram-bot ``Application`` runs against the fake Bot API on
loopback; the orchestrator is a fake handle passed in (no Ray), whose calls can
be made to hang. What a user would see is read from the calls the fake Bot API
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_bot_api import FakeBotAPI  # tests/integration is on sys.path

import bot
from actors.bot import telegram_format as fmt
from actors.bot.jobs import JobState, JobStore
from actors.config import Settings
from actors.models import EventKind, ProgressEvent, RunReport
from actors.runtime.system import System
from tests.unit.factories import report

TOKEN = "123456:TEST-secret-token-do-not-log"
ALICE, BOB = 4242, 4343
SECRET = "webhook-secret_42"
CALL_TIMEOUT_S = 3.0  # long enough for Bob's replies, short enough to keep the test quick
COST_LINE = "Cost $0.42 (caching saved $0.31) · 14x the tokens of one direct answer"
# What Orchestrator.estimate says of a request one agent answers: the bot never asks.
DIRECT = {"complexity": "simple", "direct": True, "microtasks": 1, "cost_usd": 0.01,
          "low_usd": 0.007, "high_usd": 0.015}  # fmt: skip


def answered(question: str) -> str:
    """The last message of the fake orchestrator's answer to ``question``: its cost below."""
    return f"Answer to: {question}\n\n{COST_LINE}"


class _Method:
    """``handle.method.remote(...)``: starts the call at once and returns an awaitable, like Ray."""

    def __init__(self, fake: FakeOrchestrator, name: str) -> None:
        self._fake, self._name = fake, name

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future:
        return asyncio.ensure_future(self._fake.call(self._name, *args, **kwargs))


class FakeOrchestrator:
    """Answers each request as a one-microtask task; ``hang[method] = n`` hangs its next n calls.

    With ``stream`` pieces, a task's events are those pieces of its answer, one per call,
    then ``DONE``. ``estimated`` is what ``estimate`` answers (an exception: raises it).
    """

    def __init__(self, stream: tuple[str, ...] = (), estimated: Any = DIRECT) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.hang: dict[str, int] = {}
        self.stream = stream
        self.estimated = estimated
        self.tasks_by_key: dict[tuple[str | None, str | None], str] = {}
        self._texts: dict[str, str] = {}  # task id -> request text
        self._ids = itertools.count(1)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for method, args, kwargs in self.calls if method == name]

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, args, kwargs))
        if self.hang.get(name, 0) > 0:
            self.hang[name] -= 1
            await asyncio.Event().wait()  # never answers; the bot's timeout cancels it
        return getattr(self, f"_{name}")(*args, **kwargs)

    def _estimate(self, text: str, documents=None) -> dict:
        if isinstance(self.estimated, Exception):
            raise self.estimated
        return dict(self.estimated)

    def _submit(
        self,
        text: str,
        plan=None,
        user=None,
        idempotency_key=None,
        quick=None,
        documents=None,
        cost_limit_usd=None,
        conversation_id=None,
    ) -> str:
        key = (user, idempotency_key)
        if idempotency_key is not None and key in self.tasks_by_key:
            return self.tasks_by_key[key]
        task_id = f"task-{next(self._ids)}"
        self.tasks_by_key[key] = task_id
        self._texts[task_id] = text
        return task_id

    def _status(self, task_id: str) -> dict:
        return {"task_id": task_id, "state": "done"}

    def _events(self, task_id: str, after: int = 0, timeout_s: float = 10.0) -> list:
        if after < len(self.stream):
            piece = self.stream[after]
            kind, attempt = EventKind.ANSWER, 1
        else:
            piece, kind, attempt = "", EventKind.DONE, None
        event = ProgressEvent(
            seq=after, kind=kind, task_id=task_id, attempt=attempt, detail=piece, total=1
        )
        return [event]

    def _wait(self, task_id: str, timeout_s: float | None = None) -> RunReport:
        return report(
            task_id=task_id,
            result=f"Answer to: {self._texts[task_id]}",
            cost_usd=0.42,
            cache_saved_usd=0.31,
            token_multiple=14.0,
        )

    def _cancel(self, task_id: str) -> bool:
        return True

    def _pools(self) -> list:
        return []

    def _tasks(self) -> list:
        return []


class FlakyJobStore(JobStore):
    """A job store whose ``finished`` write fails once for requests containing "poison"."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures = 0

    def finished(
        self, update_id: int, state: JobState, answer: str, footer: str | None = None
    ) -> None:
        if "poison" in answer and not self.failures:
            self.failures += 1
            raise sqlite3.OperationalError("disk I/O error")
        super().finished(update_id, state, answer, footer)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as fake:
        yield fake


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeBotAPI, orchestrator: FakeOrchestrator, store: JobStore, **config: Any
) -> AsyncIterator[Any]:
    settings = Settings().with_overrides(
        telegram_bot_token=TOKEN,
        telegram_api_base_url=fake.root,
        telegram_allowed_user_ids=f"{ALICE},{BOB}",
        home=store.path.parent,
    )
    system = System(orchestrator, pools={}, limiter=None, simulator=None, base_url=None)
    bot_config = bot.BotConfig(
        edit_interval_s=0.2, poll_timeout_s=1, call_timeout_s=CALL_TIMEOUT_S, **config
    )
    app = bot.build_application(settings, system, store, bot_config)
    async with bot.serving(app, bot_config):
        yield app


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.in_home(tmp_path)
    yield store
    store.close()


def _index(fake: FakeBotAPI, chat: int, predicate) -> int:
    """Where in the record of calls the first message to ``chat`` matching ``predicate`` is."""
    return next(
        i
        for i, call in enumerate(fake.calls)
        if call.method == "sendMessage"
        and str(call.params.get("chat_id")) == str(chat)
        and predicate(call.params["text"])
    )


async def test_a_hung_status_call_holds_up_nobody_else(fake, store):
    orchestrator = FakeOrchestrator()
    orchestrator.hang["pools"] = 1  # Alice's /status never gets an answer
    async with running_bot(fake, orchestrator, store):
        fake.enqueue(fake.message_update(ALICE, "/status"))
        await fake.wait_for(lambda: orchestrator.called("pools"))
        fake.enqueue(fake.message_update(BOB, "/status"))
        fake.enqueue(fake.message_update(BOB, "/help"))
        await fake.wait_for(lambda: len(fake.texts_to(BOB)) == 2)
        busy = await fake.wait_for(lambda: fake.texts_to(ALICE), timeout_s=30)
    assert busy == [fmt.BUSY] and "try again" in busy[0]
    bob = fake.texts_to(BOB)
    assert bot.HELP in bob and any(t.startswith("System is up") for t in bob)
    # Bob was answered while Alice's call still hung, not once it had timed out.
    assert _index(fake, BOB, lambda _: True) < _index(fake, ALICE, lambda _: True)
    assert _index(fake, BOB, lambda t: t == bot.HELP) < _index(fake, ALICE, lambda _: True)


async def test_a_request_the_orchestrator_does_not_answer_is_stopped_and_the_next_served(
    fake, store
):
    orchestrator = FakeOrchestrator()
    orchestrator.hang["events"] = 1  # the first task's progress never comes
    async with running_bot(fake, orchestrator, store):
        fake.enqueue(fake.message_update(ALICE, "first question"))
        told = await fake.wait_for(lambda: fake.texts_to(ALICE), timeout_s=30)
        fake.enqueue(fake.message_update(ALICE, "second question"))
        await fake.wait_for(lambda: len(fake.texts_to(ALICE)) == 2)
        await fake.wait_for(lambda: store.undelivered() == [])
    assert told == [fmt.too_slow_text("task-1")]
    assert "took too long" in told[0] and "try again" in told[0]
    assert orchestrator.called("cancel") == [(("task-1",), {})]  # not left running, paid
    assert fake.texts_to(ALICE)[1] == answered("second question")
    assert [j.state for j in (store.get(u) for u in (1000, 1001))] == [
        JobState.FAILED,
        JobState.ANSWERED,
    ]


async def test_a_job_store_failure_ends_one_job_not_the_users_worker(fake, tmp_path):
    store = FlakyJobStore(tmp_path / "bot-jobs.sqlite3")
    orchestrator = FakeOrchestrator()
    try:
        async with running_bot(fake, orchestrator, store):
            fake.enqueue(fake.message_update(ALICE, "poison question"))
            told = await fake.wait_for(lambda: fake.texts_to(ALICE))
            fake.enqueue(fake.message_update(ALICE, "healthy question"))
            await fake.wait_for(lambda: len(fake.texts_to(ALICE)) == 2)
        assert told == [fmt.JOB_KEPT]
        assert fake.texts_to(ALICE)[1] == answered("healthy question")
        kept = store.get(1000)
        assert kept is not None and kept.answer is None and not kept.delivered
        # The kept job is resumed at the next start, on the same task, and answered once.
        async with running_bot(fake, orchestrator, store):
            await fake.wait_for(lambda: store.undelivered() == [])
    finally:
        store.close()
    assert fake.texts_to(ALICE)[2:] == [answered("poison question")]
    assert len(orchestrator.tasks_by_key) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_mode_refuses_updates_without_the_secret(fake, store):
    port = _free_port()
    webhook = {
        "webhook_url": "https://bot.example/telegram",
        "webhook_listen": "127.0.0.1",
        "webhook_port": port,
        "webhook_secret": SECRET,
    }
    url = f"http://127.0.0.1:{port}/telegram"
    async with running_bot(fake, FakeOrchestrator(), store, **webhook):
        (registered,) = fake.calls_of("setWebhook")
        assert registered.params["secret_token"] == SECRET  # Telegram will echo it back
        async with httpx.AsyncClient() as client:
            forged = [
                await client.post(url, json=fake.message_update(ALICE, "/help"), headers=headers)
                for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "guess"})
            ]
            genuine = await client.post(
                url,
                json=fake.message_update(ALICE, "/start"),
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
        await fake.wait_for(lambda: fake.texts_to(ALICE))
    assert [r.status_code for r in forged] == [403, 403] and genuine.status_code == 200
    texts = fake.texts_to(ALICE)
    assert len(texts) == 1 and texts[0].startswith("Hello!")


async def test_a_chat_that_refuses_drafts_is_shown_edits_and_asked_no_more(fake, store):
    fake.refuse_drafts = True
    orchestrator = FakeOrchestrator(stream=("The answer ", "is being ", "written."))
    async with running_bot(fake, orchestrator, store):
        for update_id, question in enumerate(("first question", "second question"), 1000):
            fake.enqueue(fake.message_update(ALICE, question))
            await fake.wait_for(lambda u=update_id: (j := store.get(u)) and j.delivered)
    assert [c.status for c in fake.calls_of("sendMessageDraft")] == [400]  # the first job's
    texts = fake.texts_to(ALICE)
    first_preview, second_preview = texts[0], texts[2]
    assert first_preview.startswith("The answer") and second_preview.startswith("The answer")
    assert texts[1::2] == [answered("first question"), answered("second question")]
    finished = [c.params["text"] for c in fake.calls_of("editMessageText", ALICE)]
    assert finished[-1].startswith("Done (task task-2)")


async def test_a_private_chat_is_shown_the_answer_as_a_draft(fake, store):
    orchestrator = FakeOrchestrator(stream=("The answer ", "is being ", "written."))
    async with running_bot(fake, orchestrator, store):
        fake.enqueue(fake.message_update(ALICE, "a question"))
        await fake.wait_for(lambda: (j := store.get(1000)) and j.delivered)
    drafts = fake.drafts_to(ALICE)
    assert drafts and all(d.params["text"].startswith("The answer") for d in drafts)
    assert fake.texts_to(ALICE) == [answered("a question")]  # no preview message
    assert fake.calls_of("editMessageText") == []
