"""Hand out a plan's microtasks as their dependencies finish — also while the plan arrives.

``DagScheduler(plan)`` works like ``graphlib.TopologicalSorter`` over a whole plan.
``DagScheduler.open()`` starts from nothing for a plan that is still being streamed by
the planner: ``add`` each microtask as it arrives (one that depends on an id not seen yet
waits for it), then ``seal`` with the final, repaired plan. ``seal`` answers with the
microtasks handed out that the final plan no longer has, for the caller to cancel. (A
``TopologicalSorter`` cannot grow after ``prepare()``, hence this small one.)

A failed microtask counts as finished without a result: its dependents still become
ready and run with partial context, and the merger reports what is missing.
``failed()`` returns every transitive dependent so the caller can log them.

Example::

    scheduler = DagScheduler(plan.microtasks)
    while scheduler.is_active():
        for microtask in scheduler.ready():
            submit(microtask)
        microtask_id, ok = wait_for_one()
        if ok:
            scheduler.done(microtask_id)
        else:
            scheduler.failed(microtask_id)
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.engine.dag import validate
from actors.models import Microtask


class DagScheduler:
    """Microtasks in dependency order, each handed out once (see the module docstring)."""

    def __init__(self, microtasks: Sequence[Microtask]) -> None:
        problems = validate(microtasks)
        if problems:
            raise ValueError("invalid plan: " + "; ".join(problems))
        self._by_id: dict[str, Microtask] = {}
        self._arrival: dict[str, int] = {}  # id -> order of arrival, for failed()'s listing
        self._handed: set[str] = set()  # returned by ready(), not finished
        self._finished: set[str] = set()  # done or failed
        self._sealed = True
        for task in microtasks:
            self._put(task)

    @classmethod
    def open(cls) -> DagScheduler:
        """A scheduler for a plan still arriving: ``add`` its microtasks, then ``seal``."""
        scheduler = cls([])
        scheduler._sealed = False
        return scheduler

    @property
    def sealed(self) -> bool:
        return self._sealed

    def add(self, microtask: Microtask) -> None:
        """One more microtask of an open plan; an id already known is left as it is."""
        if self._sealed:
            raise ValueError("the plan is sealed; no microtask can be added")
        if microtask.id not in self._by_id:
            self._put(microtask)

    def seal(self, microtasks: Sequence[Microtask]) -> list[Microtask]:
        """The final plan, which replaces what arrived; returns the microtasks handed out
        (running) that it dropped. Finished microtasks it dropped no longer count."""
        problems = validate(microtasks)
        if problems:
            raise ValueError("invalid plan: " + "; ".join(problems))
        final = {t.id for t in microtasks}
        running = sorted(self._handed - final, key=self._arrival.__getitem__)
        dropped = [self._by_id[i] for i in running]
        self._handed &= final
        self._finished &= final
        self._by_id, self._arrival = {}, {}
        for task in microtasks:
            self._put(task)
        self._sealed = True
        return dropped

    def _put(self, task: Microtask) -> None:
        self._by_id[task.id] = task
        self._arrival[task.id] = len(self._arrival)

    def ready(self) -> list[Microtask]:
        """Microtasks newly ready (all dependencies finished), each returned once.

        Critical first, then higher priority, then by id.
        """
        tasks = [
            task
            for tid, task in self._by_id.items()
            if tid not in self._handed
            and tid not in self._finished
            and all(dep in self._finished for dep in task.depends_on)
        ]
        self._handed.update(t.id for t in tasks)
        return sorted(tasks, key=lambda t: (not t.critical, -t.priority, t.id))

    def done(self, microtask_id: str) -> None:
        """Mark a microtask returned by ``ready()`` as finished.

        Raises ``ValueError`` for an unknown id, one not yet returned by
        ``ready()``, or one already finished.
        """
        if microtask_id not in self._handed:
            state = "finished already" if microtask_id in self._finished else "not handed out"
            raise ValueError(f"microtask {microtask_id!r} is {state}")
        self._handed.discard(microtask_id)
        self._finished.add(microtask_id)

    def failed(self, microtask_id: str) -> list[str]:
        """Mark a microtask finished without a result; return its transitive dependents.

        Same errors as ``done()``. The dependents are listed in plan order.
        """
        self.done(microtask_id)
        found: set[str] = set()
        stack = [microtask_id]
        while stack:
            parent = stack.pop()
            for task in self._by_id.values():
                if parent in task.depends_on and task.id not in found:
                    found.add(task.id)
                    stack.append(task.id)
        return sorted(found, key=self._arrival.__getitem__)

    def is_active(self) -> bool:
        """True while the plan is still arriving or some microtask has not finished."""
        return not self._sealed or len(self._finished) < len(self._by_id)
