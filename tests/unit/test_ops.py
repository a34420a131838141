"""The shipped alert rules and Grafana dashboard: valid, and over names /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.config import LimiterSettings
from actors.gateway.metrics import prometheus_text
from actors.llm.limiter import Outcome, RateLimiter, Release
from actors.models import AgentInfo, AgentState, EventKind, PoolSnapshot, ProgressEvent, Role
from actors.observe.stats import Stats
from tests.unit.factories import report

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "alerts.yml"
DASHBOARD = OPS / "grafana-dashboard.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every scrape target

# PromQL words that look like metric names but are not: operators, modifiers, literals.
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")  # label matchers: names in them are labels
_RANGES = re.compile(r"\[[^\]]*\]")  # [5m], [1h:1m]
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A whole name (not part of one), and not a function's: no "(" after it.
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords left out)."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(expr) if name.lower() not in _KEYWORDS}


async def _exported_names() -> set[str]:
    """Every sample name in a ``/metrics`` text built from real, populated objects."""
    stats = Stats()
    for seq, (kind, duration) in enumerate(
        [(EventKind.FINISHED, 0.3), (EventKind.FAILED, None), (EventKind.RETRIED, None)]
    ):
        stats.observe(
            ProgressEvent(seq=seq, kind=kind, task_id="t1", role=Role.RESEARCH, duration_s=duration)
        )
    stats.observe(ProgressEvent(seq=3, kind=EventKind.BACKUP, task_id="t1", role=Role.RESEARCH))
    stats.task_finished(report(wall_s=2.0, cost_usd=0.01))
    agent = AgentInfo(
        agent_id="research-00", node_id="n", state=AgentState.BUSY, in_flight=1, completed=0,
        failed=0,
    )  # fmt: skip
    pool = PoolSnapshot(
        role=Role.RESEARCH, min=1, max=2, size=1, busy=1, idle=0, queued=3, running=1,
        utilization=100.0, completed=1, failed=1, replaced=0, pressure=0.0, agents=[agent],
    )  # fmt: skip
    limiter = RateLimiter(LimiterSettings())
    for outcome in (Outcome.OK, Outcome.RATE_LIMITED, Outcome.OVERLOADED):
        await limiter.release(Release(await limiter.acquire(10, 10), outcome))
    text = prometheus_text(
        stats.snapshot(active_tasks=1), [pool], limiter.snapshot_now(), daily_budget_usd=100.0
    )
    families = text_string_to_metric_families(text.decode())
    return {sample.name for family in families for sample in family.samples}


@pytest.fixture(scope="module")
async def exported() -> set[str]:
    return await _exported_names()


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panel_exprs() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def _unknown(expr: str, exported: set[str]) -> set[str]:
    return metric_names(expr) - exported - PROMETHEUS_OWN


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:  # .ci/run installs Debian's prometheus package, which has promtool
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout


def test_the_metric_name_reader_sees_names_and_nothing_else():
    expr = (
        'sum by (outcome) (rate(parallel_agents_llm_requests_total{outcome=~"a|b"}[5m]))'
        " / ignoring (outcome) group_left sum(rate(parallel_agents_llm_requests_total[5m]))"
        " > 0.25 and on (pool) up offset 1h > bool 1e3"
    )
    assert metric_names(expr) == {"parallel_agents_llm_requests_total", "up"}
    assert metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(x_bucket[30m]))) > 2 * y / 24"
    ) == {"x_bucket", "y"}


async def test_every_rule_names_only_exported_metrics(exported):
    assert {"parallel_agents_task_duration_seconds_bucket", "parallel_agents_daily_budget_usd"} <= (
        exported
    )
    for rule in _rules():
        assert metric_names(rule["expr"]), rule["alert"]
        assert not _unknown(rule["expr"], exported), rule["alert"]


async def test_a_rule_over_a_metric_that_does_not_exist_is_caught(exported):
    [rule] = [r for r in _rules() if r["alert"] == "TaskFailureRateHigh"]
    misspelt = rule["expr"].replace("parallel_agents_tasks_total", "parallel_agents_task_total")
    assert _unknown(misspelt, exported) == {"parallel_agents_task_total"}


async def test_every_dashboard_panel_names_only_exported_metrics(exported):
    exprs = _panel_exprs()
    assert len(exprs) >= 15
    for title, expr in exprs:
        assert not _unknown(expr, exported), title


def test_every_rule_says_how_long_how_bad_and_what_to_look_at():
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "ParallelAgentsDown", "TaskFailureRateHigh", "TaskLatencyP95High", "BudgetBurnFast",
        "PoolSaturated", "PoolQueueGrowing", "ProviderThrottlingStorm",
    }  # fmt: skip
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert len(rule["annotations"]["summary"]) > 20, rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]


def test_the_dashboard_imports_with_a_prometheus_datasource_input():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {"${DS_PROMETHEUS}"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("tasks finished", "success rate", "time to answer", "tokens", "cost per hour",
                  "utilisation", "queue", "limiter concurrency", "429"):  # fmt: skip
        assert topic in titles, topic
