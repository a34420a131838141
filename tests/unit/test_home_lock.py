"""One holder per home: a second process is refused clearly; a dead holder frees the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import home_lock
from actors.errors import ConfigurationError

_HOLDER = """
import sys
from pathlib import Path
from actors import home_lock
home_lock.hold(Path(sys.argv[1]), sys.argv[2])
print("held", flush=True)
sys.stdin.read()  # hold until the test kills us or closes stdin
"""


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``orchestrator.lock`` in ``tmp_path``."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), home_lock.ORCHESTRATOR_LOCK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait(timeout=30)


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def test_a_second_holder_is_refused_naming_the_holder_and_the_home(tmp_path, other_process):
    with pytest.raises(ConfigurationError) as refused:
        home_lock.hold(tmp_path, home_lock.ORCHESTRATOR_LOCK)
    message = str(refused.value)
    assert f"pid {other_process.pid}" in message
    assert str(tmp_path.resolve()) in message and "another orchestrator" in message
    with pytest.raises(ConfigurationError):  # the driver's early check says the same
        home_lock.check_free(tmp_path, home_lock.ORCHESTRATOR_LOCK)


def test_the_lock_is_free_once_its_holder_is_killed(tmp_path, other_process):
    os.kill(other_process.pid, signal.SIGKILL)
    other_process.wait(timeout=30)
    try:
        path = home_lock.hold(tmp_path, home_lock.ORCHESTRATOR_LOCK, wait_s=30)
        assert home_lock.holder(tmp_path, home_lock.ORCHESTRATOR_LOCK).startswith(
            f"pid {os.getpid()} "
        )
        assert path == tmp_path.resolve() / "orchestrator.lock"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        home_lock.release(tmp_path, home_lock.ORCHESTRATOR_LOCK)


def test_a_waiting_holder_polls_until_its_deadline_then_gives_up(tmp_path, other_process):
    time = FakeTime()
    with pytest.raises(ConfigurationError):
        home_lock.hold(
            tmp_path, home_lock.ORCHESTRATOR_LOCK, wait_s=2.0, clock=time.clock, sleep=time.sleep
        )
    assert time.now >= 2.0 and time.sleeps >= 10  # it kept trying for the whole wait


def test_locks_are_per_name_and_holding_twice_is_not_an_error(tmp_path, other_process):
    try:
        home_lock.hold(tmp_path, home_lock.BOT_LOCK)  # the orchestrator's lock is not the bot's
        home_lock.hold(tmp_path, home_lock.BOT_LOCK)
        home_lock.check_free(tmp_path, home_lock.BOT_LOCK)  # we hold it: free for us
    finally:
        home_lock.release(tmp_path, home_lock.BOT_LOCK)


def test_a_released_lock_can_be_taken_by_another_process(tmp_path):
    home_lock.hold(tmp_path, home_lock.BOT_LOCK)
    home_lock.release(tmp_path, home_lock.BOT_LOCK)
    done = subprocess.run(
        [sys.executable, "-c", _HOLDER, str(tmp_path), home_lock.BOT_LOCK],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0 and done.stdout.strip() == "held"
