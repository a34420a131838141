"""One call of one microtask to its pool (``Attempt``), and which running calls straggle.

A straggler has run past the p90 of the task's finished attempts *and* twice their median
(under near-constant latencies nothing straggles); it gets a backup copy on an idle agent
(``actors.engine.dispatch``), planned critical path first, then the longest running.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable

from actors.models import Microtask, Role


class Attempt:
    """One call of one microtask to its pool."""

    __slots__ = (
        "backup",
        "deadline",
        "microtask",
        "number",
        "paid_cap",
        "reserved_usd",
        "submitted",
    )

    def __init__(self, microtask: Microtask, number: int, backup: bool, submitted: float) -> None:
        self.microtask = microtask
        self.number = number  # 1-based, counting retries and backups
        self.backup = backup
        self.submitted = submitted  # time.monotonic() when the call goes out
        self.deadline = float("inf")  # set by the dispatcher; inf once cancelled
        self.paid_cap = 0  # paid answers reserved for this attempt out of the microtask's cap
        self.reserved_usd = 0.0  # estimated cost held against the task budget until it settles


def straggler_threshold(durations: list[float]) -> float:
    """Seconds past which a running attempt straggles: past p90 and twice the median."""
    deciles = statistics.quantiles(durations, n=10)
    return max(deciles[-1], 2 * deciles[4])


def running_past(
    inflight: Iterable[Attempt],
    threshold: float,
    now: float,
    may_copy: Callable[[Microtask], bool],
) -> dict[Role, list[Attempt]]:
    """The first attempts running past ``threshold`` that have no copy yet and whose
    microtask ``may_copy`` (attempts and paid answers left), by role, critical first."""
    attempts = list(inflight)
    covered = {a.microtask.id for a in attempts if a.backup}
    stragglers: dict[Role, list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda a: (not a.microtask.critical, a.submitted)):
        mt = attempt.microtask
        if (
            not attempt.backup
            and mt.id not in covered
            and now - attempt.submitted > threshold
            and may_copy(mt)
        ):
            covered.add(mt.id)
            stragglers.setdefault(mt.role, []).append(attempt)
    return stragglers
