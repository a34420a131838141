"""Plan repair, validation, scheduling order and timeline math (pure logic, no Ray)."""

from __future__ import annotations

import pytest

from actors.engine.dag import (
    assign_branches,
    critical_path,
    ideal_makespan,
    levels,
    mark_critical,
    max_parallel,
    repair,
    role_for,
    role_widths,
    validate,
)
from actors.models import Microtask, MicrotaskDraft, PlanDraft, Role


def draft(*items: tuple[str, str, list[str]]) -> PlanDraft:
    """A plan draft from (id, role, depends_on) triples."""
    return PlanDraft(
        microtasks=[
            MicrotaskDraft(id=i, role=r, title=f"title {i}", instructions=f"do {i}", depends_on=d)
            for i, r, d in items
        ]
    )


def task(tid: str, deps: list[str] | None = None, role: Role = Role.ANALYSIS, **kw: object):
    return Microtask(id=tid, role=role, title=tid, instructions=tid, depends_on=deps or [], **kw)


# --- repair ------------------------------------------------------------------


def test_repair_keeps_a_valid_plan_unchanged():
    plan = draft(("r1", "research", []), ("a1", "analysis", ["r1"]), ("g1", "generation", ["a1"]))
    tasks, notes = repair(plan, 10)
    assert notes == []
    assert [(t.id, t.role, t.depends_on) for t in tasks] == [
        ("r1", Role.RESEARCH, []),
        ("a1", Role.ANALYSIS, ["r1"]),
        ("g1", Role.GENERATION, ["a1"]),
    ]
    assert validate(tasks) == []


def test_repair_breaks_a_cycle_at_the_latest_listed_node():
    plan = draft(
        ("r1", "research", ["g1"]), ("a1", "analysis", ["r1"]), ("g1", "generation", ["a1"])
    )
    tasks, notes = repair(plan, 10)
    assert validate(tasks) == []
    by_id = {t.id: t for t in tasks}
    # The back edge r1 -> g1 goes; the forward chain r1 -> a1 -> g1 stays.
    assert by_id["r1"].depends_on == []
    assert by_id["a1"].depends_on == ["r1"]
    assert by_id["g1"].depends_on == ["a1"]
    assert any("cycle" in note for note in notes)


def test_repair_terminates_on_a_complete_graph_of_cycles():
    ids = [f"n{i}" for i in range(60)]
    plan = draft(*[(i, "analysis", [j for j in ids if j != i]) for i in ids])
    tasks, notes = repair(plan, 60)
    assert len(tasks) == 60
    assert validate(tasks) == []
    assert notes


def test_repair_drops_unknown_and_self_dependencies():
    plan = draft(("r1", "research", ["nope", "r1"]), ("a1", "analysis", ["r1", "r1", "ghost"]))
    tasks, notes = repair(plan, 10)
    assert [t.depends_on for t in tasks] == [[], ["r1"]]
    assert any("unknown" in n and "nope" in n for n in notes)
    assert any("itself" in n for n in notes)


def test_repair_maps_unknown_roles_by_synonym():
    plan = draft(
        ("w", "writer", []),
        ("q", "QA", []),
        ("s", "web search", []),
        ("x", "pondering", []),
        ("ok", "Validation", []),
    )
    tasks, notes = repair(plan, 10)
    assert [t.role for t in tasks] == [
        Role.GENERATION,
        Role.VALIDATION,
        Role.RESEARCH,
        Role.ANALYSIS,
        Role.VALIDATION,
    ]
    assert len([n for n in notes if "unknown role" in n]) == 4


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("synthesis", Role.GENERATION),
        ("write", Role.GENERATION),
        ("review", Role.VALIDATION),
        ("check", Role.VALIDATION),
        ("verify", Role.VALIDATION),
        ("gather", Role.RESEARCH),
        ("", Role.ANALYSIS),
    ],
)
def test_role_synonyms(name, role):
    assert role_for(name) is role


def test_repair_renames_empty_duplicate_and_unsafe_ids():
    plan = draft(
        ("r1", "research", []),
        ("r1", "research", []),
        ("", "analysis", ["r1"]),
        ("t2", "analysis", []),
        ("bad id!/" + "x" * 100, "generation", ["r1"]),
    )
    tasks, notes = repair(plan, 10)
    ids = [t.id for t in tasks]
    assert len(set(ids)) == len(ids) == 5
    assert ids[0] == "r1" and ids[3] == "t2"
    assert all(len(i) <= 64 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
    assert ids[1] != "t2" and ids[2] != "t2"  # fresh ids do not steal a listed id
    # A dependency on a duplicated id points at its first holder.
    assert tasks[2].depends_on == ["r1"]
    assert validate(tasks) == []
    assert any("duplicate" in n for n in notes) and any("empty" in n for n in notes)


def test_repair_bounds_titles_and_instructions():
    plan = PlanDraft(
        microtasks=[
            MicrotaskDraft(id="a", role="analysis", title="T" * 1000, instructions="I" * 10_000)
        ]
    )
    tasks, notes = repair(plan, 5)
    assert len(tasks[0].title) == 200
    assert len(tasks[0].instructions) == 4000
    assert len(notes) == 2


def test_repair_treats_plan_text_as_data():
    text = "{__import__('os').system('x')} {0} %s {title}"
    plan = PlanDraft(
        microtasks=[MicrotaskDraft(id="{id}", role="{role}", title=text, instructions=text)]
    )
    tasks, _ = repair(plan, 5)
    assert tasks[0].title == text and tasks[0].instructions == text
    assert tasks[0].id == "id"


def test_repair_trims_to_max_keeping_critical_and_priority_first():
    plan = PlanDraft(
        microtasks=[
            MicrotaskDraft(id="low", role="research", title="t", instructions="i"),
            MicrotaskDraft(id="high", role="research", title="t", instructions="i", priority=5),
            MicrotaskDraft(
                id="crit",
                role="generation",
                title="t",
                instructions="i",
                depends_on=["low"],
                critical=True,
            ),
        ]
    )
    tasks, notes = repair(plan, 2)
    assert [t.id for t in tasks] == ["high", "crit"]  # draft order among the kept
    assert tasks[1].depends_on == []  # edge to the trimmed microtask removed
    assert any("trimmed" in n for n in notes)


def test_repair_of_ten_thousand_microtasks_is_bounded():
    items = [(f"m{i}", "analysis", [f"m{i - 1}", f"m{i + 1}", "missing"]) for i in range(10_000)]
    tasks, notes = repair(draft(*items), 50)
    assert len(tasks) == 50
    assert validate(tasks) == []
    assert len(notes) <= 50
    assert "10000" in notes[0]


def test_repair_of_an_empty_or_textless_draft_returns_nothing():
    assert repair(PlanDraft(microtasks=[]), 5)[0] == []
    blank = PlanDraft(microtasks=[MicrotaskDraft(id="a", role="x", title=" ", instructions="")])
    tasks, notes = repair(blank, 5)
    assert tasks == [] and notes


def test_repair_sets_branches():
    plan = draft(("r1", "research", []), ("r2", "research", []), ("a1", "analysis", ["r2", "r1"]))
    tasks, _ = repair(plan, 5)
    assert [t.branch for t in tasks] == ["r1", "r2", "r2"]


# --- validate and branches ---------------------------------------------------


def test_validate_reports_each_kind_of_problem():
    assert validate([task("a"), task("a")]) == ["duplicate id 'a'"]
    assert "unknown" in validate([task("a", ["b"])])[0]
    assert "itself" in validate([task("a", ["a"])])[0]
    assert validate([task("a", ["b"]), task("b", ["a"])])[0].startswith("cycle")
    assert validate([]) == []


def test_branches_follow_first_dependencies_to_a_root():
    tasks = assign_branches(
        [
            task("r1"),
            task("r2"),
            task("a1", ["r1"]),
            task("a2", ["r2", "r1"]),
            task("v1", ["a2", "a1"]),
        ]
    )
    assert {t.id: t.branch for t in tasks} == {
        "r1": "r1",
        "r2": "r2",
        "a1": "r1",
        "a2": "r2",
        "v1": "r2",
    }


def test_branches_tolerate_invalid_plans():
    tasks = assign_branches([task("a", ["b"]), task("b", ["a"]), task("c", ["zzz"])])
    assert all(t.branch for t in tasks)


# --- critical path, levels, makespan -----------------------------------------


def diamond() -> list[Microtask]:
    return [
        task("r1", role=Role.RESEARCH),
        task("r2", role=Role.RESEARCH),
        task("a1", ["r1"]),
        task("a2", ["r2"]),
        task("g1", ["a1", "a2"], role=Role.GENERATION),
    ]


def test_critical_path_follows_the_longest_durations():
    assert critical_path(diamond()) == ["r1", "a1", "g1"]  # ties: first dependency
    durations = {"r1": 1, "r2": 5, "a1": 1, "a2": 1, "g1": 1}
    assert critical_path(diamond(), durations) == ["r2", "a2", "g1"]
    assert critical_path([]) == []


def test_mark_critical_keeps_existing_flags():
    tasks = diamond()
    tasks[1] = task("r2", role=Role.RESEARCH, critical=True)
    marked = {t.id: t.critical for t in mark_critical(tasks)}
    assert marked == {"r1": True, "r2": True, "a1": True, "a2": False, "g1": True}
    assert not tasks[0].critical  # inputs are not modified


def test_levels_are_topological_generations():
    assert levels(diamond()) == [["r1", "r2"], ["a1", "a2"], ["g1"]]


def test_ideal_makespan_is_critical_path_or_role_load():
    durations = {"r1": 2, "r2": 2, "a1": 1, "a2": 1, "g1": 1}
    capacity = {Role.RESEARCH: 2, Role.ANALYSIS: 2, Role.GENERATION: 1}
    assert ideal_makespan(diamond(), durations, capacity) == 4  # path r1-a1-g1
    capacity[Role.RESEARCH] = 1
    wide = [task(f"r{i}", role=Role.RESEARCH) for i in range(10)]
    assert ideal_makespan(wide, {}, capacity) == 10  # ten units on one agent
    assert ideal_makespan([], {}, {}) == 0
    with pytest.raises(ValueError, match="validation"):
        ideal_makespan([task("v", role=Role.VALIDATION)], {}, capacity)


# --- max_parallel ------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "peak"),
    [
        ([], 0),
        ([(0, 1)], 1),
        ([(0, 1), (1, 2)], 1),  # touching is not overlapping
        ([(0, 2), (1, 3), (1.5, 4)], 3),
        ([(0, 10), (1, 2), (3, 4), (5, 6)], 2),
        ([(1, 1)], 1),  # an instantaneous microtask still ran
        ([(0, 2), (1, 1)], 2),
        ([(0, 1), (1, 1)], 1),
    ],
)
def test_max_parallel(intervals, peak):
    assert max_parallel(intervals) == peak


def test_max_parallel_rejects_reversed_interval():
    with pytest.raises(ValueError):
        max_parallel([(2, 1)])


def test_role_widths_are_the_most_microtasks_of_a_role_in_one_level():
    plan = [
        task("r1", role=Role.RESEARCH),
        task("r2", role=Role.RESEARCH),
        task("r3", role=Role.RESEARCH),
        task("a1", ["r1"], role=Role.ANALYSIS),
        task("a2", ["r2"], role=Role.ANALYSIS),
        task("v1", ["r3"], role=Role.VALIDATION),
        task("g1", ["a1", "a2", "v1"], role=Role.GENERATION),
    ]
    assert role_widths(plan, agent_cap=10) == {
        Role.RESEARCH: 3,
        Role.ANALYSIS: 2,
        Role.VALIDATION: 1,
        Role.GENERATION: 1,
    }
    # A level wider than the task's agent cap is cut to it, roles in proportion.
    assert role_widths(plan, agent_cap=2)[Role.RESEARCH] == 2
    assert role_widths(plan, agent_cap=2)[Role.ANALYSIS] == 2  # ceil(2 * 2 / 3)
