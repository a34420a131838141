"""Plans as graphs: repair a model's draft, check a plan, and the timeline math around it.

A plan is a list of ``Microtask`` whose ``depends_on`` name other microtasks.
``repair`` turns whatever the model proposed into a valid plan (and says what
it changed), ``validate`` checks one, and ``critical_path`` / ``max_parallel`` /
``ideal_makespan`` measure a plan or a finished run (``actors.engine.scheduler`` hands a
plan's microtasks out as their dependencies finish).

Text inside a plan is data: it is sliced and compared, never evaluated or used
as a format string.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter

from actors.models import Microtask, MicrotaskDraft, PlanDraft, Role

MAX_ID_CHARS = 64
MAX_TITLE_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 4000
MAX_NOTES = 50

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WORD = re.compile(r"[a-z]+")
# Word stems per role, checked in this order; anything else becomes analysis.
_ROLE_STEMS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    (Role.GENERATION, ("generat", "writ", "synthes", "compos", "draft", "summar", "author")),
    (Role.VALIDATION, ("valid", "review", "check", "verif", "qa", "test", "critic", "audit")),
    (Role.RESEARCH, ("research", "search", "gather", "collect", "investigat", "retriev")),
)


def _quote(text: str, limit: int = 40) -> str:
    """A short, printable rendering of untrusted text for notes."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _normal_id(raw: str) -> str:
    # Bound before the regex so a megabyte-long id costs nothing.
    return _ID_UNSAFE.sub("-", raw[: 4 * MAX_ID_CHARS].strip()).strip("-")[:MAX_ID_CHARS]


def role_for(name: str) -> Role:
    """The role a free-form role name means ("writer" → generation, "qa" → validation)."""
    lowered = name.strip().lower()
    if lowered in Role.__members__.values():
        return Role(lowered)
    words = _WORD.findall(lowered[:200])
    for role, stems in _ROLE_STEMS:
        if any(word.startswith(stem) for word in words for stem in stems):
            return role
    return Role.ANALYSIS


def repair(draft: PlanDraft, max_microtasks: int) -> tuple[list[Microtask], list[str]]:
    """Turn the model's draft into valid microtasks plus a note for every change.

    In order: read at most ``4 * max_microtasks`` drafts; drop drafts with no
    text; give every microtask a unique safe id; map free-form roles; drop
    unknown, self and repeated dependencies; bound titles and instructions;
    trim to ``max_microtasks`` (critical, then priority, then listing order);
    break cycles; assign branches.

    Returns ``([], notes)`` when nothing usable remains; the caller then falls
    back to a template. Raises ``ValueError`` if ``max_microtasks`` < 1.
    """
    if max_microtasks < 1:
        raise ValueError(f"max_microtasks must be at least 1, not {max_microtasks}")
    notes: list[str] = []
    # Bound the input before any graph work so a huge draft costs O(limit).
    limit = 4 * max_microtasks
    drafts = draft.microtasks
    if len(drafts) > limit:
        notes.append(f"the draft had {len(drafts)} microtasks; only the first {limit} were read")
        drafts = drafts[:limit]

    usable = [d for d in drafts if d.title.strip() or d.instructions.strip()]
    if len(usable) < len(drafts):
        notes.append(
            f"dropped {len(drafts) - len(usable)} microtasks without title or instructions"
        )

    ids, owner = _assign_ids(usable, notes)
    tasks: list[Microtask] = []
    for item, tid in zip(usable, ids, strict=True):
        role = role_for(item.role)
        if item.role.strip().lower() != role.value:
            notes.append(f"{tid}: unknown role {_quote(item.role)} mapped to {role.value}")
        title = item.title.strip() or item.instructions.strip()
        instructions = item.instructions.strip() or title
        if len(title) > MAX_TITLE_CHARS:
            notes.append(f"{tid}: title cut to {MAX_TITLE_CHARS} characters")
            title = title[:MAX_TITLE_CHARS]
        if len(instructions) > MAX_INSTRUCTIONS_CHARS:
            notes.append(f"{tid}: instructions cut to {MAX_INSTRUCTIONS_CHARS} characters")
            instructions = instructions[:MAX_INSTRUCTIONS_CHARS]
        depends_on = _dependencies(tid, item.depends_on[:limit], owner, ids, notes)
        tasks.append(
            Microtask(
                id=tid,
                role=role,
                title=title,
                instructions=instructions,
                depends_on=depends_on,
                priority=item.priority,
                critical=item.critical,
            )
        )

    tasks = _trim(tasks, max_microtasks, notes)
    _break_cycles(tasks, notes)
    if not tasks:
        notes.append("no usable microtasks remain")
    if len(notes) > MAX_NOTES:
        notes = [*notes[: MAX_NOTES - 1], f"… and {len(notes) - MAX_NOTES + 1} more changes"]
    return assign_branches(tasks), notes


def _assign_ids(
    usable: Sequence[MicrotaskDraft], notes: list[str]
) -> tuple[list[str], dict[str, int]]:
    """Final ids by position, and which position owns each normalised id.

    The first holder of a normalised id keeps it; empty ids and later
    duplicates get fresh ones (``t<position>``) that nobody else claims.
    """
    normal = [_normal_id(d.id) for d in usable]
    owner: dict[str, int] = {}
    for index, nid in enumerate(normal):
        if nid:
            owner.setdefault(nid, index)
    taken = set(owner)
    ids: list[str] = []
    for index, (item, nid) in enumerate(zip(usable, normal, strict=True)):
        if nid and owner[nid] == index:
            if nid != item.id:
                notes.append(f"id {_quote(item.id)} normalised to {nid!r}")
            ids.append(nid)
            continue
        fresh, n = f"t{index + 1}", index + 1
        while fresh in taken:
            n += 1
            fresh = f"t{n}"
        taken.add(fresh)
        why = "empty" if not nid else "duplicate"
        notes.append(f"{why} id {_quote(item.id)} of microtask {index + 1} renamed to {fresh!r}")
        ids.append(fresh)
    return ids, owner


def _dependencies(
    tid: str, raw_deps: list[str], owner: dict[str, int], ids: list[str], notes: list[str]
) -> list[str]:
    """Resolve raw dependency ids to final ids, dropping unknown ones, self-edges and repeats."""
    resolved: list[str] = []
    seen: set[str] = set()
    unknown: list[str] = []
    self_edge = False
    for raw in raw_deps:
        index = owner.get(_normal_id(raw))
        if index is None:
            unknown.append(_quote(raw, 20))
        elif ids[index] == tid:
            self_edge = True
        elif ids[index] not in seen:
            seen.add(ids[index])
            resolved.append(ids[index])
    if self_edge:
        notes.append(f"{tid}: dropped its dependency on itself")
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        notes.append(f"{tid}: dropped {len(unknown)} dependencies on unknown ids: {shown}")
    return resolved


def _trim(tasks: list[Microtask], max_microtasks: int, notes: list[str]) -> list[Microtask]:
    """Keep critical, then high-priority, then early microtasks; drop edges to the rest."""
    if len(tasks) <= max_microtasks:
        return tasks
    ranked = sorted(range(len(tasks)), key=lambda i: (not tasks[i].critical, -tasks[i].priority, i))
    keep = set(ranked[:max_microtasks])
    dropped = [t.id for i, t in enumerate(tasks) if i not in keep]
    shown = ", ".join(dropped[:10]) + (", …" if len(dropped) > 10 else "")
    notes.append(f"trimmed to {max_microtasks} microtasks; dropped {len(dropped)}: {shown}")
    kept = [t for i, t in enumerate(tasks) if i in keep]
    gone = set(dropped)
    lost = 0
    for task in kept:
        before = len(task.depends_on)
        task.depends_on = [d for d in task.depends_on if d not in gone]
        lost += before - len(task.depends_on)
    if lost:
        notes.append(f"dropped {lost} dependencies on trimmed microtasks")
    return kept


def _break_cycles(tasks: list[Microtask], notes: list[str]) -> None:
    """Drop edges until the graph is acyclic (in place).

    Each round asks graphlib for one cycle and drops the dependency on the
    node listed latest in the draft: a plan usually lists work in order, so
    the back edge is the one pointing forward. After a bounded number of rounds
    (only a pathological draft gets there) every remaining dependency on a
    later-listed microtask is dropped at once, which is acyclic by construction.
    """
    order = {t.id: i for i, t in enumerate(tasks)}
    by_id = {t.id: t for t in tasks}
    for _ in range(len(tasks) + 1):
        try:
            TopologicalSorter({t.id: t.depends_on for t in tasks}).prepare()
            return
        except CycleError as exc:
            cycle: list[str] = exc.args[1]
        # cycle = [n0, n1, ..., n0]: each node depends on the one before it.
        position = max(range(len(cycle) - 1), key=lambda i: order[cycle[i]])
        latest, dependent = cycle[position], cycle[position + 1]
        by_id[dependent].depends_on.remove(latest)
        notes.append(f"{dependent}: dropped dependency on {latest} to break the cycle")
    dropped = 0
    for task in tasks:
        before = len(task.depends_on)
        task.depends_on = [d for d in task.depends_on if order[d] < order[task.id]]
        dropped += before - len(task.depends_on)
    notes.append(f"too many cycles: dropped {dropped} dependencies on later microtasks")


def validate(microtasks: Sequence[Microtask]) -> list[str]:
    """Problems with a plan (duplicate ids, unknown or self dependencies, a cycle); [] if valid."""
    problems: list[str] = []
    seen: set[str] = set()
    for task in microtasks:
        if not task.id:
            problems.append("a microtask has an empty id")
        elif task.id in seen:
            problems.append(f"duplicate id {task.id!r}")
        seen.add(task.id)
    for task in microtasks:
        for dep in task.depends_on:
            if dep == task.id:
                problems.append(f"{task.id!r} depends on itself")
            elif dep not in seen:
                problems.append(f"{task.id!r} depends on unknown id {dep!r}")
    if not problems:
        try:
            TopologicalSorter({t.id: t.depends_on for t in microtasks}).prepare()
        except CycleError as exc:
            problems.append("cycle: " + " → ".join(exc.args[1]))
    return problems


def closed(microtasks: Sequence[Microtask]) -> list[Microtask]:
    """The part of a streamed plan that arrived, made whole: dependencies on ids that
    never arrived are dropped (what arrived was passed on in dependency order, so no
    cycle is left), branches and the critical path assigned."""
    known = {t.id for t in microtasks}
    kept = [
        t.model_copy(update={"depends_on": [d for d in t.depends_on if d in known]})
        for t in microtasks
    ]
    return mark_critical(assign_branches(kept))


def assign_branches(microtasks: Sequence[Microtask]) -> list[Microtask]:
    """Copies with ``branch`` set to the root reached by following first dependencies.

    Microtasks on one branch build on each other, so the balancer can keep
    them on one agent. Roots (no dependencies) are their own branch.
    """
    first = {t.id: t.depends_on[0] if t.depends_on else None for t in microtasks}
    branch: dict[str, str] = {}
    for task in microtasks:
        chain: list[str] = []
        on_chain: set[str] = set()
        node = task.id
        # Stop at a root, a known branch, an unknown id, or a repeat (invalid input).
        while node not in branch and node not in on_chain:
            chain.append(node)
            on_chain.add(node)
            parent = first.get(node)
            if parent is None or parent not in first:
                break
            node = parent
        root = branch.get(node, node)
        for member in chain:
            branch[member] = root
    return [t.model_copy(update={"branch": branch[t.id]}) for t in microtasks]


def _graph(microtasks: Sequence[Microtask]) -> dict[str, list[str]]:
    known = {t.id for t in microtasks}
    return {t.id: [d for d in t.depends_on if d in known and d != t.id] for t in microtasks}


def critical_path(
    microtasks: Sequence[Microtask], durations: Mapping[str, float] | None = None
) -> list[str]:
    """Ids on the longest path (by summed durations; 1.0 each when not given), first to last.

    Ties go to the microtask listed last (the final answer in a template) and,
    walking back, to the first listed dependency. Raises ``graphlib.CycleError``.
    """
    graph = _graph(microtasks)
    weight = durations or {}
    total: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for node in TopologicalSorter(graph).static_order():
        best: str | None = None
        for dep in graph[node]:
            if best is None or total[dep] > total[best]:
                best = dep
        total[node] = weight.get(node, 1.0) + (total[best] if best is not None else 0.0)
        previous[node] = best
    end: str | None = None
    for task in microtasks:
        if end is None or total[task.id] >= total[end]:
            end = task.id
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = previous[end]
    return path[::-1]


def mark_critical(
    microtasks: Sequence[Microtask], durations: Mapping[str, float] | None = None
) -> list[Microtask]:
    """Copies with ``critical=True`` on the longest path; microtasks already critical stay so."""
    on_path = set(critical_path(microtasks, durations))
    return [t.model_copy(update={"critical": t.critical or t.id in on_path}) for t in microtasks]


def levels(microtasks: Sequence[Microtask]) -> list[list[str]]:
    """Topological generations in listing order, for display and templates.

    Dispatch does not wait for a level to finish: see ``DagScheduler``.
    """
    index = {t.id: i for i, t in enumerate(microtasks)}
    sorter = TopologicalSorter(_graph(microtasks))
    sorter.prepare()
    result: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=index.__getitem__)
        result.append(ready)
        sorter.done(*ready)
    return result


def role_widths(microtasks: Sequence[Microtask], agent_cap: int) -> dict[Role, int]:
    """Agents of each role the plan will keep busy at once: the most microtasks of the role
    in one level, the level cut to ``agent_cap`` in proportion (a task never runs more than
    its cap at once). What pools grow towards before the microtasks are ready."""
    role_of = {t.id: t.role for t in microtasks}
    widths: dict[Role, int] = {}
    for level in levels(microtasks):
        counts = Counter(role_of[i] for i in level)
        share = min(1.0, agent_cap / len(level))
        for role, count in counts.items():
            widths[role] = max(widths.get(role, 0), math.ceil(count * share))
    return widths


def max_parallel(intervals: Iterable[tuple[float, float]]) -> int:
    """Peak number of overlapping ``[start, end)`` intervals.

    An interval ending exactly when another starts does not overlap it. A
    zero-length interval still counts at its instant (a microtask that took no
    measurable time did run). Raises ``ValueError`` when an interval ends
    before it starts.
    """
    events: list[tuple[float, int, int]] = []
    for start, end in intervals:
        if end < start:
            raise ValueError(f"interval ends before it starts: ({start}, {end})")
        # At one instant: ends first, then starts, then ends of zero-length intervals.
        events.append((start, 1, 1))
        events.append((end, 2 if end == start else 0, -1))
    events.sort()
    running = peak = 0
    for _, _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def ideal_makespan(
    microtasks: Sequence[Microtask], durations: Mapping[str, float], capacity: Mapping[Role, int]
) -> float:
    """A lower bound on wall time: the critical path or the busiest role's work per agent.

    ``durations`` missing an id count 1.0. Raises ``ValueError`` when a role
    with work has no capacity.
    """
    if not microtasks:
        return 0.0
    path = critical_path(microtasks, durations)
    bound = sum(durations.get(node, 1.0) for node in path)
    work: dict[Role, float] = {}
    for task in microtasks:
        work[task.role] = work.get(task.role, 0.0) + durations.get(task.id, 1.0)
    for role, seconds in work.items():
        agents = capacity.get(role, 0)
        if agents < 1:
            raise ValueError(f"no capacity for role {role.value}")
        bound = max(bound, seconds / agents)
    return bound
