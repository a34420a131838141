"""What a dispatch knows of its pools: their idle agents and whether they answer at all.

Idle counts are asked in the background (``idle_now`` answers the latest count at once
and asks anew), so the DAG loop never waits on a busy pool; ``answers`` asks with a short
deadline whether a pool is alive, for the calls past their backstop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from actors.models import Role

IdleAgents = Callable[[Role], Coroutine[Any, Any, int]]
_POOL_ANSWER_S = 10.0  # a pool that answers nothing within this is taken as stuck


class PoolProbe:
    """The pools' latest answers about idle agents, for backups onto idle agents only."""

    def __init__(self, idle_agents: IdleAgents | None) -> None:
        self._idle_agents = idle_agents  # agents of a role free right now (None: don't ask)
        self._known: dict[Role, int] = {}  # the pools' latest answers
        self._asking: dict[Role, asyncio.Task[int]] = {}

    @property
    def can_ask(self) -> bool:
        return self._idle_agents is not None

    def idle_now(self, role: Role) -> int:
        """The latest known idle agents of ``role`` (0 before the first answer); asks anew."""
        assert self._idle_agents is not None
        asking = self._asking.get(role)
        if asking is not None and asking.done():
            del self._asking[role]
            if not asking.cancelled() and asking.exception() is None:
                self._known[role] = asking.result()
            asking = None
        if asking is None:
            self._asking[role] = asyncio.create_task(self._idle_agents(role))
        return self._known.get(role, 0)

    def took(self, role: Role) -> None:
        """One of ``role``'s idle agents was just given a copy."""
        if role in self._known:
            self._known[role] -= 1

    def stop(self) -> None:
        """Stop asking: the dispatch is over."""
        for asking in self._asking.values():
            asking.cancel()

    async def answers(self, role: Role) -> bool:
        """Whether ``role``'s pool answers a question at all (no way to ask: it does not)."""
        if self._idle_agents is None:
            return False
        try:
            await asyncio.wait_for(self._idle_agents(role), _POOL_ANSWER_S)
        except Exception:  # timed out, or the pool is gone
            return False
        return True
