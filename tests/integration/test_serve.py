"""The Serve app over real HTTP: every route, auth refusals, cancel, SSE, Prometheus text."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

import serve_app
from actors.config import Settings
from actors.errors import ConfigurationError
from actors.models import Microtask, Role
from actors.system import start_system, stop_system

ROLES = {"research", "analysis", "generation", "validation"}


@pytest.fixture(scope="module")
def system(ray_session):
    settings = Settings().with_overrides(
        pools={role: {"min": 1, "max": 2} for role in ROLES},
        simulator={"latency": "fixed", "median_s": 0.05},
        downscale_delay_s=2.0,
    )
    system = start_system(settings)
    yield system
    stop_system(system)


@pytest.fixture(scope="module")
def http(serve_url, system):
    with httpx.Client(base_url=serve_url, timeout=30) as client:
        _wait_healthy(client)
        yield client


def _wait_healthy(client: httpx.Client, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the Serve app never became healthy")


def _slow_plan(seconds: float) -> list[Microtask]:
    return [
        Microtask(
            id="slow", role=Role.RESEARCH, title="slow", instructions=f"[sim-latency {seconds}]"
        )
    ]


def test_health_reports_every_part(http):
    body = http.get("/health").json()
    assert body["healthy"] is True
    assert {"ray", "orchestrator", "limiter", "llm:simulator"} <= body["checks"].keys()
    assert {f"pool:{role}" for role in ROLES} <= body["checks"].keys()


def test_status_has_the_dashboard_fields_while_and_after_a_task_runs(http, system):
    task_id = ray.get(system.orchestrator.submit.remote("status probe", _slow_plan(1.5)))
    during = http.get("/status").json()
    for field in ("active_agents", "queued_tasks", "throughput", "avg_latency", "success_rate"):
        assert isinstance(during[field], int | float) and during[field] >= 0
    assert set(during["pool_utilization"]) == ROLES
    assert during["active_tasks"] >= 1
    assert all(0 <= v <= 100 for v in during["pool_utilization"].values())
    ray.get(system.orchestrator.wait.remote(task_id))
    after = http.get("/status").json()
    assert after["throughput"] > 0 and after["avg_latency"] > 0
    assert 0 <= after["success_rate"] <= 100
    assert after["tokens"]["input"] > 0 and after["cost_usd"] > 0


def test_pools_lists_all_four_within_bounds(http):
    pools = http.get("/pools").json()
    assert {p["role"] for p in pools} == ROLES
    for pool in pools:
        assert pool["min"] <= pool["size"] <= pool["max"]
        assert all(
            {"agent_id", "node_id", "state", "completed"} <= a.keys() for a in pool["agents"]
        )


def test_metrics_parse_as_prometheus_text(http):
    http.post("/tasks", json={"text": "Hello"})
    text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "parallel_agents_tasks",
        "parallel_agents_microtasks",
        "parallel_agents_microtask_duration_seconds",
        "parallel_agents_agents",
        "parallel_agents_queue_depth",
        "parallel_agents_llm_requests",
        "parallel_agents_tokens",
        "parallel_agents_cost_usd",
        "parallel_agents_limiter_concurrency_limit",
    ):
        assert name in families, name
    agents = [s for s in families["parallel_agents_agents"].samples if s.value > 0]
    assert {s.labels["pool"] for s in agents} == ROLES


def test_task_lifecycle_over_http(http):
    accepted = http.post("/tasks", json={"text": "Hello"})
    assert accepted.status_code == 202
    task_id = accepted.json()["task_id"]
    end = time.monotonic() + 60
    while (body := http.get(f"/tasks/{task_id}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < end
        time.sleep(0.1)
    assert body["state"] == "done" and body["report"]["result"]
    history = http.get("/tasks", params={"limit": 5}).json()["tasks"]
    assert task_id in {row["task_id"] for row in history}


def test_bad_requests_get_clear_errors(http):
    assert http.get("/tasks/nope").status_code == 404
    empty = http.post("/tasks", json={"text": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert http.post("/tasks", json={}).status_code == 422


def test_cancel_a_running_task(http, system):
    task_id = ray.get(system.orchestrator.submit.remote("cancel over http", _slow_plan(30)))
    cancelled = http.delete(f"/tasks/{task_id}")
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
    assert http.get(f"/tasks/{task_id}").json()["state"] == "cancelled"


def test_event_stream_ends_with_the_result(http):
    task_id = http.post("/tasks", json={"text": "Hello"}).json()["task_id"]
    kinds, result = [], None
    with http.stream("GET", f"/tasks/{task_id}/events") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if event == "progress":
                    kinds.append(data["kind"])
                elif event == "result":
                    result = data
    assert kinds[0] == "planned" and kinds[-1] == "done"
    assert result is not None and result["task_id"] == task_id and result["result"]


def test_dashboard_page_is_served(http):
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "parallel-agents" in page.text


def test_public_bind_without_token_is_refused():
    with pytest.raises(ConfigurationError, match="API_TOKEN"):
        serve_app.check_bind(Settings().with_overrides(http_host="0.0.0.0"))


def test_task_api_needs_the_bearer_token_off_loopback(http, serve_url, system):
    # A second app whose settings say "public host": its auth rules apply even though
    # this session's Serve listens on loopback only.
    public = Settings().with_overrides(http_host="0.0.0.0", api_token="s3cret")
    serve.run(
        serve_app.Gateway.options(name="gateway-public").bind(public),
        name="public",
        route_prefix="/public",
    )
    try:
        body = {"text": "Hello"}
        assert http.post("/public/tasks", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert http.post("/public/tasks", json=body, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        accepted = http.post("/public/tasks", json=body, headers=right)
        assert accepted.status_code == 202
        assert http.get("/public/health").status_code == 200  # health stays open
    finally:
        serve.delete("public")


def _browser_dom(url: str, tmp_path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=4000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_dashboard_page_in_a_real_browser_shows_pools_and_follows_a_task(
    http, serve_url, system, tmp_path
):
    idle = _browser_dom(f"{serve_url}/", tmp_path)
    for role in ROLES:
        assert f'data-role="{role}"' in idle
    assert ">live<" in idle  # the page reached the API and rendered its figures
    task_id = ray.get(system.orchestrator.submit.remote("dashboard probe", _slow_plan(8)))
    try:
        busy = _browser_dom(f"{serve_url}/", tmp_path)
        assert f'data-task="{task_id}"' in busy  # the running task appears live
        assert 'class="agent busy"' in busy
    finally:
        ray.get(system.orchestrator.cancel.remote(task_id))


def _ray_rss_mb() -> float:
    """Resident memory of this machine's Ray processes (workers, raylet, GCS), in MB."""
    total = 0
    for process in psutil.process_iter(["name", "cmdline", "memory_info"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "ray::" in (process.info["name"] or "") + cmdline or "/ray/" in cmdline:
            total += process.info["memory_info"].rss
    return total / 1e6


def test_load_of_100_tasks_at_once_loses_none_and_memory_stays_flat(http, system):
    rss = []
    for _round in range(2):
        with ThreadPoolExecutor(max_workers=16) as posting:
            answers = list(
                posting.map(lambda n: http.post("/tasks", json={"text": "Hello"}), range(100))
            )
        accepted = [a.json()["task_id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code == 429]
        assert len(accepted) + len(refused) == 100  # every request got an answer
        assert all("limit" in a.json()["detail"] for a in refused)
        for task_id in accepted:  # every accepted task completes
            report = ray.get(system.orchestrator.wait.remote(task_id), timeout=300)
            assert report.state == "done"
        rss.append(_ray_rss_mb())
    print(f"Ray RSS after each round of 100 tasks: {rss[0]:.0f} MB, {rss[1]:.0f} MB")
    assert rss[1] <= rss[0] * 1.25
    for pool in system.pools.values():  # and the pools settle back to their minimum
        end = time.monotonic() + 60
        while (snapshot := ray.get(pool.snapshot.remote())).size > snapshot.min:
            assert time.monotonic() < end, snapshot
            time.sleep(0.5)
