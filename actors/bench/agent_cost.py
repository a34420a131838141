"""What an agent process costs (``parallel-agents bench --agents``): start, memory, idle CPU.

On one Ray instance, ``count`` actors of each kind are started at once and timed until all
of them answer a ping: a bare actor (``bare``: a class with one method), a bare actor with
an ``async`` method (``bare-async``: Ray gives it an event loop, as it gives the agents), an
actor that imports what an agent would without the SDK (``agent-no-sdk``: its model calls
sent to a model-client actor instead), and today's ``Agent``. Once all are up and a settling
pause has passed, every actor's USS and RSS are read (psutil ``memory_full_info``) and its
CPU over an idle window, beside Ray's own processes. Apart from Ray, ``python -X importtime
-c "import actors.agents.agent"`` is broken down by top-level package, and the modules that import
leaves in ``sys.modules`` are checked for packages an agent never uses.

Environment variables named ``RAY_*`` or ``OMP_*`` are recorded with the figures: Ray's
knobs are tried by setting them before a run (the local Ray and its workers inherit them).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import ray
from pydantic import BaseModel, Field

from actors.bench.memory import tree_pids
from actors.bench.results import Check
from actors.config import NAMESPACE, Settings
from actors.models import Role

KINDS = ("bare", "bare-async", "agent-no-sdk", "agent")
# What an agent would load if its model calls went to a model-client actor on its node:
# today's agent module less the SDK client and the limiter's client side.
NO_SDK_MODULES = (
    "actors.config",
    "actors.models",
    "actors.errors",
    "actors.observe.tracing",
    "actors.llm.answer_relay",
    "actors.engine.reconcile",
    "actors.llm.prompt_parts",
    "actors.llm.held_back",
    "actors.llm.ledger",
)
DEFAULT_COUNT = 12
# Packages the brief names, then whatever else is heavy; the rest is summed as "other".
NAMED_GROUPS = ("anthropic", "httpx", "pydantic", "opentelemetry", "ray")
_GROUP_OF = {
    "httpx2": "httpx",
    "httpcore": "httpx",
    "h11": "httpx",
    "pydantic_core": "pydantic",
    "pydantic_settings": "pydantic",
}
# An agent needs none of these: their presence after ``import actors.agents.agent`` is a leak.
UNWANTED = (
    "opentelemetry.sdk",
    "actors.sim.simulator",
    "actors.engine.documents",
    "actors.engine.store",
    "actors.serve_app",
    "pypdf",
    "matplotlib",
    "ray.serve",
)
TARGET_USS_MB = 60.0
TARGET_IDLE_POINTS = 0.1  # % of a core above a bare actor
TARGET_READY_S = {100: 60.0, 30: 15.0}  # agents ready from a cold start
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")

Say = Callable[[str], None]


class KindCost(BaseModel):
    """One kind of actor: how long ``count`` took to start and what each costs at rest."""

    kind: str
    count: int
    ready_s: float  # from the first creation to the last actor answering a ping
    median_ready_s: float  # to the median actor's first answer
    uss_mb: float  # median over the actors
    rss_mb: float
    start_cpu_s: float = 0.0  # median CPU seconds of an actor's process when all answered
    idle_cpu_pct: float  # mean % of one core per actor over the idle window


class ImportShare(BaseModel):
    group: str
    self_ms: float  # import time spent in this group's own modules
    share: float  # of the total


class AgentCostResults(BaseModel):
    count: int
    knobs: dict[str, str] = Field(default_factory=dict)  # RAY_* and OMP_* of this run
    kinds: list[KindCost] = Field(default_factory=list)
    ray_services_cpu_pct: float = 0.0  # GCS, raylet and idle workers, % of a core, summed
    idle_window_s: float = 0.0
    import_total_ms: float = 0.0
    imports: list[ImportShare] = Field(default_factory=list)
    own_imports: list[ImportShare] = Field(default_factory=list)  # our slowest modules
    agent_modules: int = 0  # len(sys.modules) after ``import actors.agents.agent``
    unwanted: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    total_s: float = 0.0


# --- import time -------------------------------------------------------------------------


def parse_importtime(text: str) -> dict[str, int]:
    """Module -> its own import time in microseconds, from ``python -X importtime``'s stderr.

    A module imported twice in the text (two runs pasted together) adds up.
    """
    out: Counter[str] = Counter()
    for line in text.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            out[match[4]] += int(match[1])
    return dict(out)


def group_of(module: str) -> str:
    """The package a module's import time is charged to: ``actors.*`` for ours, else the
    top-level package (``httpx2`` counts as ``httpx``, ``pydantic_core`` as ``pydantic``)."""
    top = module.split(".")[0]
    return "actors.*" if top == "actors" else _GROUP_OF.get(top, top)


def import_shares(self_us: dict[str, int], others: int = 6) -> list[ImportShare]:
    """The named packages, the ``others`` heaviest of the rest, ours (``actors.*``), then
    "other" for the remainder."""
    by_group: Counter[str] = Counter()
    for module, micros in self_us.items():
        by_group[group_of(module)] += micros
    total = sum(by_group.values()) or 1
    named = [g for g in NAMED_GROUPS if g in by_group]
    rest = [g for g, _ in by_group.most_common() if g not in named and g != "actors.*"]
    ours = ["actors.*"] if "actors.*" in by_group else []
    shown = named + rest[:others] + ours
    remainder = sum(by_group[g] for g in rest[others:])
    rows = [_share(g, by_group[g], total) for g in shown]
    if remainder:
        rows.append(_share("other", remainder, total))
    return rows


def own_modules(self_us: dict[str, int], top: int = 6) -> list[ImportShare]:
    """Our ``top`` slowest modules to import (their own time), slowest first."""
    total = sum(self_us.values()) or 1
    ours = sorted((m for m in self_us if group_of(m) == "actors.*"), key=lambda m: -self_us[m])
    return [_share(m, self_us[m], total) for m in ours[:top]]


def _share(group: str, micros: int, total: int) -> ImportShare:
    return ImportShare(group=group, self_ms=round(micros / 1000, 1), share=round(micros / total, 4))


def unwanted_modules(modules: Iterable[str]) -> list[str]:
    """The packages of ``UNWANTED`` that ``modules`` hold (a package or any submodule)."""
    present = set(modules)
    return [
        name
        for name in UNWANTED
        if name in present or any(m.startswith(name + ".") for m in present)
    ]


def _import_profile(runs: int = 3) -> tuple[dict[str, int], list[str]]:
    """The fastest of ``runs`` import profiles of ``actors.agents.agent`` (after one warm-up that
    writes bytecode), and the modules it leaves loaded."""
    command = [sys.executable, "-X", "importtime", "-c", "import actors.agents.agent"]
    profiles = []
    for _ in range(runs + 1):
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        profiles.append(parse_importtime(done.stderr))
    fastest = min(profiles[1:], key=lambda p: sum(p.values()))
    listing = "import json, sys, actors.agents.agent; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True
    )
    return fastest, json.loads(done.stdout)


# --- actors ------------------------------------------------------------------------------


def _bare_classes() -> dict[str, Any]:
    """The actors that are not today's agent, defined here so that Ray ships them by value:
    a worker that runs one imports nothing of this package it is not told to."""

    @ray.remote(num_cpus=0)
    class Bare:
        def ping(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0)
    class BareAsync:
        async def ping(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0)
    class NoSdkAgent:
        def __init__(self, settings: Settings) -> None:
            for name in NO_SDK_MODULES:
                importlib.import_module(name)
            self.settings = settings  # unpickled as an agent's are: pydantic-settings too

        async def ping(self) -> int:
            return os.getpid()

    return {"bare": Bare, "bare-async": BareAsync, "agent-no-sdk": NoSdkAgent}


def _start(kind: str, count: int, settings: Settings) -> tuple[list[Any], list[float], list[int]]:
    """Start ``count`` actors of ``kind`` at once: handles, seconds to each first answer
    (sorted), and their process ids."""
    from actors.agents.agent import Agent

    roles = list(Role)
    started = time.perf_counter()
    if kind == "agent":
        handles = [
            Agent.remote(f"bench-{i:03d}", roles[i % len(roles)], settings)  # type: ignore[attr-defined]
            for i in range(count)
        ]
    elif kind == "agent-no-sdk":
        actor_class = _bare_classes()[kind]
        handles = [actor_class.remote(settings) for _ in range(count)]
    else:
        actor_class = _bare_classes()[kind]
        handles = [actor_class.remote() for _ in range(count)]
    pending = [h.ping.remote() for h in handles]
    ready: list[float] = []
    pids: list[int] = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        answer = ray.get(done[0])
        ready.append(time.perf_counter() - started)
        pids.append(answer["pid"] if isinstance(answer, dict) else answer)
    return handles, ready, pids


def _memory_mb(pid: int) -> tuple[float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.uss / 2**20, info.rss / 2**20


def _cpu_s(pids: Iterable[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:  # it ended between the listing and the read
            continue
        out[pid] = times.user + times.system
    return out


def _warm(agents: Sequence[Any]) -> float:
    """One microtask on each agent, as the pools' agents have run before they rest (the
    SDK's first request loads more, and keeps a connection); seconds it took."""
    from actors.models import Microtask, MicrotaskRequest

    started = time.perf_counter()
    roles = list(Role)
    requests = [
        MicrotaskRequest(
            task_id="agent-cost",
            microtask=Microtask(
                id=f"warm-{i}", role=roles[i % len(roles)], title="Warm up", instructions="Hi."
            ),
        )
        for i in range(len(agents))
    ]
    ray.get([agent.run.remote(request) for agent, request in zip(agents, requests, strict=True)])
    return time.perf_counter() - started


def measure_actors(
    count: int, settings: Settings, say: Say, *, settle_s: float = 3.0, window_s: float = 15.0
) -> tuple[list[KindCost], float]:
    """Per kind of actor, its start time, memory and idle CPU; and Ray's services' idle
    CPU (% of a core). Starts and shuts down a local Ray of its own, a rate limiter actor
    and a simulator in this process for the agents' one call each."""
    from actors.config import LIMITER_NAME, SimulatorSettings
    from actors.llm import RateLimiterActor
    from actors.sim.simulator import SimulatorServer

    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        with SimulatorServer(SimulatorSettings(latency="zero", seed=16)) as sim:
            settings = settings.with_overrides(anthropic_base_url=sim.url)
            limiter = RateLimiterActor.options(name=LIMITER_NAME, namespace=NAMESPACE).remote(  # type: ignore[attr-defined]
                settings.limiter
            )
            handles: list[Any] = [limiter]
            # Ray's first actor of a job pays for the job's start (the worker pool, the
            # class export): one actor takes that before any kind is timed.
            first, _, not_measured = _start("bare", 1, settings)
            handles += first
            started: dict[str, tuple[list[float], list[int]]] = {}
            start_cpu: dict[str, float] = {}
            for kind in KINDS:
                say(f"starting {count} {kind} actors")
                made, ready, pids = _start(kind, count, settings)
                handles += made
                started[kind] = (ready, pids)
                start_cpu[kind] = statistics.median(_cpu_s(pids).values())
                say(f"{kind}: all {count} answered in {ready[-1]:.1f} s")
                if kind == "agent":
                    say(f"agents warmed by one call each in {_warm(made):.1f} s")
            time.sleep(settle_s)  # let start-up work (first reports, GC) pass before the window
            ours = {pid for _, pids in started.values() for pid in pids}
            left_out = {*ours, *not_measured, os.getpid()}
            services = [pid for pid in tree_pids() if pid not in left_out]
            before = _cpu_s([*ours, *services])
            time.sleep(window_s)
            after = _cpu_s([*ours, *services])
        used = {pid: (after[pid] - before[pid]) / window_s * 100 for pid in after if pid in before}
        costs = []
        for kind, (ready, pids) in started.items():
            memory = [_memory_mb(pid) for pid in pids]
            costs.append(
                KindCost(
                    kind=kind,
                    count=count,
                    ready_s=round(ready[-1], 2),
                    median_ready_s=round(statistics.median(ready), 2),
                    uss_mb=round(statistics.median(m[0] for m in memory), 1),
                    rss_mb=round(statistics.median(m[1] for m in memory), 1),
                    start_cpu_s=round(start_cpu[kind], 2),
                    idle_cpu_pct=round(statistics.mean(used.get(pid, 0.0) for pid in pids), 3),
                )
            )
        services_pct = round(sum(used.get(pid, 0.0) for pid in services), 2)
        for handle in handles:
            ray.kill(handle)
        return costs, services_pct
    finally:
        ray.shutdown()


# --- figures -----------------------------------------------------------------------------


def checks(results: AgentCostResults) -> list[Check]:
    """The targets of issue 16 item 3, for today's agent and for one without the SDK."""
    kinds = {k.kind: k for k in results.kinds}
    bare = kinds.get("bare")
    out = []
    for name in ("agent", "agent-no-sdk"):
        agent = kinds.get(name)
        if agent is None:
            continue
        out.append(
            Check(
                target=f"{name} USS <= {TARGET_USS_MB:g} MB",
                measured=f"{agent.uss_mb:.1f} MB",
                met=agent.uss_mb <= TARGET_USS_MB,
            )
        )
        if bare is not None:
            above = agent.idle_cpu_pct - bare.idle_cpu_pct
            out.append(
                Check(
                    target=f"{name} idle CPU within {TARGET_IDLE_POINTS:g} points of a bare actor",
                    measured=f"{agent.idle_cpu_pct:.2f}% vs {bare.idle_cpu_pct:.2f}% "
                    f"({above:+.2f})",
                    met=above <= TARGET_IDLE_POINTS,
                )
            )
        for wanted, limit_s in TARGET_READY_S.items():
            target = f"{wanted} {name} ready from cold start <= {limit_s:g} s"
            if agent.count != wanted:
                out.append(Check(target=target, measured="not run (--agents-count)", met=None))
            else:
                met = agent.ready_s <= limit_s
                out.append(Check(target=target, measured=f"{agent.ready_s:.1f} s", met=met))
    return out


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown(results: AgentCostResults) -> str:
    """The report: actors per kind, imports by package, unwanted modules, targets."""
    knobs = ", ".join(f"`{k}={v}`" for k, v in sorted(results.knobs.items())) or "none"
    lines = [
        "# Agent processes",
        "",
        f"{results.count} actors of each kind on one local Ray, started at once per kind; "
        f"agents then make one call each (simulator) before they rest; idle CPU over "
        f"{results.idle_window_s:g} s. Knobs: {knobs}. Indicative: a shared 2-core machine.",
        "",
    ]
    lines += _table(
        ("kind", "ready (all) s", "ready (median) s", "start CPU s", "USS MB", "RSS MB",
         "idle CPU % of a core"),
        (
            (k.kind, f"{k.ready_s:.2f}", f"{k.median_ready_s:.2f}", f"{k.start_cpu_s:.2f}",
             f"{k.uss_mb:.1f}", f"{k.rss_mb:.1f}", f"{k.idle_cpu_pct:.2f}")
            for k in results.kinds
        ),
    )  # fmt: skip
    lines += [
        "",
        "Ray's services (GCS, raylet, idle workers, the limiter actor) at rest: "
        f"{results.ray_services_cpu_pct:.2f}% of a core in all.",
        "",
        f"## `import actors.agents.agent`: {results.import_total_ms:.0f} ms, "
        f"{results.agent_modules} modules",
        "",
    ]
    lines += _table(
        ("package", "own ms", "share"),
        ((s.group, f"{s.self_ms:.1f}", f"{s.share:.0%}") for s in results.imports),
    )
    own = ", ".join(f"`{s.group}` {s.self_ms:.1f} ms" for s in results.own_imports)
    unwanted = ", ".join(f"`{name}`" for name in results.unwanted) or "none"
    lines += [
        "",
        f"Our slowest: {own}.",
        "",
        f"Loaded though an agent never uses them: {unwanted}.",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ("target", "measured", "met"),
        (
            (c.target, c.measured, "n/a" if c.met is None else ("met" if c.met else "MISSED"))
            for c in results.checks
        ),
    )
    return "\n".join(lines) + "\n"


def write(results: AgentCostResults, folder: Path) -> list[Path]:
    """Write ``agent_cost.md`` and ``agent_cost.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "agent_cost.md", folder / "agent_cost.json"
    md.write_text(markdown(results))
    js.write_text(results.model_dump_json(indent=2))
    return [md, js]


def run(count: int, settings: Settings, say: Say) -> AgentCostResults:
    """Measure everything in one run."""
    started = time.perf_counter()
    results = AgentCostResults(
        count=count,
        knobs={k: v for k, v in os.environ.items() if k.startswith(("RAY_", "OMP_"))},
    )
    say("profiling `import actors.agents.agent`")
    self_us, modules = _import_profile()
    results.import_total_ms = round(sum(self_us.values()) / 1000, 1)
    results.imports = import_shares(self_us)
    results.own_imports = own_modules(self_us)
    results.agent_modules = len(modules)
    results.unwanted = unwanted_modules(modules)
    # The agents' one call each goes to the simulator; its ledger lines stay out of the home.
    home = Path(tempfile.mkdtemp(prefix="parallel-agents-agent-cost-"))
    quiet = settings.model_copy(update={"home": home})
    window_s = 15.0
    results.kinds, results.ray_services_cpu_pct = measure_actors(
        count, quiet, say, window_s=window_s
    )
    results.idle_window_s = window_s
    results.checks = checks(results)
    results.total_s = round(time.perf_counter() - started, 1)
    return results


def main(count: int, out: Path, as_json: bool, settings: Settings, say: Say) -> int:
    """``bench --agents``: 0 when it ran (targets missed are reported, not an error)."""
    results = run(count, settings, say)
    paths = write(results, out)
    if as_json:
        print(results.model_dump_json())
    else:
        print(markdown(results))
    say("wrote " + ", ".join(str(p) for p in paths))
    return 0
