"""The real-time benchmark's figures: read from one task's events, report and simulator log,
set against today's pipeline, and written as ``realtime.md``, ``realtime.png``, ``realtime.json``.

Everything here is pure (no Ray): ``variant_figures`` turns what a run left behind into
seconds from the request; ``ratios`` and ``checks`` compare variants with today's pipeline
against issue 14's acceptance targets. ``actors.bench.realtime`` runs the variants.

>>> round(ratio(2.0, 8.0), 2)
0.25
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from pydantic import BaseModel, Field

from actors.bench.results import Check
from actors.models import EventKind, ProgressEvent, Role, RunReport

BASELINE = "today"  # the variant every ratio is taken against
# Issue 14's acceptance: against today's time to full answer (and cost), at most this much.
FIRST_TOKEN_TARGET = 0.4
FULL_ANSWER_TARGET = 0.6
COST_TARGET = 1.1
# Phases in the order work flows, with the simulator log's purposes that make each up
# (inside a pipeline run, a plain text call can only be the quick answer too).
PHASES: dict[str, tuple[str, ...]] = {
    "assessment": ("assessment",),
    "planning": ("outline", "plan"),  # the outline: hierarchical planning's first call
    "dispatch": ("microtask",),
    "quick answer": ("quick", "text"),
    "reconcile + synthesis": ("reconcile", "synthesis", "overview"),
}
PHASE_COLORS = {  # Okabe-Ito, colour-blind safe
    "assessment": "#999999",
    "planning": "#0072B2",
    "dispatch": "#E69F00",
    "quick answer": "#CC79A7",
    "reconcile + synthesis": "#009E73",
    "answer": "#009E73",
}


class Phase(BaseModel):
    """One phase of a run, in seconds from the request."""

    name: str
    start_s: float
    end_s: float
    calls: int = 0


class VariantFigures(BaseModel):
    """One variant's run of the request, every time in seconds from the request."""

    variant: str
    label: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    state: str
    complexity: str
    plan_source: str
    microtasks: int
    failed: int
    phases: list[Phase]
    first_microtask_s: float | None
    first_answer_token_s: float = Field(description="first ANSWER event of the full answer")
    first_useful_text_s: float = Field(description="the quick take's first text, if earlier")
    full_answer_s: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    paid_calls: int
    streamed: list[str] = Field(description="purposes of the calls that streamed")
    plan_end_s: float | None = None
    first_research_s: float | None = Field(
        default=None, description="the first research microtask's call reaching the model"
    )
    research_before_plan_end: bool | None = None
    startup_s: float = Field(default=0.0, description="system start, apart from the figures")


class SingleAgent(BaseModel):
    """One streamed call of the synthesis model answering the request directly."""

    model: str
    first_token_s: float
    full_answer_s: float
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Ratios(BaseModel):
    """One run against today's pipeline (None: no baseline to compare with)."""

    variant: str
    label: str
    first_token: float | None = Field(description="first answer token / today's full answer")
    first_useful: float | None = Field(description="first useful text / today's full answer")
    full_answer: float | None = Field(description="full answer / today's full answer")
    cost: float | None = Field(description="cost / today's cost")
    research_before_plan_end: bool | None = None
    judged: bool = Field(default=True, description="False: shown for reference (single agent)")


class RealtimeResults(BaseModel):
    request: str
    time_scale: float
    seed: int
    cpus: int
    pools: dict[str, int]
    single: SingleAgent | None = None
    variants: list[VariantFigures] = Field(default_factory=list)
    ratios: list[Ratios] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    total_s: float = 0.0


# --- figures from what a run left behind ---------------------------------------------------


def _first(events: Iterable[ProgressEvent], kinds: Iterable[str], after: float = 0.0) -> float:
    wanted = set(kinds)
    return min((e.at for e in events if e.kind.value in wanted and e.at >= after), default=-1.0)


def phases(log: Sequence[dict[str, Any]], t0: float) -> list[Phase]:
    """Each phase from its calls in the simulator log: first arrival to last end; phases
    with no call (a verdict the heuristic gave, no quick answer) are left out."""
    out = []
    for name, purposes in PHASES.items():
        calls = [e for e in log if e.get("purpose") in purposes and e["at"] >= t0]
        if calls:
            start = min(e["at"] for e in calls)
            end = max(e["at"] + e["latency_s"] for e in calls)
            start_s, end_s = round(start - t0, 3), round(end - t0, 3)
            out.append(Phase(name=name, start_s=start_s, end_s=end_s, calls=len(calls)))
    return out


def variant_figures(
    variant: str,
    label: str,
    report: RunReport,
    events: Sequence[ProgressEvent],
    log: Sequence[dict[str, Any]],
    t0: float,
) -> VariantFigures:
    """A variant's figures from its task's events and report and the simulator's request log.

    ``t0`` is the task's start (wall clock). The first answer token is the first ANSWER event:
    the writer's, or a section's while the DAG still runs (with nothing streamed, the end).
    The quick take (QUICK events) counts as the first useful text.
    """
    full = report.wall_s
    token_at = _first(events, [EventKind.ANSWER.value])
    first_token = token_at - t0 if token_at >= 0 else full
    early = [e.at for e in events if e.kind is EventKind.QUICK]
    first_useful = min([first_token, *(at - t0 for at in early)])
    calls = [e for e in log if e["at"] >= t0]
    found = phases(calls, t0)
    plan = next((p for p in found if p.name == "planning"), None)
    research = {t.id for t in report.timeline if t.role is Role.RESEARCH}
    research_at = [
        e["at"] - t0
        for e in calls
        if e.get("purpose") == "microtask" and e["microtask"] in research
    ]
    first_research = round(min(research_at), 3) if research_at else None
    before = (
        first_research < plan.end_s if plan is not None and first_research is not None else None
    )
    return VariantFigures(
        variant=variant,
        label=label,
        state=report.state.value,
        complexity=report.complexity.value,
        plan_source=report.plan_source,
        microtasks=report.microtasks,
        failed=report.failed,
        phases=found,
        first_microtask_s=report.first_microtask_s,
        first_answer_token_s=round(first_token, 3),
        first_useful_text_s=round(first_useful, 3),
        full_answer_s=full,
        input_tokens=report.input_tokens,
        output_tokens=report.output_tokens,
        cost_usd=report.cost_usd,
        paid_calls=report.paid_calls,
        streamed=sorted({str(e["purpose"]) for e in calls if e.get("stream")}),
        plan_end_s=plan.end_s if plan is not None else None,
        first_research_s=first_research,
        research_before_plan_end=before,
    )


# --- against today's pipeline -------------------------------------------------------------


def ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("inf")


def ratios(variants: Sequence[VariantFigures], single: SingleAgent | None) -> list[Ratios]:
    """Every run against today's pipeline; the single agent last, for reference only."""
    base = next((v for v in variants if v.variant == BASELINE), None)

    def against(value: float, reference: float | None) -> float | None:
        return None if reference is None else round(ratio(value, reference), 3)

    full = base.full_answer_s if base else None
    cost = base.cost_usd if base else None
    out = [
        Ratios(
            variant=v.variant,
            label=v.label,
            first_token=against(v.first_answer_token_s, full),
            first_useful=against(v.first_useful_text_s, full),
            full_answer=against(v.full_answer_s, full),
            cost=against(v.cost_usd, cost),
            research_before_plan_end=v.research_before_plan_end,
            judged=v.variant != BASELINE,
        )
        for v in variants
    ]
    if single is not None:
        out.append(
            Ratios(
                variant="single",
                label="single agent",
                first_token=against(single.first_token_s, full),
                first_useful=against(single.first_token_s, full),
                full_answer=against(single.full_answer_s, full),
                cost=against(single.cost_usd, cost),
                judged=False,
            )
        )
    return out


def checks(rows: Sequence[Ratios]) -> list[Check]:
    """Issue 14's targets for every variant but today's; None where nothing to compare."""
    out = []
    for r in (r for r in rows if r.judged):
        for what, value, target in (
            ("first answer token", r.first_token, FIRST_TOKEN_TARGET),
            ("full answer", r.full_answer, FULL_ANSWER_TARGET),
            ("cost", r.cost, COST_TARGET),
        ):
            against = "today's cost" if what == "cost" else "today's full answer"
            out.append(
                Check(
                    target=f"{r.label}: {what} <= {target:g} x {against}",
                    measured="no baseline" if value is None else f"{value:.2f} x",
                    met=None if value is None else value <= target,
                )
            )
        if r.research_before_plan_end is not None:
            out.append(
                Check(
                    target=f"{r.label}: the first research microtask starts before planning ends",
                    measured="yes" if r.research_before_plan_end else "no",
                    met=r.research_before_plan_end,
                )
            )
    return out


# --- Markdown -----------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _span(found: Sequence[Phase], name: str) -> str:
    phase = next((p for p in found if p.name == name), None)
    return "—" if phase is None else f"{phase.start_s:.1f}–{phase.end_s:.1f}"


def _met(value: float | None, target: float, judged: bool) -> str:
    if value is None:
        return "—"
    if not judged:
        return f"{value:.2f}"
    return f"{value:.2f} " + ("(met)" if value <= target else "**(missed)**")


def _yes(value: bool | None, judged: bool = True) -> str:
    return "—" if value is None else ("yes" if value else "**no**" if judged else "no")


def figures_table(results: RealtimeResults) -> str:
    """Phases and times of every run, seconds from the request."""
    head = ["run", *PHASES, "first microtask", "first answer token", "first useful text"]
    head += ["full answer", "tokens in / out", "cost $", "paid calls", "streamed"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 1) + "|"]
    if (one := results.single) is not None:
        cells = ["single agent", *("—" for _ in PHASES), "—", _s(one.first_token_s)]
        cells += [_s(one.first_token_s), _s(one.full_answer_s)]
        cells += [f"{one.input_tokens:,} / {one.output_tokens:,}", f"{one.cost_usd:.4f}", "1"]
        lines.append("| " + " | ".join([*cells, "text"]) + " |")
    for v in results.variants:
        cells = [v.label, *(_span(v.phases, name) for name in PHASES)]
        cells += [_s(v.first_microtask_s), _s(v.first_answer_token_s)]
        cells += [_s(v.first_useful_text_s), _s(v.full_answer_s)]
        cells += [f"{v.input_tokens:,} / {v.output_tokens:,}", f"{v.cost_usd:.4f}"]
        cells += [str(v.paid_calls), ", ".join(v.streamed) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ratios_table(results: RealtimeResults) -> str:
    """Each run against today's pipeline, with issue 14's targets."""
    head = [
        "run",
        f"first answer token / today's full (≤ {FIRST_TOKEN_TARGET:g})",
        "first useful text / today's full",
        f"full answer / today's full (≤ {FULL_ANSWER_TARGET:g})",
        f"cost / today's (≤ {COST_TARGET:g})",
        "first research microtask before planning ends",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 2) + "|---|"]
    for r in results.ratios:
        label = r.label if r.judged or r.variant != "single" else "single agent (reference)"
        cells = [
            label,
            _met(r.first_token, FIRST_TOKEN_TARGET, r.judged),
            _met(r.first_useful, float("inf"), False),
            _met(r.full_answer, FULL_ANSWER_TARGET, r.judged),
            _met(r.cost, COST_TARGET, r.judged),
            _yes(r.research_before_plan_end, r.judged),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(results: RealtimeResults) -> str:
    """The report as ``bench/realtime.md``."""
    pools = ", ".join(f"{role} {n}" for role, n in results.pools.items())
    out = [
        "# Real-time benchmark: the critical path\n\n",
        f"Request: “{results.request}”. Simulated Claude with realistic latency (each model's "
        f"first-token time and tokens per second, thinking included), every delay × "
        f"{results.time_scale:g}: divide a time by {results.time_scale:g} for what the real "
        f"models would take. Pools: {pools}; {results.cpus} CPUs; seed {results.seed}; "
        f"total {results.total_s:.0f} s. How to read this: `bench/README.md`.\n\n",
        "## Phases and times (seconds from the request)\n\n",
        figures_table(results),
        "\n## Against today's pipeline\n\n",
        ratios_table(results),
        "\n## Start-up (apart from the figures)\n\n",
        *(f"- {v.label}: system start {v.startup_s:.1f} s\n" for v in results.variants),
    ]
    if results.skipped:
        out.append("\n## Not run\n\n" + "".join(f"- {line}\n" for line in results.skipped))
    if results.notes:
        out.append("\n## Notes\n\n" + "".join(f"- {line}\n" for line in results.notes))
    return "".join(out)


# --- chart --------------------------------------------------------------------------------


def chart_figure(results: RealtimeResults) -> Figure:
    """One row per run: its phases as coloured lanes, markers for first microtask, first
    answer token, first useful text and full answer."""
    rows: list[tuple[str, list[Phase], dict[str, float | None]]] = []
    if (one := results.single) is not None:
        answer = Phase(name="answer", start_s=0.0, end_s=one.full_answer_s)
        rows.append(
            ("single agent", [answer], {"token": one.first_token_s, "full": one.full_answer_s})
        )
    for v in results.variants:
        early = v.first_useful_text_s < v.first_answer_token_s
        marks: dict[str, float | None] = {
            "microtask": v.first_microtask_s,
            "useful": v.first_useful_text_s if early else None,
            "token": v.first_answer_token_s,
            "full": v.full_answer_s,
        }
        rows.append((v.label, v.phases, marks))
    fig = Figure(figsize=(11, 0.9 * len(rows) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    lanes = list(PHASES)  # each phase its own thin lane, so overlapping phases both show
    height = 0.8 / len(lanes)
    styles = {
        "microtask": ("v", "black", "first microtask"),
        "useful": ("o", "#CC79A7", "first useful text"),
        "token": ("*", "#D55E00", "first answer token"),
        "full": ("|", "black", "full answer"),
    }
    for y, (_, found, marks) in enumerate(rows):
        for phase in found:
            # The single agent's one call fills the row's middle.
            lane = lanes.index(phase.name) if phase.name in lanes else (len(lanes) - 1) / 2
            ax.barh(
                y - 0.4 + (lane + 0.5) * height,
                phase.end_s - phase.start_s,
                left=phase.start_s,
                height=height * 0.9,
                color=PHASE_COLORS[phase.name],
            )
        for key, (marker, color, _) in styles.items():
            if (at := marks.get(key)) is None:
                continue
            if key == "full":
                ax.vlines(at, y - 0.45, y + 0.45, colors=color, linewidth=2)
            else:
                ax.plot(at, y, marker=marker, color=color, markersize=12, linestyle="")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"seconds from the request (simulated, every delay × {results.time_scale:g})")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    handles: list[Any] = [Patch(color=PHASE_COLORS[name], label=name) for name in PHASES]
    handles += [
        Line2D([], [], marker=m, color=c, linestyle="", markersize=9, label=text)
        for m, c, text in styles.values()
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(
        f"One request end to end per run (simulated models, time scale {results.time_scale:g})",
        fontsize=10,
        loc="left",
    )
    return fig


def write(results: RealtimeResults, folder: Path) -> list[Path]:
    """Write ``realtime.md``, ``realtime.png`` and ``realtime.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, png, js = (folder / f"realtime.{ext}" for ext in ("md", "png", "json"))
    md.write_text(markdown(results))
    chart_figure(results).savefig(png, format="png", dpi=110)
    js.write_text(results.model_dump_json(indent=2))
    return [md, png, js]
