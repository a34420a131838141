"""The durable store: tasks, plans and microtask results, in SQLite (WAL) on the head node.

What must survive a restart lives here, written before it is acknowledged: an
accepted task (before any work), its plan (before dispatch), each microtask
result (before the task counts it done) and the final report. A restarted
orchestrator reloads every unfinished task and runs only what is missing.
Finished tasks stay queryable (``GET /tasks``) and long-term totals (``/status``)
are sums over them. The schema is versioned: an older store is migrated step by
step, a newer one is refused with a clear message rather than silently misread.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actors.conversation import History, Turn
from actors.errors import ConfigurationError, UnknownConversationError
from actors.models import Complexity, Microtask, MicrotaskResult, RunReport, TaskState
from actors.private_files import private_file

SCHEMA_VERSION = 5

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tasks (
        task_id       TEXT PRIMARY KEY,
        created_at    REAL NOT NULL,
        finished_at   REAL,
        state         TEXT NOT NULL,
        complexity    TEXT,
        request       TEXT NOT NULL,
        microtasks    INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        retries       INTEGER NOT NULL DEFAULT 0,
        backups       INTEGER NOT NULL DEFAULT 0,
        wall_s        REAL,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd      REAL NOT NULL DEFAULT 0,
        report        TEXT
    );
    CREATE INDEX tasks_finished ON tasks (finished_at);
    CREATE TABLE plans (
        task_id     TEXT PRIMARY KEY REFERENCES tasks (task_id),
        complexity  TEXT NOT NULL,
        source      TEXT NOT NULL,
        microtasks  TEXT NOT NULL
    );
    CREATE TABLE results (
        task_id       TEXT NOT NULL REFERENCES tasks (task_id),
        microtask_id  TEXT NOT NULL,
        result        TEXT NOT NULL,
        PRIMARY KEY (task_id, microtask_id)
    );
    """,
    # One row per orchestrator start: its number is carried by event cursors.
    2: """
    CREATE TABLE incarnations (
        incarnation  INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at   REAL NOT NULL
    );
    """,
    # Who submitted each task (reads and cancels are scoped to them), and the idempotency
    # key of each submission so a repeated submit finds the first task, across restarts.
    3: """
    ALTER TABLE tasks ADD COLUMN user TEXT;
    CREATE INDEX tasks_user ON tasks (user, created_at);
    CREATE TABLE submissions (
        user     TEXT NOT NULL,
        key      TEXT NOT NULL,
        task_id  TEXT NOT NULL REFERENCES tasks (task_id),
        PRIMARY KEY (user, key)
    );
    """,
    # The caller's cost limit of a task, so a resumed task keeps it (NULL: the task budget).
    4: """
    ALTER TABLE tasks ADD COLUMN cost_limit_usd REAL;
    """,
    # Conversations (actors.conversation): each task answers in one; a follow-up's prompts
    # carry the earlier turns, recalled once into the task's context (kept for a resume).
    # A turn is appended once per task (task_id is unique), when it finishes done.
    5: """
    ALTER TABLE tasks ADD COLUMN conversation_id TEXT;
    ALTER TABLE tasks ADD COLUMN context TEXT;
    CREATE TABLE conversations (
        conversation_id  TEXT PRIMARY KEY,
        user             TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        summary          TEXT NOT NULL DEFAULT '',
        summary_through  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_user ON conversations (user, updated_at);
    CREATE TABLE turns (
        turn             INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id  TEXT NOT NULL REFERENCES conversations (conversation_id),
        task_id          TEXT NOT NULL UNIQUE,
        request          TEXT NOT NULL,
        answer           TEXT NOT NULL,
        created_at       REAL NOT NULL
    );
    CREATE INDEX turns_conversation ON turns (conversation_id, turn);
    """,
}
_LISTED_CHARS = 200  # of a request, in listings (history); the store keeps all of it
MAX_TREND_DAYS = 365  # the longest window of daily trends (GET /history/daily)


@dataclass
class Unfinished:
    """An accepted task that has no final report yet: what a restart must resume."""

    task_id: str
    request: str  # the whole request, as accepted
    created_at: float
    complexity: Complexity | None  # None: planning had not finished
    plan_source: str
    microtasks: list[Microtask]
    results: dict[str, MicrotaskResult]
    user: str | None = None  # who submitted it
    cost_limit_usd: float | None = None  # the caller's limit (None: the task budget)
    conversation_id: str | None = None  # the conversation it answers in
    context: str | None = None  # the earlier turns it was given (None: not recalled yet)


class Store:
    """One SQLite file; safe to use from one process's threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_file(self.path)  # every request's text: this user's only (SQLite's -wal too)
        self._lock = threading.Lock()  # sqlite3 connections are not thread-safe
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL keeps every commit through a crash of any process (the
        # faults this system promises to survive) and saves an fsync per microtask;
        # only a power loss of the head node could drop the last few commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row["version"] if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the store at {self.path} has schema version {version}, newer than this "
                    f"program's {SCHEMA_VERSION}; upgrade parallel-agents or point "
                    "PARALLEL_AGENTS_HOME elsewhere"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                    db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def task_started(
        self,
        task_id: str,
        created_at: float,
        request: str,
        user: str | None = None,
        idempotency_key: str | None = None,
        cost_limit_usd: float | None = None,
        conversation_id: str | None = None,
    ) -> str:
        """Record an accepted task (before any work is done for it); returns its id.

        With an ``idempotency_key`` that ``user`` already used, nothing is recorded and
        the id of the first task with that key is returned instead. ``conversation_id``:
        the task follows up in that conversation of ``user`` (``UnknownConversationError``
        if ``user`` has none by that id); None: it opens one, named by its own id.
        """
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT task_id FROM submissions WHERE user = ? AND key = ?",
                    (user or "", idempotency_key),
                ).fetchone()
                if row is not None:
                    return str(row["task_id"])
            if conversation_id is None:
                conversation_id = task_id
                db.execute(
                    "INSERT OR IGNORE INTO conversations (conversation_id, user, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?)",
                    (task_id, user, created_at, created_at),
                )
            elif not self._owned(db, conversation_id, user):
                raise UnknownConversationError(f"no conversation with id {conversation_id!r}")
            else:
                db.execute(
                    "UPDATE conversations SET updated_at = ? WHERE conversation_id = ?",
                    (created_at, conversation_id),
                )
            db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, created_at, state, request, user,"
                " cost_limit_usd, conversation_id) VALUES (?, ?, 'planning', ?, ?, ?, ?)",
                (task_id, created_at, request, user, cost_limit_usd, conversation_id),
            )
            if idempotency_key is not None:
                db.execute(
                    "INSERT INTO submissions VALUES (?, ?, ?)",
                    (user or "", idempotency_key, task_id),
                )
        return task_id

    @staticmethod
    def _owned(db: sqlite3.Connection, conversation_id: str, user: str | None) -> bool:
        row = db.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = ? AND COALESCE(user, '') = ?",
            (conversation_id, user or ""),
        ).fetchone()
        return row is not None

    def task_for_key(self, user: str | None, idempotency_key: str) -> str | None:
        """The task first submitted by ``user`` with ``idempotency_key``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT task_id FROM submissions WHERE user = ? AND key = ?",
                (user or "", idempotency_key),
            ).fetchone()
        return None if row is None else str(row["task_id"])

    def user_of(self, task_id: str) -> str | None:
        """Who submitted ``task_id`` (None: nobody named, or no such task)."""
        with self._lock:
            row = self._db.execute(
                "SELECT user FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else row["user"]

    def task_finished(
        self, report: RunReport, request: str, created_at: float, finished_at: float
    ) -> None:
        """Record a finished task with its whole report (who submitted it is kept)."""
        row = (
            report.task_id,
            created_at,
            finished_at,
            report.state.value,
            report.complexity.value,
            request,
            report.microtasks,
            report.failed,
            report.retries,
            report.backups,
            report.wall_s,
            report.input_tokens,
            report.output_tokens,
            report.cost_usd,
            report.model_dump_json(),
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO tasks (task_id, created_at, finished_at, state, "
                "complexity, request, microtasks, failed, retries, backups, wall_s, "
                "input_tokens, output_tokens, cost_usd, report) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET finished_at = excluded.finished_at, "
                "state = excluded.state, complexity = excluded.complexity, "
                "request = excluded.request, microtasks = excluded.microtasks, "
                "failed = excluded.failed, retries = excluded.retries, "
                "backups = excluded.backups, wall_s = excluded.wall_s, "
                "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
                "cost_usd = excluded.cost_usd, report = excluded.report",
                row,
            )
            if report.state is TaskState.DONE and report.result.strip():
                # Once per task (task_id is unique), and only into a conversation that is
                # still there: one forgotten while its follow-up ran stays forgotten.
                db.execute(
                    "INSERT OR IGNORE INTO turns (conversation_id, task_id, request, answer,"
                    " created_at) SELECT t.conversation_id, t.task_id, ?, ?, ? FROM tasks t"
                    " JOIN conversations c USING (conversation_id) WHERE t.task_id = ?",
                    (request, report.result, finished_at, report.task_id),
                )
                db.execute(
                    "UPDATE conversations SET updated_at = ? WHERE conversation_id ="
                    " (SELECT conversation_id FROM tasks WHERE task_id = ?)",
                    (finished_at, report.task_id),
                )

    def plan_made(
        self, task_id: str, complexity: Complexity, source: str, microtasks: Sequence[Microtask]
    ) -> None:
        """Record a task's plan before any of it is dispatched."""
        payload = json.dumps([mt.model_dump(mode="json") for mt in microtasks])
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?)",
                (task_id, complexity.value, source, payload),
            )

    def result_made(self, result: MicrotaskResult) -> None:
        """Record one microtask result; after this it is never paid for again."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                (result.task_id, result.microtask_id, result.model_dump_json()),
            )

    def unfinished(self) -> list[Unfinished]:
        """Every accepted task without a final report, oldest first, with what it has."""
        with self._lock:
            rows = self._db.execute(
                "SELECT t.task_id, t.request, t.created_at, t.user, t.cost_limit_usd,"
                " t.conversation_id, t.context, p.complexity, p.source, p.microtasks"
                " FROM tasks t LEFT JOIN plans p USING (task_id)"
                " WHERE t.finished_at IS NULL ORDER BY t.created_at"
            ).fetchall()
            done = self._db.execute(
                "SELECT r.task_id, r.microtask_id, r.result FROM results r"
                " JOIN tasks t USING (task_id) WHERE t.finished_at IS NULL"
            ).fetchall()
        results: dict[str, dict[str, MicrotaskResult]] = {}
        for row in done:
            result = MicrotaskResult.model_validate_json(row["result"])
            results.setdefault(row["task_id"], {})[row["microtask_id"]] = result
        return [
            Unfinished(
                task_id=row["task_id"],
                request=row["request"],
                created_at=row["created_at"],
                complexity=Complexity(row["complexity"]) if row["complexity"] else None,
                plan_source=row["source"] or "",
                microtasks=[Microtask.model_validate(m) for m in json.loads(row["microtasks"])]
                if row["microtasks"]
                else [],
                results=results.get(row["task_id"], {}),
                user=row["user"],
                cost_limit_usd=row["cost_limit_usd"],
                conversation_id=row["conversation_id"],
                context=row["context"],
            )
            for row in rows
        ]

    # --- conversations (actors.conversation) ---------------------------------------

    def task_context(self, task_id: str, context: str) -> None:
        """The earlier turns ``task_id`` was given, kept so a resume gives it the same."""
        with self._tx() as db:
            db.execute("UPDATE tasks SET context = ? WHERE task_id = ?", (context, task_id))

    def conversation_history(self, conversation_id: str) -> History:
        """The conversation's summary and the turns after it, oldest first."""
        with self._lock:
            head = self._db.execute(
                "SELECT summary, summary_through FROM conversations WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            if head is None:
                return History("", 0, [])
            rows = self._db.execute(
                "SELECT turn, request, answer FROM turns WHERE conversation_id = ? AND turn > ?"
                " ORDER BY turn",
                (conversation_id, head["summary_through"]),
            ).fetchall()
        turns = [Turn(row["turn"], row["request"], row["answer"]) for row in rows]
        return History(head["summary"], head["summary_through"], turns)

    def conversation_summarised(self, conversation_id: str, summary: str, through: int) -> None:
        """``summary`` now stands for every turn up to ``through`` (never moves back)."""
        with self._tx() as db:
            db.execute(
                "UPDATE conversations SET summary = ?, summary_through = ?"
                " WHERE conversation_id = ? AND summary_through < ?",
                (summary, through, conversation_id, through),
            )

    def latest_conversation(self, user: str | None) -> str | None:
        """``user``'s most recently used conversation, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT conversation_id FROM conversations WHERE COALESCE(user, '') = ?"
                " ORDER BY updated_at DESC, rowid DESC LIMIT 1",
                (user or "",),
            ).fetchone()
        return None if row is None else str(row["conversation_id"])

    def forget(self, user: str | None) -> int:
        """Delete ``user``'s conversations and blank their finished tasks' texts (request,
        context, plan, results and report; the figures stay in the totals). Returns how
        many conversations were deleted. Running tasks keep theirs until they finish."""
        who = (user or "",)
        with self._tx() as db:
            db.execute(
                "DELETE FROM turns WHERE conversation_id IN (SELECT conversation_id FROM"
                " conversations WHERE COALESCE(user, '') = ?)",
                who,
            )
            deleted = db.execute(
                "DELETE FROM conversations WHERE COALESCE(user, '') = ?", who
            ).rowcount
            finished = (
                "SELECT task_id FROM tasks WHERE COALESCE(user, '') = ? AND finished_at IS NOT NULL"
            )
            db.execute(f"DELETE FROM results WHERE task_id IN ({finished})", who)
            db.execute(f"DELETE FROM plans WHERE task_id IN ({finished})", who)
            db.execute(
                "UPDATE tasks SET request = '', context = NULL, report = NULL"
                " WHERE COALESCE(user, '') = ? AND finished_at IS NOT NULL",
                who,
            )
        return int(deleted)

    def expire_conversations(self, before: float) -> int:
        """Delete the conversations last used before ``before``; returns how many."""
        with self._tx() as db:
            stale = "SELECT conversation_id FROM conversations WHERE updated_at < ?"
            db.execute(f"DELETE FROM turns WHERE conversation_id IN ({stale})", (before,))
            return int(
                db.execute("DELETE FROM conversations WHERE updated_at < ?", (before,)).rowcount
            )

    def next_incarnation(self, started_at: float) -> int:
        """A number for a starting orchestrator, larger than every earlier one's."""
        with self._tx() as db:
            cursor = db.execute("INSERT INTO incarnations (started_at) VALUES (?)", (started_at,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def spending_since(self, since: float) -> list[tuple[float, float]]:
        """``(finished_at, cost_usd)`` of every task finished since ``since``, oldest first.

        Read once when the orchestrator starts; from then on it keeps the day's total in
        memory (``actors.engine.admission``). Unfinished tasks are not here: they are resumed and
        counted as running tasks.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT finished_at, cost_usd FROM tasks"
                " WHERE finished_at >= ? AND cost_usd > 0 ORDER BY finished_at",
                (since,),
            ).fetchall()
        return [(float(row["finished_at"]), float(row["cost_usd"])) for row in rows]

    def report(self, task_id: str) -> RunReport | None:
        """The stored report of a finished task, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        if row is None or row["report"] is None:
            return None
        return RunReport.model_validate_json(row["report"])

    def recent(self, limit: int = 50, user: str | None = None) -> list[dict[str, Any]]:
        """The newest tasks first (only ``user``'s when given), requests shortened."""
        where, args = ("WHERE user = ? ", (user,)) if user is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, user, conversation_id, created_at, finished_at, state,"
                " complexity,"
                f" substr(request, 1, {_LISTED_CHARS}) AS request, microtasks, failed, retries,"
                f" wall_s, cost_usd FROM tasks {where}ORDER BY created_at DESC LIMIT ?",
                (*args, max(1, min(limit, 1000))),
            ).fetchall()
        return [dict(row) for row in rows]

    def daily(self, days: int = 30, now: float | None = None) -> list[dict[str, Any]]:
        """Trends per UTC day of the last ``days`` (today included), oldest first.

        Each day: ``tasks`` finished, how many ``succeeded`` (done with no failed microtask)
        and the ``success_rate`` in percent, ``p50_wall_s`` and ``p95_wall_s`` (time to
        answer, nearest rank), tokens and cost. A day without tasks is a row of zeros (rate
        and times None), so a chart over the rows has no gaps.
        """
        now = time.time() if now is None else now
        days = max(1, min(days, MAX_TREND_DAYS))
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=days - 1)
        day = "date(finished_at, 'unixepoch') AS day"
        with self._lock:
            sums = self._db.execute(
                f"SELECT {day}, COUNT(*) AS tasks,"
                " SUM(state = 'done' AND failed = 0) AS succeeded,"
                " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,"
                " SUM(cost_usd) AS cost_usd FROM tasks WHERE finished_at >= ? GROUP BY day",
                (first.timestamp(),),
            ).fetchall()
            walls = self._db.execute(
                f"SELECT {day}, wall_s FROM tasks WHERE finished_at >= ? AND wall_s IS NOT NULL"
                " ORDER BY day, wall_s",
                (first.timestamp(),),
            ).fetchall()
        by_day = {row["day"]: row for row in sums}
        sorted_walls: dict[str, list[float]] = {}
        for row in walls:
            sorted_walls.setdefault(row["day"], []).append(float(row["wall_s"]))
        trends = []
        for n in range(days):
            date = (first + timedelta(days=n)).date().isoformat()
            row, times = by_day.get(date), sorted_walls.get(date, [])
            tasks = row["tasks"] if row else 0
            succeeded = row["succeeded"] if row else 0
            trends.append(
                {
                    "day": date,
                    "tasks": tasks,
                    "succeeded": succeeded,
                    "success_rate": round(100.0 * succeeded / tasks, 1) if tasks else None,
                    "p50_wall_s": _nearest_rank(times, 0.50),
                    "p95_wall_s": _nearest_rank(times, 0.95),
                    "input_tokens": row["input_tokens"] if row else 0,
                    "output_tokens": row["output_tokens"] if row else 0,
                    "cost_usd": round(row["cost_usd"], 6) if row else 0.0,
                }
            )
        return trends

    def totals(self) -> dict[str, Any]:
        """Sums over every finished task, for long-term figures that survive restarts."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) AS tasks, COALESCE(SUM(microtasks), 0) AS microtasks,"
                " COALESCE(SUM(failed), 0) AS failed_microtasks,"
                " COALESCE(SUM(retries), 0) AS retries, COALESCE(SUM(backups), 0) AS backups,"
                " COALESCE(SUM(input_tokens), 0) AS input_tokens,"
                " COALESCE(SUM(output_tokens), 0) AS output_tokens,"
                " COALESCE(SUM(cost_usd), 0) AS cost_usd FROM tasks WHERE finished_at IS NOT NULL"
            ).fetchone()
            states = self._db.execute(
                "SELECT state, COUNT(*) AS n FROM tasks WHERE finished_at IS NOT NULL "
                "GROUP BY state"
            ).fetchall()
        totals = dict(row)
        totals["tasks_by_state"] = {r["state"]: r["n"] for r in states}
        return totals

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _nearest_rank(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ascending ``ordered``: the smallest value with ``q`` at or below."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
