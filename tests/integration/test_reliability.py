"""Faults on real Ray: what is lost (nothing) and what is redone (only what must be).

Each test kills or breaks a part of the running system and then checks the outcome a
user sees, plus the simulator's request log for work that was paid for twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request

import pytest
import ray
from layers import layered  # tests/integration is on pythonpath
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.config import Settings
from actors.errors import CapacityError
from actors.models import Role, TaskState
from actors.runtime.system import start_system, stop_system


def _settings(**changes) -> Settings:
    base = {
        "simulator": {"latency": "fixed", "median_s": 0.05, "seed": 3},
        # The agent's clock leaves out waiting for the cluster's limiter (which the storm
        # cuts to a call or two at once): what it bounds is a hung call.
        "microtask_timeout_s": 5.0,
        # The storm hangs 2 % of calls: a hung writer or reconciler is given up after this
        # (answer stitched / claims grouped by topic) rather than the 300 s default.
        "synthesis_timeout_s": 20.0,
        "retry_backoff_s": 0.05,
        "health_interval_s": 0.5,
        # Every throttled answer makes all callers sit out its capped retry-after: with a
        # quarter of the storm's answers throttled, the cap sets how long the storm lasts.
        "limiter": {
            "max_concurrency": 8,
            "max_retry_wait_s": 0.3,
            "jitter_s": 0.1,
            "base_backoff_s": 0.05,
        },
        "backups": False,
    }
    base.update(changes)
    return tiny_settings(2, 3, **base)


@pytest.fixture(scope="module")
def system(ray_session, tmp_path_factory):
    settings = _settings(home=tmp_path_factory.mktemp("reliability-home"))
    system = start_system(settings)
    yield system
    stop_system(system)


def _agent_ids(pool) -> set[str]:
    return {agent.agent_id for agent in ray.get(pool.snapshot.remote()).agents}


def _requests(system) -> list[dict]:
    url = ray.get(system.simulator.url.remote())
    with urllib.request.urlopen(f"{url}/requests", timeout=10) as response:
        return json.loads(response.read())["requests"]


def test_a_third_of_all_agents_killed_mid_task(system):
    plan = layered("k", (6, 4, 2, 1), latency=1.0)
    task_id = ray.get(system.orchestrator.submit.remote("survive dead agents", plan))
    wait_until(lambda: ray.get(system.orchestrator.status.remote(task_id))["done"] >= 1)
    pids = {}
    for pool in system.pools.values():
        pids.update(ray.get(pool.agent_pids.remote()))
    victims = sorted(pids)[::3]  # every third agent, a third of all of them
    for agent_id in victims:
        os.kill(pids[agent_id], signal.SIGKILL)
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=180)
    assert report.state is TaskState.DONE
    assert report.failed == 0 and report.succeeded == len(plan)
    for pool in system.pools.values():
        wait_until(lambda pool=pool: (s := ray.get(pool.snapshot.remote())).size >= s.min)


def test_an_agent_that_stops_answering_is_given_up_and_its_work_runs_elsewhere(system):
    pool = system.pools[Role.RESEARCH]
    victim_id, victim = sorted(ray.get(pool.agent_pids.remote()).items())[0]
    os.kill(victim, signal.SIGSTOP)  # alive to the OS, silent to Ray: no error ever comes
    try:
        plan = layered("z", (6,), latency=0.2)
        running = system.orchestrator.run.remote("survive a frozen agent", plan)
        report = ray.get(running, timeout=180)
        assert report.state is TaskState.DONE and report.failed == 0, report.missing
        wait_until(lambda: victim_id not in _agent_ids(pool), timeout_s=60)  # given up, replaced
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)


def test_orchestrator_killed_mid_task_resumes_without_redoing_finished_work(system):
    plan = layered("o", (3, 3, 2), latency=1.0)
    orchestrator = system.orchestrator
    task_id = ray.get(orchestrator.submit.remote("survive a dead orchestrator", plan))
    status = wait_until(
        lambda: (s := ray.get(orchestrator.status.remote(task_id)))["done"] >= 3 and s
    )
    finished_before = {m for m, state in status["microtasks"].items() if state == "done"}
    os.kill(ray.get(orchestrator.pid.remote()), signal.SIGKILL)
    report = ray.get(orchestrator.wait.remote(task_id), timeout=180)  # retried across restart
    assert report.state is TaskState.DONE and report.failed == 0, report.missing
    asked = [r["microtask"] for r in _requests(system) if r["status"] == 200 and r["microtask"]]
    for microtask_id in finished_before:
        assert asked.count(microtask_id) == 1, f"{microtask_id} was paid for twice"
    assert ray.get(orchestrator.wait.remote(task_id)).task_id == task_id  # answered again, same


def test_provider_storm_all_tasks_complete_and_the_limiter_backs_off(system):
    simulator, limiter, orchestrator = system.simulator, system.limiter, system.orchestrator
    storm = {"rate_429": 0.2, "rate_529": 0.05, "rate_500": 0.05, "rate_malformed": 0.05,
             "rate_hang": 0.02, "hang_s": 120.0, "retry_after_s": 30.0}  # fmt: skip
    ray.get(simulator.reconfigure.remote(storm))
    lowest = float(ray.get(limiter.snapshot.remote()).max_concurrency)
    try:
        task_ids = [
            ray.get(orchestrator.submit.remote(f"storm {n}", layered(f"s{n}-", (3, 2, 1), 0.05)))
            for n in range(20)
        ]

        def all_ended() -> bool:
            nonlocal lowest
            lowest = min(lowest, ray.get(limiter.snapshot.remote()).concurrency_limit)
            states = [ray.get(orchestrator.status.remote(t))["state"] for t in task_ids]
            return all(state in ("done", "failed", "cancelled") for state in states)

        wait_until(all_ended, timeout_s=240, every_s=0.2)
    finally:
        ray.get(simulator.reconfigure.remote({k: 0.0 for k in storm if k.startswith("rate")}))
    reports = [ray.get(orchestrator.wait.remote(t)) for t in task_ids]
    # DONE alone is also the state of a task whose microtasks failed: nothing may be lost.
    assert all(r.state is TaskState.DONE for r in reports)
    assert [(r.failed, r.succeeded) for r in reports] == [(0, 6)] * 20
    snapshot = ray.get(limiter.snapshot.remote())
    assert lowest < snapshot.max_concurrency  # it backed off during the storm
    assert snapshot.longest_wait_s <= 0.3 + 0.1  # capped (plus jitter), not 30 s
    for n in range(10):
        ray.get(orchestrator.run.remote(f"calm {n}", layered(f"c{n}-", (4,), 0.01)))
    assert ray.get(limiter.snapshot.remote()).concurrency_limit > lowest  # and it recovers


def test_admission_limits_refuse_clearly_and_lose_nothing(ray_session, system):
    orchestrator = system.orchestrator
    plan = layered("l", (1,), latency=0.5)
    accepted, refused = [], 0
    for n in range(60):
        try:
            accepted.append(ray.get(orchestrator.submit.remote(f"load {n}", plan, "load-user")))
        except CapacityError as exc:
            refused += 1
            assert "limit" in str(exc)
    assert refused > 0 and accepted  # the per-user limit bites, the rest runs
    reports = [ray.get(orchestrator.wait.remote(t), timeout=120) for t in accepted]
    assert all(r.state is TaskState.DONE for r in reports)
