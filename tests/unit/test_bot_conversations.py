"""Which conversation a Telegram message continues, and what the bot does when it is gone.

The real python-telegram-bot ``Application`` against the fake Bot API, with a fake
orchestrator (no Ray) that owns conversations the way the real one does: a task opened
with no conversation opens one named after itself, a follow-up on a conversation its user
does not own is refused with ``UnknownConversationError``, ``forget`` deletes a user's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_bot_api import Call, FakeBotAPI  # tests/integration is on sys.path
from test_bot_faults import ALICE, BOB, TOKEN, FakeOrchestrator, answered, running_bot

from actors.bot import telegram_format as fmt
from actors.bot.jobs import JobStore
from actors.errors import UnknownConversationError

GROUP = -100_4242


class ConversingOrchestrator(FakeOrchestrator):
    """``FakeOrchestrator`` that keeps who owns each conversation its tasks opened."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[str, str | None] = {}  # conversation id -> its user

    def _submit(self, text: str, user=None, conversation_id=None, **options) -> str:
        if conversation_id is not None and self.owners.get(conversation_id, "") != user:
            raise UnknownConversationError(conversation_id)
        task_id = super()._submit(text, user=user, conversation_id=conversation_id, **options)
        self.owners.setdefault(conversation_id or task_id, user)
        return task_id

    def _forget(self, user: str | None) -> int:
        theirs = [c for c, owner in self.owners.items() if owner == user]
        for conversation in theirs:
            del self.owners[conversation]
        return len(theirs)

    def conversations_submitted(self) -> list[str | None]:
        """The ``conversation_id`` of each submit call, in order."""
        return [kwargs.get("conversation_id") for _, kwargs in self.called("submit")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.in_home(tmp_path)
    yield store
    store.close()


async def _answer_to(fake: FakeBotAPI, store: JobStore, update: dict) -> Call:
    """Send ``update`` and wait for its job's delivery; the answer's sendMessage call."""
    fake.enqueue(update)
    await fake.wait_for(lambda: (job := store.get(update["update_id"])) and job.delivered)
    asked = update["message"]["message_id"]
    (answer,) = [
        call
        for call in fake.calls_of("sendMessage", update["message"]["chat"]["id"])
        if call.status == 200
        and (call.params.get("reply_parameters") or {}).get("message_id") == asked
    ]
    return answer


async def _say(fake: FakeBotAPI, user: int, text: str) -> str:
    """Send the command ``text``; the bot's reply."""
    before = len(fake.texts_to(user))
    fake.enqueue(fake.message_update(user, text))
    await fake.wait_for(lambda: len(fake.texts_to(user)) > before)
    return fake.texts_to(user)[before]


async def test_a_plain_message_follows_the_latest_thread_a_reply_its_answer_and_new_neither(
    fake, store
):
    orchestrator = ConversingOrchestrator()
    async with running_bot(fake, orchestrator, store):
        first = await _answer_to(fake, store, fake.message_update(ALICE, "audit the API"))
        assert first.params["text"] == answered("audit the API")
        await _answer_to(fake, store, fake.message_update(ALICE, "what about mobile?"))
        assert await _say(fake, ALICE, "/new") == fmt.NEW_CONVERSATION
        await _answer_to(fake, store, fake.message_update(ALICE, "something else"))
        await _answer_to(fake, store, fake.message_update(ALICE, "and more of it"))
        # A reply to the first answer goes back to its conversation, not the latest one.
        back = fake.message_update(ALICE, "make it shorter", reply_to=first.message_id)
        await _answer_to(fake, store, back)
    assert orchestrator.conversations_submitted() == [None, "task-1", None, "task-3", "task-1"]
    assert store.latest_thread(ALICE, ALICE) == "task-1"  # the reply's conversation is latest


async def test_a_reply_to_someone_elses_answer_opens_a_conversation_of_ones_own(fake, store):
    orchestrator = ConversingOrchestrator()
    async with running_bot(fake, orchestrator, store):
        alices = await _answer_to(fake, store, fake.message_update(ALICE, "my secret", GROUP))
        update = fake.message_update(BOB, "tell me more", GROUP, reply_to=alices.message_id)
        await _answer_to(fake, store, update)
    assert orchestrator.conversations_submitted() == [None, None]
    assert store.latest_thread(GROUP, BOB) == "task-2"
    assert store.latest_thread(GROUP, ALICE) == "task-1"


async def test_a_conversation_gone_is_said_once_and_the_request_opens_a_new_one(fake, store):
    orchestrator = ConversingOrchestrator()
    store.follow(ALICE, ALICE, "expired-7")  # the orchestrator no longer has it
    async with running_bot(fake, orchestrator, store):
        update = fake.message_update(ALICE, "and the mobile app?")
        answer = await _answer_to(fake, store, update)
    assert orchestrator.conversations_submitted() == ["expired-7", None]
    assert fake.texts_to(ALICE) == [fmt.CONVERSATION_GONE, answered("and the mobile app?")]
    assert answer.params["text"] == answered("and the mobile app?")
    job = store.get(update["update_id"])
    assert job is not None and job.conversation_id is None and job.task_id == "task-1"
    assert store.latest_thread(ALICE, ALICE) == "task-1"


async def test_forget_deletes_the_users_conversations_and_rows_and_says_how_many(fake, store):
    orchestrator = ConversingOrchestrator()
    async with running_bot(fake, orchestrator, store):
        first = fake.message_update(ALICE, "audit the API")
        answer = await _answer_to(fake, store, first)
        assert await _say(fake, ALICE, "/new") == fmt.NEW_CONVERSATION
        await _answer_to(fake, store, fake.message_update(ALICE, "something else"))
        await _answer_to(fake, store, fake.message_update(BOB, "Bob's own"))
        said = await _say(fake, ALICE, "/forget")
        after = fake.message_update(ALICE, "a fresh start")
        await _answer_to(fake, store, after)
    assert said.startswith("Forgotten: 2 conversation(s)")
    assert orchestrator.called("forget") == [((f"telegram:{ALICE}",), {})]
    assert orchestrator.owners == {"task-3": f"telegram:{BOB}", "task-4": f"telegram:{ALICE}"}
    assert store.get(first["update_id"]) is None
    assert store.conversation_of(ALICE, answer.message_id, ALICE) is None
    assert orchestrator.conversations_submitted()[-1] is None  # nothing left to follow
    assert store.latest_thread(BOB, BOB) == "task-3"
