"""The bot's job store: written before work, redeliveries ignored, survives a reopen."""

from __future__ import annotations

import sqlite3

import pytest

from actors.errors import ConfigurationError
from actors.jobs import SCHEMA_VERSION, JobKind, JobState, JobStore


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
