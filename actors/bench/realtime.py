"""The real-time benchmark (``parallel-agents bench --realtime``): one request, end to end,
through the real system on the embedded simulator at realistic model speeds, per variant.

Each variant is a set of settings (``VARIANTS``); the system is started afresh for each
(``start_system``, then ``stop_system``), the start timed but kept out of the figures. The
single agent is one streamed call of the synthesis model, through the same simulator.
Figures come from the task's events and report and the simulator's request log
(``actors.bench.realtime_figures``). Variants whose setting does not exist yet in
``Settings`` are skipped with a note, so the benchmark is ready for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError

from actors.agents.agent import SYSTEM_PROMPTS
from actors.bench.realtime_figures import (
    RealtimeResults,
    SingleAgent,
    VariantFigures,
    checks,
    ratios,
    variant_figures,
)
from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    SIMULATOR_NAME,
    Purpose,
    Settings,
    SimulatorSettings,
    pool_actor_name,
)
from actors.llm import LLMClient
from actors.models import Complexity, Role
from actors.runtime.system import System, start_system, stop_system

log = logging.getLogger(__name__)

SECURITY = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)
DEFAULT_TIME_SCALE = 0.1  # the simulator's own default: a 2-minute plan takes 12 s
# Fixed sizes (min = max): an agent started mid-run costs ~2.5 s of CPU on this machine,
# which would land on whichever variant happened to scale.
POOLS = {Role.RESEARCH: 4, Role.ANALYSIS: 4, Role.GENERATION: 2, Role.VALIDATION: 2}
# The single agent's answer is as long as the pipeline's synthesis (the simulator writes
# 2,000-3,500 tokens there, 150-400 for a plain text call): a comprehensive answer either way.
SINGLE_AGENT_TOKENS = 2750
_REPORT_TIMEOUT_S = 1800.0  # at time scale 0.1; scaled with it


@dataclass(frozen=True)
class Variant:
    """One configuration of the pipeline; ``needs``: Settings fields it cannot run without."""

    name: str
    label: str
    overrides: dict[str, Any]
    needs: tuple[str, ...] = ()


VARIANTS: tuple[Variant, ...] = (
    Variant("today", "today's pipeline", {"stream_plan": False, "stream_answer": False}),
    Variant("streamed-plan", "streamed plan", {"stream_plan": True, "stream_answer": False}),
    Variant("streamed", "streamed plan + synthesis", {"stream_plan": True, "stream_answer": True}),
    Variant(
        "hierarchical",
        "hierarchical plan",
        {"stream_plan": True, "stream_answer": True, "plan_mode": "hierarchical"},
        needs=("plan_mode",),
    ),
    Variant(
        "quick",
        "quick answer first",
        {"stream_plan": True, "stream_answer": True, "quick_answer": True},
        needs=("quick_answer",),
    ),
    Variant(
        "sections",
        "answer in sections",
        {"stream_plan": True, "stream_answer": True, "answer_mode": "sections"},
        needs=("answer_mode",),
    ),
    Variant(
        "sections-quick",
        "answer in sections, quick answer first",
        {
            "stream_plan": True,
            "stream_answer": True,
            "answer_mode": "sections",
            "quick_answer": True,
        },
        needs=("answer_mode", "quick_answer"),
    ),
)
# Switched off explicitly where a variant does not ask for it, whatever its default.
_OFF = {"quick_answer": False}


@dataclass
class RealtimeConfig:
    """What to run: ``variants`` by name (``VARIANTS``), plus the single agent."""

    time_scale: float = DEFAULT_TIME_SCALE
    seed: int = 0
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    single_agent: bool = True
    request: str = SECURITY
    pools: dict[Role, int] = field(default_factory=lambda: dict(POOLS))


def runnable(
    names: Sequence[str], fields: Sequence[str] | None = None
) -> tuple[list[Variant], list[str]]:
    """The variants among ``names`` whose settings exist (in ``fields``, by default
    ``Settings.model_fields``), and one line for each left out."""
    have = set(Settings.model_fields if fields is None else fields)
    chosen, skipped = [], []
    for variant in VARIANTS:
        if variant.name not in names:
            continue
        missing = [f for f in variant.needs if f not in have]
        if missing:
            skipped.append(f"{variant.label}: Settings has no {', '.join(missing)} yet")
        else:
            chosen.append(variant)
    return chosen, skipped


def variant_settings(
    base: Settings, variant: Variant, config: RealtimeConfig, home: Path
) -> Settings:
    """``base`` for one variant: the embedded simulator at realistic speed, fixed pools, a
    fresh home, every deadline stretched as much as the time scale stretches the calls."""
    stretch = max(1.0, config.time_scale / DEFAULT_TIME_SCALE)
    have = Settings.model_fields
    off = {k: v for k, v in _OFF.items() if k in have and k not in variant.overrides}
    simulator = SimulatorSettings(  # the embedded simulator, even with a key in the environment
        mode="embedded", latency="realistic", time_scale=config.time_scale, seed=config.seed
    )
    return base.with_overrides(
        anthropic_base_url=None,
        simulator=simulator.model_dump(),
        pools={role.value: {"min": n, "max": n} for role, n in config.pools.items()},
        home=home,
        llm_timeout_s=base.llm_timeout_s * stretch,
        microtask_timeout_s=base.microtask_timeout_s * stretch,
        planning_timeout_s=base.planning_timeout_s * stretch,
        synthesis_timeout_s=base.synthesis_timeout_s * stretch,
        levels={
            level.value: {
                **base.levels[level].model_dump(),
                "time_limit_s": base.levels[level].time_limit_s * stretch,
            }
            for level in Complexity
        },
        **off,
        **variant.overrides,
    )


def run(config: RealtimeConfig, base: Settings, say: Callable[[str], None]) -> RealtimeResults:
    """Every chosen variant (and the single agent) on a fresh system each; the figures."""
    started = time.perf_counter()
    chosen, skipped = runnable(config.variants)
    results = RealtimeResults(
        request=config.request,
        time_scale=config.time_scale,
        seed=config.seed,
        cpus=os.cpu_count() or 1,
        pools={role.value: n for role, n in config.pools.items()},
        skipped=skipped,
    )
    if not ray.is_initialized():
        # "local": never join (and reconfigure) a system someone else is running.
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="parallel-agents-realtime-"))
    for variant in chosen:
        try:
            settings = variant_settings(base, variant, config, root / variant.name)
        except ValidationError as exc:  # a setting the lead named differently after all
            results.skipped.append(f"{variant.label}: {exc.errors()[0]['msg']}")
            continue
        say(f"{variant.label}: starting the system ({sum(config.pools.values())} agents)")
        begun = time.perf_counter()
        system = start_system(settings, resume=False)
        startup = round(time.perf_counter() - begun, 1)
        try:
            say(f"{variant.label}: running the request")
            figures = _run_variant(system, variant, config)
            results.variants.append(figures.model_copy(update={"startup_s": startup}))
            say(
                f"{variant.label}: first answer token {figures.first_answer_token_s:.1f} s, "
                f"full answer {figures.full_answer_s:.1f} s, ${figures.cost_usd:.4f}"
            )
            if results.single is None and config.single_agent:
                say("single agent: one streamed call of the synthesis model")
                results.single = asyncio.run(single_agent(settings, system.base_url, config))
        except Exception as exc:  # one variant failing must not lose the others' figures
            log.exception("%s failed", variant.label)
            results.skipped.append(f"{variant.label}: {type(exc).__name__}: {exc}")
        finally:
            _stop(system)
    if results.single is None and config.single_agent:  # a system just for the single agent
        settings = variant_settings(base, VARIANTS[0], config, root / "single")
        system = start_system(settings, resume=False)
        try:
            results.single = asyncio.run(single_agent(settings, system.base_url, config))
        finally:
            _stop(system)
    results.ratios = ratios(results.variants, results.single)
    results.checks = checks(results.ratios)
    results.notes.append(
        f"The single agent's answer is {SINGLE_AGENT_TOKENS:,} visible tokens (a "
        "`[sim-output-tokens]` marker), as long as a typical synthesis; the simulator thinks "
        "less for a plain text call than for a synthesis, so its time is a little low."
    )
    results.total_s = round(time.perf_counter() - started, 1)
    return results


def _stop(system: System, timeout_s: float = 60.0) -> None:
    """``stop_system``, then wait until the actors' names are free for the next start
    (``start_system`` reuses an actor by name, and a kill takes effect a little later)."""
    stop_system(system)
    names = [ORCHESTRATOR_NAME, LIMITER_NAME, SIMULATOR_NAME, *map(pool_actor_name, Role)]
    deadline = time.monotonic() + timeout_s
    for name in names:
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                break
            time.sleep(0.1)


def _run_variant(system: System, variant: Variant, config: RealtimeConfig) -> VariantFigures:
    """Submit the request, wait for the report, and read what the run left behind."""
    orchestrator = system.orchestrator
    submitted = time.time()
    task_id = str(ray.get(orchestrator.submit.remote(config.request)))
    t0 = float(ray.get(orchestrator.status.remote(task_id)).get("started_at", submitted))
    timeout = _REPORT_TIMEOUT_S * max(1.0, config.time_scale / DEFAULT_TIME_SCALE)
    report = ray.get(orchestrator.wait.remote(task_id), timeout=timeout)
    events = ray.get(orchestrator.events.remote(task_id, 0, 0.1))
    assert system.simulator is not None, "the benchmark runs on the embedded simulator"
    log = ray.get(system.simulator.recent_requests.remote())
    figures = variant_figures(variant.name, variant.label, report, events, log, t0)
    return figures.model_copy(update={"overrides": variant.overrides})


async def single_agent(
    settings: Settings, base_url: str | None, config: RealtimeConfig
) -> SingleAgent:
    """One generation agent answering directly: a streamed call of the synthesis model."""
    client = LLMClient(settings, base_url=base_url)
    first: list[float] = []

    async def on_text(_: str) -> None:
        if not first:
            first.append(time.perf_counter())

    try:
        started = time.perf_counter()
        completion = await client.stream_text(
            Purpose.SYNTHESIS,
            SYSTEM_PROMPTS[Role.GENERATION],
            f"{config.request} [sim-output-tokens {SINGLE_AGENT_TOKENS}]",
            on_text=on_text,
        )
        ended = time.perf_counter()
    finally:
        await client.close()
    return SingleAgent(
        model=completion.model,
        first_token_s=round((first[0] if first else ended) - started, 3),
        full_answer_s=round(ended - started, 3),
        input_tokens=completion.usage.input_tokens,
        output_tokens=completion.usage.output_tokens,
        cost_usd=round(completion.usage.cost_usd, 6),
    )
