"""The bot's job store: written before work, redeliveries ignored, survives a reopen."""

from __future__ import annotations

import sqlite3

import pytest

from actors.bot.jobs import SCHEMA_VERSION, JobKind, JobState, JobStore
from actors.errors import ConfigurationError


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def test_a_job_is_stored_once_per_update_id(store):
    job = store.record(1, chat_id=10, user_id=20, text="hello", kind=JobKind.REQUEST)
    assert job is not None and job.state is JobState.RECEIVED and not job.delivered
    assert store.record(1, chat_id=10, user_id=20, text="hello", kind=JobKind.REQUEST) is None
    assert store.count() == 1


def test_lifecycle_and_undelivered(store):
    store.record(1, 10, 20, "first", JobKind.REQUEST)
    store.record(2, 10, 20, "second", JobKind.PARALLEL_TEST)
    store.started(1, "task-1")
    assert store.running(20).task_id == "task-1"
    store.finished(1, JobState.ANSWERED, "the answer")
    store.part_sent(1, 1)
    job = store.get(1)
    assert (job.state, job.answer, job.parts_sent, job.delivered) == (
        JobState.ANSWERED,
        "the answer",
        1,
        False,
    )
    assert [j.update_id for j in store.undelivered()] == [1, 2]
    store.delivered(1)
    assert [j.update_id for j in store.undelivered()] == [2]
    assert store.get(2).kind is JobKind.PARALLEL_TEST
    assert store.running(20) is None


def test_records_survive_a_reopen(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    first.record(5, 1, 2, "keep me", JobKind.REQUEST)
    first.started(5, "t5")
    first.close()
    again = JobStore(path)
    assert again.get(5).task_id == "t5"
    assert again.record(5, 1, 2, "keep me", JobKind.REQUEST) is None
    again.close()


def test_wal_mode_and_schema_version(store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="newer"):
        JobStore(path)


def test_the_submit_key_is_stored_with_the_job(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    job = first.record(1234, chat_id=10, user_id=20, text="hello", kind=JobKind.REQUEST)
    first.close()
    again = JobStore(path)
    # A restarted bot resubmits with the very key the first submit used.
    assert again.get(1234).idempotency_key == job.idempotency_key
    assert job.idempotency_key.startswith("telegram:1234:")
    assert again.get(1234).submitter == "telegram:20"
    again.close()
    # A fresh job store (or another bot) sees update id 1234 again: the orchestrator,
    # which keeps keys for good, must not take the new request for the old one.
    fresh = JobStore(tmp_path / "other.sqlite3")
    reused = fresh.record(1234, chat_id=10, user_id=20, text="new", kind=JobKind.REQUEST)
    assert reused.idempotency_key != job.idempotency_key
    fresh.close()


def test_a_schema_1_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE jobs (
            update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
            kind TEXT NOT NULL, text TEXT NOT NULL, task_id TEXT, state TEXT NOT NULL,
            answer TEXT, progress_message_id INTEGER,
            parts_sent INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL, updated REAL NOT NULL
        );
        INSERT INTO jobs (update_id, chat_id, user_id, kind, text, state, created, updated)
            VALUES (9, 1, 2, 'request', 'old one', 'received', 0, 0);
        """
    )
    db.close()
    store = JobStore(path)
    assert store.get(9).text == "old one" and store.get(9).idempotency_key == "telegram:9"
    assert store.record(10, 1, 2, "new one", JobKind.REQUEST).idempotency_key.startswith(
        "telegram:10:"
    )
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_a_question_waits_for_one_decision_and_survives_a_reopen(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    first.record(1, 10, 20, "a big one", JobKind.REQUEST)
    first.record(2, 10, 20, "another big one", JobKind.REQUEST)
    first.asked(1, cost_limit_usd=2.7)
    first.asked(2, cost_limit_usd=1.5)
    first.close()
    store = JobStore(path)
    job = store.get(1)
    assert (job.state, job.cost_limit_usd) == (JobState.AWAITING_CONFIRMATION, 2.7)
    assert store.confirmed(1) and not store.confirmed(1)  # a second press finds it decided
    assert (store.get(1).state, store.get(1).cost_limit_usd) == (JobState.RECEIVED, 2.7)
    assert store.declined(2, "Cancelled.") and not store.confirmed(2)
    declined = store.get(2)
    assert (declined.state, declined.answer, declined.delivered) == (
        JobState.CANCELLED,
        "Cancelled.",
        True,
    )
    assert [j.update_id for j in store.undelivered()] == [1]
    store.close()


def test_the_footer_is_kept_apart_from_the_answer(store):
    store.record(1, 10, 20, "hello", JobKind.REQUEST)
    store.finished(1, JobState.ANSWERED, "the answer", footer="Cost $0.42")
    assert (store.get(1).answer, store.get(1).footer) == ("the answer", "Cost $0.42")


def test_a_schema_3_store_gains_the_cost_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    db = sqlite3.connect(path)  # back to schema 3: no cost_limit_usd, no footer
    db.executescript(
        """
        ALTER TABLE jobs DROP COLUMN cost_limit_usd;
        ALTER TABLE jobs DROP COLUMN footer;
        UPDATE schema_version SET version = 3;
        INSERT INTO jobs (update_id, chat_id, user_id, kind, text, state, created, updated,
            idempotency_key) VALUES (9, 1, 2, 'request', 'old one', 'received', 0, 0, 'k');
        """
    )
    db.close()
    store = JobStore(path)
    old = store.get(9)
    assert (old.text, old.cost_limit_usd, old.footer) == ("old one", None, None)
    store.asked(9, 1.25)
    assert store.get(9).cost_limit_usd == 1.25
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_a_schema_4_store_gains_threads_and_its_jobs_open_conversations(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    db = sqlite3.connect(path)  # back to schema 4: no threads, no sent messages
    db.executescript(
        """
        ALTER TABLE jobs DROP COLUMN message_id;
        ALTER TABLE jobs DROP COLUMN conversation_id;
        DROP TABLE sent;
        DROP TABLE threads;
        UPDATE schema_version SET version = 4;
        INSERT INTO jobs (update_id, chat_id, user_id, kind, text, state, created, updated,
            idempotency_key) VALUES (9, 1, 2, 'request', 'old one', 'received', 0, 0, 'k');
        """
    )
    db.close()
    store = JobStore(path)
    old = store.get(9)
    assert (old.message_id, old.conversation_id) == (None, None)
    assert store.latest_thread(1, 2) is None
    store.close()


def test_a_reply_finds_the_conversation_of_the_job_its_message_was_sent_for(store):
    store.record(1, 10, 20, "audit the API", JobKind.REQUEST, message_id=100)
    store.started(1, "task-1")  # it opened conversation task-1
    store.sent(10, 101, 1)  # its progress message and its answer
    store.sent(10, 102, 1)
    assert store.conversation_of(10, 102, 20) == "task-1"
    store.record(2, 10, 20, "shorter", JobKind.REQUEST, message_id=103, conversation_id="task-1")
    store.sent(10, 104, 2)
    assert store.conversation_of(10, 104, 20) == "task-1"  # the follow-up's answer too
    assert store.conversation_of(10, 102, 21) is None  # another user's reply: not theirs
    assert store.conversation_of(10, 999, 20) is None  # not one of the bot's messages
    store.record(3, 10, 20, "/parallel_test", JobKind.PARALLEL_TEST)
    store.started(3, "task-3")
    store.sent(10, 105, 3)
    assert store.conversation_of(10, 105, 20) is None  # the canned test is no conversation


def test_the_latest_thread_is_per_chat_and_user_and_new_clears_it(store):
    store.follow(10, 20, "task-1")
    store.follow(11, 20, "task-9")
    assert (store.latest_thread(10, 20), store.latest_thread(11, 20)) == ("task-1", "task-9")
    assert store.latest_thread(10, 21) is None
    store.follow(10, 20, None)  # /new
    assert store.latest_thread(10, 20) is None and store.latest_thread(11, 20) == "task-9"


def test_forget_deletes_the_users_delivered_jobs_in_the_chat_and_keeps_a_running_one(store):
    store.record(1, 10, 20, "secret", JobKind.REQUEST)
    store.started(1, "task-1")
    store.sent(10, 101, 1)
    store.delivered(1)
    store.record(2, 10, 20, "still running", JobKind.REQUEST)
    store.record(3, 10, 21, "someone else's", JobKind.REQUEST)
    store.delivered(3)
    store.follow(10, 20, "task-1")
    assert store.forget(10, 20) == 1
    assert store.get(1) is None and store.get(2) is not None and store.get(3) is not None
    assert store.conversation_of(10, 101, 20) is None and store.latest_thread(10, 20) is None
