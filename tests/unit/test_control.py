"""``stop`` and ``start`` without Ray: which processes may be signalled, what counts as a
running system with other settings, how long running tasks are given, and that ``stop``
never starts a Ray of its own."""

from __future__ import annotations

import contextlib
import stat
import subprocess
import sys

import psutil
import pytest

from actors.config import Settings
from actors.runtime import control
from actors.runtime import services as records
from actors.runtime.services import ServiceProcess, Services, end_session, terminate


@pytest.fixture
def sleeper():
    """A stand-in for the bot: its own session, like the bot start launches."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def _alive(process: subprocess.Popen) -> bool:
    return process.poll() is None


# --- a pid is signalled only if it is still the process recorded ---------------------------


def test_a_pid_recorded_with_another_start_time_is_not_signalled(sleeper):
    true = ServiceProcess.of(sleeper.pid)
    stale = true.model_copy(update={"create_time": true.create_time - 3600})  # before a reboot
    assert not stale.is_running()
    assert terminate(stale) is False
    assert _alive(sleeper)


def test_a_pid_now_running_another_command_is_not_signalled(sleeper):
    other = ServiceProcess.of(sleeper.pid).model_copy(
        update={"cmdline": [sys.executable, "-m", "bot"]}
    )
    assert terminate(other) is False
    assert _alive(sleeper)


def test_the_process_recorded_is_stopped_once(sleeper):
    recorded = ServiceProcess.of(sleeper.pid)
    assert terminate(recorded, grace_s=10) is True
    assert not psutil.pid_exists(sleeper.pid)  # ended (and reaped by the wait)
    assert terminate(recorded) is False  # gone: a second stop signals nothing


def test_stop_leaves_a_stale_bot_pid_alone_and_never_starts_ray(sleeper, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    bot = ServiceProcess.of(sleeper.pid)
    stale = bot.model_copy(update={"create_time": bot.create_time - 86_400})
    # What a reboot leaves: a recorded bot whose pid is now someone else's, and a Ray
    # address where nothing listens any more.
    records.write(
        home,
        Services(
            home=str(home), started_at=0, ray_address="127.0.0.1:1", started_ray=False, bot=stale
        ),
    )
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.delenv("RAY_ENABLE_AUTO_CONNECT", raising=False)  # stop sets it; restored after
    said: list[str] = []
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome = control.stop(Settings(home=home), say=said.append)
    assert _alive(sleeper)
    assert any("no longer running: nothing signalled" in line for line in said)
    assert any("no Ray answers at 127.0.0.1:1" in line for line in said)
    started = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    assert started == set()  # no gcs_server, no raylet: stop started nothing
    assert not outcome.refused
    assert not (home / records.STATE_FILE).exists()


# --- the Ray head is ended by its session, and nothing else ---------------------------------


def test_ending_a_session_ends_its_processes_and_their_children_only():
    session = "session_2099-01-01_00-00-00_000000_1"
    # A stand-in raylet (naming the session in its arguments, as Ray's do) with a child that
    # does not (Ray's workers rename themselves), and a process of another session.
    script = (
        "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); "
        "print('up', flush=True); time.sleep(300)"
    )
    raylet, stranger = (
        subprocess.Popen(
            [sys.executable, "-c", script, f"--session-name={name}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in (session, "session_other")
    )
    try:
        assert raylet.stdout.readline() == "up\n" and stranger.stdout.readline() == "up\n"
        (worker,) = psutil.Process(raylet.pid).children()
        assert {p.pid for p in records.session_processes(session)} == {raylet.pid, worker.pid}
        assert end_session(session, grace_s=10) == []
        assert raylet.wait(timeout=10) is not None and not worker.is_running()
        assert stranger.poll() is None
        assert end_session(session) is None  # nothing left of it
    finally:
        for process in (raylet, stranger):
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children():
                    child.kill()
            process.kill()
            process.wait()
            process.stdout.close()


# --- services.json -----------------------------------------------------------------------


def test_services_json_round_trips_and_is_private(tmp_path, sleeper):
    written = Services(home=str(tmp_path), started_at=1.0, bot=ServiceProcess.of(sleeper.pid))
    records.write(tmp_path, written)
    assert stat.S_IMODE((tmp_path / records.STATE_FILE).stat().st_mode) == 0o600
    assert records.read(tmp_path) == written


def test_an_older_services_json_is_not_trusted(tmp_path):
    (tmp_path / records.STATE_FILE).write_text('{"started_ray": true, "bot_pid": 1}')
    assert records.read(tmp_path) is None  # a bare pid cannot be verified


# --- a running system with other settings -----------------------------------------------------


def _asked(**changes) -> dict:
    return control.describe(Settings().with_overrides(**changes))


def test_the_incident_other_home_and_two_agent_pools_is_a_difference(tmp_path):
    small = {role: {"min": 1, "max": 2} for role in ("research", "analysis", "generation")}
    running = _asked(home=tmp_path / "a", pools=small)
    asked = _asked(home=tmp_path / "b")
    found = control.differences(asked, running)
    assert f"home: running {tmp_path / 'a'}, asked {tmp_path / 'b'}" in found
    assert "pools.research: running 1-2, asked 8-12" in found
    assert not any(line.startswith("pools.validation") for line in found)  # 4-6 both


def test_the_same_settings_are_no_difference(tmp_path):
    assert control.differences(_asked(home=tmp_path), _asked(home=tmp_path)) == []


def test_a_model_and_simulated_or_not_count_too(tmp_path):
    running = _asked(home=tmp_path, models={"planning": "claude-sonnet-5-5"})
    asked = _asked(home=tmp_path, anthropic_api_key="sk-ant-x")
    found = control.differences(asked, running)
    assert "models.planning: running claude-sonnet-5-5, asked claude-opus-5-5" in found
    assert "simulated: running True, asked False" in found


def test_what_is_not_known_of_the_running_system_is_no_difference(tmp_path):
    # Started by something that recorded nothing (a bot, a notebook): only live pools known.
    running = {"pools": {"research": [8, 12]}}
    assert control.differences(_asked(home=tmp_path), running) == []


# --- draining ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_drain_waits_for_running_tasks_to_finish():
    clock = FakeClock()

    def active():
        return [] if clock.now >= 3 else [{"task_id": "t1", "done": 1, "total": 4}]

    assert control.drain(active, 30, clock=clock, sleep=clock.sleep) == []
    assert clock.now < 30  # it did not wait out the whole timeout


def test_drain_gives_up_at_the_timeout_and_says_what_still_runs():
    clock = FakeClock()
    stuck = [{"task_id": "t2", "done": 0, "total": 8}]
    assert control.drain(lambda: stuck, 5, clock=clock, sleep=clock.sleep) == stuck
    assert clock.now == pytest.approx(5)
