"""The benchmark's figures: one model, rendered as Markdown, a PNG chart and JSON."""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel, Field


class Row(BaseModel):
    """One contestant on one scenario (a workload under one latency model)."""

    scenario: str
    workload: str
    latency: str
    contestant: str
    microtasks: int
    agents: int
    makespan_s: float
    wall_s: float
    ideal_s: float = Field(description="lower bound: critical path or busiest role's work/agents")
    greedy_s: float = Field(description="zero-overhead list schedule: an achievable target")
    sequential_s: float
    sequential_estimated: bool
    speedup: float = Field(description="sequential makespan / this makespan")
    efficiency: float = Field(description="ideal / measured")
    schedule_efficiency: float = Field(description="greedy / measured")
    overhead_ms: float = Field(description="(measured - greedy) / microtasks, in ms")
    p50_s: float
    p99_s: float
    failed: int = 0
    retries: int = 0
    backups: int = 0
    note: str = ""


class BackupVariant(BaseModel):
    """Repeated runs of one orchestrator setting under per-attempt heavy-tailed draws."""

    variant: str
    runs: int
    makespans_s: list[float]
    p50_s: float
    p99_s: float
    mean_s: float
    backups: int


class Check(BaseModel):
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


class CpuProfile(BaseModel):
    """CPU per kind of process: per microtask on one zero-latency run, and while idle."""

    scenario: str
    microtasks: int
    ms_per_microtask: dict[str, float] = Field(
        description="CPU ms per microtask by kind, above what the same processes use idle"
    )
    idle_ms_per_microtask: dict[str, float] = Field(
        description="CPU ms per microtask that idle processes burnt during the same run"
    )
    idle_cores: dict[str, float] = Field(description="cores used with no work running")
    idle_processes: dict[str, int] = Field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return sum(self.ms_per_microtask.values())


class BenchResults(BaseModel):
    mode: str
    cpus: int
    latency_scale: float
    ray_start_s: float
    warmups_s: dict[str, float] = Field(description="pool resize/warm-up per capacity")
    rows: list[Row] = Field(default_factory=list)
    backups_workload: str = ""
    backups: list[BackupVariant] = Field(default_factory=list)
    backups_p99_cut_pct: float | None = None
    cpu: CpuProfile | None = None
    peak_rss_mb: float = 0.0
    peak_processes: int = 0
    peak_during: str = ""
    checks: list[Check] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    total_s: float = 0.0


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def backup_variant(variant: str, makespans: list[float], backups: int) -> BackupVariant:
    return BackupVariant(
        variant=variant,
        runs=len(makespans),
        makespans_s=[round(m, 3) for m in makespans],
        p50_s=round(percentile(makespans, 0.5), 3),
        p99_s=round(percentile(makespans, 0.99), 3),
        mean_s=round(statistics.fmean(makespans), 3) if makespans else 0.0,
        backups=backups,
    )


# --- Markdown ---------------------------------------------------------------------------

_HEAD = (
    "| scenario | contestant | makespan s | ideal s | greedy s | speedup | efficiency "
    "| sched. eff. | overhead ms/mt | p50 s | p99 s | notes |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n"
)


def markdown(results: BenchResults) -> str:
    """The report as ``bench/results.md``."""
    out = [
        f"# Benchmark results ({results.mode})\n",
        f"{results.cpus} CPUs; latencies scaled by {results.latency_scale:g}; "
        f"total {results.total_s:.0f} s. How to read this: `bench/README.md`.\n",
        "## Targets\n",
        "| target | measured | met |\n|---|---|---|\n",
    ]
    for check in results.checks:
        met = "n/a" if check.met is None else ("yes" if check.met else "**no**")
        out.append(f"| {check.target} | {check.measured} | {met} |\n")
    out.append("\n## Makespans\n\n" + _HEAD)
    for r in results.rows:
        seq = " (sequential estimated)" if r.sequential_estimated else ""
        extra = ", ".join(
            part
            for part in (
                f"{r.failed} failed" if r.failed else "",
                f"{r.retries} retries" if r.retries else "",
                f"{r.backups} backups" if r.backups else "",
                r.note,
            )
            if part
        )
        out.append(
            f"| {r.scenario} | {r.contestant} | {r.makespan_s:.3f} | {r.ideal_s:.3f} "
            f"| {r.greedy_s:.3f} | {r.speedup:.1f}x{seq} | {r.efficiency:.2f} "
            f"| {r.schedule_efficiency:.2f} | {r.overhead_ms:.2f} | {r.p50_s:.3f} "
            f"| {r.p99_s:.3f} | {extra} |\n"
        )
    if results.backups:
        out.append(f"\n## Backups under the heavy tail ({results.backups_workload})\n\n")
        out.append("| variant | runs | p50 s | p99 s | mean s | backups launched |\n")
        out.append("|---|--:|--:|--:|--:|--:|\n")
        for b in results.backups:
            out.append(
                f"| {b.variant} | {b.runs} | {b.p50_s:.3f} | {b.p99_s:.3f} | {b.mean_s:.3f} "
                f"| {b.backups} |\n"
            )
        if results.backups_p99_cut_pct is not None:
            change = -results.backups_p99_cut_pct
            out.append(f"\nBackups (as planned) change the p99 makespan by {change:+.1f}%.\n")
    if results.cpu is not None:
        out.append(_cpu_section(results.cpu, results.cpus))
    out.append("\n## Start-up and memory\n\n")
    out.append(f"- Ray system start (Ray actors, first pools): {results.ray_start_s:.1f} s\n")
    for label, seconds in results.warmups_s.items():
        out.append(f"- pool warm-up to {label}: {seconds:.1f} s\n")
    out.append(
        f"- peak RSS of the driver and its processes: {results.peak_rss_mb:.0f} MB over "
        f"{results.peak_processes} processes (during {results.peak_during or 'start-up'})\n"
    )
    for line in results.skipped:
        out.append(f"- skipped: {line}\n")
    if results.notes:
        out.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in results.notes))
    return "".join(out)


def _cpu_section(cpu: CpuProfile, cpus: int) -> str:
    idle_total = sum(cpu.idle_cores.values())
    idle_ms = sum(cpu.idle_ms_per_microtask.values())
    lines = [
        f"\n## Where the CPU goes ({cpu.scenario}, the system)\n\n",
        "| process kind | processes | CPU ms per microtask (work) | of which idle burn, ms "
        "| cores used while idle |\n",
        "|---|--:|--:|--:|--:|\n",
    ]
    kinds = sorted(cpu.ms_per_microtask, key=lambda k: -cpu.ms_per_microtask[k])
    for kind in kinds:
        lines.append(
            f"| {kind} | {cpu.idle_processes.get(kind, 0)} | {cpu.ms_per_microtask[kind]:.2f} "
            f"| {cpu.idle_ms_per_microtask.get(kind, 0.0):.2f} "
            f"| {cpu.idle_cores.get(kind, 0.0):.2f} |\n"
        )
    lines.append(
        f"| **all** | | **{cpu.total_ms:.2f}** | **{idle_ms:.2f}** | **{idle_total:.2f}** |\n"
    )
    spare = max(cpus - idle_total, 1e-9)
    lines.append(
        f"\nWork is the CPU above what the same processes burn idle. On {cpus} CPUs, of which "
        f"idle Ray workers already take {idle_total:.2f}, {cpu.total_ms:.1f} ms of work per "
        f"microtask bounds the amortised overhead at about {cpu.total_ms / spare:.1f} ms per "
        "microtask, however well it is scheduled.\n"
    )
    return "".join(lines)


# --- chart ------------------------------------------------------------------------------


def chart(results: BenchResults, path: Path) -> None:
    """Makespan per scenario and contestant, with the ideal and greedy marks (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in results.rows))
    contestants = list(dict.fromkeys(r.contestant for r in results.rows))
    by_key = {(r.scenario, r.contestant): r for r in results.rows}
    panels = 2 if results.backups else 1
    fig, axes = plt.subplots(panels, 1, figsize=(12, 4.5 * panels), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(contestants))
    for i, name in enumerate(contestants):
        xs, heights = [], []
        for j, scenario in enumerate(scenarios):
            row = by_key.get((scenario, name))
            if row is not None:
                xs.append(j + i * width)
                heights.append(row.makespan_s)
        ax.bar(xs, heights, width, label=name)
    for j, scenario in enumerate(scenarios):
        some = next(r for r in results.rows if r.scenario == scenario)
        span = (j - width / 2, j + 0.8 - width / 2)
        ax.hlines(some.ideal_s, *span, colors="black", linestyles="dashed")
        ax.hlines(some.greedy_s, *span, colors="grey", linestyles="dotted")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenarios))])
    ax.set_xticklabels(scenarios, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("makespan, s (log)")
    ax.set_title("Makespan per scenario (dashed: ideal bound, dotted: greedy schedule)")
    ax.legend(fontsize=8)
    if results.backups:
        ax2 = axes[1][0]
        ax2.boxplot(
            [b.makespans_s for b in results.backups],
            tick_labels=[b.variant for b in results.backups],
        )
        ax2.set_ylabel("makespan, s")
        ax2.set_title(f"Backups under the heavy tail: {results.backups_workload}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: BenchResults, folder: Path) -> list[Path]:
    """Write ``results.md``, ``results.png`` and ``results.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, png, js = folder / "results.md", folder / "results.png", folder / "results.json"
    md.write_text(markdown(results))
    chart(results, png)
    js.write_text(results.model_dump_json(indent=2))
    return [md, png, js]
