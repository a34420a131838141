"""cluster.yaml and cluster-aws.yaml: valid for `ray up`, wired to the project's entry points.

Validation is Ray's own: ``prepare_config`` (fills the provider's defaults from the
``defaults.yaml`` shipped with Ray: no network, no cloud credentials, also for AWS; the
AWS bootstrap that does call EC2 runs only in ``ray up``) then ``validate_config`` (the
JSON schema ``ray/autoscaler/ray-schema.json``).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from actors.cli import main as cli
from actors.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["cluster.yaml", "cluster-aws.yaml"]
HEAD_RESOURCE = "parallel_agents_head"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def _prepared(name: str) -> dict[str, Any]:
    config = prepare_config(_load(name))
    validate_config(config)
    return config


def _ray_start(commands: list[str]) -> list[str]:
    """The arguments of the `ray start` in ``commands``."""
    for command in commands:
        match = re.search(r"ray start (.*)", command)
        if match:
            return shlex.split(match.group(1))
    raise AssertionError(f"no `ray start` in {commands}")


def _exports(commands: list[str]) -> dict[str, str]:
    """Variables set with `export A=B C=D` anywhere in ``commands``."""
    found: dict[str, str] = {}
    for command in commands:
        for match in re.finditer(r"export ((?:\w+=\S+\s*)+)", command):
            for pair in shlex.split(match.group(1)):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    return None


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_accepts_the_config(name):
    config = _prepared(name)
    assert config["cluster_name"] == "parallel-agents"
    assert config["head_node_type"] in config["available_node_types"]


def test_validation_catches_a_mistake():
    """The check above bites: a misspelt top-level key is rejected by Ray's schema."""
    broken = _load("cluster.yaml")
    broken["head_start_commands"] = broken.pop("head_start_ray_commands")
    with pytest.raises(Exception, match="head_start_commands"):
        validate_config(prepare_config(copy.deepcopy(broken)))


def test_local_config_has_only_addresses_and_ssh_to_fill_in():
    text = (ROOT / "cluster.yaml").read_text()
    marked = [line.split(":")[0].strip() for line in text.splitlines() if "# FILL IN" in line]
    assert marked == ["head_ip", "worker_ips", "ssh_user", "ssh_private_key"]
    config = _prepared("cluster.yaml")
    assert config["provider"]["type"] == "local"
    assert set(config["auth"]) == {"ssh_user", "ssh_private_key"}


def test_aws_variant_has_head_and_worker_types_with_bounds():
    config = _prepared("cluster-aws.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers
    for node_type in types.values():
        assert node_type["node_config"]["InstanceType"]
    for worker in workers:
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]


@pytest.mark.parametrize("name", CONFIGS)
def test_setup_installs_this_project_on_every_node(name):
    config = _prepared(name)
    (remote, local), *_ = config["file_mounts"].items()
    assert (ROOT / local / "pyproject.toml").exists()  # `ray up` runs from the repository root
    installs = [c for c in config["setup_commands"] if "pip install" in c and f"-e {remote}" in c]
    assert installs, config["setup_commands"]
    # setup_commands run on head and workers alike (prepare_config merges them into both).
    assert installs[0] in config["head_setup_commands"]
    assert installs[0] in config["worker_setup_commands"]


@pytest.mark.parametrize("name", CONFIGS)
def test_head_starts_ray_then_the_system_with_a_real_entry_point(name):
    commands = _prepared(name)["head_start_ray_commands"]
    start = [c for c in commands if "parallel-agents start" in c]
    assert start
    assert commands.index(start[0]) > commands.index(next(c for c in commands if "ray start" in c))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["parallel-agents"] == "actors.cli.main:main"
    with pytest.raises(SystemExit) as exit_:  # `start` is a real subcommand of that script
        cli.main(["start", "--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_listens_on_loopback_only(name):
    args = _ray_start(_prepared(name)["head_start_ray_commands"])
    assert "--head" in args
    assert _option(args, "--dashboard-host") == "127.0.0.1"


@pytest.mark.parametrize("name", CONFIGS)
def test_system_is_pinned_to_the_resource_the_head_declares(name, monkeypatch):
    config = _prepared(name)
    args = _ray_start(config["head_start_ray_commands"])
    declared = dict(config["available_node_types"][config["head_node_type"]]["resources"])
    if _option(args, "--resources"):  # local provider: declared on the `ray start` line
        declared |= json.loads(_option(args, "--resources") or "{}")
    assert declared.get(HEAD_RESOURCE, 0) >= 1
    for worker_type, spec in config["available_node_types"].items():
        if worker_type != config["head_node_type"]:
            assert HEAD_RESOURCE not in spec["resources"]

    exports = _exports(config["head_start_ray_commands"])
    assert exports["PARALLEL_AGENTS_HEAD_RESOURCE"] == HEAD_RESOURCE
    for key, value in exports.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the names are ones the system really reads
    assert settings.head_resource == HEAD_RESOURCE
    assert settings.simulator_host == exports["PARALLEL_AGENTS_SIMULATOR_HOST"]


@pytest.mark.parametrize("name", CONFIGS)
def test_workers_join_the_heads_port(name):
    config = _prepared(name)
    head_port = _option(_ray_start(config["head_start_ray_commands"]), "--port")
    address = _option(_ray_start(config["worker_start_ray_commands"]), "--address")
    assert address == f"$RAY_HEAD_IP:{head_port}"
