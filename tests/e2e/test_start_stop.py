"""``parallel-agents start / status / stop`` as a user runs them: own Ray head, real HTTP.

Runs in its own pytest process after the rest of the suite (see the Makefile), because
``start`` launches a Ray head of its own (on loopback, port 6379) and ``stop`` must leave
nothing of it behind. Other Rays on the machine are left alone, and leave this one alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import psutil
import pytest
from fake_bot_api import FakeBotAPI  # tests/integration is on pytest's pythonpath
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from actors.engine.store import Store

CLI = [sys.executable, "-m", "actors"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _session_processes(session: str) -> list[psutil.Process]:
    """Every process of one Ray session: those naming it, and their children."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        if any(session in arg for arg in process.info["cmdline"] or []):
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in process.children(recursive=True)})
    return list(found.values())


def _listening_on(processes: list[psutil.Process]) -> set[str]:
    addresses = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections("inet"):
                if conn.status == psutil.CONN_LISTEN:
                    addresses.add(conn.laddr.ip)
    return addresses


def _title(process: psutil.Process) -> str:
    """A Ray worker's process title (``ray::Orchestrator...``), or ""."""
    with contextlib.suppress(psutil.Error):
        return (process.cmdline() or [""])[0]
    return ""


def _ray_start_would_join_another() -> bool:
    """A Ray that `start` would join (RAY_ADDRESS, or what `ray start` recorded), or port
    6379 taken: then this test cannot own its head."""
    if os.environ.get("RAY_ADDRESS") or _listening(6379):
        return True
    recorded = Path("/tmp/ray/ray_current_cluster")
    with contextlib.suppress(OSError, ValueError):
        host, port = recorded.read_text().strip().rsplit(":", 1)
        with socket.socket() as sock:
            return sock.connect_ex((host, int(port))) == 0
    return False


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


TOKEN = "4242:e2e-token"
USER = 777


class FakeBotInThread:
    """The fake Bot API server on its own event loop, for a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.api = self.run(self._enter())

    async def _enter(self) -> FakeBotAPI:
        return await FakeBotAPI(TOKEN).__aenter__()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def close(self) -> None:
        self.run(self.api.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def telegram():
    fake = FakeBotInThread()
    yield fake
    fake.close()


@pytest.fixture
def env(tmp_path, telegram):
    if _ray_start_would_join_another():
        pytest.skip("a Ray that start would join runs here; start/stop must own its own")
    port = _free_port()
    values = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARALLEL_AGENTS_POOLS")},
        "PARALLEL_AGENTS_HOME": str(tmp_path / "home"),
        "PARALLEL_AGENTS_HTTP_PORT": str(port),
        "PARALLEL_AGENTS_SIMULATOR__LATENCY": "fixed",
        "PARALLEL_AGENTS_SIMULATOR__MEDIAN_S": "0.05",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.api.root,
        "TELEGRAM_ALLOWED_USER_IDS": str(USER),
    }
    for role in ("RESEARCH", "ANALYSIS", "GENERATION", "VALIDATION"):
        values[f"PARALLEL_AGENTS_POOLS__{role}__MIN"] = "1"
        values[f"PARALLEL_AGENTS_POOLS__{role}__MAX"] = "2"
    yield values
    subprocess.run([*CLI, "stop"], env=values, capture_output=True, check=False, timeout=300)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_serves_every_route_runs_the_bot_and_stop_leaves_nothing(env, telegram):
    port = int(env["PARALLEL_AGENTS_HTTP_PORT"])
    url = f"http://127.0.0.1:{port}"
    started = subprocess.run([*CLI, "start"], env=env, capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr
    assert _get(f"{url}/health")[0] == 200

    code, accepted = _post(f"{url}/tasks", {"text": "Hello"})
    assert code == 202
    task_id = accepted["task_id"]
    wait_until(lambda: json.loads(_get(f"{url}/tasks/{task_id}")[1])["state"] == "done", 120, 0.2)

    status = json.loads(_get(f"{url}/status")[1])
    # One task answered, nothing waiting: the figures a user reads are that one task's.
    assert status["queued_tasks"] == 0
    assert status["avg_latency"] > 0 and status["throughput"] > 0
    assert status["success_rate"] == 100.0
    pools = json.loads(_get(f"{url}/pools")[1])
    assert len(pools) == 4 and all(p["min"] <= p["size"] <= p["max"] for p in pools)

    metrics = _get(f"{url}/metrics")[1].decode()
    assert any(f.name == "parallel_agents_tasks" for f in text_string_to_metric_families(metrics))
    promtool = shutil.which("promtool")
    if promtool:  # .ci/run installs Debian's prometheus package, which has promtool
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # The bot came up with everything else and answers an allowed user.
    api = telegram.api
    telegram.run(api.wait_for(lambda: api.calls_of("setMyCommands"), timeout_s=120))
    telegram.loop.call_soon_threadsafe(api.enqueue, api.message_update(USER, "/start"))
    telegram.run(api.wait_for(lambda: api.texts_to(USER), timeout_s=120))
    home = Path(env["PARALLEL_AGENTS_HOME"])
    services = json.loads((home / "services.json").read_text())
    bot_pid = services["bot"]["pid"]
    assert _alive(bot_pid)
    assert psutil.Process(bot_pid).create_time() == pytest.approx(services["bot"]["create_time"])
    assert services["started_ray"] and services["ray_address"] == "127.0.0.1:6379"
    session = services["ray_session"]
    ray_processes = _session_processes(session)
    assert {"gcs_server", "raylet"} <= {p.name() for p in ray_processes}
    # The head, its workers and the metrics export port listen on loopback only. (Ray Serve
    # 2.60 binds each replica's inter-deployment gRPC server to [::]:0 in its code, with no
    # setting; Ray's token authentication guards it.)
    replicas = [p for p in ray_processes if _title(p).startswith("ray::ServeReplica")]
    assert replicas and _listening_on([p for p in ray_processes if p not in replicas]) <= LOOPBACK
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "store.sqlite3").stat().st_mode) == 0o600

    shown = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "running" in shown.stdout and "research" in shown.stdout

    # Another home with the default pools (8-12 agents) must not silently adopt this
    # system (1-2 agents), and may not stop it either.
    other = {**env, "PARALLEL_AGENTS_HOME": str(home.parent / "other")}
    for role in ("RESEARCH", "ANALYSIS", "GENERATION", "VALIDATION"):
        del (
            other[f"PARALLEL_AGENTS_POOLS__{role}__MIN"],
            other[f"PARALLEL_AGENTS_POOLS__{role}__MAX"],
        )
    refused = subprocess.run(
        [*CLI, "start"], env=other, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0
    assert "pools.research: running 1-2, asked 8-12" in refused.stderr
    assert f"home: running {home.resolve()}" in refused.stderr and "--adopt" in refused.stderr
    assert not (home.parent / "other" / "services.json").exists()
    kept = subprocess.run([*CLI, "stop"], env=other, capture_output=True, text=True, timeout=300)
    assert kept.returncode == 1 and f"PARALLEL_AGENTS_HOME={home.resolve()}" in kept.stderr
    assert _get(f"{url}/health")[0] == 200  # nothing of it was stopped

    # A slow task is running and the orchestrator was SIGKILLed (Ray restarts it): stop
    # waits a little, says what it leaves, and the task stays in the store for next time.
    code, slow = _post(f"{url}/tasks", {"text": "Summarise the history of Ray [sim-latency 60]"})
    assert code == 202
    (orchestrator,) = [
        p for p in _session_processes(session) if _title(p).startswith("ray::Orchestrator")
    ]
    orchestrator.kill()
    # Back, with the task resumed from the store.
    wait_until(lambda: _get(f"{url}/tasks/{slow['task_id']}")[0] == 200, 120, 0.2)

    stopped = subprocess.run(
        [*CLI, "stop", "--drain-timeout", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    assert stopped.returncode == 0, stopped.stderr
    assert f"still running after 2 s: {slow['task_id']}" in stopped.stderr
    assert "resume on the next `parallel-agents start`" in stopped.stderr
    assert slow["task_id"] in {t.task_id for t in Store(home / "store.sqlite3").unfinished()}
    assert not _listening(port)
    assert not _alive(bot_pid)
    assert [p for p in _session_processes(session) if p.is_running()] == []  # nothing of Ray
    gone = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 3 and "not running" in gone.stderr
