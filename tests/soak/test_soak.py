"""Soak: 200 requests through HTTP and the Telegram bot while processes are SIGKILLed.

Not part of ``make test`` (it takes several minutes of both cores): ``make soak`` runs it and
prints the figures that RELIABILITY.md quotes. It starts its own Ray, a small system, the real
Serve app and the real bot against a fake Bot API on loopback, then sends 150 HTTP requests
and 50 Telegram messages (five users) while a chaos loop SIGKILLs, at seeded random moments,
the orchestrator (twice), the rate limiter, one pool and a third of the agents.

It asserts what a user relies on: every request ends with an answer or a clear error, none is
answered twice, the HTTP app is healthy at the end; and it reports how many paid model calls
the simulator served against how many the tasks' reports account for.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integration")]

from fake_bot_api import FakeBotAPI  # noqa: E402

import bot  # noqa: E402
import serve_app  # noqa: E402
from actors.bot.jobs import JobStore  # noqa: E402
from actors.bot.telegram_format import message_parts  # noqa: E402
from actors.config import Settings  # noqa: E402
from actors.llm import ledger  # noqa: E402
from actors.models import Role  # noqa: E402
from actors.runtime.system import start_system, stop_system  # noqa: E402

TOKEN = "123456:SOAK-token"
USERS = (7001, 7002, 7003, 7004, 7005)
HTTP_REQUESTS = 150
BOT_REQUESTS = 50
TERMINAL = {"done", "failed", "cancelled"}
TOPICS = (
    "Redis and Memcached for session caching",
    "PostgreSQL and MySQL for a write-heavy workload",
    "Kafka and RabbitMQ for order events",
    "gRPC and REST for internal services",
    "Terraform and Pulumi for a small team",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _text(n: int) -> str:
    """Mostly one-line questions (answered directly), every fourth a comparison (a DAG)."""
    if n % 4 == 0:
        return f"Compare {TOPICS[n % len(TOPICS)]} (request {n})"
    return f"Define idempotency{n}"


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null"), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None, dict(exc.headers)


class Chaos:
    """SIGKILLs at seeded random moments; remembers what it killed and when."""

    def __init__(self, system: Any, seed: int = 13) -> None:
        self.system = system
        self.rng = random.Random(seed)
        self.kills: list[tuple[float, str]] = []

    def _kill(self, what: str, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            self.kills.append((time.monotonic(), what))
        except ProcessLookupError:
            pass

    async def run(self, stop: asyncio.Event) -> None:
        plan = ["orchestrator", "agents", "limiter", "pool", "orchestrator"]
        for what in plan:
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(8, 20))
                return
            except TimeoutError:
                pass
            try:
                await self._strike(what)
            except Exception as exc:  # a target that is restarting right now: try the next
                print(f"soak: could not kill {what}: {exc}", file=sys.stderr)

    async def _strike(self, what: str) -> None:
        s = self.system
        if what == "orchestrator":
            self._kill(what, await s.orchestrator.pid.remote())
        elif what == "limiter":
            self._kill(what, await s.limiter.pid.remote())
        elif what == "pool":
            role = self.rng.choice(list(Role))
            self._kill(f"pool-{role.value}", await s.pools[role].pid.remote())
        else:
            pids: dict[str, int] = {}
            for pool in s.pools.values():
                pids.update(await pool.agent_pids.remote())
            for agent in self.rng.sample(sorted(pids), max(1, len(pids) // 3)):
                self._kill(agent, pids[agent])


@pytest.fixture(scope="module")
def soak_system(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    home = tmp_path_factory.mktemp("soak-home")
    settings = Settings().with_overrides(
        home=home,
        http_port=_free_port(),
        pools={role: {"min": 2, "max": 3} for role in ("research", "analysis")}
        | {role: {"min": 1, "max": 2} for role in ("generation", "validation")},
        simulator={"latency": "realistic", "time_scale": 0.02, "seed": 5},
        max_running_tasks=40,
        max_tasks_per_user=40,
        microtask_timeout_s=20.0,
        retry_backoff_s=0.1,
        backups=False,
        telegram_bot_token=TOKEN,
        telegram_allowed_user_ids=",".join(str(u) for u in USERS),
    )
    system = start_system(settings)
    url = serve_app.deploy(settings)
    yield settings, system, url
    from ray import serve

    serve.shutdown()
    stop_system(system)
    ray.shutdown()


async def _http_requests(url: str, figures: dict[str, Any]) -> list[str]:
    """POST every HTTP request, waiting out 429s (their Retry-After), and return the task ids."""
    ids: list[str] = []
    for n in range(HTTP_REQUESTS):
        while True:
            status, body, headers = await asyncio.to_thread(
                _http, "POST", f"{url}/tasks", {"text": _text(n)}
            )
            if status == 202:
                ids.append(body["task_id"])
                if len(ids) % 25 == 0:
                    print(f"soak: {len(ids)} HTTP requests accepted", file=sys.stderr, flush=True)
                break
            if status == 429:
                figures["http_429"] += 1
                await asyncio.sleep(min(5.0, float(headers.get("retry-after", 1))))
                continue
            figures["http_errors"].append((n, status, body))  # a clear error is an ending
            break
    return ids


async def _http_outcomes(url: str, ids: list[str], deadline: float) -> dict[str, str]:
    states: dict[str, str] = {}
    while len(states) < len(ids) and time.monotonic() < deadline:
        for task_id in ids:
            if task_id in states:
                continue
            status, body, _ = await asyncio.to_thread(_http, "GET", f"{url}/tasks/{task_id}")
            if status == 200 and body["state"] in TERMINAL and body.get("report"):
                states[task_id] = body["state"]
        print(f"soak: {len(states)}/{len(ids)} HTTP requests ended", file=sys.stderr, flush=True)
        await asyncio.sleep(5.0)
    return states


@pytest.mark.timeout(1800)
async def test_soak_200_requests_through_http_and_the_bot_under_sigkills(soak_system, tmp_path):
    settings, system, url = soak_system
    figures: dict[str, Any] = {"http_429": 0, "http_errors": []}
    started = time.monotonic()
    before = ray.get(system.simulator.stats.remote())["status_counts"].get("200", 0)
    async with FakeBotAPI(TOKEN) as fake:
        bot_settings = settings.with_overrides(telegram_api_base_url=fake.root, home=tmp_path)
        store = JobStore.in_home(tmp_path)
        config = bot.BotConfig(edit_interval_s=2.0, poll_timeout_s=1)
        app = bot.build_application(bot_settings, system, store, config)
        try:
            async with bot.serving(app, config):
                stop = asyncio.Event()
                chaos = Chaos(system)
                calm = os.environ.get("SOAK_CHAOS") == "0"  # the same load with nothing killed
                chaos_task = asyncio.create_task(asyncio.sleep(0) if calm else chaos.run(stop))
                updates: dict[int, int] = {}  # update id -> user
                for n in range(BOT_REQUESTS):
                    user = USERS[n % len(USERS)]
                    update = fake.message_update(user, _text(1000 + n))
                    updates[update["update_id"]] = user
                    fake.enqueue(update)
                ids = await _http_requests(url, figures)
                deadline = time.monotonic() + 900
                states = await _http_outcomes(url, ids, deadline)

                def delivered() -> bool:
                    jobs = [store.get(u) for u in updates]
                    return all(j is not None and j.delivered for j in jobs)

                await fake.wait_for(delivered, max(1.0, deadline - time.monotonic()))
                stop.set()
                await chaos_task
                jobs = [j for j in (store.get(u) for u in updates) if j is not None]
                # Each job's answer (or clear error) reached its chat exactly once: a text the
                # bot sent for several jobs of one user (the same refusal) counts once per job.
                wanted = Counter((j.user_id, message_parts(j.answer or "?")[0].text) for j in jobs)
                seen = {key: fake.texts_to(key[0]).count(key[1]) for key in wanted}
                bot_states = [j.state.value for j in jobs]
                failed_sample = [j.answer[:160] for j in jobs if j.state == "failed" and j.answer]
        finally:
            store.close()
    reports = [ray.get(system.orchestrator.wait.remote(t), timeout=120) for t in ids]
    everything = [h["task_id"] for h in ray.get(system.orchestrator.history.remote(1000))]
    telegram = {h["task_id"] for h in ray.get(system.orchestrator.history.remote(1000))}
    telegram -= set(ids)
    paid_sim = ray.get(system.simulator.stats.remote())["status_counts"].get("200", 0) - before
    all_reports = [ray.get(system.orchestrator.wait.remote(t), timeout=120) for t in everything]
    paid_reports = sum(r.paid_calls for r in all_reports)
    # The provider's side and the call ledger, call by call (the x-parallel-agents-call id).
    log = ray.get(system.simulator.recent_requests.remote())
    billed = {e["call_id"] for e in log if e["status"] == 200}
    book = ledger.read(settings.home / "ledger").calls
    paid = {c.call_id for c in book if c.state == "paid"}
    unknown = {c.call_id for c in book if c.state == "unknown"}
    health, _, _ = _http("GET", f"{url}/health")
    summary = {
        "requests": HTTP_REQUESTS + BOT_REQUESTS,
        "http_accepted": len(ids),
        "http_429_waited": figures["http_429"],
        "http_clear_errors": [f"{status}: {body}" for _, status, body in figures["http_errors"]],
        "http_states": {s: list(states.values()).count(s) for s in TERMINAL},
        "http_failed_microtasks": sum(r.failed for r in reports),
        "bot_states": {st: bot_states.count(st) for st in set(bot_states)},
        "bot_jobs_delivered": len(jobs),
        "bot_texts_as_expected": seen == dict(wanted),
        "bot_failed_sample": failed_sample[:2],
        "bot_tasks": len(telegram),
        "kills": [what for _, what in chaos.kills],
        "paid_calls_simulator": paid_sim,
        "paid_calls_in_reports": paid_reports,
        "paid_calls_in_ledger": len(paid),
        "ledger_unknown_calls": len(unknown),
        "billed_while_unknown": len(billed & unknown),
        "billed_not_in_ledger": len(billed - paid - unknown),
        "ledger_paid_not_billed": len(paid - billed),
        "reports_unsettled_calls": sum(r.unsettled_calls for r in all_reports),
        "health_at_end": health,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    print("soak:", json.dumps(summary, indent=2), file=sys.stderr)
    assert len(states) == len(ids), "every accepted HTTP request ends"
    assert len(set(ids)) == len(ids), "no HTTP request was started twice"
    assert len(ids) + len(figures["http_errors"]) == HTTP_REQUESTS, "none lost"
    assert len(jobs) == BOT_REQUESTS and seen == dict(wanted), "each message answered once"
    # One task per message that was admitted; a refused one (a clear error) started none.
    assert len(telegram) == sum(j.task_id is not None for j in jobs), "no message ran twice"
    assert calm or len(chaos.kills) >= 4
    assert len(log) == ray.get(system.simulator.stats.remote())["requests"], "the log holds all"
    assert billed <= paid | unknown, "every call the provider billed is in the ledger"
    assert paid <= billed, "the ledger counts nothing the provider did not bill"
    assert paid_sim == len(paid) + len(billed & unknown)
    assert health == 200
