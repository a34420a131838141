"""Warming the prompt cache before a fan-out, so a group pays one cache write, not many.

An entry is usable once the answer of the call that writes it has begun, so microtasks of
one role sent together would all pay the write and none could read it. When two or more
are ready at once and share the prompt up to the request, one warm-up call writes the
prefix first (``Warm``, a ``max_tokens: 0`` call in the orchestrator) and they follow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from actors.engine.report import TaskRecord
from actors.models import Microtask, MicrotaskRequest, Role, Usage

log = logging.getLogger(__name__)

# Writes the prompt prefix a request shares with its role's other calls to the cache.
Warm = Callable[[MicrotaskRequest], Coroutine[Any, Any, Usage]]
_WARM_WAIT_S = 15.0  # a cache warm-up that takes longer is given up: its group goes anyway


class WarmUps:
    """The warm-ups of one task's dispatch, one per role at most."""

    def __init__(self, record: TaskRecord, warm: Warm | None) -> None:
        self._record = record
        self._warm = warm  # None: caching or warming is off
        self._warming: dict[Role, asyncio.Future[Usage]] = {}  # under way
        self._warmed: set[Role] = set()  # roles whose shared prefix was warmed (or tried)

    @property
    def pending(self) -> list[asyncio.Future[Usage]]:
        return list(self._warming.values())

    def stop(self) -> None:
        for warming in self._warming.values():
            warming.cancel()

    def holds(self, mt: Microtask, waiting: list[Microtask]) -> bool:
        """Whether ``mt`` waits for its role's shared prefix to be written to the cache.

        When two or more microtasks of a role are ready at once and share the prompt up to
        the request, sent together they would all pay the cache write and none could read
        it (an entry is usable once its writer's answer began). So the prefix is written
        first (``warm``) and they follow. Once per role and task; the warm-up decides
        itself whether the prefix is long enough to cache (if not, it sends nothing)."""
        if self._warm is None or mt.role in self._warmed:
            return False
        if mt.role in self._warming:
            return True
        if sum(1 for o in waiting if o.role is mt.role) < 2:
            return False  # alone for now: it writes, later ones read
        shares_request, _ = sharing(self._record, mt)
        if not shares_request:
            return False
        request = MicrotaskRequest(
            task_id=self._record.task_id,
            microtask=mt,
            request_text=self._record.text,
            conversation=self._record.conversation,
            shares_request=True,
        )
        warming = asyncio.wait_for(self._warm(request), _WARM_WAIT_S)
        self._warming[mt.role] = asyncio.ensure_future(warming)
        return True

    def count_ended(self) -> None:
        """Count finished warm-ups; their roles' microtasks may go now."""
        for role, warming in list(self._warming.items()):
            if not warming.done():
                continue
            del self._warming[role]
            self._warmed.add(role)
            if warming.cancelled():
                continue
            error = warming.exception()
            if error is None:
                self._record.usage += warming.result()
            else:  # the group goes uncached; what the failed call paid still counts
                paid = getattr(error, "usage", None)
                if isinstance(paid, Usage):
                    self._record.usage += paid
                log.info("task %s: warming the %s prefix failed: %s", self._record.task_id,
                         role.value, error)  # fmt: skip


def sharing(record: TaskRecord, mt: Microtask) -> tuple[bool, bool]:
    """Whether other microtasks of the plan (so far) send ``mt``'s prompt prefix: up to
    the request (the same role: the same system prompt), and up to the context (the
    same role and dependencies). Only a shared prefix is worth a cache write."""
    same_role = [o for o in record.microtasks if o.role is mt.role and o.id != mt.id]
    needs = set(mt.depends_on)
    siblings = bool(needs) and any(set(o.depends_on) == needs for o in same_role)
    return bool(same_role), siblings
