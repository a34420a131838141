"""``parallel-agents start / status / stop`` as a user runs them: own Ray head, real HTTP.

Runs in its own pytest process after the rest of the suite (see the Makefile), because
``start`` launches a Ray head of its own and ``stop`` must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from fake_bot_api import FakeBotAPI  # tests/integration is on pytest's pythonpath
from prometheus_client.parser import text_string_to_metric_families

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


def _ray_processes() -> list[str]:
    names = {"gcs_server", "raylet"}
    return [p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"] in names]


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
    if _ray_processes():
        pytest.skip("a Ray cluster is already running here; start/stop must own its own")
    port = _free_port()
    values = {
        **os.environ,
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
    deadline = time.monotonic() + 120
    while json.loads(_get(f"{url}/tasks/{task_id}")[1])["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    status = json.loads(_get(f"{url}/status")[1])
    for field in ("active_agents", "queued_tasks", "throughput", "avg_latency", "success_rate"):
        assert status[field] >= 0
    assert status["throughput"] > 0 and status["success_rate"] == 100.0
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
    services = json.loads((Path(env["PARALLEL_AGENTS_HOME"]) / "services.json").read_text())
    bot_pid = services["bot_pid"]
    assert _alive(bot_pid)

    shown = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "running" in shown.stdout and "research" in shown.stdout

    stopped = subprocess.run([*CLI, "stop"], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert not _listening(port)
    assert not _alive(bot_pid)
    assert _ray_processes() == []  # no GCS, raylet or dashboard left
    gone = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 3 and "not running" in gone.stderr
