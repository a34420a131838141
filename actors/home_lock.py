"""One orchestrator and one bot per home: an exclusive lock file, held for a process's life.

Two orchestrators on one ``PARALLEL_AGENTS_HOME`` would both resume (and pay for) every
unfinished task in its store; two bots on one home would answer every message twice. Each
takes ``flock`` on a file in the home and keeps it until its process ends, when the kernel
releases it, however the process died (so a restarted orchestrator takes it again)::

    home_lock.hold(settings.home, home_lock.ORCHESTRATOR_LOCK, wait_s=home_lock.EXIT_WAIT_S)

A second holder fails with ``ConfigurationError`` naming the holder's pid, host and the home.
``flock`` is per machine (and per NFS server): the home lives on the head node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from actors.errors import ConfigurationError

ORCHESTRATOR_LOCK = "orchestrator.lock"
BOT_LOCK = "bot.lock"
# How long a new holder waits for a killed one to finish exiting (a restarted orchestrator's
# old process, a stopped system's): long enough for a busy machine, short for a refusal.
EXIT_WAIT_S = 15.0
_POLL_S = 0.05

# Locks this process holds, by path. The open descriptor *is* the lock: it stays here until
# the process ends (or ``release``), so no caller has to keep an object alive for it.
_held: dict[Path, int] = {}


def hold(
    home: Path,
    name: str,
    *,
    wait_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Take ``home/name`` for the rest of this process's life; return its path.

    Waits up to ``wait_s`` for a holder that is still exiting (a killed process takes a
    moment to go), then raises ``ConfigurationError``. Holding it already is not an error.
    """
    path = _path(home, name)
    if path in _held:
        return path
    fd = _locked(path, wait_s, clock, sleep)
    # Who holds it, for the refusal a second holder gets.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    _held[path] = fd
    return path


def check_free(
    home: Path,
    name: str,
    *,
    wait_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Raise ``ConfigurationError`` unless ``home/name`` is free within ``wait_s`` (it stays free).

    For a driver about to start actors that will take the lock: it refuses before any
    actor is created rather than after.
    """
    path = _path(home, name)
    if path in _held:
        return
    os.close(_locked(path, wait_s, clock, sleep))  # closing the descriptor releases it


def release(home: Path, name: str) -> None:
    """Give the lock back before the process ends (tests, an orderly shutdown)."""
    fd = _held.pop(_path(home, name), None)
    if fd is not None:
        os.close(fd)


def holder(home: Path, name: str) -> str:
    """Who took ``home/name`` last: ``"pid <n> on <host>"`` (or ``"unknown"``)."""
    try:
        pid, host = _path(home, name).read_text().split()
    except (OSError, ValueError):
        return "unknown"
    return f"pid {pid} on {host}"


def _path(home: Path, name: str) -> Path:
    return Path(home).expanduser().resolve() / name


def _locked(
    path: Path, wait_s: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> int:
    """An open descriptor of ``path`` holding its exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
    deadline = clock() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if clock() >= deadline:
                break
        sleep(_POLL_S)
    with contextlib.suppress(OSError):
        os.close(fd)
    what = path.name.removesuffix(".lock")
    raise ConfigurationError(
        f"another {what} ({holder(path.parent, path.name)}) holds {path}: one {what} per "
        f"PARALLEL_AGENTS_HOME ({path.parent}); stop that one or set PARALLEL_AGENTS_HOME "
        "to another folder"
    )
