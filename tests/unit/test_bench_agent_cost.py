"""``bench --agents``: the import-time breakdown, the targets and the report; and what
``import actors.agents.agent`` really loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors.bench.agent_cost import (
    NO_SDK_MODULES,
    AgentCostResults,
    KindCost,
    checks,
    group_of,
    import_shares,
    markdown,
    own_modules,
    parse_importtime,
    unwanted_modules,
)

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      3000 |       3000 |       httpx2._client
import time:    700000 |     703000 |     anthropic
import time:      9000 |       9000 |     pydantic_core
import time:     40000 |      40000 |   ray
import time:      5000 |       5000 |     actors.llm.client
import time:      2000 |     759120 | actors.agents.agent
not a line of importtime
import time:       880 |        880 |   _io
"""


def test_importtime_lines_give_each_module_its_own_time() -> None:
    parsed = parse_importtime(IMPORTTIME)
    assert parsed["anthropic"] == 700_000  # self, not cumulative
    assert parsed["_io"] == 1_000  # imported in two pasted runs: added up
    assert parsed["actors.agents.agent"] == 2_000
    assert "package" not in parsed and len(parsed) == 7


@pytest.mark.parametrize(
    ("module", "group"),
    [
        ("actors.llm.client", "actors.*"),
        ("actors", "actors.*"),
        ("httpx2._client", "httpx"),
        ("pydantic_core", "pydantic"),
        ("ray._private.worker", "ray"),
        ("opentelemetry.sdk.trace", "opentelemetry"),
    ],
)
def test_modules_are_charged_to_their_package(module: str, group: str) -> None:
    assert group_of(module) == group


def test_shares_put_the_named_packages_first_and_sum_the_rest() -> None:
    rows = import_shares(parse_importtime(IMPORTTIME), others=0)
    assert [r.group for r in rows] == ["anthropic", "httpx", "pydantic", "ray", "actors.*", "other"]
    assert rows[0].self_ms == 700.0
    assert rows[-2].self_ms == 7.0  # actors.agents.agent and actors.llm.client
    assert rows[-1].self_ms == 1.0  # _io, twice
    assert sum(r.share for r in rows) == pytest.approx(1.0, abs=1e-3)


def test_own_modules_are_the_slowest_of_ours() -> None:
    assert [r.group for r in own_modules(parse_importtime(IMPORTTIME))] == [
        "actors.llm.client",
        "actors.agents.agent",
    ]


def test_unwanted_modules_match_packages_not_prefixes() -> None:
    loaded = ["opentelemetry", "opentelemetry.trace", "actors.storefront", "matplotlib.pyplot"]
    assert unwanted_modules(loaded) == ["matplotlib"]  # the API alone is the SDK's business
    assert unwanted_modules(["opentelemetry.sdk.trace"]) == ["opentelemetry.sdk"]


def _results(count: int, agent_uss: float, agent_idle: float, ready_s: float) -> AgentCostResults:
    kinds = [
        KindCost(kind="bare", count=count, ready_s=3.9, median_ready_s=3.0, uss_mb=49.0,
                 rss_mb=91.0, idle_cpu_pct=0.44),
        KindCost(kind="agent", count=count, ready_s=ready_s, median_ready_s=ready_s / 2,
                 uss_mb=agent_uss, rss_mb=agent_uss + 45, idle_cpu_pct=agent_idle,
                 start_cpu_s=2.5),
    ]  # fmt: skip
    return AgentCostResults(count=count, kinds=kinds)


def test_targets_judge_memory_idle_cpu_and_start_at_their_sizes() -> None:
    heavy = {c.target: c.met for c in checks(_results(12, 103.0, 0.8, 10.9))}
    assert heavy["agent USS <= 60 MB"] is False
    assert heavy["agent idle CPU within 0.1 points of a bare actor"] is False
    assert heavy["30 agent ready from cold start <= 15 s"] is None  # not measured at 12
    assert not any(target.startswith("agent-no-sdk") for target in heavy)  # not in this run
    light = {c.target: c.met for c in checks(_results(30, 58.0, 0.5, 14.0))}
    assert light["agent USS <= 60 MB"] is True
    assert light["agent idle CPU within 0.1 points of a bare actor"] is True
    assert light["30 agent ready from cold start <= 15 s"] is True
    assert light["100 agent ready from cold start <= 60 s"] is None


def test_the_report_shows_every_kind_and_the_verdicts() -> None:
    results = _results(12, 103.0, 0.8, 10.9)
    results.checks = checks(results)
    results.imports = import_shares(parse_importtime(IMPORTTIME))
    report = markdown(results)
    assert "| agent | 10.90 | 5.45 | 2.50 | 103.0 | 148.0 | 0.80 |" in report
    assert "| anthropic | 700.0 | 92% |" in report
    assert "| agent USS <= 60 MB | 103.0 MB | MISSED |" in report


def test_an_agent_imports_no_simulator_tracing_sdk_or_front_door() -> None:
    listing = "import json, sys, actors.agents.agent; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True, timeout=120
    )
    modules = json.loads(done.stdout)
    assert "actors.agents.agent" in modules
    assert unwanted_modules(modules) == []


def test_an_agent_without_the_sdk_loads_neither_sdk_nor_http_client() -> None:
    """What the ``agent-no-sdk`` kind measures is what its name says."""
    listing = (
        f"import json, sys, {', '.join(NO_SDK_MODULES)}; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert "actors" in loaded
    assert loaded.isdisjoint({"anthropic", "httpx", "httpx2", "aiohttp", "opentelemetry"})
