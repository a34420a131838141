"""The figures a person reads after a run: Gantt timeline, pool utilisation, parallelism."""

from __future__ import annotations

import struct

import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from actors.models import (
    AgentInfo,
    AgentState,
    Complexity,
    MicrotaskState,
    PoolSnapshot,
    Role,
    RunReport,
    TaskState,
    TimelineEntry,
)
from actors.observe.plots import (
    ROLE_COLORS,
    experiment_row,
    parallelism_figure,
    save_timeline,
    timeline_figure,
    utilization_figure,
)

# id, role, deps, agent, start, end, attempts, status
_ROWS = [
    ("r1", Role.RESEARCH, [], "research-00", 0.1, 1.2, 1, MicrotaskState.DONE),
    ("r2", Role.RESEARCH, [], "research-01", 0.1, 1.6, 2, MicrotaskState.DONE),
    ("r3", Role.RESEARCH, [], "research-00", 1.3, 2.0, 1, MicrotaskState.DONE),
    ("a1", Role.ANALYSIS, ["r1", "r2"], "analysis-00", 1.7, 2.9, 1, MicrotaskState.DONE),
    ("a2", Role.ANALYSIS, ["r3"], "analysis-01", 2.1, 2.6, 3, MicrotaskState.FAILED),
    ("v1", Role.VALIDATION, ["a1"], "validation-00", 3.0, 3.8, 1, MicrotaskState.DONE),
    ("g1", Role.GENERATION, ["v1", "a2"], "generation-00", 3.9, 5.0, 1, MicrotaskState.DONE),
    # never ran: no agent, no times; it must not get a bar
    ("g2", Role.GENERATION, ["g1"], None, None, None, 0, MicrotaskState.CANCELLED),
]


def _report(simulated: bool = True, nodes: tuple[str, ...] = ("n" * 56,)) -> RunReport:
    timeline = [
        TimelineEntry(
            id=id_,
            role=role,
            depends_on=deps,
            agent=agent,
            node=None if agent is None else nodes[i % len(nodes)],
            start_s=start,
            end_s=end,
            attempts=attempts,
            status=status,
        )
        for i, (id_, role, deps, agent, start, end, attempts, status) in enumerate(_ROWS)
    ]
    return RunReport(
        task_id="t-1234",
        state=TaskState.DONE,
        complexity=Complexity.MEDIUM,
        plan_source="template:research",
        microtasks=len(_ROWS),
        agents=6,
        max_parallel=2,
        wall_s=5.2,
        work_s=7.0,
        parallelism=7.0 / 5.2,
        speedup=7.0 / 5.2,
        succeeded=6,
        failed=1,
        retries=3,
        backups=0,
        input_tokens=1000,
        output_tokens=2000,
        cost_usd=0.01,
        simulated=simulated,
        result="answer",
        confidence=0.8,
        timeline=timeline,
    )


def _bars(fig):
    (ax,) = fig.axes
    return ax, [p for p in ax.patches if isinstance(p, Rectangle)]


def test_png_is_written_and_has_content(tmp_path):
    path = save_timeline(_report(), tmp_path / "run.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 300
    assert len(data) > 20_000  # bars, labels and arrows, not a blank canvas


def test_one_bar_per_microtask_that_ran():
    _, bars = _bars(timeline_figure(_report()))
    assert sorted(b.get_gid() for b in bars) == sorted(r[0] for r in _ROWS if r[3] is not None)


def test_one_lane_per_distinct_agent_and_bars_sit_in_their_agents_lane():
    ax, bars = _bars(timeline_figure(_report()))
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    agents = {r[3] for r in _ROWS if r[3] is not None}
    assert sorted(lanes) == sorted(agents)
    lane_of = {label: tick for label, tick in zip(lanes, ax.get_yticks(), strict=True)}
    agent_of = {r[0]: r[3] for r in _ROWS}
    for bar in bars:
        assert bar.get_y() + bar.get_height() / 2 == pytest.approx(lane_of[agent_of[bar.get_gid()]])


def test_bars_coloured_by_role_with_a_legend_and_span_start_to_end():
    ax, bars = _bars(timeline_figure(_report()))
    rows = {r[0]: r for r in _ROWS}
    for bar in bars:
        _, role, _, _, start, end, _, _ = rows[bar.get_gid()]
        assert bar.get_facecolor() == pytest.approx(to_rgba(ROLE_COLORS[role]))
        assert bar.get_x() == pytest.approx(start)
        assert bar.get_x() + bar.get_width() == pytest.approx(end)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {r.value for r in Role}


def test_dependencies_are_drawn_from_end_to_start():
    ax, _ = _bars(timeline_figure(_report()))
    arrows = [(a.xyann, a.xy) for a in ax.texts if getattr(a, "arrow_patch", None)]
    ran = {r[0] for r in _ROWS if r[3] is not None}
    edges = [(d, r[0]) for r in _ROWS if r[0] in ran for d in r[2]]
    assert len(arrows) == len(edges)
    rows = {r[0]: r for r in _ROWS}
    for dep, id_ in edges:
        assert any(
            src[0] == pytest.approx(rows[dep][5]) and dst[0] == pytest.approx(rows[id_][4])
            for src, dst in arrows
        )


def test_title_says_simulated_and_the_figures():
    ax, _ = _bars(timeline_figure(_report(simulated=True)))
    assert "SIMULATED" in ax.get_title(loc="left")
    assert "7/8 microtasks" in ax.get_title(loc="left")
    assert "parallelism 1.3" in ax.get_title(loc="left")
    assert "speedup" not in ax.get_title(loc="left")
    ax, _ = _bars(timeline_figure(_report(simulated=False)))
    assert "SIMULATED" not in ax.get_title(loc="left")


def test_lanes_name_the_node_when_the_run_spans_nodes():
    ax, _ = _bars(timeline_figure(_report(nodes=("a" * 56, "b" * 56))))
    assert any("@aaaaaa" in t.get_text() for t in ax.get_yticklabels())


def test_empty_timeline_still_draws():
    report = _report().model_copy(update={"timeline": []})
    _, bars = _bars(timeline_figure(report))
    assert bars == []


def _snapshot(role: Role, size: int, busy: int) -> PoolSnapshot:
    agents = [
        AgentInfo(
            agent_id=f"{role.value}-{i:02d}",
            node_id="n",
            state=AgentState.BUSY if i < busy else AgentState.IDLE,
            in_flight=int(i < busy),
            completed=0,
            failed=0,
        )
        for i in range(size)
    ]
    return PoolSnapshot(
        role=role,
        min=1,
        max=3,
        size=size,
        busy=busy,
        idle=size - busy,
        queued=0,
        running=busy,
        utilization=100.0 * busy / size,
        completed=0,
        failed=0,
        replaced=0,
        pressure=0.0,
        agents=agents,
    )


def test_utilization_has_one_line_per_pool_in_its_colour(tmp_path):
    samples = [
        (100.0 + t, [_snapshot(role, 1 + t, min(t, 1 + t)) for role in Role]) for t in range(4)
    ]
    fig = utilization_figure(samples)
    use_ax, _ = fig.axes
    lines = {line.get_label(): line for line in use_ax.get_lines()}
    assert set(lines) == {r.value for r in Role}
    for role in Role:
        assert lines[role.value].get_color() == ROLE_COLORS[role]
        assert list(lines[role.value].get_xdata()) == [0.0, 1.0, 2.0, 3.0]  # relative time
    fig.savefig(tmp_path / "use.png")


def test_parallelism_has_one_panel_per_varied_parameter(tmp_path):
    report = _report()
    rows = [
        experiment_row("research agents", n, report.model_copy(update={"agents": n}))
        for n in (1, 2, 4)
    ] + [experiment_row("strategy", s, report) for s in ("round_robin", "least_loaded")]
    assert rows[1]["parallelism"] == pytest.approx(7.0 / 5.2)
    assert rows[1]["efficiency"] == pytest.approx(report.parallelism / 2)
    fig = parallelism_figure(rows)
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in panels] == ["research agents", "strategy"]
    assert [len(ax.patches) for ax in panels] == [3, 2]
    assert all(ax.get_ylabel() == "parallelism (work / wall)" for ax in panels)
    fig.savefig(tmp_path / "parallelism.png")
