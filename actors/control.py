"""``parallel-agents start | stop | status``: the whole system as background services.

``start`` brings up (or reuses) a Ray head with the dashboard, the actors
(detached, so they outlive this command), the Serve app and — when
``TELEGRAM_BOT_TOKEN`` is set — the bot process, then waits for ``/health``.
What it started is written to ``$PARALLEL_AGENTS_HOME/services.json`` so that
``stop`` tears down exactly that and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from actors.config import Settings
from actors.errors import ConfigurationError

log = logging.getLogger(__name__)

STATE_FILE = "services.json"


def _state_path(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _ray_running() -> bool:
    """True when a Ray head runs on this machine (its GCS server process exists).

    Ray's own ``address="auto"`` finds clusters the same way. (``ray status`` is no
    test: with token authentication it fails on a healthy cluster unless the CLI is
    told the auth mode.)
    """
    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


def http_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return f"http://{host}:{settings.http_port}"


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            return exc.code, json.loads(exc.read())
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def start(settings: Settings, *, timeout_s: float = 300.0, say: Any = print) -> dict[str, Any]:
    """Bring everything up; return what was started once ``/health`` answers 200."""
    import ray

    import serve_app
    from actors.system import init_ray, start_system

    serve_app.check_bind(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"started_ray": False, "bot_pid": None, "started_at": time.time()}
    if _ray_running():
        say("reusing the running Ray cluster")
    else:
        say("starting a Ray head (dashboard on 127.0.0.1:8265) ...")
        command = [_ray_bin(), "start", "--head", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", "--disable-usage-stats"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigurationError(
                "could not start a Ray head: " + (done.stderr or done.stdout).strip()[-2000:]
            )
        state["started_ray"] = True
    _write_state(settings, state)  # from here on, stop knows what to undo
    init_ray("auto")
    sizes = ", ".join(f"{r.value} {s.min}-{s.max}" for r, s in settings.pools.items())
    say(f"starting pools ({sizes}) and the orchestrator ...")
    start_system(settings, detached=True)
    say(f"starting the HTTP app on {settings.http_host}:{settings.http_port} ...")
    serve_app.deploy(settings)
    if settings.telegram_bot_token is not None:
        state["bot_pid"] = _start_bot(settings)
        say(f"bot started (pid {state['bot_pid']}, log {settings.home / 'bot.log'})")
    elif settings.telegram_api_base_url:
        say("no TELEGRAM_BOT_TOKEN: the Telegram bot is not started")
    _write_state(settings, state)
    ray.shutdown()  # this driver is done; the detached actors and Serve stay up
    url = http_url(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = get_json(f"{url}/health")
        if code == 200:
            state["health"] = body
            return state
        time.sleep(0.5)
    raise ConfigurationError(f"the system did not become healthy at {url}/health in time")


def _start_bot(settings: Settings) -> int:
    log_file = (settings.home / "bot.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives this command; stop signals it by pid
        env=os.environ.copy(),
    )
    return process.pid


def stop(settings: Settings, *, say: Any = print) -> None:
    """Tear down what ``start`` started: the bot, Serve, the actors, and Ray if it was ours."""
    state = _read_state(settings)
    if state.get("bot_pid"):
        _terminate(int(state["bot_pid"]))
        say(f"bot (pid {state['bot_pid']}) stopped")
    if _ray_running():
        import ray
        from ray import serve

        from actors.system import find_system, init_ray, stop_system

        init_ray("auto")
        with contextlib.suppress(Exception):
            serve.shutdown()
            say("HTTP app stopped")
        system = find_system()
        if system is not None:
            stop_system(system)
            say("pools and orchestrator stopped")
        ray.shutdown()
        if state.get("started_ray"):
            subprocess.run([_ray_bin(), "stop"], capture_output=True, check=False, timeout=120)
            say("Ray stopped")
    _state_path(settings).unlink(missing_ok=True)


def status(settings: Settings) -> dict[str, Any] | None:
    """The ``/status`` JSON, or None when the HTTP app does not answer."""
    code, body = get_json(f"{http_url(settings)}/status")
    return body if code == 200 else None


def render_status(body: dict[str, Any], url: str) -> str:
    """The ``/status`` JSON as a few readable lines."""
    model = "simulated model" if body.get("simulated") else "Claude API"
    lines = [
        f"running ({model}) at {url}",
        f"agents {body['agents_total']} (busy {body['active_agents']}) · queued "
        f"{body['queued_tasks']} · active tasks {body['active_tasks']} · throughput "
        f"{body['throughput']} tasks/min · avg latency {body['avg_latency']} s · success "
        f"{body['success_rate']}%",
        f"{'pool':<11}{'size':>5}{'min-max':>9}{'busy':>6}{'util':>6}",
    ]
    for role, pool in body["pools"].items():
        util = body["pool_utilization"].get(role, 0)
        bounds = f"{pool['min']}-{pool['max']}"
        lines.append(f"{role:<11}{pool['size']:>5}{bounds:>9}{pool['busy']:>6}{util:>5}%")
    tokens = body["tokens"]
    lines.append(
        f"tokens in/out {tokens['input']:,}/{tokens['output']:,} · cost ${body['cost_usd']:.4f}"
    )
    return "\n".join(lines)


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises once it is gone
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = _state_path(settings)
    path.write_text(json.dumps({k: v for k, v in state.items() if k != "health"}, indent=2))


def _read_state(settings: Settings) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(_state_path(settings).read_text())
        return state
    except (OSError, ValueError):
        return {}
