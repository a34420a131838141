"""What ``parallel-agents start`` launched, recorded so that ``stop`` ends exactly that.

``services.json`` in the home names each process by pid, start time and command line, and
the Ray head by its session. A pid alone is no proof: after the process ended (or the
machine rebooted) the number may belong to anything, so nothing is signalled unless it is
still the very process recorded::

    bot = ServiceProcess.of(pid)        # at start
    terminate(bot)                      # at stop: False, nothing signalled, if it is gone
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

import psutil
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

STATE_FILE = "services.json"


class ServiceProcess(BaseModel):
    """One process ``start`` launched (the bot)."""

    pid: int
    create_time: float
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> ServiceProcess:
        process = psutil.Process(pid)
        return cls(pid=pid, create_time=process.create_time(), cmdline=process.cmdline())

    def is_running(self) -> bool:
        """True while the very process recorded lives (not a later one with its pid)."""
        try:
            process = psutil.Process(self.pid)
            return (
                # The start time is derived from the boot time, which a clock step can
                # shift by a little; a reused pid starts much later.
                abs(process.create_time() - self.create_time) < 1.0
                and process.cmdline() == self.cmdline
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


class Services(BaseModel):
    """``services.json``: what one ``start`` brought up."""

    home: str
    started_at: float
    ray_address: str | None = None  # the GCS joined or started
    started_ray: bool = False  # the head is ours to stop
    ray_session: str | None = None  # its session name: every Ray process of it carries it
    adopted: bool = False  # joined a system with other settings, on --adopt
    bot: ServiceProcess | None = None


def terminate(process: ServiceProcess, grace_s: float = 10.0) -> bool:
    """SIGTERM ``process`` (its group, when it leads one), SIGKILL after ``grace_s``.

    Returns False, signalling nothing, when the recorded process is no longer running.
    """
    if not process.is_running():
        return False
    with contextlib.suppress(psutil.Error, OSError):
        _signal(process.pid, signal.SIGTERM)
        try:
            psutil.Process(process.pid).wait(timeout=grace_s)
        except psutil.TimeoutExpired:
            if process.is_running():
                _signal(process.pid, signal.SIGKILL)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    if os.getpgid(pid) == pid:  # a group leader (the bot): its children go with it
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def session_processes(session: str | None) -> list[psutil.Process]:
    """The processes of Ray session ``session``: those naming it in their arguments, and
    their descendants (workers and agents rename themselves ``ray::...``)."""
    if not session:
        return []
    roots = [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(session in arg for arg in process.info["cmdline"] or [])
    ]
    found = {process.pid: process for process in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update({child.pid: child for child in root.children(recursive=True)})
    found.pop(os.getpid(), None)
    return list(found.values())


def end_session(session: str | None, grace_s: float = 15.0) -> list[psutil.Process] | None:
    """End every process of Ray session ``session`` and only those; None when there were
    none, else those that would not die.

    Not ``ray stop``: that ends every Ray on the machine, other users' and tests' too.
    """
    processes = session_processes(session)
    if not processes:
        return None
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _, alive = psutil.wait_procs(alive, timeout=5)
    return list(alive)


def write(home: Path, services: Services) -> None:
    """Write ``services.json`` (0600: it says what runs and where)."""
    fd = os.open(home / STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(services.model_dump_json(indent=2))


def read(home: Path) -> Services | None:
    """What ``services.json`` records, or None (none there, or one nothing can be trusted in)."""
    path = home / STATE_FILE
    try:
        return Services.model_validate_json(path.read_text())
    except OSError:
        return None
    except ValidationError:  # an older version's file: its pids cannot be verified
        log.warning("%s is not in the current format; ignored", path)
        return None


def forget(home: Path) -> None:
    (home / STATE_FILE).unlink(missing_ok=True)
