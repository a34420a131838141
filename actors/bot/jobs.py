"""The bot's durable job records: one row per Telegram update, written before any work starts.

Telegram confirms an update as soon as the bot asks for the next batch, before
the handler has finished, so a crash mid-task would lose the request. Each
request is therefore stored here first, keyed by its ``update_id``:

- a redelivered update finds its row already there and is ignored;
- after a restart, rows not yet ``delivered`` are resumed (re-attached to their
  task if the orchestrator still has it, else resubmitted);
- the answer is stored before it is sent, and every sent part is counted, so
  an answer reaches the chat once even if the bot dies half-way through it;
- the key the job is submitted with is stored with it, so a bot that died
  between a submit and recording its task id submits again with the same key
  and the orchestrator hands back the first task. The key is the update id
  plus a random part, so it names this job alone: update ids start again for
  a new job store or a new bot token, while the orchestrator keeps keys for good.

A request's documents (a Telegram file, read when the message came) are stored with
it, so a restarted bot submits them again without downloading anything.

A request whose estimate is over the bot's threshold waits ``awaiting_confirmation``
with the cost limit it would run under, until its user presses "Run it" (back to
``received``, limit kept: it is not asked again) or "Cancel"; such a job is not resumed
at start-up, it waits for the press, which works after a restart too.

Conversations: each request job names the conversation it continues (decided when it is
recorded, so a restarted bot submits it with the same one: a reply to one of the bot's
messages continues that message's job's conversation, a plain message the chat's latest
thread of its user, None a new one, named after its task). Every message the bot sends for a
job is kept (``sent``), and each chat's latest thread per user (``threads``): ``/new``
clears it, ``/forget`` deletes the user's rows of the chat.

SQLite in WAL mode under ``settings.home``; the schema carries a version and a
newer one than this code knows is refused rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from actors.engine.documents import Document
from actors.errors import ConfigurationError
from actors.private_files import private_file

SCHEMA_VERSION = 5  # 2 idempotency_key, 3 documents, 4 cost_limit_usd and footer, 5 threads
DEFAULT_FILENAME = "bot-jobs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    update_id           INTEGER PRIMARY KEY,
    chat_id             INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    kind                TEXT    NOT NULL,
    text                TEXT    NOT NULL,
    task_id             TEXT,
    state               TEXT    NOT NULL,
    answer              TEXT,
    progress_message_id INTEGER,
    parts_sent          INTEGER NOT NULL DEFAULT 0,
    delivered           INTEGER NOT NULL DEFAULT 0,
    created             REAL    NOT NULL,
    updated             REAL    NOT NULL,
    idempotency_key     TEXT,
    documents           TEXT,
    cost_limit_usd      REAL,
    footer              TEXT,
    message_id          INTEGER,
    conversation_id     TEXT
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (delivered, user_id);
CREATE TABLE IF NOT EXISTS sent (
    chat_id     INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    update_id   INTEGER NOT NULL,
    PRIMARY KEY (chat_id, message_id)
);
CREATE TABLE IF NOT EXISTS threads (
    chat_id          INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    conversation_id  TEXT,
    PRIMARY KEY (chat_id, user_id)
);
"""
_DOCUMENTS = TypeAdapter(list[Document])


class JobState(StrEnum):
    """Where a job is; ``delivered`` is tracked apart (an answered job may be half-sent)."""

    RECEIVED = "received"
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # asked whether to run an expensive one
    RUNNING = "running"
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(StrEnum):
    REQUEST = "request"
    PARALLEL_TEST = "parallel_test"


class Job(BaseModel):
    """One stored request and how far it got."""

    update_id: int
    chat_id: int
    user_id: int
    kind: JobKind
    text: str
    task_id: str | None = None
    state: JobState = JobState.RECEIVED
    answer: str | None = None
    progress_message_id: int | None = None
    parts_sent: int = 0
    delivered: bool = False
    created: float
    updated: float
    idempotency_key: str  # what the orchestrator dedupes this job's submits by
    documents: list[Document] = []  # sent with the request, attached after its text
    cost_limit_usd: float | None = None  # set when its user was asked: the run stops there
    footer: str | None = None  # a plain line after the answer (its cost), not Markdown
    message_id: int | None = None  # the request's message: the answer replies to it
    conversation_id: str | None = None  # the conversation it continues (None: a new one)

    @property
    def submitter(self) -> str:
        """Who the orchestrator counts and scopes the task to."""
        return f"telegram:{self.user_id}"


class JobStore:
    """Job records in one SQLite file; every write is committed before it returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)  # it holds every request's text
        self.path = path
        # One connection used from the bot's event loop thread only; writes take
        # milliseconds, so they run inline rather than in a thread pool.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    @classmethod
    def in_home(cls, home: Path) -> JobStore:
        """The store at its usual place under ``PARALLEL_AGENTS_HOME``."""
        return cls(Path(home).expanduser() / DEFAULT_FILENAME)

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = row[0]
            if found is not None and found > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the job store {self.path} has schema version {found}, newer than this "
                    f"code's {SCHEMA_VERSION}; upgrade parallel-agents or point "
                    "PARALLEL_AGENTS_HOME at another folder"
                )
            if found is not None and found < 5:
                have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                for column, kind in (("message_id", "INTEGER"), ("conversation_id", "TEXT")):
                    if column not in have:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            self._db.executescript(_SCHEMA)
            if found is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif found < SCHEMA_VERSION:
                if found < 2:
                    self._db.execute("ALTER TABLE jobs ADD COLUMN idempotency_key TEXT")
                if found < 3:
                    self._db.execute("ALTER TABLE jobs ADD COLUMN documents TEXT")
                if found < 4:
                    self._db.execute("ALTER TABLE jobs ADD COLUMN cost_limit_usd REAL")
                    self._db.execute("ALTER TABLE jobs ADD COLUMN footer TEXT")
                self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    # --- writes -------------------------------------------------------------------

    def record(
        self,
        update_id: int,
        chat_id: int,
        user_id: int,
        text: str,
        kind: JobKind,
        documents: Sequence[Document] = (),
        message_id: int | None = None,
        conversation_id: str | None = None,
    ) -> Job | None:
        """Store a new job; None when this update id was seen before (a redelivery).
        ``message_id``: the request's message; ``conversation_id``: the one it continues."""
        now = time.time()
        key = f"telegram:{update_id}:{uuid.uuid4().hex[:12]}"
        stored = json.dumps([d.model_dump() for d in documents]) if documents else None
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO jobs (update_id, chat_id, user_id, kind, text, state, "
            "created, updated, idempotency_key, documents, message_id, conversation_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                update_id,
                chat_id,
                user_id,
                kind.value,
                text,
                JobState.RECEIVED.value,
                now,
                now,
                key,
                stored,
                message_id,
                conversation_id,
            ),
        )
        return self.get(update_id) if cursor.rowcount == 1 else None

    # --- conversations -------------------------------------------------------------

    def sent(self, chat_id: int, message_id: int, update_id: int) -> None:
        """The bot sent ``message_id`` for job ``update_id``: a reply to it continues that
        job's conversation."""
        self._db.execute(
            "INSERT OR REPLACE INTO sent VALUES (?, ?, ?)", (chat_id, message_id, update_id)
        )

    def conversation_of(self, chat_id: int, message_id: int, user_id: int) -> str | None:
        """The conversation of the job ``user_id``'s message in ``chat_id`` was sent for
        (None: not one of the bot's messages for that user's requests)."""
        row = self._db.execute(
            "SELECT COALESCE(j.conversation_id, j.task_id) FROM sent s JOIN jobs j USING"
            " (update_id) WHERE s.chat_id = ? AND s.message_id = ? AND j.user_id = ?"
            " AND j.kind = ?",
            (chat_id, message_id, user_id, JobKind.REQUEST.value),
        ).fetchone()
        return None if row is None else row[0]

    def latest_thread(self, chat_id: int, user_id: int) -> str | None:
        """The conversation ``user_id``'s next plain message in ``chat_id`` continues."""
        row = self._db.execute(
            "SELECT conversation_id FROM threads WHERE chat_id = ? AND user_id = ?",
            (chat_id, user_id),
        ).fetchone()
        return None if row is None else row[0]

    def follow(self, chat_id: int, user_id: int, conversation_id: str | None) -> None:
        """Make ``conversation_id`` the user's latest thread in the chat (None: the next
        message starts a new conversation, ``/new``)."""
        self._db.execute(
            "INSERT OR REPLACE INTO threads VALUES (?, ?, ?)", (chat_id, user_id, conversation_id)
        )

    def conversation_gone(self, update_id: int) -> None:
        """The job's conversation no longer exists (forgotten or expired): it opens one."""
        self._update(update_id, conversation_id=None)

    def forget(self, chat_id: int, user_id: int) -> int:
        """Delete ``user_id``'s delivered jobs in ``chat_id``, the messages sent for them and
        the user's thread there (a job still running keeps its row); returns the jobs."""
        with self._db:
            done = "SELECT update_id FROM jobs WHERE chat_id = ? AND user_id = ? AND delivered = 1"
            self._db.execute(f"DELETE FROM sent WHERE update_id IN ({done})", (chat_id, user_id))
            deleted = self._db.execute(
                "DELETE FROM jobs WHERE chat_id = ? AND user_id = ? AND delivered = 1",
                (chat_id, user_id),
            ).rowcount
            self._db.execute(
                "DELETE FROM threads WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
            )
        return int(deleted)

    def started(self, update_id: int, task_id: str) -> None:
        """The orchestrator accepted the job as ``task_id``."""
        self._update(update_id, task_id=task_id, state=JobState.RUNNING.value)

    def asked(self, update_id: int, cost_limit_usd: float) -> None:
        """Its user was asked whether to run it, under ``cost_limit_usd`` if so."""
        self._update(
            update_id, state=JobState.AWAITING_CONFIRMATION.value, cost_limit_usd=cost_limit_usd
        )

    def confirmed(self, update_id: int) -> bool:
        """The user pressed "Run it": the job is to run; False when it was not waiting."""
        return self._decide(update_id, state=JobState.RECEIVED.value)

    def declined(self, update_id: int, answer: str) -> bool:
        """The user pressed "Cancel": the job ends with ``answer``, already shown in the
        question's place; False when it was not waiting."""
        return self._decide(update_id, state=JobState.CANCELLED.value, answer=answer, delivered=1)

    def _decide(self, update_id: int, **values: object) -> bool:
        # One conditional write: of two presses, only the first finds the job waiting.
        columns = ", ".join(f"{name} = ?" for name in values)
        cursor = self._db.execute(
            f"UPDATE jobs SET {columns}, updated = ? WHERE update_id = ? AND state = ?",
            (*values.values(), time.time(), update_id, JobState.AWAITING_CONFIRMATION.value),
        )
        return cursor.rowcount == 1

    def progress_message(self, update_id: int, message_id: int) -> None:
        self._update(update_id, progress_message_id=message_id)

    def finished(
        self, update_id: int, state: JobState, answer: str, footer: str | None = None
    ) -> None:
        """Keep the text to deliver (answer, report or error message) before sending it,
        with the plain line that ends its last message."""
        self._update(update_id, state=state.value, answer=answer, footer=footer)

    def part_sent(self, update_id: int, parts_sent: int) -> None:
        self._update(update_id, parts_sent=parts_sent)

    def delivered(self, update_id: int) -> None:
        self._update(update_id, delivered=1)

    def _update(self, update_id: int, **values: object) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self._db.execute(
            f"UPDATE jobs SET {columns}, updated = ? WHERE update_id = ?",
            (*values.values(), time.time(), update_id),
        )

    # --- reads --------------------------------------------------------------------

    def get(self, update_id: int) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE update_id = ?", (update_id,)).fetchone()
        return _job(row) if row else None

    def undelivered(self) -> list[Job]:
        """Jobs whose answer has not fully reached the chat, oldest first."""
        rows = self._db.execute("SELECT * FROM jobs WHERE delivered = 0 ORDER BY update_id")
        return [_job(row) for row in rows]

    def running(self, user_id: int) -> Job | None:
        """The user's job currently running on the orchestrator, if any."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE user_id = ? AND state = ? AND delivered = 0 "
            "ORDER BY update_id LIMIT 1",
            (user_id, JobState.RUNNING.value),
        ).fetchone()
        return _job(row) if row else None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["delivered"] = bool(data["delivered"])
    # Jobs from schema 1 were never submitted with a key: any stable one will do.
    data["idempotency_key"] = data["idempotency_key"] or f"telegram:{data['update_id']}"
    data["documents"] = _DOCUMENTS.validate_json(data["documents"]) if data["documents"] else []
    return Job.model_validate(data)
