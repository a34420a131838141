"""The system on a head + 2 worker Ray cluster: placement, a complex task, losing a node mid-task.

A ``ray.cluster_utils.Cluster`` cannot share this session's Ray, so
``multinode_scenario.py`` runs in its own process with its own cluster (and its
own ``RAY_TMPDIR``, so tearing it down does not touch any other Ray's address
file) and prints one JSON line of findings that the tests below read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

SCENARIO = Path(__file__).with_name("multinode_scenario.py")
MICROTASKS = 12

# The scenario runs in the fixture of whichever test comes first: ~1-2 min, more on a busy machine.
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def findings() -> dict[str, Any]:
    """Run the scenario once; its findings, or a failure showing its output."""
    # Short: Ray's socket paths live under it and must stay under ~100 characters.
    with tempfile.TemporaryDirectory(prefix="pamn-", dir="/tmp") as tmp:
        env = {**os.environ, "RAY_TMPDIR": tmp}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(
            [sys.executable, str(SCENARIO)],
            capture_output=True,
            text=True,
            env=env,
            timeout=360,
        )
    # Ray's raylet may print to stdout too; the findings are the last JSON object line.
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        pytest.fail(f"no findings (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    found: dict[str, Any] = json.loads(lines[-1])
    if "error" in found:
        pytest.fail(f"scenario failed: {found['error']}\n{json.dumps(found, indent=1)}")
    return found


def test_head_keeps_the_control_actors_and_agents_spread(findings):
    assert all(findings["pinned_on_head"].values()), findings["pinned_on_head"]
    # SPREAD is best effort: on a loaded machine each pool's agents may share a node (seen in
    # CI: research, analysis and validation each on one, three machines in all), but the
    # pools together must use more than one machine.
    every_node = {n for nodes in findings["placement"].values() for n in nodes}
    assert len(every_node) >= 2, findings["placement"]
    assert every_node <= {findings["head"], *findings["workers"]}
    assert every_node & set(findings["workers"])  # the workers are really used


def test_a_complex_task_completes_across_nodes(findings):
    first = findings["first"]
    assert first["state"] == "done"
    assert first["microtasks"] == first["succeeded"] == MICROTASKS
    assert first["failed"] == 0
    assert first["nodes"] >= 2


def test_task_survives_losing_a_worker_mid_task(findings):
    assert findings["agents_on_removed_node"]  # the node held agents, one of them busy
    assert findings["pools_on_removed_node"] == []  # pools stay on the head with the orchestrator
    after = findings["after_loss"]
    assert after["state"] == "done"
    assert after["succeeded"] == MICROTASKS
    assert after["failed"] == 0
    assert after["retries"] >= 1  # the call lost with the node ran again elsewhere


def test_lost_agents_are_recreated_on_the_remaining_nodes(findings):
    removed = findings["removed_node"]
    assert removed not in findings["alive_nodes"]
    for role, pool in findings["restored"].items():
        assert pool["ready"] >= pool["min"], (role, pool)
        assert removed not in pool["nodes"], (role, pool)
    lost_roles = {agent.rsplit("-", 1)[0] for agent in findings["agents_on_removed_node"]}
    for role in lost_roles:
        assert findings["restored"][role]["replaced"] >= 1, role
