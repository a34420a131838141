"""The throughput benchmark's figures: per step from its requests' timings, the scaling check
(issue 16), and ``throughput.md``, ``throughput.png``, ``throughput.json``.

Everything here is pure (no Ray); ``actors.bench.throughput`` runs the steps. Times are
seconds from the step's stream origin (the driver's clock; the orchestrator's and the
agents' wall clocks are the same machine's).

- **tasks/min**: requests finished done × 60 / (first submit → last done): the whole
  stream, filling and draining included, as a user sending it would see it.
- **p50/p95 time per task**: submit (the driver's call) → done (its report back).
- **microtasks/s**: the plan's microtask calls that finished / (first call's start → last
  call's end); the merge's calls (reconcile, synthesis) are not counted.
- **middle mt/s**: the calls that ended in the middle half of that window, per second: the
  rate once the stream has filled the pools and before it drains, where every step is
  saturated alike. Filling and draining weigh more on the small steps (a level twice as
  wide as its role's agents takes two rounds there), so the stream's tasks/min flatters
  scaling a little; compare the middle rates' ratio.
- **busy**: the share of agent time those calls filled over that window: near 1 when the
  agents bound the stream.
- **scaling**: (tasks/min at the last step / at the first) / (their agents' ratio): 1 is
  linear; issue 16's target is 0.8 or more.

>>> round(scaling_of(10, 30.0, 80, 192.0), 2)
0.8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from pydantic import BaseModel, Field

from actors.bench.results import Check, percentile
from actors.models import PIPELINE, Role, RunReport, TaskState

SCALING_TARGET = 0.8  # issue 16: throughput at N agents ≥ 0.8 × linear from the first step


@dataclass(frozen=True)
class TaskTiming:
    """One request of a stream, seconds from the stream's origin."""

    submitted_s: float
    done_s: float
    state: str
    microtasks: int = 0  # succeeded
    failed: int = 0
    backups: int = 0
    retries: int = 0
    calls: tuple[tuple[float, float], ...] = field(default=())  # microtask calls: start, end

    @classmethod
    def of(
        cls, report: RunReport, started_s: float, submitted_s: float, done_s: float
    ) -> TaskTiming:
        """From the task's report; ``started_s``: when the orchestrator accepted it."""
        calls = tuple(
            (started_s + e.start_s, started_s + e.end_s)
            for e in report.timeline
            if e.start_s is not None and e.end_s is not None
        )
        return cls(
            submitted_s=submitted_s,
            done_s=done_s,
            state=report.state.value,
            microtasks=report.succeeded,
            failed=report.failed,
            backups=report.backups,
            retries=report.retries,
            calls=calls,
        )


class Step(BaseModel):
    """One agent count's stream and what it measured."""

    agents: int
    split: dict[str, int] = Field(description="agents per role")
    startup_s: float = Field(description="pools grown to this size (first step: system start)")
    tasks: int = Field(description="requests in the stream")
    done: int = Field(description="requests that finished done")
    offered_per_min: float = Field(description="the stream's arrivals per minute")
    bound_per_min: float = Field(description="what these agents finish at best")
    tasks_per_min: float
    p50_s: float = Field(description="time per task, submit to done")
    p95_s: float
    microtasks_per_s: float
    middle_microtasks_per_s: float = Field(
        description="calls ending in the middle half of their window, per second"
    )
    busy: float = Field(description="share of agent time in microtask calls")
    window_s: float = Field(description="first submit to last done")
    microtasks: int
    failed_microtasks: int
    backups: int
    retries: int
    sim_peak_concurrency: int | None = None


class ThroughputResults(BaseModel):
    mode: str
    cpus: int
    latency_s: float
    levels: list[int]
    arrivals: str
    overload: float
    span_s: float
    seed: int
    system_start_s: float = 0.0
    steps: list[Step] = []
    scaling: float | None = None
    checks: list[Check] = []
    notes: list[str] = []
    total_s: float = 0.0


def step_figures(
    agents: int,
    split: Mapping[Role, int],
    startup_s: float,
    offered_per_min: float,
    bound_per_min: float,
    timings: Sequence[TaskTiming],
    sim_peak_concurrency: int | None = None,
) -> Step:
    """One step's figures from its requests' timings."""
    done = [t for t in timings if t.state == TaskState.DONE.value]
    window = max((t.done_s for t in timings), default=0.0) - min(
        (t.submitted_s for t in timings), default=0.0
    )
    calls = [c for t in timings for c in t.calls]
    first = min((start for start, _ in calls), default=0.0)
    span = max((end for _, end in calls), default=0.0) - first
    per_task = [t.done_s - t.submitted_s for t in done]
    middle = sum(1 for _, end in calls if first + span / 4 <= end <= first + 3 * span / 4)
    return Step(
        agents=agents,
        split={role.value: n for role, n in split.items() if n},
        startup_s=round(startup_s, 2),
        tasks=len(timings),
        done=len(done),
        offered_per_min=round(offered_per_min, 2),
        bound_per_min=round(bound_per_min, 2),
        tasks_per_min=round(60 * len(done) / window, 2) if window > 0 else 0.0,
        p50_s=round(percentile(per_task, 0.5), 2),
        p95_s=round(percentile(per_task, 0.95), 2),
        microtasks_per_s=round(len(calls) / span, 2) if span > 0 else 0.0,
        middle_microtasks_per_s=round(middle / (span / 2), 2) if span > 0 else 0.0,
        busy=round(sum(end - start for start, end in calls) / (agents * span), 3)
        if span > 0
        else 0.0,
        window_s=round(window, 2),
        microtasks=sum(t.microtasks for t in timings),
        failed_microtasks=sum(t.failed for t in timings),
        backups=sum(t.backups for t in timings),
        retries=sum(t.retries for t in timings),
        sim_peak_concurrency=sim_peak_concurrency,
    )


def scaling_of(agents_a: int, rate_a: float, agents_b: int, rate_b: float) -> float:
    """Throughput gained from ``a`` to ``b`` over the agents gained: 1 is linear."""
    if agents_a < 1 or rate_a <= 0:
        return 0.0
    return (rate_b / rate_a) / (agents_b / agents_a)


def checks(steps: Sequence[Step]) -> tuple[float | None, list[Check]]:
    """Issue 16's check, last step against the first: (its scaling, the check lines)."""
    out: list[Check] = []
    if len(steps) < 2:
        return None, out
    a, b = steps[0], steps[-1]
    k = b.agents / a.agents
    scaling = round(scaling_of(a.agents, a.tasks_per_min, b.agents, b.tasks_per_min), 3)
    out.append(
        Check(
            target=f"throughput at {b.agents} agents ≥ {SCALING_TARGET:g} × {k:g} × "
            f"throughput at {a.agents}",
            measured=f"{b.tasks_per_min:.1f} against {a.tasks_per_min:.1f} tasks/min: "
            f"{scaling:.2f} of linear",
            met=scaling >= SCALING_TARGET,
        )
    )
    out.append(
        Check(
            target=f"offered load at {b.agents} agents ≥ {k:g} × what {a.agents} agents did",
            measured=f"{b.offered_per_min:.1f} against {k * a.tasks_per_min:.1f} tasks/min",
            met=b.offered_per_min >= k * a.tasks_per_min,
        )
    )
    done, sent = sum(s.done for s in steps), sum(s.tasks for s in steps)
    out.append(
        Check(target="every request finished done", measured=f"{done} of {sent}", met=done == sent)
    )
    return scaling, out


# --- report -------------------------------------------------------------------------------


def table(results: ThroughputResults) -> str:
    """One row per step."""
    head = [
        "agents",
        "R/A/V/G",
        "requests",
        "offered /min",
        "agent bound /min",
        "tasks/min",
        "scaling",
        "p50 s",
        "p95 s",
        "microtasks/s",
        "middle mt/s",
        "busy",
        "start-up s",
        "failed mt",
        "backups",
        "sim peak",
    ]
    lines = ["| " + " | ".join(head) + " |", "|--:|---" + "|--:" * (len(head) - 2) + "|"]
    for s in results.steps:
        first = results.steps[0]
        roles = "/".join(str(s.split.get(r.value, 0)) for r in PIPELINE)
        scale = scaling_of(first.agents, first.tasks_per_min, s.agents, s.tasks_per_min)
        cells = [
            str(s.agents),
            roles,
            f"{s.done}/{s.tasks}",
            f"{s.offered_per_min:.1f}",
            f"{s.bound_per_min:.1f}",
            f"{s.tasks_per_min:.1f}",
            f"{scale:.2f}",
            f"{s.p50_s:.1f}",
            f"{s.p95_s:.1f}",
            f"{s.microtasks_per_s:.2f}",
            f"{s.middle_microtasks_per_s:.2f}",
            f"{s.busy:.2f}",
            f"{s.startup_s:.1f}",
            str(s.failed_microtasks),
            str(s.backups),
            "—" if s.sim_peak_concurrency is None else str(s.sim_peak_concurrency),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(results: ThroughputResults) -> str:
    """``bench/throughput.md``."""
    plan = " → ".join(str(n) for n in results.levels)
    out = [
        "# Throughput: a stream of requests against the agents\n\n",
        f"Each step: a {results.arrivals} stream (seed {results.seed}) of medium requests "
        f"over {results.span_s:g} s, {results.overload:g} × what its agents can do at best; "
        f"every request the same fixed plan of {sum(results.levels)} microtasks ({plan}: "
        f"research → analysis → validation → generation), each call {results.latency_s:g} s "
        f"on the simulator. One system, its pools grown between steps (start-up apart). "
        f"Mode {results.mode}; {results.cpus} CPUs; total {results.total_s:.0f} s. How to "
        "read it: `bench/README.md`, the docstring of `actors/bench/throughput_figures.py`.\n\n",
        table(results),
        "\n## Target\n\n",
        *(
            f"- {'n/a' if c.met is None else 'met' if c.met else '**missed**'}: {c.target}: "
            f"{c.measured}\n"
            for c in results.checks
        ),
        f"\nSystem start (Ray actors, first pools, warm-up): {results.system_start_s:.1f} s.\n",
    ]
    if len(results.steps) >= 2:
        a, b = results.steps[0], results.steps[-1]
        middle = scaling_of(
            a.agents, a.middle_microtasks_per_s, b.agents, b.middle_microtasks_per_s
        )
        out.insert(
            -1,
            f"- the same at the middle-half microtask rate (filling and draining left out): "
            f"{b.middle_microtasks_per_s:.2f} against {a.middle_microtasks_per_s:.2f} "
            f"microtasks/s: {middle:.2f} of linear\n",
        )
    if results.notes:
        out.append("\n## Notes\n\n" + "".join(f"- {line}\n" for line in results.notes))
    return "".join(out)


def chart_figure(results: ThroughputResults) -> Figure:
    """Tasks per minute against agents, with the line linear from the first step, the
    target (0.8 of it) and the agents' own bound."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    steps = results.steps
    agents = [s.agents for s in steps]
    if steps:
        base = steps[0].tasks_per_min / steps[0].agents
        line = [0, agents[-1]]  # linear: through the origin and the first step
        ax.plot(
            line, [base * n for n in line], "--", color="0.4", label="linear from the first step"
        )
        target = [SCALING_TARGET * base * n for n in line]
        ax.plot(line, target, ":", color="0.4", label=f"target: {SCALING_TARGET:g} × linear")
        ax.plot(
            agents,
            [s.bound_per_min for s in steps],
            "-",
            color="#009E73",
            alpha=0.5,
            label="agent bound (no overhead)",
        )
        ax.plot(agents, [s.tasks_per_min for s in steps], "o-", color="#0072B2", label="measured")
        for s in steps:
            ax.annotate(
                f"{s.tasks_per_min:.1f}",
                (s.agents, s.tasks_per_min),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    ax.set_xticks(agents)
    ax.set_xlabel("agents in all")
    ax.set_ylabel("tasks per minute (first submit → last done)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(color="0.9")
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    title = f"Throughput, {sum(results.levels)}-microtask requests, {results.latency_s:g} s a call"
    if results.scaling is not None:
        title += f": {results.scaling:.2f} of linear"
    ax.set_title(title, fontsize=10, loc="left")
    return fig


def write(results: ThroughputResults, folder: Path) -> list[Path]:
    """Write ``throughput.md``, ``throughput.png`` and ``throughput.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, png, js = (folder / f"throughput.{ext}" for ext in ("md", "png", "json"))
    md.write_text(markdown(results))
    chart_figure(results).savefig(png, format="png", dpi=110)
    js.write_text(results.model_dump_json(indent=2) + "\n")
    return [md, png, js]
