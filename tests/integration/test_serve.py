"""The Serve app over real HTTP: every route, auth refusals, cancel, SSE, Prometheus text,
and /health against a real provider endpoint that answers, refuses or is not there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import ray
from aiohttp import web
from browser import browser_dom  # tests/integration is on pytest's pythonpath
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from actors.config import Settings
from actors.errors import ConfigurationError
from actors.gateway import app as gateway_app
from actors.gateway.http_guard import ANONYMOUS
from actors.models import Microtask, Role
from actors.runtime.system import start_system, stop_system
from actors.settings_groups import default_models

ROLES = {"research", "analysis", "generation", "validation"}
MODELS = sorted(set(default_models().values()))


@pytest.fixture(scope="module")
def system(ray_session):
    settings = Settings().with_overrides(
        pools={role: {"min": 1, "max": 2} for role in ROLES},
        simulator={"latency": "fixed", "median_s": 0.05},
        downscale_delay_s=2.0,
        # every HTTP caller on loopback without a token is one user (http:anonymous);
        # the load test posts 100 tasks at once as that user
        max_tasks_per_user=200,
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
    # the simulator is asked the way a real provider would be: per model, a token count
    assert all(body["checks"][f"llm:simulator:{model}"] == "ok" for model in MODELS)


@contextlib.contextmanager
def _fake_provider() -> Iterator[tuple[str, Counter[str]]]:
    """An Anthropic-shaped endpoint on loopback: ``/ok`` counts tokens, ``/deny`` answers
    401 and ``/broken`` 500, in Anthropic's error shape. Yields its root and the hits."""
    hits: Counter[str] = Counter()

    async def count_tokens(request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        hits[mode] += 1
        if mode == "ok":
            return web.json_response({"input_tokens": 3})
        status, kind, message = {
            "deny": (401, "authentication_error", "invalid x-api-key"),
            "broken": (500, "api_error", "Internal server error"),
        }[mode]
        error = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(error, status=status)

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/{mode}/v1/messages/count_tokens", count_tokens)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def provider(http):
    """Gateways whose settings name a real provider (a key and a base URL, so no simulator),
    one per state of that provider, each at ``/provider-<state>``; yields the hit counter."""
    with _fake_provider() as (root, hits):
        endpoints = {
            "ok": f"{root}/ok",
            "deny": f"{root}/deny",
            "broken": f"{root}/broken",
            "gone": f"http://127.0.0.1:{_closed_port()}",
        }
        # run_many deploys the four side by side (serve.run one by one takes ~4 s each)
        serve.run_many(
            [
                serve.RunTarget(
                    gateway_app.Gateway.options(name=f"gateway-{state}").bind(
                        Settings().with_overrides(
                            anthropic_api_key="sk-test", anthropic_base_url=url
                        )
                    ),
                    name=f"provider-{state}",
                    route_prefix=f"/provider-{state}",
                )
                for state, url in endpoints.items()
            ]
        )
        try:
            yield endpoints, hits
        finally:
            for state in endpoints:
                serve.delete(f"provider-{state}")


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _provider_checks(body: dict) -> dict[str, str]:
    return {k: v for k, v in body["checks"].items() if k.startswith("llm:anthropic:")}


def test_health_is_200_when_the_provider_answers_and_asks_it_once_a_while(http, provider):
    _, hits = provider
    answer = http.get("/provider-ok/health")
    assert answer.status_code == 200, answer.text
    checks = _provider_checks(answer.json())
    assert checks == {f"llm:anthropic:{model}": "ok" for model in MODELS}
    asked = hits["ok"]
    assert asked == len(MODELS)  # one token count per distinct model
    for _ in range(5):
        assert http.get("/provider-ok/health").status_code == 200
    assert hits["ok"] == asked  # the verdict is cached, not asked per request


@pytest.mark.parametrize(
    ("state", "status"), [("deny", "HTTP 401 authentication_error"), ("broken", "HTTP 500")]
)
def test_health_is_503_naming_the_provider_that_refuses(http, provider, state, status):
    endpoints, _ = provider
    answer = http.get(f"/provider-{state}/health")
    assert answer.status_code == 503
    body = answer.json()
    assert body["healthy"] is False
    assert body["checks"]["orchestrator"] == "ok"  # the rest of the system is fine
    checks = _provider_checks(body)
    assert set(checks) == {f"llm:anthropic:{model}" for model in MODELS}
    for label, text in checks.items():
        model = label.rsplit(":", 1)[1]
        assert f"{endpoints[state]} refused {model}: {status}" in text


def test_health_is_503_when_the_provider_is_unreachable(http, provider):
    endpoints, _ = provider
    answer = http.get("/provider-gone/health")
    assert answer.status_code == 503
    for text in _provider_checks(answer.json()).values():
        assert f"{endpoints['gone']} is unreachable: connection refused" in text


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
    task_id = ray.get(
        system.orchestrator.submit.remote("cancel over http", _slow_plan(30), user=ANONYMOUS)
    )
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
        gateway_app.check_bind(Settings().with_overrides(http_host="0.0.0.0"))


def test_task_api_needs_the_bearer_token_off_loopback(http, serve_url, system):
    # A second app whose settings say "public host": its auth rules apply even though
    # this session's Serve listens on loopback only.
    public = Settings().with_overrides(http_host="0.0.0.0", api_token="s3cret")
    serve.run(
        gateway_app.Gateway.options(name="gateway-public").bind(public),
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


def test_dashboard_page_in_a_real_browser_shows_pools_and_follows_a_task(
    http, serve_url, system, tmp_path
):
    idle = browser_dom(f"{serve_url}/", tmp_path)
    for role in ROLES:
        assert f'data-role="{role}"' in idle
    assert ">live<" in idle  # the page reached the API and rendered its figures
    task_id = ray.get(
        system.orchestrator.submit.remote("dashboard probe", _slow_plan(8), user=ANONYMOUS)
    )
    try:
        busy = browser_dom(f"{serve_url}/", tmp_path)
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
        started = time.time()  # the store's clock: tasks of this round are created after it
        with ThreadPoolExecutor(max_workers=16) as posting:
            answers = list(
                posting.map(lambda n: http.post("/tasks", json={"text": "Hello"}), range(100))
            )
        # Every request is either accepted (202) or refused with a reason (429): none lost.
        assert Counter(a.status_code for a in answers).keys() <= {202, 429}, answers
        accepted = [a.json()["task_id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code == 429]
        assert accepted and len(accepted) + len(refused) == 100
        assert len(set(accepted)) == len(accepted)  # nothing doubled
        for answer in refused:  # the reason names the limit, and when to come back
            assert "limit" in answer.json()["detail"], answer.json()
            assert int(answer.headers["Retry-After"]) >= 1
        for task_id in accepted:  # every accepted task finishes, with all its work done
            report = ray.get(system.orchestrator.wait.remote(task_id), timeout=300)
            assert report.state == "done" and report.failed == 0, report
        # The store holds exactly the accepted tasks of this round: a refusal started nothing.
        stored = ray.get(system.orchestrator.history.remote(1000))
        this_round = {row["task_id"] for row in stored if row["created_at"] >= started}
        assert this_round == set(accepted)
        rss.append(_ray_rss_mb())
    print(f"Ray RSS after each round of 100 tasks: {rss[0]:.0f} MB, {rss[1]:.0f} MB")
    assert rss[1] <= rss[0] * 1.25
    for pool in system.pools.values():  # and the pools settle back to their minimum
        end = time.monotonic() + 60
        while (snapshot := ray.get(pool.snapshot.remote())).size > snapshot.min:
            assert time.monotonic() < end, snapshot
            time.sleep(0.5)


def test_daily_trends_count_a_finished_task_today_and_show_on_the_page(
    http, serve_url, system, tmp_path
):
    def today_row() -> dict:
        days = http.get("/history/daily", params={"days": 7}).json()["days"]
        assert len(days) == 7
        assert days[-1]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
        return days[-1]

    before = today_row()
    task_id = http.post("/tasks", json={"text": "Hello"}).json()["task_id"]
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    after = today_row()
    assert after["tasks"] >= before["tasks"] + 1 and after["succeeded"] >= 1
    assert after["cost_usd"] >= before["cost_usd"] + report.cost_usd - 1e-6
    assert after["input_tokens"] >= before["input_tokens"] + report.input_tokens
    assert after["p50_wall_s"] is not None and after["p95_wall_s"] >= after["p50_wall_s"]
    assert http.get("/history/daily", params={"days": 366}).status_code == 422

    page = browser_dom(f"{serve_url}/", tmp_path)
    assert f'data-day="{after["day"]}"' in page  # today's row in the trends table
    assert "<polyline" in page  # and the sparklines were drawn


def _simulated_requests(system, after_seq: int = 0) -> list[dict]:
    """The simulator's request log (``GET /requests``) past ``after_seq``, oldest first."""
    url = ray.get(system.simulator.url.remote())
    entries = httpx.get(f"{url}/requests", timeout=10).json()["requests"]
    return [entry for entry in entries if entry["seq"] > after_seq]


def test_a_task_with_a_document_reaches_its_microtasks_and_bad_ones_are_refused(http, system):
    seen = max((e["seq"] for e in _simulated_requests(system)), default=0)
    notes = {"name": "shop-notes.md", "text": "# Shop\n\nThe checkout trusts the client's price."}
    accepted = http.post("/tasks", json={"text": "What is wrong here?", "documents": [notes]})
    assert accepted.status_code == 202, accepted.text
    report = ray.get(system.orchestrator.wait.remote(accepted.json()["task_id"]), timeout=120)
    assert report.state.value == "done"
    microtasks = [e for e in _simulated_requests(system, seen) if e["purpose"] == "microtask"]
    assert microtasks and all("shop-notes.md" in e["documents"] for e in microtasks)

    png = {"name": "shot.png", "data_base64": "iVBORw0KGgoAAAANSUhEUg=="}
    refused = http.post("/tasks", json={"text": "And this?", "documents": [png]})
    assert refused.status_code == 422 and "shot.png is a PNG image" in refused.json()["detail"]
    huge = {"name": "huge.md", "text": "w" * (Settings().max_document_chars + 1)}
    refused = http.post("/tasks", json={"text": "And this?", "documents": [huge]})
    assert refused.status_code == 413 and "per document" in refused.json()["detail"]
