"""The call ledger: every model call written down where it is made, before and after.

The in-memory usage a task carries dies with the process that holds it: an agent killed
while its call is answered, or an orchestrator killed during planning, takes the paid
answer's record with it, and the provider bills it all the same. The ledger closes that gap
by writing to disk in the calling process itself:

- ``sent`` just before the HTTP request leaves (with a call id also sent as the
  ``x-parallel-agents-call`` header, so a provider log can be matched row by row);
- ``paid`` when an answer arrives (its tokens and cost), or ``refused`` when the provider
  answered with an error status (not billed).

A call with ``sent`` and nothing after it was in flight when its client timed out, lost
the connection or died: the provider may have billed it (``unknown``). Each line is one
``os.write`` to a file opened ``O_APPEND`` — the kernel has it once ``write`` returns, so a
SIGKILL a microsecond later loses nothing.

Files live under ``<home>/ledger/<task id>/<host>-<pid>.jsonl``: one folder per task (its
calls are read without scanning the others), one file per process (no two writers
interleave). The calling code says whose a call is with ``attributed(task_id,
microtask_id)``; a call outside any task goes to ``_none``. On a multi-machine cluster each
node writes under its own home (see RELIABILITY.md, "Known limits").
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from actors.models import Usage

CALL_HEADER = "x-parallel-agents-call"
_NO_TASK = "_none"
CallState = Literal["paid", "refused", "unknown"]


@dataclass(frozen=True)
class Owner:
    task_id: str
    microtask_id: str = ""


_owner: contextvars.ContextVar[Owner | None] = contextvars.ContextVar("ledger_owner", default=None)


@contextlib.contextmanager
def attributed(task_id: str, microtask_id: str = "") -> Iterator[None]:
    """Model calls made inside this block (and the asyncio tasks it starts) are the task's."""
    token = _owner.set(Owner(task_id, microtask_id))
    try:
        yield
    finally:
        _owner.reset(token)


def new_call_id() -> str:
    return uuid.uuid4().hex[:20]


class CallLedger:
    """Writes one process's calls; ``CallLedger(None)`` writes nothing (ledger off)."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._file_name = f"{socket.gethostname()}-{os.getpid()}.jsonl"

    @property
    def folder(self) -> Path | None:
        return self._folder

    def sent(self, call_id: str, model: str, purpose: str, max_tokens: int) -> None:
        owner = _owner.get() or Owner(_NO_TASK)
        self._write(
            owner.task_id,
            {
                "id": call_id,
                "at": round(time.time(), 3),
                "state": "sent",
                "microtask": owner.microtask_id,
                "model": model,
                "purpose": purpose,
                "max_tokens": max_tokens,
            },
        )

    def paid(self, call_id: str, usage: Usage) -> None:
        self._write(_task_of_call(), {"id": call_id, "state": "paid", **usage.model_dump()})

    def refused(self, call_id: str, status: int) -> None:
        self._write(_task_of_call(), {"id": call_id, "state": "refused", "status": status})

    def _write(self, task_id: str, row: dict[str, object]) -> None:
        if self._folder is None:
            return
        folder = self._folder / task_id
        line = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(folder / self._file_name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / self._file_name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _task_of_call() -> str:
    owner = _owner.get()
    return owner.task_id if owner is not None else _NO_TASK


@dataclass
class LedgerCall:
    call_id: str
    task_id: str
    microtask_id: str = ""
    purpose: str = ""
    model: str = ""
    at: float = 0.0
    state: CallState = "unknown"
    usage: Usage = field(default_factory=Usage)


@dataclass
class LedgerSummary:
    """What the ledger says a set of calls cost."""

    calls: list[LedgerCall] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        """The answers paid for (``requests`` counts them)."""
        total = Usage()
        for call in self.calls:
            total += call.usage
        return total

    def count(self, state: CallState) -> int:
        return sum(1 for call in self.calls if call.state == state)


def read(folder: Path, task_ids: list[str] | None = None) -> LedgerSummary:
    """Every call written under ``folder`` (for ``task_ids`` only, when given)."""
    if not folder.is_dir():
        return LedgerSummary()
    tasks = task_ids if task_ids is not None else [p.name for p in folder.iterdir() if p.is_dir()]
    calls: dict[str, LedgerCall] = {}
    for task_id in tasks:
        for path in sorted((folder / task_id).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                _apply(calls, task_id, line)
    return LedgerSummary(list(calls.values()))


def _apply(calls: dict[str, LedgerCall], task_id: str, line: str) -> None:
    try:
        row = json.loads(line)
        call = calls.setdefault(row["id"], LedgerCall(row["id"], task_id))
    except (ValueError, KeyError, TypeError):
        return  # a torn last line (the machine, not the process, went down): skip it
    state = row.get("state")
    if state == "sent":
        call.microtask_id = str(row.get("microtask", ""))
        call.purpose, call.model = str(row.get("purpose", "")), str(row.get("model", ""))
        call.at = float(row.get("at", 0.0))
    elif state == "paid":
        call.state = "paid"
        call.usage = Usage.model_validate({k: v for k, v in row.items() if k in Usage.model_fields})
    elif state == "refused":
        call.state = "refused"


def forget_older_than(folder: Path, age_s: float) -> int:
    """Delete the folders of tasks whose calls are all older than ``age_s``; how many."""
    if not folder.is_dir():
        return 0
    cutoff, removed = time.time() - age_s, 0
    for task_folder in folder.iterdir():
        files = list(task_folder.glob("*.jsonl")) if task_folder.is_dir() else []
        if files and all(f.stat().st_mtime < cutoff for f in files):
            shutil.rmtree(task_folder, ignore_errors=True)
            removed += 1
    return removed
