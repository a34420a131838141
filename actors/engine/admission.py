"""Admission: which tasks may start now, and which model calls a task's budget still covers.

Two gates, both kept in memory and both decided in one synchronous step, so that nothing
(no ``await``) comes between a check and the registration it allows: twenty submits
arriving together cannot all pass through the one free slot they each saw.

- ``Admission`` admits a task against ``max_running_tasks``, ``max_tasks_per_user`` and
  ``daily_budget_usd``. The day's spending is what finished tasks spent in the last 24 h
  (read from the store once, when the orchestrator starts) plus what running tasks have
  spent and hold for calls in flight, read from their records as it happens. A resumed
  task is counted like any other, but never refused: it was accepted before the restart.
- ``reserve``/``release`` (``held`` around a single call) hold the estimated cost of one
  model call against its task's budget before the call goes out: the price of the
  purpose's model for the prompt and the whole ``max_tokens``. When the call settles its
  actual usage (errors carry theirs) replaces the estimate.

A task admitted under the daily budget may still spend up to its own budget, so the day's
total can pass the daily budget by at most ``max_running_tasks × task_budget_usd``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from actors.config import Purpose, Settings
from actors.engine.report import TaskRecord
from actors.errors import CapacityError, TaskBudgetError
from actors.llm.pricing import cost_usd
from actors.models import CallKind, MicrotaskRequest

DAY_S = 86_400.0
# Retry-After for a refusal on the number of running tasks: tasks end all the time, and a
# task's own length (seconds to minutes) is not known when it is refused.
_BUSY_RETRY_S = 5.0
# Estimates err high: English runs ~4 characters a token, and the tokenizer of the 5.x
# models gives ~30 % more tokens for the same text.
_CHARS_PER_TOKEN = 3.0
_FIXED_PROMPT_TOKENS = 1_000  # system prompt, output rules and JSON schema of one call
_CRUMB_USD = 1e-9  # what float sums of holds leave behind once all are given back


# --- one call against its task's budget ---------------------------------------------


def purpose_of(request: MicrotaskRequest) -> Purpose:
    """The purpose whose model and ``max_tokens`` answer ``request`` (as the agent picks)."""
    if request.kind is not CallKind.MICROTASK:  # each side call has its purpose's name
        return Purpose(request.kind.value)
    return Purpose(request.microtask.role.value)


def call_estimate_usd(settings: Settings, request: MicrotaskRequest) -> float:
    """The most one answer to ``request`` should cost: its prompt plus the whole output budget."""
    mt = request.microtask
    chars = len(mt.title) + len(mt.instructions) + sum(len(c.content) for c in request.context)
    if request.kind is CallKind.MICROTASK:  # reconciling and synthesis prompts hold it already
        chars += len(request.conversation) + len(request.request_text)
    purpose = purpose_of(request)
    input_tokens = math.ceil(chars / _CHARS_PER_TOKEN) + _FIXED_PROMPT_TOKENS
    return cost_usd(settings.models[purpose], input_tokens, settings.max_tokens_for(purpose))


def budget_of(record: TaskRecord, settings: Settings) -> tuple[float, str]:
    """The most ``record`` may spend, and how to name that limit to a person."""
    if record.budget_usd is not None and record.budget_usd < settings.task_budget_usd:
        return record.budget_usd, f"the cost limit of ${record.budget_usd:.2f} set for this request"
    budget = settings.task_budget_usd
    return budget, f"the task budget of ${budget:.2f} (PARALLEL_AGENTS_TASK_BUDGET_USD)"


def reserve(record: TaskRecord, settings: Settings, request: MicrotaskRequest) -> float:
    """Hold the estimated cost of one call against ``record``'s budget; returns the amount.

    Raises ``TaskBudgetError`` (holding nothing) when what the task spent, what its calls in
    flight hold and this call's estimate together would pass ``task_budget_usd``.
    """
    amount = call_estimate_usd(settings, request)
    spent, holding = record.usage.cost_usd, record.reserved_usd
    budget, named = budget_of(record, settings)
    if spent + holding + amount > budget:
        raise TaskBudgetError(
            f"{named} does not cover another call: ${spent:.4f} spent, ${holding:.4f} held "
            f"by calls in flight, this {purpose_of(request).value} call may cost ${amount:.4f}"
        )
    record.reserved_usd = holding + amount
    return amount


def release(record: TaskRecord, amount: float) -> None:
    """Give back what ``reserve`` held, once the call's actual usage is counted (or lost)."""
    left = record.reserved_usd - amount
    record.reserved_usd = left if left > _CRUMB_USD else 0.0


@contextmanager
def held(record: TaskRecord, settings: Settings, request: MicrotaskRequest) -> Iterator[float]:
    """``reserve`` for the length of one call (reconciling, synthesis); raises the same way.

    Add the call's usage (or the failed call's ``usage``) to ``record.usage`` inside the
    block, so the reservation is never released before the actual cost is counted.
    """
    amount = reserve(record, settings, request)
    try:
        yield amount
    finally:
        release(record, amount)


# --- tasks into the system -------------------------------------------------------------


class Admission:
    """Running tasks and the day's spending, for deciding at once whether a task may start.

    The orchestrator is the only caller: ``admit`` (or ``register`` for a resumed task)
    when a task is accepted, ``withdraw`` if accepting it fails after all, ``settle`` when
    its runner ends, whatever ended it.
    """

    def __init__(
        self,
        settings: Settings,
        spent: Iterable[tuple[float, float]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock  # wall clock, like the store's times
        self._running: dict[str, TaskRecord] = {}  # admitted and not settled yet
        # (when, dollars) of finished tasks within the last 24 h, oldest first, and their sum.
        self._day: deque[tuple[float, float]] = deque(sorted(spent))
        self._day_usd = sum(cost for _, cost in self._day)

    def admit(self, record: TaskRecord) -> None:
        """Count ``record`` as running, or raise ``CapacityError`` naming the limit it passes."""
        refusal = self._refusal(record.user)
        if refusal is not None:
            raise refusal
        self._running[record.task_id] = record

    def register(self, record: TaskRecord) -> None:
        """Count a resumed task as running: it was admitted before the restart."""
        self._running[record.task_id] = record

    def withdraw(self, record: TaskRecord) -> None:
        """Forget a task that was admitted but never started (it spent nothing)."""
        self._running.pop(record.task_id, None)

    def settle(self, record: TaskRecord) -> None:
        """The task has ended: what it spent moves from the running tasks to the day's total."""
        if self._running.pop(record.task_id, None) is None:
            return
        cost = record.usage.cost_usd
        if cost > 0:
            self._day.append((self._clock(), cost))
            self._day_usd += cost

    def running(self) -> list[TaskRecord]:
        """Admitted tasks still running (a finished one may wait a moment for ``settle``)."""
        return [r for r in self._running.values() if not r.finished.is_set()]

    def spent_today(self) -> float:
        """Dollars of the last 24 h: finished tasks, and running ones' spending and holds."""
        self._forget_before(self._clock() - DAY_S)
        live = sum(r.usage.cost_usd + r.reserved_usd for r in self._running.values())
        return self._day_usd + live

    def _refusal(self, user: str | None) -> CapacityError | None:
        settings, running = self._settings, self.running()
        if len(running) >= settings.max_running_tasks:
            return CapacityError(
                f"{len(running)} tasks are running, the limit is {settings.max_running_tasks}; "
                "try again when some have finished",
                retry_after_s=_BUSY_RETRY_S,
            )
        mine = sum(1 for r in running if user is not None and r.user == user)
        if user is not None and mine >= settings.max_tasks_per_user:
            return CapacityError(
                f"you have {mine} tasks running, the limit is {settings.max_tasks_per_user} "
                "per user; wait for one to finish",
                retry_after_s=_BUSY_RETRY_S,
            )
        spent, budget = self.spent_today(), settings.daily_budget_usd
        if spent >= budget:
            return CapacityError(
                f"the daily budget of ${budget:.2f} is spent (${spent:.2f} in the last 24 h, "
                "running tasks included); the limit is PARALLEL_AGENTS_DAILY_BUDGET_USD",
                retry_after_s=self._budget_frees_in(spent - budget),
            )
        return None

    def _budget_frees_in(self, over: float) -> float:
        """Seconds until enough of the day's spending is older than 24 h to go under budget."""
        now, dropped = self._clock(), 0.0
        for when, cost in self._day:
            dropped += cost
            if dropped > over:
                return max(1.0, when + DAY_S - now)
        return DAY_S  # running tasks alone have spent it: a day from now at the earliest

    def _forget_before(self, since: float) -> None:
        while self._day and self._day[0][0] < since:
            _, cost = self._day.popleft()
            self._day_usd -= cost
        if not self._day:
            self._day_usd = 0.0  # no float drift left behind once the window empties
