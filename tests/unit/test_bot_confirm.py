"""The bot asks before an expensive request, and an answer shows what it cost.

The real ``Application`` runs against the fake Bot API on loopback with the fake
orchestrator of ``test_bot_faults`` (no Ray), whose estimate is set per test. The
question is kept in the job store, so a press after a restart still decides it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_bot_api import FakeBotAPI  # tests/integration is on sys.path

from actors.bot import telegram_format as fmt
from actors.bot.jobs import JobState, JobStore
from actors.bot.runner import BotConfig
from actors.errors import ConfigurationError
from tests.unit.factories import report
from tests.unit.test_bot_faults import (
    ALICE,
    BOB,
    COST_LINE,
    TOKEN,
    FakeOrchestrator,
    answered,
    running_bot,
)

EXPENSIVE = {"complexity": "complex", "direct": False, "microtasks": 40, "cost_usd": 1.8,
             "low_usd": 1.2, "high_usd": 2.7}  # fmt: skip
QUESTION = (
    "This looks like a complex request: about 40 microtasks, ~$1.80 (between $1.20 and "
    "$2.70). Run it?"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.in_home(tmp_path)
    yield store
    store.close()


async def _asked(fake: FakeBotAPI, store: JobStore, text: str = "audit the whole shop") -> int:
    """Send ``text`` as Alice; the id of the question the bot asks (and stores) about it."""
    fake.enqueue(fake.message_update(ALICE, text))
    (question,) = await fake.wait_for(lambda: fake.with_buttons(ALICE))
    await fake.wait_for(lambda: store.get(1000).state is JobState.AWAITING_CONFIRMATION)
    return int(question)


def _answers(fake: FakeBotAPI) -> list[dict]:
    return [c.params for c in fake.calls_of("answerCallbackQuery")]


async def test_a_press_after_a_restart_runs_the_request_under_the_estimates_top(fake, store):
    orchestrator = FakeOrchestrator(estimated=EXPENSIVE)
    async with running_bot(fake, orchestrator, store):
        question = await _asked(fake, store)
        assert fake.texts_to(ALICE) == [QUESTION]
        assert fake.buttons(ALICE, question) == ["Run it", "Cancel"]
        assert store.get(1000).state is JobState.AWAITING_CONFIRMATION
    assert orchestrator.called("submit") == []
    # The bot restarted: it does not ask again, and Alice's press still counts.
    async with running_bot(fake, orchestrator, store):
        fake.enqueue(fake.press(BOB, ALICE, question, "Run it"))  # not Bob's to decide
        await fake.wait_for(lambda: _answers(fake))
        assert store.get(1000).state is JobState.AWAITING_CONFIRMATION
        fake.enqueue(fake.press(ALICE, ALICE, question, "Run it"))
        await fake.wait_for(lambda: (j := store.get(1000)) and j.delivered)
    refusal, accepted = _answers(fake)
    assert refusal["show_alert"] == "true" and "Only the person" in refusal["text"]
    assert "text" not in accepted
    assert len(orchestrator.called("estimate")) == 1
    ((_, kwargs),) = orchestrator.called("submit")
    assert kwargs["cost_limit_usd"] == 2.7
    edit = fake.calls_of("editMessageText", ALICE)[0].params
    assert (
        int(edit["message_id"]) == question
        and edit["text"] == "Started; it stops at $2.70 at the most."
    )
    assert fake.with_buttons(ALICE) == []  # the edit took the buttons away
    assert fake.texts_to(ALICE)[1:] == [answered("audit the whole shop")]


async def test_cancel_spends_nothing_and_a_second_press_is_told_so(fake, store):
    orchestrator = FakeOrchestrator(estimated=EXPENSIVE)
    async with running_bot(fake, orchestrator, store):
        question = await _asked(fake, store)
        # Pressed twice before the first press took the buttons away.
        presses = [fake.press(ALICE, ALICE, question, label) for label in ("Cancel", "Run it")]
        for press in presses:
            fake.enqueue(press)
        await fake.wait_for(lambda: len(_answers(fake)) == 2)
    (edit,) = fake.calls_of("editMessageText", ALICE)
    assert edit.params["text"] == fmt.CONFIRM_CANCELLED == "Cancelled, nothing was spent on it."
    assert [a.get("text") for a in _answers(fake)].count("That was decided already.") == 1
    assert orchestrator.called("submit") == [] and store.undelivered() == []
    assert store.get(1000).state is JobState.CANCELLED
    assert fake.texts_to(ALICE) == [QUESTION]


@pytest.mark.parametrize(
    "estimate",
    [
        EXPENSIVE | {"direct": True},  # one agent answers it: nothing to save by asking
        EXPENSIVE | {"cost_usd": 0.9},  # under the threshold
        RuntimeError("the verdict call failed"),  # no estimate: run it anyway
    ],
    ids=["direct", "cheap", "failed"],
)
async def test_a_request_runs_without_asking_when_it_need_not_or_cannot(fake, store, estimate):
    orchestrator = FakeOrchestrator(estimated=estimate)
    async with running_bot(fake, orchestrator, store):
        fake.enqueue(fake.message_update(ALICE, "a question"))
        await fake.wait_for(lambda: (j := store.get(1000)) and j.delivered)
    assert fake.texts_to(ALICE) == [answered("a question")]
    ((_, kwargs),) = orchestrator.called("submit")
    assert kwargs["cost_limit_usd"] is None


async def test_a_threshold_of_zero_never_asks(fake, store):
    orchestrator = FakeOrchestrator(estimated=EXPENSIVE)
    async with running_bot(fake, orchestrator, store, confirm_cost_usd=0):
        fake.enqueue(fake.message_update(ALICE, "a question"))
        await fake.wait_for(lambda: (j := store.get(1000)) and j.delivered)
    assert orchestrator.called("estimate") == [] and fake.with_buttons(ALICE) == []


def test_the_threshold_comes_from_the_environment():
    assert BotConfig.from_env({}).confirm_cost_usd == 1.0
    variable = "PARALLEL_AGENTS_TELEGRAM_CONFIRM_COST_USD"
    assert BotConfig.from_env({variable: "0.25"}).confirm_cost_usd == 0.25
    assert BotConfig.from_env({variable: "0"}).confirm_cost_usd == 0
    with pytest.raises(ConfigurationError, match="CONFIRM_COST_USD"):
        BotConfig.from_env({variable: "-1"})


def test_the_cost_line_names_what_it_knows():
    full = report(cost_usd=0.42, cache_saved_usd=0.31, token_multiple=14.0)
    assert fmt.cost_line(full) == COST_LINE
    assert fmt.cost_line(report(cost_usd=0.0042)) == "Cost $0.0042"  # never "$0.00"
    assert fmt.cost_line(report(cost_usd=1.5, token_multiple=2.5)) == (
        "Cost $1.50 · 2.5x the tokens of one direct answer"
    )


def test_the_footer_ends_the_last_message_or_follows_it():
    short = fmt.with_footer(fmt.message_parts("**Done.**"), COST_LINE)
    assert [p.text for p in short] == [f"Done.\n\n{COST_LINE}"]
    assert [(e.type, e.offset, e.length) for e in short[0].entities] == [("bold", 0, 5)]
    full = fmt.message_parts("a" * fmt.MESSAGE_LIMIT)
    assert [p.text for p in fmt.with_footer(full, COST_LINE)] == [full[0].text, COST_LINE]
