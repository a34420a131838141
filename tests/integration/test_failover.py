"""No single actor whose death stops the system; one orchestrator per home (real Ray).

The rate limiter and the simulator are SIGKILLed mid-task: Ray restarts them, callers find
them again by name (the simulator on the URL every client holds) and the task finishes with
nothing failed and no healthy agent replaced. A limiter killed for good leaves every process
limiting itself. The system here is a private run (``resume=False``) on a home whose store
holds another run's unfinished task: it must never be resumed (nor paid for), and a second
orchestrator on that home is refused.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest
import ray
from layers import layered  # tests/integration is on pythonpath
from ray.exceptions import RayActorError
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.config import LIMITER_NAME, NAMESPACE, Settings
from actors.engine.orchestrator import Orchestrator
from actors.engine.store import Store
from actors.llm import RateLimiterActor
from actors.models import Complexity, Microtask, Role, TaskState
from actors.runtime.system import System, start_system, stop_system

pytestmark = pytest.mark.ray

SEEDED_TASK = "seeded-task"


def _settings(home) -> Settings:
    return tiny_settings(
        2,
        2,
        home=home,
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 5},
        microtask_timeout_s=20.0,
        retry_backoff_s=0.2,
        health_interval_s=0.5,
        # Connection errors while the simulator restarts are retried with these waits.
        limiter={"max_concurrency": 8, "max_retry_wait_s": 2.0, "base_backoff_s": 0.2},
        backups=False,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home whose store holds another run's unfinished, already planned task."""
    home = tmp_path_factory.mktemp("failover-home")
    store = Store(home / "store.sqlite3")
    store.task_started(SEEDED_TASK, time.time() - 60, "another run's request, left unfinished")
    seeded = Microtask(
        id="seeded-0", role=Role.RESEARCH, title="seeded", instructions="Seeded. [sim-latency 0]"
    )
    store.plan_made(SEEDED_TASK, Complexity.SIMPLE, "given", [seeded])
    store.close()
    return home


@pytest.fixture(scope="module")
def system(ray_session, home):
    system = start_system(_settings(home), resume=False)  # what `parallel-agents run` does
    yield system
    stop_system(system)


def _requests(system: System) -> list[dict]:
    with urllib.request.urlopen(f"{system.base_url}/requests", timeout=10) as response:
        return json.loads(response.read())["requests"]


def _replaced(system: System) -> int:
    return sum(ray.get(pool.snapshot.remote()).replaced for pool in system.pools.values())


def _run_killing(system: System, prefix: str, kill) -> None:
    """Run a task, call ``kill`` once two microtasks are done; nothing may fail or be lost."""
    replaced = _replaced(system)
    plan = layered(prefix, (4, 3, 2), latency=0.5)
    orchestrator = system.orchestrator
    task_id = ray.get(orchestrator.submit.remote(f"survive {prefix}", plan))
    wait_until(lambda: ray.get(orchestrator.status.remote(task_id))["done"] >= 2)
    kill()
    report = ray.get(orchestrator.wait.remote(task_id), timeout=180)
    assert report.state is TaskState.DONE
    assert report.failed == 0 and report.succeeded == len(plan)
    later = ray.get(orchestrator.run.remote(f"after {prefix}", layered(f"{prefix}x", (3,), 0)))
    assert later.state is TaskState.DONE and later.failed == 0
    assert _replaced(system) == replaced  # no healthy agent was taken for dead


def test_a_private_run_never_resumes_another_runs_task(system, home):
    report = ray.get(system.orchestrator.run.remote("my own task", layered("p", (2,), 0)))
    assert report.state is TaskState.DONE
    asked = {r["microtask"] for r in _requests(system)}
    assert {"p0-0", "p0-1"} <= asked and "seeded-0" not in asked  # not paid for
    store = Store(home / "store.sqlite3")
    try:
        assert SEEDED_TASK in {task.task_id for task in store.unfinished()}  # left for its owner
    finally:
        store.close()


def test_a_second_orchestrator_on_the_same_home_is_refused(system, home):
    holder = ray.get(system.orchestrator.pid.remote())
    second = Orchestrator.options(name="second-orchestrator", namespace=NAMESPACE).remote(
        _settings(home).with_overrides(anthropic_base_url=system.base_url)
    )
    try:
        with pytest.raises(RayActorError) as refused:
            ray.get(second.ping.remote(), timeout=120)
    finally:
        ray.kill(second)
    message = str(refused.value)
    assert "another orchestrator" in message and f"pid {holder} " in message
    assert str(home.resolve()) in message
    assert ray.get(system.orchestrator.ping.remote())  # the first one is untouched
    # In the same cluster a second start joins the running system rather than competing.
    joined = start_system(_settings(home))
    assert joined.orchestrator._actor_id == system.orchestrator._actor_id


def test_the_limiter_killed_mid_task_restarts_and_is_found_again(system):
    limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
    old_pid = ray.get(limiter.pid.remote())
    _run_killing(system, "lim", lambda: os.kill(old_pid, signal.SIGKILL))
    assert ray.get(limiter.pid.remote()) != old_pid  # a new process ...
    snapshot = ray.get(limiter.snapshot.remote())
    assert snapshot.granted_total + snapshot.lent_total > 0  # ... that callers use again


def test_the_simulator_killed_mid_task_serves_again_on_the_same_url(system):
    old_pid = ray.get(system.simulator.pid.remote())
    _run_killing(system, "sim", lambda: os.kill(old_pid, signal.SIGKILL))
    assert ray.get(system.simulator.pid.remote()) != old_pid
    assert ray.get(system.simulator.url.remote()) == system.base_url
    assert any(r["microtask"] == "simx0-0" for r in _requests(system))  # served after it


def test_a_limiter_gone_for_good_leaves_every_process_limiting_itself(system, home):
    ray.kill(ray.get_actor(LIMITER_NAME, namespace=NAMESPACE), no_restart=True)
    try:
        replaced = _replaced(system)
        report = ray.get(
            system.orchestrator.run.remote("no limiter", layered("gone", (3, 2), 0.1)),
            timeout=180,
        )
        assert report.state is TaskState.DONE and report.failed == 0
        assert _replaced(system) == replaced
    finally:  # the system's limiter again, for stop_system and for later modules
        system.limiter = RateLimiterActor.options(  # type: ignore[attr-defined]
            name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True
        ).remote(_settings(home).limiter)
