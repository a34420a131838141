"""Admission and per-call budget holds, without Ray: real records, a fake clock."""

from __future__ import annotations

import pickle

import pytest

from actors.config import Purpose, Settings
from actors.engine.admission import DAY_S, Admission, call_estimate_usd, held, reserve
from actors.engine.report import TaskRecord
from actors.errors import CapacityError, TaskBudgetError
from actors.llm.catalog import info
from actors.models import CallKind, Microtask, MicrotaskRequest, Role, Usage


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(**changes) -> Settings:
    return Settings().with_overrides(**changes)


def _record(n: int | str, user: str | None = None, spent: float = 0.0) -> TaskRecord:
    record = TaskRecord(task_id=f"t{n}", text="x", user=user)
    record.usage = Usage(requests=1, cost_usd=spent)
    return record


def _request(role: Role = Role.RESEARCH, kind: CallKind = CallKind.MICROTASK) -> MicrotaskRequest:
    mt = Microtask(id="m", role=role, title="m", instructions="Find the facts.")
    return MicrotaskRequest(task_id="t", microtask=mt, request_text="hello", kind=kind)


def test_twenty_at_once_against_three_slots_admits_exactly_three():
    admission = Admission(_settings(max_running_tasks=3))
    accepted, refusals = [], []
    for n in range(20):
        try:
            admission.admit(_record(n))
            accepted.append(n)
        except CapacityError as exc:
            refusals.append(exc)
    assert accepted == [0, 1, 2]
    assert len(refusals) == 17
    assert all("3 tasks are running, the limit is 3" in str(e) for e in refusals)
    assert all(e.retry_after_s and e.retry_after_s > 0 for e in refusals)


def test_a_finished_task_frees_its_slot_even_before_it_is_settled():
    admission = Admission(_settings(max_running_tasks=1))
    first = _record(1)
    admission.admit(first)
    with pytest.raises(CapacityError):
        admission.admit(_record(2))
    first.finished.set()  # the runner's done callback has not run yet
    admission.admit(_record(3))


def test_the_per_user_limit_counts_only_that_users_tasks():
    admission = Admission(_settings(max_tasks_per_user=2))
    admission.admit(_record(1, "alice"))
    admission.admit(_record(2, "alice"))
    admission.admit(_record(3, "bob"))
    admission.admit(_record(4))  # nobody named: no per-user limit
    with pytest.raises(CapacityError, match="you have 2 tasks running, the limit is 2 per user"):
        admission.admit(_record(5, "alice"))


def test_the_daily_budget_counts_what_a_running_task_spends_and_holds():
    clock = Clock()
    admission = Admission(_settings(daily_budget_usd=1.0), clock=clock)
    running = _record("busy", spent=0.6)
    admission.admit(running)
    admission.admit(_record("cheap"))  # $0.60 of $1.00 so far
    running.reserved_usd = 0.5  # calls in flight hold their estimate
    with pytest.raises(CapacityError, match=r"daily budget of \$1.00 is spent") as refused:
        admission.admit(_record("late"))
    assert "running tasks included" in str(refused.value)
    # Only running tasks have spent it: nothing ages out before a day has passed.
    assert refused.value.retry_after_s == DAY_S


def test_spending_leaves_the_daily_total_24_hours_after_its_task_ended():
    clock = Clock()
    start = clock.now
    admission = Admission(_settings(daily_budget_usd=1.0), clock=clock)
    first = _record(1, spent=0.7)
    admission.admit(first)
    admission.settle(first)
    clock.now += 100
    second = _record(2, spent=0.5)
    admission.admit(second)
    admission.settle(second)
    assert admission.spent_today() == pytest.approx(1.2)
    with pytest.raises(CapacityError) as refused:
        admission.admit(_record(3))
    # Once the first task's $0.70 is a day old, $0.50 is left: under the budget again.
    assert refused.value.retry_after_s == pytest.approx(start + DAY_S - clock.now)
    clock.now = start + DAY_S + 1
    admission.admit(_record(4))
    assert admission.spent_today() == pytest.approx(0.5)


def test_the_days_spending_read_from_the_store_counts_at_start():
    clock = Clock()
    spent = [(clock.now - 3600, 0.4), (clock.now - 60, 0.7)]  # store.spending_since rows
    admission = Admission(_settings(daily_budget_usd=1.0), spent, clock=clock)
    with pytest.raises(CapacityError, match="daily budget"):
        admission.admit(_record(1))


def test_a_resumed_task_is_never_refused_but_counts_against_the_limits():
    admission = Admission(_settings(max_running_tasks=2, max_tasks_per_user=1))
    for n in range(3):  # more than the limit were running before the restart
        admission.register(_record(n, "alice", spent=0.01))
    assert len(admission.running()) == 3
    assert admission.spent_today() == pytest.approx(0.03)
    with pytest.raises(CapacityError, match="3 tasks are running"):
        admission.admit(_record("new", "bob"))


def test_a_withdrawn_task_frees_its_slot_and_costs_nothing():
    admission = Admission(_settings(max_running_tasks=1))
    record = _record(1, spent=0.3)
    admission.admit(record)
    admission.withdraw(record)  # e.g. the store write failed
    admission.settle(record)  # a late settle of a withdrawn task is a no-op
    assert admission.spent_today() == 0
    admission.admit(_record(2))


def test_a_capacity_error_keeps_its_retry_after_through_pickling():
    error = pickle.loads(pickle.dumps(CapacityError("busy; the limit is 3", retry_after_s=5.0)))
    assert isinstance(error, CapacityError)
    assert str(error) == "busy; the limit is 3" and error.retry_after_s == 5.0


def test_a_call_estimate_follows_the_purposes_model_and_output_budget():
    settings = _settings()
    research = call_estimate_usd(settings, _request(Role.RESEARCH))
    synthesis = call_estimate_usd(settings, _request(Role.GENERATION, CallKind.SYNTHESIS))
    assert 0 < research < synthesis  # Haiku at 4,096 tokens against Opus at 32,000
    # The whole max_tokens at the model's output price is in the estimate.
    opus = info(settings.models[Purpose.SYNTHESIS])
    assert synthesis > settings.max_tokens_for(Purpose.SYNTHESIS) * opus.output_price / 1e6


def test_a_hold_is_refused_past_the_task_budget_and_released_after_the_call():
    settings = _settings()
    estimate = call_estimate_usd(settings, _request())
    record = _record(1)
    record.usage = Usage()
    tight = settings.with_overrides(task_budget_usd=1.5 * estimate)
    with held(record, tight, _request()) as amount:
        assert record.reserved_usd == amount == estimate
        with pytest.raises(TaskBudgetError, match="held by calls in flight"):
            reserve(record, tight, _request())  # a second call at once does not fit
    assert record.reserved_usd == 0
    record.usage = Usage(requests=1, cost_usd=estimate)  # what the first call cost
    with pytest.raises(TaskBudgetError, match="does not cover another call"):
        reserve(record, tight, _request())  # spent + this one's estimate pass the budget
    assert record.reserved_usd == 0
