"""Figures of a run and of the pools: the Gantt timeline, pool utilisation, parallelism.

Used by ``parallel-agents run --timeline FILE.png`` and the notebooks. Figures are
built with ``matplotlib.figure.Figure`` directly, not ``pyplot``: nothing is
registered globally, so a long-running process does not accumulate figures and
no GUI backend is ever needed (PNG output goes through Agg).

>>> save_timeline(report, "run.png")  # doctest: +SKIP
PosixPath('run.png')
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from actors.models import PIPELINE, MicrotaskState, PoolSnapshot, Role, RunReport, TimelineEntry

# One colour per role everywhere (timeline bars, utilisation lines); colour-blind safe.
ROLE_COLORS: dict[Role, str] = {
    Role.RESEARCH: "#0072B2",
    Role.ANALYSIS: "#E69F00",
    Role.VALIDATION: "#CC79A7",
    Role.GENERATION: "#009E73",
}
_ROLE_ORDER = {role: i for i, role in enumerate(PIPELINE)}  # a role's rank, for sorting
_BAR_HEIGHT = 0.6
_EDGE_COLOR = "0.3"


def ran(report: RunReport) -> list[TimelineEntry]:
    """The microtasks that ran on an agent (have an agent, a start and an end)."""
    return [
        e
        for e in report.timeline
        if e.agent is not None and e.start_s is not None and e.end_s is not None
    ]


def timeline_figure(report: RunReport) -> Figure:
    """A Gantt chart: one lane per agent, one bar per microtask, coloured by role.

    Thin grey arrows go from the end of each dependency to the start of the
    microtask that needed it. Failed microtasks are hatched; retried ones say
    how many attempts they took.
    """
    entries = ran(report)
    lanes = _lanes(entries)
    fig = Figure(figsize=(11, max(3.0, 0.45 * len(lanes) + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    row = {agent: i for i, agent in enumerate(lanes)}
    by_id = {e.id: e for e in entries}

    for role in sorted({e.role for e in entries}, key=_ROLE_ORDER.__getitem__):
        mine = [e for e in entries if e.role is role]
        bars = ax.barh(
            [row[e.agent] for e in mine],  # type: ignore[index]
            [_end(e) - _start(e) for e in mine],
            left=[_start(e) for e in mine],
            height=_BAR_HEIGHT,
            color=ROLE_COLORS[role],
            edgecolor=_EDGE_COLOR,
            linewidth=0.6,
        )
        for bar, entry in zip(bars, mine, strict=True):
            bar.set_gid(entry.id)  # lets tests and SVG readers find a microtask's bar
            if entry.status is MicrotaskState.FAILED:
                bar.set_hatch("///")
    for entry in entries:
        label = entry.id if entry.attempts <= 1 else f"{entry.id} ×{entry.attempts}"
        ax.text(
            (_start(entry) + _end(entry)) / 2,
            row[entry.agent],  # type: ignore[index]
            label,
            ha="center",
            va="center",
            fontsize=7,
            color="white",
            clip_on=True,
        )
    for entry in entries:
        for dep in entry.depends_on:
            if dep in by_id:
                _arrow(ax, by_id[dep], row[by_id[dep].agent], entry, row[entry.agent])  # type: ignore[index]

    ax.set_yticks(range(len(lanes)), [_lane_label(a, entries) for a in lanes], fontsize=8)
    ax.set_ylim(max(len(lanes), 1) - 0.5, -0.5)  # first lane on top
    ax.set_xlim(0, max([report.wall_s, *(_end(e) for e in entries)]) * 1.02 or 1.0)
    ax.set_xlabel("seconds since the task started")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.legend(
        handles=[
            *(Patch(color=ROLE_COLORS[role], label=role.value) for role in PIPELINE),
            Patch(facecolor="white", edgecolor=_EDGE_COLOR, hatch="///", label="failed"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        title="role",
    )
    ax.set_title(_title(report), fontsize=10, loc="left")
    return fig


def save_timeline(report: RunReport, path: str | Path) -> Path:
    """Write the timeline of ``report`` as a PNG at ``path``; returns the path."""
    path = Path(path)
    timeline_figure(report).savefig(path, format="png", dpi=120)
    return path


def utilization_figure(samples: Sequence[tuple[float, Sequence[PoolSnapshot]]]) -> Figure:
    """Each pool's utilisation (%) and size over time, from ``(time, snapshots)`` samples.

    Times may be absolute (``time.time()``); they are shown relative to the first sample.
    """
    fig = Figure(figsize=(10, 5), layout="constrained")
    use_ax, size_ax = fig.subplots(2, 1, sharex=True)
    t0 = samples[0][0] if samples else 0.0
    series: dict[Role, list[tuple[float, float, int, int]]] = defaultdict(list)
    for at, snapshots in samples:
        for snap in snapshots:
            series[snap.role].append((at - t0, snap.utilization, snap.size, snap.busy))
    for role in sorted(series, key=_ROLE_ORDER.__getitem__):
        t, used, size, busy = zip(*series[role], strict=True)
        color = ROLE_COLORS[role]
        use_ax.plot(t, used, color=color, label=role.value)
        size_ax.step(t, size, where="post", color=color, label=f"{role.value} size")
        size_ax.step(t, busy, where="post", color=color, linestyle=":", alpha=0.8)
    use_ax.set_ylabel("utilisation %")
    use_ax.set_ylim(-2, 102)
    use_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="pool")
    size_ax.set_ylabel("agents (dotted: busy)")
    size_ax.set_xlabel("seconds")
    size_ax.yaxis.get_major_locator().set_params(integer=True)
    use_ax.set_title("Pool utilisation and size over time", fontsize=10, loc="left")
    for ax in (use_ax, size_ax):
        ax.grid(color="0.9")
    return fig


def experiment_row(experiment: str, value: object, report: RunReport) -> dict[str, Any]:
    """One row for ``parallelism_figure``: which parameter, its value, and the run's figures.

    Parallelism is ``work_s / wall_s`` (microtasks running at once, on average), not a
    speedup: nothing here ran a sequential baseline (``parallel-agents bench`` does).
    Efficiency is parallelism per agent used (1.0 = every agent busy for the whole run).
    """
    return {
        "experiment": experiment,
        "value": value,
        "wall_s": report.wall_s,
        "work_s": report.work_s,
        "parallelism": report.parallelism,
        "agents": report.agents,
        "efficiency": report.parallelism / report.agents if report.agents else 0.0,
        "microtasks": report.microtasks,
    }


def parallelism_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """Parallelism (bars) and efficiency (line, right axis) against each varied parameter.

    ``rows`` are dicts with ``experiment`` (the parameter varied), ``value``,
    ``parallelism`` and ``efficiency`` (see ``experiment_row``); one panel per experiment,
    values in the order given.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r["experiment"])].append(r)
    fig = Figure(figsize=(4.2 * max(1, len(groups)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, (name, group) in zip(axes, groups.items(), strict=False):
        labels = [str(r["value"]) for r in group]
        ax.bar(labels, [r["parallelism"] for r in group], color="#0072B2", alpha=0.85)
        ax.set_ylabel("parallelism (work / wall)")
        ax.set_xlabel(name)
        ax.set_ylim(0, max(1.0, *(r["parallelism"] for r in group)) * 1.15)
        eff = ax.twinx()
        eff.plot(labels, [100 * r["efficiency"] for r in group], "o-", color="#D55E00")
        eff.set_ylabel("efficiency % (parallelism / agents)", color="#D55E00")
        eff.set_ylim(0, 105)
        ax.set_title(f"varying {name}", fontsize=10)
    return fig


# --- helpers -----------------------------------------------------------------


def _start(entry: TimelineEntry) -> float:
    return entry.start_s or 0.0


def _end(entry: TimelineEntry) -> float:
    return entry.end_s or 0.0


def _lanes(entries: list[TimelineEntry]) -> list[str]:
    """Distinct agents, grouped by role in flow order, then by name."""
    first_role: dict[str, Role] = {}
    for e in entries:
        if e.agent is not None:
            first_role.setdefault(e.agent, e.role)
    return sorted(first_role, key=lambda a: (_ROLE_ORDER[first_role[a]], a))


def _lane_label(agent: str, entries: list[TimelineEntry]) -> str:
    """The agent's name, plus a short node id when the run used several nodes."""
    if len({e.node for e in entries}) < 2:
        return agent
    node = next((e.node for e in entries if e.agent == agent and e.node), "")
    return f"{agent} @{node[:6]}"


def _arrow(ax: Any, dep: TimelineEntry, dep_row: int, entry: TimelineEntry, row: int) -> None:
    """A thin arrow from ``dep``'s end to ``entry``'s start."""
    bend = 0.0 if dep_row != row else -0.4  # an arc when both sit in one lane
    ax.annotate(
        "",
        xy=(_start(entry), row),
        xytext=(_end(dep), dep_row),
        arrowprops={
            "arrowstyle": "-|>",
            "mutation_scale": 6,
            "lw": 0.5,
            "color": "0.35",
            "alpha": 0.55,
            "shrinkA": 0,
            "shrinkB": 0,
            "connectionstyle": f"arc3,rad={bend}",
        },
    )


def _title(report: RunReport) -> str:
    counts = (
        f"{len(ran(report))}/{report.microtasks} microtasks on {report.agents} agents · "
        f"wall {report.wall_s:.1f} s · work {report.work_s:.1f} s · "
        f"parallelism {report.parallelism:.1f} · peak {report.max_parallel} at once"
    )
    source = "SIMULATED model (no API key)" if report.simulated else "Claude API"
    task = f"Task {report.task_id} ({report.complexity.value}, {report.state.value})"
    return f"{task} · {source}\n{counts}"
