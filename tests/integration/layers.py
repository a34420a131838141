"""Plans of whole levels, for tests that need a known DAG shape (one copy, shared)."""

from __future__ import annotations

from actors.models import Microtask, Role


def layered(prefix: str, widths: tuple[int, ...], latency: float) -> list[Microtask]:
    """A research → analysis → ... plan where each level needs the whole level before.

    Each microtask takes ``latency`` seconds in the simulator (``[sim-latency S]``).
    """
    plan: list[Microtask] = []
    previous: list[str] = []
    for level, width in enumerate(widths):
        ids = [f"{prefix}{level}-{i}" for i in range(width)]
        plan += [
            Microtask(
                id=id_,
                role=list(Role)[level % 4],
                title=f"step {id_}",
                instructions=f"Step {id_}. [sim-latency {latency}]",
                depends_on=list(previous),
            )
            for id_ in ids
        ]
        previous = ids
    return plan
