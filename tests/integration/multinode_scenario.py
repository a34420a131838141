"""The system on a three-node Ray cluster, losing a worker node mid-task.

Run by tests/integration/test_multinode.py in its own process (a
``ray.cluster_utils.Cluster`` cannot share the test session's Ray). It prints
one JSON line of findings on stdout; the test asserts on them.

The cluster: a head with the ``parallel_agents_head`` resource (orchestrator,
limiter and simulator are pinned there, as cluster.yaml does) and two workers.
Ray's node health check is tightened so a killed node is declared dead in a
few seconds instead of ~15.

Set ``RAY_TMPDIR`` to a fresh short folder before running: Ray keeps the
"current cluster" address file in its temp folder and ``Cluster.shutdown``
deletes it, which must not disturb other Ray instances on the machine.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from actors.config import Settings, pool_actor_name
from actors.models import Microtask, PoolSnapshot, Role, RunReport
from actors.runtime.system import System, init_ray, start_system, stop_system

HEAD_RESOURCE = "parallel_agents_head"
TEXT = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)
LATENCY_S = 1.0

log = logging.getLogger("multinode_scenario")


def plan(prefix: str = "") -> list[Microtask]:
    """Twelve microtasks in four layers: 6 research → 3 analysis → 2 validation → 1 generation."""

    def mt(id_: str, role: Role, deps: list[str]) -> Microtask:
        return Microtask(
            id=prefix + id_,
            role=role,
            title=f"{role.value} {id_}",
            instructions=f"Work on part {id_} of the request. [sim-latency {LATENCY_S}]",
            depends_on=[prefix + d for d in deps],
        )

    research = [mt(f"r{i}", Role.RESEARCH, []) for i in range(1, 7)]
    analysis = [mt(f"a{i}", Role.ANALYSIS, [f"r{2 * i - 1}", f"r{2 * i}"]) for i in range(1, 4)]
    validation = [mt("v1", Role.VALIDATION, ["a1", "a2"]), mt("v2", Role.VALIDATION, ["a3"])]
    generation = [mt("g1", Role.GENERATION, ["v1", "v2"])]
    return research + analysis + validation + generation


def settings(home: Path) -> Settings:
    return Settings().with_overrides(
        home=home,
        head_resource=HEAD_RESOURCE,
        spread_agents=True,
        pools={
            "research": {"min": 2, "max": 3},
            "analysis": {"min": 1, "max": 1},
            "generation": {"min": 1, "max": 1},
            "validation": {"min": 1, "max": 1},
        },
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 3},
        # Small enough that a call lost with its node is retried elsewhere soon.
        microtask_timeout_s=5.0,
        llm_timeout_s=20.0,
        retry_backoff_s=0.1,
        max_attempts=4,
        upscale_delay_s=0.2,
        downscale_delay_s=30.0,
        health_interval_s=0.5,
        backups=False,
    )


def snapshots(system: System) -> dict[Role, PoolSnapshot]:
    return {
        role: snap
        for role, snap in zip(
            system.pools,
            ray.get([pool.snapshot.remote() for pool in system.pools.values()], timeout=30),
            strict=True,
        )
    }


def seen(found: dict[str, Any], snaps: dict[Role, PoolSnapshot]) -> None:
    """Add the nodes each pool's agents are on now to ``found["placement"]``."""
    placement = found.setdefault("placement", {})
    for role, snap in snaps.items():
        nodes = set(placement.get(role.value, [])) | {a.node_id for a in snap.agents if a.node_id}
        placement[role.value] = sorted(nodes)


def agent_nodes(system: System) -> dict[str, str | None]:
    return {a.agent_id: a.node_id for s in snapshots(system).values() for a in s.agents}


def actor_nodes() -> dict[str, str]:
    """Node of every live named actor (Ray's GCS actor table; no dashboard needed)."""
    table = ray._private.state.actors()  # type: ignore[attr-defined]
    return {
        info["Name"]: info["Address"]["NodeID"]
        for info in table.values()
        if info.get("Name") and info.get("State") == "ALIVE"
    }


def run_and_lose_a_node(
    system: System, cluster: Cluster, workers: dict[str, Any], found: dict[str, Any]
) -> RunReport:
    """Submit the plan; once a microtask runs on a worker, kill that worker; wait for the report."""
    orchestrator = system.orchestrator
    task_id = ray.get(orchestrator.submit.remote(TEXT, plan("x")), timeout=30)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        snaps: list[PoolSnapshot] = ray.get(orchestrator.pools.remote(), timeout=30)
        busy = [a.node_id for s in snaps for a in s.agents if a.in_flight and a.node_id in workers]
        victim = busy[0] if busy else None
        time.sleep(0.05)
    if victim is None:
        raise RuntimeError("no microtask ran on a worker node")
    nodes = agent_nodes(system)
    seen(found, snapshots(system))
    found["removed_node"] = victim
    found["agents_on_removed_node"] = sorted(a for a, n in nodes.items() if n == victim)
    found["pools_on_removed_node"] = sorted(
        name for name, n in actor_nodes().items() if n == victim and name.startswith("pool-")
    )
    removed_at = time.monotonic()
    cluster.remove_node(workers.pop(victim), allow_graceful=False)  # as if the machine died
    report: RunReport = ray.get(orchestrator.wait.remote(task_id, 120.0), timeout=150)
    found["recovery_task_s"] = round(time.monotonic() - removed_at, 1)
    return report


def wait_restored(system: System, removed: str, timeout_s: float = 45.0) -> dict[Role, Any]:
    """Wait until every pool is back to its minimum of ready agents, none on ``removed``."""
    deadline = time.monotonic() + timeout_s
    while True:
        snaps = snapshots(system)
        restored = all(
            sum(a.state != "starting" for a in s.agents) >= s.min
            and all(a.node_id != removed for a in s.agents)
            for s in snaps.values()
        )
        if restored or time.monotonic() > deadline:
            return snaps
        time.sleep(0.5)


def summary(report: RunReport) -> dict[str, Any]:
    return {
        "state": report.state.value,
        "microtasks": report.microtasks,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "retries": report.retries,
        "nodes": len({e.node for e in report.timeline if e.node}),
        "wall_s": round(report.wall_s, 1),
    }


def scenario(cluster: Cluster, workers: dict[str, Any], home: Path, found: dict[str, Any]) -> None:
    """Fill ``found`` as the scenario goes, so a failure still reports how far it got."""
    found.update(head=cluster.head_node.node_id, workers=sorted(workers))
    started = time.monotonic()
    system = start_system(settings(home))
    try:
        found["system_start_s"] = round(time.monotonic() - started, 1)
        seen(found, snapshots(system))
        named = actor_nodes()
        control = ["orchestrator", "rate-limiter", "llm-simulator"]
        found["pinned_on_head"] = {
            name: named.get(name) == found["head"]
            for name in control + [pool_actor_name(role) for role in Role]
        }
        found["first"] = summary(ray.get(system.orchestrator.run.remote(TEXT, plan()), timeout=150))
        seen(found, snapshots(system))  # the pools grew during the run: where did agents go?
        started = time.monotonic()

        report = run_and_lose_a_node(system, cluster, workers, found)
        found["after_loss"] = summary(report)
        found["loss_phase_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        snaps = wait_restored(system, found["removed_node"])
        found["restore_wait_s"] = round(time.monotonic() - started, 1)
        found["restored"] = {
            role.value: {
                "min": s.min,
                "ready": sum(a.state != "starting" for a in s.agents),
                "nodes": sorted({a.node_id for a in s.agents if a.node_id}),
                "replaced": s.replaced,
            }
            for role, s in snaps.items()
        }
        found["alive_nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    finally:
        stop_system(system)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {HEAD_RESOURCE: 1},
            "include_dashboard": False,
            # Declare a killed node dead after ~3 s rather than Ray's default ~15 s.
            "_system_config": {
                "health_check_initial_delay_ms": 1000,
                "health_check_period_ms": 1000,
                "health_check_timeout_ms": 1000,
                "health_check_failure_threshold": 3,
            },
        },
    )
    found: dict[str, Any] = {}
    try:
        workers = {}
        for _ in range(2):
            node = cluster.add_node(num_cpus=1)
            workers[node.node_id] = node
        cluster.wait_for_nodes()
        found["cluster_start_s"] = round(time.monotonic() - started, 1)
        init_ray(cluster.address)
        with tempfile.TemporaryDirectory(prefix="pa-home-") as home:
            scenario(cluster, workers, Path(home), found)
    except Exception as exc:  # report what went wrong as a finding, then fail
        found["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("scenario failed")
    finally:
        ray.shutdown()
        cluster.shutdown()
    found["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(found), flush=True)
    return 1 if "error" in found else 0


if __name__ == "__main__":
    sys.exit(main())
