"""``parallel-agents start | stop | status``: the whole system as background services.

``start`` joins the Ray cluster named by ``RAY_ADDRESS`` (or the one ``ray start`` last
recorded) or brings up a head of its own on loopback, then the actors (detached, so they
outlive this command), the Serve app and, when ``TELEGRAM_BOT_TOKEN`` is set, the bot, and
waits for ``/health``. It refuses to join a running system whose settings differ from the
ones asked for (``--adopt`` joins it as it is). What it started, with each process's start
time and command line, goes to ``$PARALLEL_AGENTS_HOME/services.json``.

``stop`` tears down exactly that: it signals a recorded process only if it is still that
process, only ever connects to a Ray that runs (never starts one), lets running tasks
finish for a while (those that do not stay in the store and resume on the next ``start``),
and says what it left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil

from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    RAY_HEAD_PORT,
    SIMULATOR_NAME,
    Settings,
    pool_actor_name,
)
from actors.errors import ConfigurationError
from actors.models import PoolSnapshot, Role
from actors.private_files import private_folder
from actors.runtime import services as records
from actors.runtime.services import ServiceProcess, Services, terminate

DRAIN_TIMEOUT_S = 30.0
# Where the running system's own description lives, in Ray's key-value store: it outlives
# this command and is what a later ``start`` from any home compares against.
_SETTINGS_KEY = "system-settings"
_ACTOR_NAMES = (ORCHESTRATOR_NAME, *map(pool_actor_name, Role), LIMITER_NAME, SIMULATOR_NAME)

Say = Callable[[str], None]


@dataclass
class Stopped:
    """What ``stop`` did not stop, and whether it refused (another home's system)."""

    left: list[str] = field(default_factory=list)
    refused: bool = False


def describe(settings: Settings) -> dict[str, Any]:
    """What a running system is compared on: home, pool sizes, models, simulated or not."""
    return {
        "home": str(settings.home.expanduser().resolve()),
        "pools": {role.value: [size.min, size.max] for role, size in settings.pools.items()},
        "models": {purpose.value: model for purpose, model in settings.models.items()},
        "simulated": settings.simulated,
    }


def differences(asked: dict[str, Any], running: dict[str, Any]) -> list[str]:
    """Each way ``running`` (as far as it is known) differs from ``asked``, one line each."""

    def shown(value: Any) -> str:
        return f"{value[0]}-{value[1]}" if isinstance(value, list) else str(value)

    found = [
        f"{key}: running {shown(running[key])}, asked {shown(asked[key])}"
        for key in ("home", "simulated")
        if running.get(key) is not None and running[key] != asked[key]
    ]
    for key in ("pools", "models"):
        theirs = running.get(key) or {}
        found += [
            f"{key}.{name}: running {shown(theirs[name])}, asked {shown(value)}"
            for name, value in asked[key].items()
            if name in theirs and theirs[name] != value
        ]
    return found


def drain(
    active: Callable[[], list[dict[str, Any]]],
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Wait up to ``timeout_s`` for the tasks ``active()`` lists; return those still running."""
    deadline = clock() + timeout_s
    running = active()
    while running and clock() < deadline:
        sleep(min(0.5, max(0.0, deadline - clock())))
        running = active()
    return running


def http_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return f"http://{host}:{settings.http_port}"


def get_json(url: str, timeout_s: float = 5.0, token: str | None = None) -> tuple[int, Any]:
    """(status, body) of a GET (with ``token`` as the bearer); status 0 when nothing answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            return exc.code, json.loads(exc.read())
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def start(
    settings: Settings, *, timeout_s: float = 300.0, adopt: bool = False, say: Say = print
) -> Services:
    """Bring everything up; return what was started once ``/health`` answers 200."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    from actors.gateway.app import check_bind, deploy
    from actors.runtime.system import LOOPBACK, init_ray, start_system

    check_bind(settings)
    private_folder(settings.home)
    services = Services(home=describe(settings)["home"], started_at=time.time())
    try:
        init_ray(start=False)
        joined = ray.get_runtime_context().gcs_address
        say(f"joining the running Ray at {joined} (not started here: stop leaves it running)")
    except ConnectionError:
        say(f"starting a Ray head on {LOOPBACK} (dashboard on 127.0.0.1:8265) ...")
        services.started_ray = True
        services.ray_session = _start_head()
        records.write(settings.home, services)  # from here on, stop knows what to undo
        init_ray(f"{LOOPBACK}:{RAY_HEAD_PORT}", start=False)
    services.ray_address = ray.get_runtime_context().gcs_address
    running = _running_settings()
    if running is not None:
        problems = differences(describe(settings), running)
        if problems and not adopt:
            ray.shutdown()
            raise ConfigurationError(
                "a system with other settings is running here ("
                + "; ".join(problems)
                + f"). Stop it first ({_stop_hint(running, settings)}), or pass --adopt "
                "to use it as it is"
            )
        services.adopted = bool(problems)
        if problems:
            say("ADOPTING the running system AS IT IS; its settings differ from those asked:")
            for problem in problems:
                say(f"  {problem}")
        else:
            say("joining the running system (same settings)")
    if not services.adopted:
        _internal_kv_put(_SETTINGS_KEY, json.dumps(describe(settings)), namespace=NAMESPACE)
    records.write(settings.home, services)
    sizes = ", ".join(f"{r.value} {s.min}-{s.max}" for r, s in settings.pools.items())
    say("checking the running actors ..." if running else f"starting pools ({sizes}) ...")
    start_system(settings.for_actors(), detached=True)
    say(f"starting the HTTP app on {settings.http_host}:{settings.http_port} ...")
    deploy(settings.for_actors(api_token=True))
    if settings.telegram_bot_token is not None:
        services.bot = _start_bot(settings, services.ray_address)
        say(f"bot started (pid {services.bot.pid}, log {settings.home / 'bot.log'})")
    elif settings.telegram_api_base_url:
        say("no TELEGRAM_BOT_TOKEN: the Telegram bot is not started")
    records.write(settings.home, services)
    ray.shutdown()  # this driver is done; the detached actors and Serve stay up
    url = http_url(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if get_json(f"{url}/health")[0] == 200:
            return services
        time.sleep(0.5)
    raise ConfigurationError(f"the system did not become healthy at {url}/health in time")


def _start_head() -> str:
    """``ray start --head`` on loopback with the dashboard; returns the session's name."""
    from actors.runtime.system import LOOPBACK

    command = [_ray_bin(), "start", "--head", f"--node-ip-address={LOOPBACK}",
               f"--port={RAY_HEAD_PORT}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", "--disable-usage-stats"]  # fmt: skip
    # Ray's single-machine switch: else it swaps 127.0.0.1 for the machine's outward address.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise ConfigurationError(
            "could not start a Ray head: " + (done.stderr or done.stdout).strip()[-2000:]
        )
    for process in psutil.process_iter(["name", "cmdline"]):
        args = process.info["cmdline"] or []
        if process.info["name"] == "gcs_server" and f"--gcs_server_port={RAY_HEAD_PORT}" in args:
            return next(a.split("=", 1)[1] for a in args if a.startswith("--session-name="))
    raise ConfigurationError("the Ray head started, but its GCS process is not to be found")


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _running_settings() -> dict[str, Any] | None:
    """The running system's description (live pool sizes over the recorded ones), or None
    when no actor of a system exists in this cluster."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    found = {name: handle for name in _ACTOR_NAMES if (handle := _actor(name)) is not None}
    if not found:
        return None
    stored = _internal_kv_get(_SETTINGS_KEY, namespace=NAMESPACE)
    running: dict[str, Any] = json.loads(stored) if stored else {}
    pools = dict(running.get("pools") or {})
    for role in Role:
        handle = found.get(pool_actor_name(role))
        if handle is None:
            continue
        with contextlib.suppress(Exception):  # a hung or dying pool: the record stands
            snapshot = cast(PoolSnapshot, ray.get(handle.snapshot.remote(), timeout=10))
            pools[role.value] = [snapshot.min, snapshot.max]
    running["pools"] = pools
    return running


def _actor(name: str) -> Any:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _stop_hint(running: dict[str, Any], settings: Settings) -> str:
    home = running.get("home")
    if home and home != describe(settings)["home"]:
        return f"PARALLEL_AGENTS_HOME={home} parallel-agents stop"
    return "parallel-agents stop"


def _start_bot(settings: Settings, ray_address: str | None) -> ServiceProcess:
    log_fd = os.open(settings.home / "bot.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    env = os.environ.copy()
    if ray_address:
        env["RAY_ADDRESS"] = ray_address  # this cluster, and never a Ray of its own
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives this command; stop signals its group
        env=env,
    )
    os.close(log_fd)
    return ServiceProcess.of(process.pid)


def stop(
    settings: Settings, *, drain_timeout_s: float = DRAIN_TIMEOUT_S, say: Say = print
) -> Stopped:
    """Tear down what ``start`` started: the bot, Serve, the actors, and Ray if it was ours."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # no Ray call below may start a Ray
    services = records.read(settings.home)
    outcome = Stopped()
    if services is not None and services.bot is not None:
        if terminate(services.bot):
            say(f"bot (pid {services.bot.pid}) stopped")
        else:
            say(f"bot (pid {services.bot.pid}) was no longer running: nothing signalled")
    if services is None:
        say(f"nothing recorded in {settings.home}: looking for a running system")
    address = services.ray_address if services is not None else None
    ours_gone = (
        services is not None
        and services.started_ray
        and not records.session_processes(services.ray_session)
    )
    if ours_gone:  # whatever answers at that address now is not the Ray start began
        say("the Ray head start began is gone (a reboot, a crash): nothing of it to stop")
    connected = not ours_gone and _connect(address, say)
    if connected:
        _stop_system(settings, drain_timeout_s, outcome, say)
        import ray

        ray.shutdown()
    if outcome.refused:
        pass
    elif services is not None and services.started_ray:
        if not ours_gone:
            _stop_head(services, outcome, say)
    elif connected:
        outcome.left.append(f"Ray at {address or 'this machine'} (start did not start it)")
    if not outcome.refused:
        records.forget(settings.home)
    return outcome


def _connect(address: str | None, say: Say) -> bool:
    from actors.runtime.system import init_ray

    try:
        init_ray(address, start=False)
    except ConnectionError:
        say(f"no Ray answers at {address}" if address else "no Ray is running")
        return False
    return True


def _stop_system(settings: Settings, drain_timeout_s: float, outcome: Stopped, say: Say) -> None:
    import ray
    from ray import serve
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

    from actors.llm.model_client import stop_model_clients

    stored = _internal_kv_get(_SETTINGS_KEY, namespace=NAMESPACE)
    theirs = json.loads(stored).get("home") if stored else None
    exists = any(_actor(name) is not None for name in _ACTOR_NAMES)
    if theirs is not None and theirs != describe(settings)["home"] and exists:
        outcome.refused = True
        outcome.left.append(
            f"the system here was started with PARALLEL_AGENTS_HOME={theirs}: nothing of it "
            f"stopped; run `PARALLEL_AGENTS_HOME={theirs} parallel-agents stop`"
        )
        return
    with contextlib.suppress(Exception):  # first, so that no new task arrives while draining
        serve.shutdown()
        say("HTTP app stopped")
    orchestrator = _actor(ORCHESTRATOR_NAME)
    if orchestrator is not None:
        _drain_orchestrator(orchestrator, settings, drain_timeout_s, say)
    handles = [(name, handle) for name in _ACTOR_NAMES if (handle := _actor(name)) is not None]
    pools = [handle for name, handle in handles if name.startswith("pool-")]
    with contextlib.suppress(Exception):  # agents die with their pools; shut them down first
        ray.get([pool.shutdown.remote() for pool in pools], timeout=30)
    for _, handle in handles:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)
    stop_model_clients()
    if handles:
        say("pools and orchestrator stopped")
    outcome.left += [f"actor {name} (would not die)" for name in _ACTOR_NAMES if _actor(name)]
    with contextlib.suppress(Exception):
        _internal_kv_del(_SETTINGS_KEY, namespace=NAMESPACE)


def _drain_orchestrator(orchestrator: Any, settings: Settings, timeout_s: float, say: Say) -> None:
    import ray

    def active() -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = ray.get(orchestrator.active.remote(), timeout=10)
        return tasks

    try:
        running = active()
        if running:
            say(f"waiting up to {timeout_s:.0f} s for {len(running)} running task(s) ...")
            running = drain(active, timeout_s)
    except Exception as exc:  # the orchestrator is dead or hung: what it held is stored
        say(f"could not ask the orchestrator for its tasks ({type(exc).__name__})")
        return
    if running:
        listed = ", ".join(f"{t['task_id']} ({t['done']}/{t['total']})" for t in running)
        say(
            f"{len(running)} task(s) still running after {timeout_s:.0f} s: {listed}. They "
            f"stay in the store in {settings.home} and resume on the next `parallel-agents "
            "start` (finished microtasks are not redone)"
        )
    else:
        say("no task running")


def _stop_head(services: Services, outcome: Stopped, say: Say) -> None:
    alive = records.end_session(services.ray_session)
    if alive is None:
        say("Ray had already stopped")
        return
    outcome.left += [f"Ray process {p.pid} (would not die)" for p in alive]
    with contextlib.suppress(Exception):  # as ``ray stop`` does: no later driver looks there
        from ray._private.utils import get_ray_address_file

        address_file = Path(get_ray_address_file(None))
        if address_file.read_text().strip() == services.ray_address:
            address_file.unlink()
    say("Ray stopped")


def status(settings: Settings) -> dict[str, Any] | None:
    """The ``/status`` JSON, or None when the HTTP app does not answer."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    code, body = get_json(f"{http_url(settings)}/status", token=token)
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
