"""The engine on real Ray: orchestrator, pools, agents, limiter and the simulator via the SDK.

Times are read from the recorded timeline (agents' own start/finish stamps), never
asserted against the wall clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import ray
from test_documents import PNG, pdf_with_text  # tests/unit is on pytest's pythonpath
from tiny import tiny_settings  # tests/integration is on pytest's pythonpath
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.config import Settings
from actors.errors import UnknownConversationError, UserInputError
from actors.models import Complexity, Microtask, Role, RunReport, TaskState
from actors.runtime.system import find_system, start_system, stop_system

SECURITY = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)


def _settings() -> Settings:
    return tiny_settings(
        pools={
            "research": {"min": 2, "max": 4},
            "analysis": {"min": 1, "max": 3},
            "generation": {"min": 1, "max": 2},
            "validation": {"min": 1, "max": 2},
        },
        simulator={"latency": "fixed", "median_s": 0.05, "seed": 7},
        microtask_timeout_s=6.0,
        llm_timeout_s=30.0,
        retry_backoff_s=0.05,
        upscale_delay_s=0.2,
        downscale_delay_s=1.0,
        health_interval_s=0.5,
        backups=False,
    )


@pytest.fixture(scope="module")
def system(ray_session):
    system = start_system(_settings())
    yield system
    stop_system(system)


def _mt(id_: str, role: Role = Role.RESEARCH, deps: tuple[str, ...] = (), latency: float = 0.05):
    return Microtask(
        id=id_,
        role=role,
        title=f"step {id_}",
        instructions=f"Do step {id_}. [sim-latency {latency}]",
        depends_on=list(deps),
    )


def _run(system, text: str, plan: list[Microtask] | None = None) -> RunReport:
    return ray.get(system.orchestrator.run.remote(text, plan), timeout=120)


def _entry(report: RunReport, id_: str):
    return next(e for e in report.timeline if e.id == id_)


def _pool(system, role: Role):
    return ray.get(system.pools[role].snapshot.remote())


def test_greeting_takes_the_sequential_path(system):
    report = _run(system, "Hello")
    assert report.state is TaskState.DONE
    assert report.complexity is Complexity.SIMPLE
    assert report.microtasks == 1 and report.plan_source == "direct"
    assert report.simulated and "[simulated]" in report.result


def test_complex_request_runs_a_dag_respecting_dependencies(system):
    report = _run(system, SECURITY)
    assert report.state is TaskState.DONE
    assert report.complexity in (Complexity.COMPLEX, Complexity.MASSIVE)
    assert report.microtasks >= 20 and report.failed == 0
    ends = {e.id: e.end_s for e in report.timeline}
    for entry in report.timeline:
        for dep in entry.depends_on:
            assert entry.start_s >= ends[dep], f"{entry.id} started before {dep} finished"
    assert report.max_parallel >= 2
    assert report.agents >= 2
    assert report.input_tokens > 0 and report.cost_usd > 0
    assert "Confidence" in report.result
    assert {e.role for e in report.timeline} == set(Role)


def test_security_request_on_the_default_models_is_planned_run_and_written_whole(system):
    """Issue 12's acceptance: the model's plan, nothing cut, every microtask done."""
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    report = _run(system, SECURITY)
    calls = _requests(url)[seen:]
    assert report.plan_source in ("model", "repaired"), report.plan_source
    assert report.microtasks >= 20 and report.failed == 0 and report.cut == []
    serial = [c for c in calls if c["purpose"] in ("assessment", "plan", "synthesis")]
    assert {c["purpose"] for c in serial} == {"assessment", "plan", "synthesis"}
    assert all(c["stop_reason"] == "end_turn" for c in serial), serial
    assert all(c["thinking_tokens"] > 0 for c in serial if c["model"] == "claude-opus-5-5")
    assert report.merge == "semantic"
    assert "Simulated synthesis" in report.result and "write-up step failed" not in report.result
    # Microtasks start as the plan streams in, so several run at once (the average
    # parallelism is lower than with the whole plan first: early ones run alone).
    assert report.parallelism == report.speedup and report.max_parallel >= 2
    # Cost known before (from the verdict, and from the plan) within 30 % of the actual.
    before = ray.get(system.orchestrator.estimate.remote(SECURITY))
    assert before["complexity"] == report.complexity.value and not before["direct"]
    assert abs(before["cost_usd"] / report.cost_usd - 1) <= 0.3, (before, report.cost_usd)
    assert report.estimated_cost_usd is not None
    assert abs(report.estimated_cost_usd / report.cost_usd - 1) <= 0.3
    assert report.token_multiple is not None and report.token_multiple > 2


def test_a_request_past_its_cost_limit_stops_and_keeps_what_finished(system):
    orchestrator = system.orchestrator
    task_id = ray.get(orchestrator.submit.remote(SECURITY, cost_limit_usd=0.3))
    report = ray.get(orchestrator.wait.remote(task_id), timeout=120)
    notes = ray.get(orchestrator.status.remote(task_id))["notes"]
    assert report.state is TaskState.DONE and 0 < report.cost_usd <= 0.3
    assert report.succeeded > 0 and report.missing  # kept what finished, named the rest
    assert any("cost limit of $0.30 set for this request" in note for note in notes), notes
    with pytest.raises(ray.exceptions.RayTaskError, match="cost limit must be above"):
        ray.get(orchestrator.submit.remote(SECURITY, cost_limit_usd=0))


def test_a_microtask_cut_twice_or_refused_fails_clearly_and_is_named_missing(system):
    plan = [
        _mt("fine"),
        _mt("endless", Role.ANALYSIS),
        _mt("refused", Role.ANALYSIS),
        _mt("summary", Role.GENERATION, ("fine", "endless", "refused")),
    ]
    plan[1].instructions += " [sim-output-tokens 40000]"
    plan[2].instructions += " [sim-refuse]"
    report = _run(system, "cut and refused microtasks", plan)
    assert report.state is TaskState.DONE and report.failed == 2
    assert {"endless: step endless", "refused: step refused"} == set(report.missing)
    assert any(c.startswith("endless: cut at max_tokens twice") for c in report.cut)
    assert _entry(report, "endless").attempts == 1 and _entry(report, "refused").attempts == 1
    assert "Missing parts (2)" in report.result
    assert _entry(report, "summary").status == "done"


def test_a_plan_cut_at_max_tokens_keeps_its_complete_microtasks_and_runs(system):
    import asyncio

    from actors.engine.decomposer import Decomposer
    from actors.llm import LLMClient

    url = ray.get(system.simulator.url.remote())
    settings = _settings().with_overrides(
        plan_tokens_per_microtask=20, output_tokens={"planning": 3000}
    )

    async def plan():
        decomposer = Decomposer(LLMClient(settings, base_url=url), settings)
        verdict, _ = await decomposer.assess(SECURITY)
        return await decomposer.plan(SECURITY, verdict)

    cut_plan, _ = asyncio.run(plan())
    assert cut_plan.cut and cut_plan.source in ("model", "repaired")
    report = _run(system, SECURITY, cut_plan.microtasks)
    assert report.failed == 0 and report.microtasks == len(cut_plan.microtasks)


def _requests(url: str) -> list[dict]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/requests", timeout=10) as answer:
        return json.loads(answer.read())["requests"]


def test_fast_branch_is_not_held_back_by_slow_sibling(system):
    plan = [
        _mt("fast1", latency=0.05),
        _mt("fast2", Role.ANALYSIS, ("fast1",), latency=0.05),
        _mt("slow1", latency=3.0),
        _mt("slow2", Role.ANALYSIS, ("slow1",), latency=0.05),
    ]
    report = _run(system, "two independent branches", plan)
    assert report.failed == 0
    assert _entry(report, "fast2").end_s < _entry(report, "slow1").end_s


def test_peak_parallelism_reaches_the_pool_width(system):
    plan = [_mt(f"w{i}", latency=1.0) for i in range(8)]
    report = _run(system, "eight independent research steps", plan)
    assert report.failed == 0
    research = _pool(system, Role.RESEARCH)
    assert research.min <= report.max_parallel <= research.max
    assert report.max_parallel >= research.min


def test_pool_grows_under_a_queue_and_shrinks_to_min_after_idling(system):
    plan = [_mt(f"q{i}", latency=1.5) for i in range(10)]
    task_id = ray.get(system.orchestrator.submit.remote("a queue of research", plan))
    wait_until(lambda: _pool(system, Role.RESEARCH).size == 4)
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    assert report.failed == 0
    wait_until(lambda: _pool(system, Role.RESEARCH).size == 2, timeout_s=30)


def test_a_known_plan_grows_its_pools_before_its_microtasks_are_ready(system):
    # Analysis (min 1, max 3) has three microtasks waiting on a slow research step: the
    # pool grows to three while they are still blocked, and back to its minimum after.
    wait_until(lambda: _pool(system, Role.ANALYSIS).size == 1, timeout_s=30)
    analysis = [_mt(f"p{i}", role=Role.ANALYSIS, deps=("p0",)) for i in range(1, 4)]
    writing = [_mt(f"g{i}", role=Role.GENERATION, deps=("p1", "p2", "p3")) for i in (1, 2)]
    plan = [_mt("p0", latency=3.0), *analysis, *writing]  # six: medium, 10 agents at once
    task_id = ray.get(system.orchestrator.submit.remote("foresee the analysis level", plan))
    wait_until(lambda: _pool(system, Role.ANALYSIS).size == 3, timeout_s=30)
    status = ray.get(system.orchestrator.status.remote(task_id))
    assert status["microtasks"]["p0"] != "done"  # grown before its microtasks were ready
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    assert report.failed == 0
    wait_until(lambda: _pool(system, Role.ANALYSIS).size == 1, timeout_s=30)


def test_killed_agent_is_replaced_and_its_microtask_completes_elsewhere(system):
    plan = [_mt("victim", Role.VALIDATION, latency=3.0)]
    task_id = ray.get(system.orchestrator.submit.remote("survive a dead agent", plan))
    pool = system.pools[Role.VALIDATION]
    busy = wait_until(
        lambda: [a for a in ray.get(pool.snapshot.remote()).agents if a.state == "busy"]
    )
    pid = ray.get(pool.agent_pids.remote())[busy[0].agent_id]
    os.kill(pid, signal.SIGKILL)
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    assert report.state is TaskState.DONE and report.failed == 0
    assert report.retries >= 1
    assert _entry(report, "victim").agent != busy[0].agent_id
    after = wait_until(lambda: (s := _pool(system, Role.VALIDATION)).size >= s.min and s)
    assert after.replaced >= 1


def test_hung_microtask_is_cancelled_at_its_deadline_and_retried(system):
    simulator = system.simulator
    before = ray.get(simulator.stats.remote())["requests"]
    ray.get(simulator.reconfigure.remote({"rate_hang": 1.0, "hang_s": 60.0}))
    try:
        plan = [_mt("stuck", Role.ANALYSIS)]
        task_id = ray.get(system.orchestrator.submit.remote("survive a hang", plan))
        wait_until(lambda: ray.get(simulator.stats.remote())["requests"] > before)
    finally:
        ray.get(simulator.reconfigure.remote({"rate_hang": 0.0}))
    report = ray.get(system.orchestrator.wait.remote(task_id), timeout=120)
    assert report.state is TaskState.DONE and report.failed == 0
    assert _entry(report, "stuck").attempts >= 2
    assert report.retries >= 1


def test_failed_microtask_does_not_stop_siblings_and_answer_says_what_is_missing(system):
    simulator = system.simulator
    ray.get(simulator.reconfigure.remote({"rate_malformed": 1.0}))
    try:
        plan = [_mt("only")]
        report = _run(system, "everything malformed", plan)
    finally:
        ray.get(simulator.reconfigure.remote({"rate_malformed": 0.0}))
    assert report.failed == 1 and report.missing
    assert "only" in report.result or "Missing" in report.result


def test_cancel_keeps_what_finished(system):
    plan = [_mt("quick", latency=0.05), _mt("long", Role.ANALYSIS, ("quick",), latency=20)]
    task_id = ray.get(system.orchestrator.submit.remote("cancel me", plan))
    orchestrator = system.orchestrator
    wait_until(lambda: ray.get(orchestrator.status.remote(task_id))["done"] >= 1)
    assert ray.get(orchestrator.cancel.remote(task_id))
    report = ray.get(orchestrator.wait.remote(task_id))
    assert report.state is TaskState.CANCELLED
    assert report.succeeded == 1
    assert "quick" in {e.id for e in report.timeline if e.status == "done"}


def test_bad_input_is_refused_clearly_and_the_next_request_is_served(system):
    with pytest.raises(UserInputError, match="empty"):
        ray.get(system.orchestrator.submit.remote("   "))
    with pytest.raises(UserInputError, match="limit"):
        ray.get(system.orchestrator.submit.remote("x" * 1_000_000))
    with pytest.raises(UserInputError, match="UTF-8"):
        ray.get(system.orchestrator.submit.remote(b"\xff\xfe bad"))
    assert _run(system, "Hello").state is TaskState.DONE


def test_find_system_returns_the_running_one(system):
    found = find_system()
    assert found is not None
    assert ray.get(found.orchestrator.ping.remote())


def test_a_simple_task_occupies_at_most_the_simple_levels_agents(system):
    plan = [_mt(f"s{i}", latency=0.5) for i in range(5)]  # 5 microtasks: the simple level
    report = _run(system, "five small steps", plan)
    assert report.complexity is Complexity.SIMPLE and report.failed == 0
    assert report.max_parallel <= Settings().levels[Complexity.SIMPLE].max_agents


def test_cli_run_json_uses_the_running_system(system, tmp_path):
    # The session's Ray, by name: the CLI joins RAY_ADDRESS or what `ray start` recorded.
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": gcs}
    chart = tmp_path / "timeline.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "actors",
            "run",
            "--json",
            "--quiet",
            "--timeline",
            str(chart),
            "Hello",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout holds nothing but the JSON object
    assert report["complexity"] == "simple" and report["microtasks"] <= 1
    assert report["simulated"] is True
    assert chart.read_bytes().startswith(b"\x89PNG")
    for field in ("task_id", "agents", "max_parallel", "wall_s", "work_s", "speedup",
                  "succeeded", "failed", "retries", "input_tokens", "output_tokens",
                  "cost_usd", "result", "timeline"):  # fmt: skip
        assert field in report


def test_cli_run_file_sends_a_markdown_and_a_pdf_document_to_every_microtask(system, tmp_path):
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": gcs}
    notes, spec = tmp_path / "notes.md", tmp_path / "spec.pdf"
    notes.write_text("# Threat model\n\nThe admin API is reachable from the VPN only.\n")
    spec.write_bytes(pdf_with_text("Payments API", "Tokens expire after 15 minutes."))
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    done = subprocess.run(
        [sys.executable, "-m", "actors", "run", "--json", "--quiet", "--file", str(notes),
         "--file", str(spec), SECURITY],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    microtasks = [c for c in _requests(url)[seen:] if c["microtask"] and c["status"] == 200]
    assert len(microtasks) == report["microtasks"] >= 2 and report["failed"] == 0
    assert all(c["documents"] == ["notes.md", "spec.pdf"] for c in microtasks)
    bad = tmp_path / "logo.png"
    bad.write_bytes(PNG)
    refused = subprocess.run(
        [sys.executable, "-m", "actors", "run", "--file", str(bad), "Describe it"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert refused.returncode == 2 and "logo.png" in refused.stderr


def test_cli_refuses_empty_input_without_starting_anything():
    done = subprocess.run(
        [sys.executable, "-m", "actors", "run", "   "], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "empty" in done.stderr and "Traceback" not in done.stderr


# Ray's driver prints raylet warnings to sys.stdout whenever they arrive, after the answer
# too (seen: "(raylet) WARNING: 8 PYTHON worker processes have been started ..."). This one
# arrives at exit, through Ray's own printing function, in the CLI process itself.
_LATE_RAY_WARNING = """
import atexit


def _late_warning():
    from ray._private.worker import print_to_stdstream

    line = "WARNING: 8 PYTHON worker processes have been started on node (injected)"
    print_to_stdstream({"lines": [line], "pid": "raylet", "is_err": False}, ignore_prefix=False)


atexit.register(_late_warning)
"""


def test_cli_run_json_prints_one_object_and_ray_chatter_goes_to_stderr(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_LATE_RAY_WARNING)
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "RAY_ADDRESS" and not key.startswith("PARALLEL_AGENTS_POOLS")
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(hook), env.get("PYTHONPATH", "")]),
        PARALLEL_AGENTS_HOME=str(tmp_path / "home"),
        PARALLEL_AGENTS_SIMULATOR__LATENCY="fixed",
        PARALLEL_AGENTS_SIMULATOR__MEDIAN_S="0.05",
    )
    for role in ("RESEARCH", "ANALYSIS", "GENERATION", "VALIDATION"):  # tiny pools
        env[f"PARALLEL_AGENTS_POOLS__{role}__MIN"] = "1"
        env[f"PARALLEL_AGENTS_POOLS__{role}__MAX"] = "1"
    done = subprocess.run(  # --address local: a Ray of its own, whatever else runs here
        [sys.executable, "-m", "actors", "run", "--json", "--address", "local", "Hello"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # exactly one JSON object, nothing before or after it
    assert report["complexity"] == "simple" and report["simulated"] is True
    assert "(raylet)" not in done.stdout
    assert "worker processes have been started on node (injected)" in done.stderr


# --- streaming: the plan into dispatch, the answer to its followers (issue 14) -----------


def _events(system, task_id: str) -> list:
    return ray.get(system.orchestrator.events.remote(task_id, 0, 0.1))


@pytest.fixture
def realistic(system):
    """The simulator at realistic speed (first token + tokens / speed, x0.02) for one test."""
    ray.get(system.simulator.reconfigure.remote({"latency": "realistic", "time_scale": 0.02}))
    yield
    ray.get(system.simulator.reconfigure.remote({"latency": "fixed", "time_scale": 0.1}))


def test_a_streamed_plan_is_dispatched_as_it_arrives_and_the_answer_streams(system, realistic):
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    task_id = ray.get(system.orchestrator.submit.remote(SECURITY))
    report = ray.get(system.orchestrator.wait.remote(task_id, 300), timeout=320)
    calls = _requests(url)[seen:]
    events = _events(system, task_id)
    kinds = [e.kind for e in events]
    assert report.state is TaskState.DONE and report.failed == 0

    # The first microtask started before the planning call had ended (simulator's log).
    (plan_call,) = [c for c in calls if c["purpose"] == "plan"]
    assert plan_call["stream"] is True
    first = min(c["at"] for c in calls if c["purpose"] == "microtask")
    assert first < plan_call["at"] + plan_call["latency_s"]
    assert kinds.index("started") < kinds.index("planned")
    assert report.first_microtask_s is not None

    # The answer reached followers in pieces before the task ended; the report is whole.
    pieces = [e for e in events if e.kind == "answer"]
    assert len(pieces) >= 2 and kinds.index("merging") < kinds.index("answer")
    last = max(e.attempt for e in pieces)
    streamed = "".join(e.detail for e in pieces if e.attempt == last)
    assert streamed and report.result.startswith(streamed)
    assert report.first_answer_s is not None and report.first_answer_s < report.wall_s


def test_cancel_while_the_plan_streams_ends_cleanly(system, realistic):
    task_id = ray.get(system.orchestrator.submit.remote(SECURITY))
    orchestrator = system.orchestrator

    def dispatching_while_planning() -> bool:
        status = ray.get(orchestrator.status.remote(task_id))
        started = any(e.kind == "started" for e in _events(system, task_id))
        return status["state"] == "planning" and started

    wait_until(dispatching_while_planning, timeout_s=120)
    assert ray.get(orchestrator.cancel.remote(task_id), timeout=60)
    report = ray.get(orchestrator.wait.remote(task_id), timeout=60)
    assert report.state is TaskState.CANCELLED
    assert [e.kind for e in _events(system, task_id)][-1] == "done"
    wait_until(lambda: all(_pool(system, r).busy == 0 for r in Role), timeout_s=60)


def test_a_quick_take_streams_beside_the_plan_and_the_answer_follows(system, realistic):
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    task_id = ray.get(system.orchestrator.submit.remote(SECURITY, quick=True))
    report = ray.get(system.orchestrator.wait.remote(task_id, 300), timeout=320)
    calls = _requests(url)[seen:]
    kinds = [e.kind for e in _events(system, task_id)]
    assert report.state is TaskState.DONE and report.failed == 0
    (quick,) = [c for c in calls if c["purpose"] == "quick"]
    (plan,) = [c for c in calls if c["purpose"] == "plan"]
    assert quick["at"] < plan["at"] + plan["latency_s"]  # beside the planning call
    assert "quick" in kinds and kinds.index("quick") < kinds.index("answer")
    assert report.paid_calls == sum(1 for c in calls if c["status"] == 200)  # counted


# --- prompt caching (issue 15) -----------------------------------------------------------


def test_a_long_request_is_cached_once_per_role_and_read_by_the_fan_out(system):
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    spec = " ".join(
        f"Requirement {n}: the service keeps an audit trail of change {n}." for n in range(280)
    )
    report = _run(system, SECURITY + ". The specification follows. " + spec)
    assert report.state is TaskState.DONE and report.failed == 0
    calls = [c for c in _requests(url)[seen:] if c["status"] == 200]
    research = [c for c in calls if (c["microtask"] or "").startswith("r")]
    warm_ups = [c for c in calls if c["max_tokens"] == 0]
    assert len(research) >= 2 and warm_ups  # the planner's research fan-out, warmed first
    # The fan-out that waited for the warm-up writes nothing and reads what it wrote (those
    # sent one by one as the plan streamed in went before it: the first uncached, the next
    # writing the prefix itself).
    # A warm-up writes the prefix, or finds it written by a microtask sent just before.
    assert len(warm_ups) <= len(Role) and all(c["cache_write"] or c["cache_read"] for c in warm_ups)
    warmed = min(c["at"] + c["latency_s"] for c in warm_ups if c["model"] == research[0]["model"])
    after = [c for c in research if c["at"] >= warmed]
    assert after and all(c["cache_write"] == 0 for c in after)
    assert sum(c["cache_read"] == 0 for c in after) <= 1  # the first, sent with no breakpoint
    assert report.cache_read_tokens > 0 and report.cache_saved_usd > 0


def _answered(system, text: str, **submit) -> RunReport:
    task_id = ray.get(system.orchestrator.submit.remote(text, **submit), timeout=60)
    return ray.get(system.orchestrator.wait.remote(task_id), timeout=120)


def _calls_since(url: str, seen: int) -> list[dict]:
    return [c for c in _requests(url)[seen:] if c["status"] == 200]


def test_a_follow_up_carries_the_answer_it_follows_and_a_rework_is_answered_directly(system):
    url = ray.get(system.simulator.url.remote())
    first = _answered(system, SECURITY, user="alice")
    assert first.state is TaskState.DONE and first.conversation_id == first.task_id
    seen = len(_requests(url))
    rework = _answered(
        system, "now make the remediation plan a table", user="alice", conversation_id=first.task_id
    )
    assert rework.plan_source == "direct" and rework.conversation_id == first.task_id
    calls = _calls_since(url, seen)
    assert calls and all(c["conversation"]["answers"] == [first.result[:120]] for c in calls)
    seen = len(_requests(url))
    new_ground = _answered(
        system,
        "What about the mobile app: compare its offline storage, each API call and every data "
        "flow, and review its authentication?",
        user="alice",
        conversation_id=first.task_id,
    )
    assert new_ground.plan_source != "direct" and new_ground.microtasks >= 2
    prompted = [
        c
        for c in _calls_since(url, seen)
        if c["purpose"] in ("assessment", "plan", "microtask", "synthesis")
    ]
    assert {c["purpose"] for c in prompted} >= {"plan", "microtask", "synthesis"}
    assert all(len(c["conversation"]["answers"]) == 2 for c in prompted)


def test_a_conversation_of_another_identity_is_refused_and_nothing_starts(system):
    first = _answered(system, "Hello", user="alice")
    before = ray.get(system.orchestrator.history.remote(user="mallory"))
    with pytest.raises(UnknownConversationError, match=first.task_id):
        ray.get(
            system.orchestrator.submit.remote(
                "summarise it", user="mallory", conversation_id=first.task_id
            )
        )
    assert ray.get(system.orchestrator.history.remote(user="mallory")) == before


def test_a_conversation_past_its_bound_is_summarised_once_and_the_summary_carried(system):
    url = ray.get(system.simulator.url.remote())
    plan = [_mt("only", role=Role.GENERATION)]
    # Two such turns are over the bound; one is over half of it. Answers are kept short, so
    # the turns after the fold fit with the summary and nothing is folded twice.
    background = "Background for the ledger review: payments are recorded twice a day. " * 200
    long_request = background + "[sim-output-tokens 40]"
    assert 3_000 < len(long_request) / 4 < Settings().conversation_max_tokens
    first = _answered(system, long_request, plan=plan, user="carol")
    second = _answered(
        system, long_request.upper(), plan=plan, user="carol", conversation_id=first.task_id
    )
    seen = len(_requests(url))
    third = _answered(system, "make it shorter", user="carol", conversation_id=first.task_id)
    fourth = _answered(system, "make it a table", user="carol", conversation_id=first.task_id)
    calls = _calls_since(url, seen)
    assert [c["purpose"] for c in calls].count("summary") == 1  # the first turn, folded once
    later = [c["conversation"] for c in calls if c["purpose"] != "summary"]
    summary = later[-1]["summary"]
    assert summary and all(heard["summary"] == summary for heard in later)
    assert later[-1]["answers"] == [second.result[:120], third.result[:120]]
    assert fourth.state is TaskState.DONE


def test_cli_run_continue_follows_up_on_the_last_conversation(system):
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": gcs}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "actors", "run", "--json", *args],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip

    first = run("Hello")
    assert first.returncode == 0, first.stderr
    opened = json.loads(first.stdout)
    assert opened["conversation_id"] == opened["task_id"]
    assert f"in conversation {opened['task_id']}" in first.stderr
    url = ray.get(system.simulator.url.remote())
    seen = len(_requests(url))
    follow_up = run("--continue", "make it shorter")
    assert follow_up.returncode == 0, follow_up.stderr
    assert json.loads(follow_up.stdout)["conversation_id"] == opened["conversation_id"]
    heard = [c["conversation"] for c in _calls_since(url, seen) if c["microtask"]]
    assert heard and all(h["answers"] == [opened["result"][:120]] for h in heard)
    named = run("--conversation", opened["conversation_id"], "make it a table")
    assert json.loads(named.stdout)["conversation_id"] == opened["conversation_id"]
    before = len(ray.get(system.orchestrator.history.remote(1000)))
    unknown = run("--conversation", "nope", "and then?")
    assert unknown.returncode == 2 and "no conversation with id 'nope'" in unknown.stderr
    assert unknown.stdout == ""
    assert len(ray.get(system.orchestrator.history.remote(1000))) == before  # nothing submitted
