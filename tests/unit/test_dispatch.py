"""The DAG driver without Ray: a fake pool passed in, real asyncio timing."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from actors.config import Settings
from actors.engine.admission import call_estimate_usd
from actors.engine.dispatch import Dispatcher
from actors.engine.report import TaskRecord
from actors.models import (
    Complexity,
    EventKind,
    Microtask,
    MicrotaskRequest,
    MicrotaskResult,
    Role,
    Usage,
)


def _mt(id_: str, *deps: str) -> Microtask:
    return Microtask(id=id_, role=Role.RESEARCH, title=id_, instructions=id_, depends_on=list(deps))


class FakePool:
    """Answers after ``delays[id]`` seconds; fails the first ``failures[id]`` attempts."""

    def __init__(self, delays=None, failures=None, cost=0.0, first_delays=None) -> None:
        self.delays = delays or {}
        self.first_delays = first_delays or {}  # id -> delay of its first attempt only
        self.failures = dict(failures or {})
        self.cost = cost
        self.calls: list[tuple[str, int, float]] = []  # (id, attempt, started)

    async def __call__(self, role: Role, request: MicrotaskRequest, delay: float):
        await asyncio.sleep(delay)
        mt = request.microtask
        started = time.time()
        self.calls.append((mt.id, request.attempt, started))
        first = self.first_delays.get(mt.id) if request.attempt == 1 else None
        await asyncio.sleep(first if first is not None else self.delays.get(mt.id, 0.01))
        if self.failures.get(mt.id, 0) > 0:
            self.failures[mt.id] -= 1
            raise RuntimeError(f"{mt.id} failed on purpose")
        return MicrotaskResult(
            task_id=request.task_id, microtask_id=mt.id, role=mt.role, agent_id="fake-00",
            node_id="n", content=f"done {mt.id}", confidence=0.9,
            usage=Usage(requests=1, cost_usd=self.cost), started_at=started,
            finished_at=time.time(), attempt=request.attempt,
        )  # fmt: skip


def _record(microtasks: list[Microtask]) -> TaskRecord:
    record = TaskRecord(task_id="t", text="test")
    record.complexity = Complexity.MASSIVE
    record.set_plan(microtasks)
    return record


def _settings(**changes) -> Settings:
    return Settings().with_overrides(**{"retry_backoff_s": 0.01, "backups": False, **changes})


async def test_each_microtask_starts_after_its_dependencies_and_branches_do_not_wait():
    plan = [_mt("slow"), _mt("fast"), _mt("after_fast", "fast"), _mt("join", "slow", "after_fast")]
    pool = FakePool(delays={"slow": 0.3})
    record = _record(plan)
    await Dispatcher(record, _settings(), pool, random.Random(0)).run()
    assert set(record.results) == {"slow", "fast", "after_fast", "join"}
    ends = {r.microtask_id: r.finished_at for r in record.results.values()}
    starts = {r.microtask_id: r.started_at for r in record.results.values()}
    assert starts["after_fast"] < ends["slow"]  # not held back by the slow sibling
    assert starts["join"] >= max(ends["slow"], ends["after_fast"])


async def test_a_failed_attempt_is_retried_and_a_hopeless_one_fails_alone():
    plan = [_mt("flaky"), _mt("broken"), _mt("next", "broken")]
    pool = FakePool(failures={"flaky": 1, "broken": 99})
    record = _record(plan)
    await Dispatcher(record, _settings(max_attempts=3), pool, random.Random(0)).run()
    assert "flaky" in record.results and record.attempts["flaky"] == 2
    assert "broken" in record.failures and record.attempts["broken"] == 3
    assert "next" in record.results  # its dependent still ran, with what there was
    assert record.retries == 3


async def test_results_already_done_before_a_restart_are_not_run_again():
    plan = [_mt("a"), _mt("b", "a")]
    first = FakePool()
    record = _record(plan)
    await Dispatcher(record, _settings(), first, random.Random(0)).run()
    resumed = _record(plan)
    resumed.results["a"] = record.results["a"]
    again = FakePool()
    kept: list[str] = []

    async def keep(result: MicrotaskResult) -> None:
        kept.append(result.microtask_id)

    await Dispatcher(resumed, _settings(), again, random.Random(0), on_result=keep).run()
    assert [call[0] for call in again.calls] == ["b"]
    assert kept == ["b"]  # every new result goes to the store before it counts


async def test_the_task_budget_stops_new_work_and_says_so():
    plan = [_mt(f"m{i}") for i in range(6)] + [_mt("last", *(f"m{i}" for i in range(6)))]
    pool = FakePool(cost=1.0)
    record = _record(plan)
    settings = _settings(task_budget_usd=2.0)
    record.complexity = Complexity.SIMPLE  # two agents at once: two microtasks per round
    await Dispatcher(record, settings, pool, random.Random(0)).run()
    assert 2 <= len(record.results) < len(plan)
    assert any("budget" in note for note in record.notes)


def _critical(id_: str) -> Microtask:
    return _mt(id_).model_copy(update={"critical": True})


async def test_a_straggler_gets_a_backup_on_an_idle_agent_and_the_copy_wins():
    # Not on the planned critical path: under real latencies any straggler holds the task up.
    plan = [_critical(f"fast{i}") for i in range(6)] + [_mt("slow")]
    pool = FakePool(first_delays={"slow": 60.0})  # the first attempt would hang the test
    asked: list[Role] = []

    async def idle(role: Role) -> int:
        asked.append(role)
        return 1

    record = _record(plan)
    settings = _settings(backups=True, backup_min_samples=5)
    await Dispatcher(record, settings, pool, random.Random(1), idle_agents=idle).run()

    assert record.backups == 1 and Role.RESEARCH in asked
    assert record.results["slow"].attempt == 2  # the copy answered; the first was cancelled
    assert [e.microtask_id for e in record.events if e.kind is EventKind.BACKUP] == ["slow"]


async def test_no_backup_when_every_agent_of_the_role_is_busy():
    plan = [_critical(f"fast{i}") for i in range(6)] + [_critical("slow")]
    pool = FakePool(first_delays={"slow": 0.5})

    async def none_idle(role: Role) -> int:
        return 0

    record = _record(plan)
    settings = _settings(backups=True, backup_min_samples=5)
    await Dispatcher(record, settings, pool, random.Random(1), idle_agents=none_idle).run()

    assert record.backups == 0
    assert record.results["slow"].attempt == 1


async def test_backups_stop_at_their_share_of_the_task():
    plan = [_mt(f"fast{i}") for i in range(6)] + [_mt(f"slow{i}") for i in range(6)]
    pool = FakePool(first_delays={f"slow{i}": 0.5 for i in range(6)})

    async def plenty(role: Role) -> int:
        return 100

    record = _record(plan)
    settings = _settings(backups=True, backup_min_samples=5, backup_max_share=0.25)
    await Dispatcher(record, settings, pool, random.Random(1), idle_agents=plenty).run()

    assert record.backups == 3  # a quarter of 12 microtasks, though all six were slow
    assert len(record.results) == 12


async def test_nothing_straggles_when_latencies_are_near_constant():
    # 0.3 s against a median of 0.2 s is past the p90 but not past twice the median.
    plan = [_mt(f"even{i}") for i in range(8)] + [_mt("a-bit-slow")]
    pool = FakePool(delays={**{f"even{i}": 0.2 for i in range(8)}, "a-bit-slow": 0.35})

    async def plenty(role: Role) -> int:
        return 100

    record = _record(plan)
    settings = _settings(backups=True, backup_min_samples=5)
    await Dispatcher(record, settings, pool, random.Random(1), idle_agents=plenty).run()

    assert record.backups == 0 and len(record.results) == 9


class PayingFailures:
    """A pool whose every attempt pays for the answers it may and then fails with ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error
        self.caps: list[int | None] = []

    async def __call__(self, role: Role, request: MicrotaskRequest, delay: float):
        await asyncio.sleep(delay)
        self.caps.append(request.max_paid_calls)
        paid = request.max_paid_calls or 0
        raise self.error("the answer was no use", usage=Usage(requests=paid, cost_usd=0.1 * paid))


async def test_failed_calls_are_paid_and_a_microtask_never_passes_its_cap():
    from actors.errors import ModelBehaviorError

    pool = PayingFailures(ModelBehaviorError)
    record = _record([_mt("m")])
    await Dispatcher(record, _settings(max_attempts=5), pool, random.Random(0)).run()
    cap = Settings().max_paid_calls_per_microtask
    assert sum(c or 0 for c in pool.caps) == record.paid_calls["m"] == cap
    assert record.usage.requests == cap  # every paid answer counts against the budget
    assert "m" in record.failures and "paid calls is spent" in record.failures["m"]


async def test_refusals_and_answers_cut_twice_are_not_asked_again():
    from actors.errors import ModelRefusalError, TruncatedAnswerError

    for error in (ModelRefusalError, TruncatedAnswerError):
        pool = PayingFailures(error)
        record = _record([_mt("m"), _mt("after", "m")])
        await Dispatcher(record, _settings(max_attempts=3), pool, random.Random(0)).run()
        assert len(pool.caps) == 2 and "m" in record.failures  # "m" once, then its dependent
        assert record.retries == 0
    assert record.cut and record.cut[0].startswith("m: cut at max_tokens twice")


# --- the task budget holds each attempt's estimated cost before it goes out -------------


def _estimate(record: TaskRecord, mt: Microtask) -> float:
    """What the dispatcher holds for one attempt of ``mt`` (no context: no dependencies)."""
    request = MicrotaskRequest(task_id=record.task_id, microtask=mt, request_text=record.text)
    return call_estimate_usd(Settings(), request)


class CountingPool(FakePool):
    """A FakePool that remembers the most calls it ever had running at once."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.running = self.peak = 0

    async def __call__(self, role: Role, request: MicrotaskRequest, delay: float):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await super().__call__(role, request, delay)
        finally:
            self.running -= 1


async def test_calls_in_flight_hold_the_budget_so_only_what_fits_runs_at_once():
    plan = [_mt(f"m{i}") for i in range(6)]
    record = _record(plan)  # massive: 50 agents allowed, so only the budget limits
    settings = _settings(task_budget_usd=2.5 * _estimate(record, plan[0]))
    pool = CountingPool(delays={f"m{i}": 0.05 for i in range(6)})  # answers cost nothing
    await Dispatcher(record, settings, pool, random.Random(0)).run()
    assert pool.peak == 2  # two holds fit in 2.5 estimates, a third would not
    assert len(record.results) == 6  # each settled hold made room for the next
    assert record.reserved_usd == 0


async def test_a_retry_is_not_made_when_spent_and_held_leave_no_room():
    from actors.errors import ModelBehaviorError

    record = _record([_mt("m")])
    estimate = _estimate(record, record.microtasks[0])

    class PaysMostOfItsHold:
        calls = 0

        async def __call__(self, role: Role, request: MicrotaskRequest, delay: float):
            self.calls += 1
            raise ModelBehaviorError("no use", usage=Usage(requests=1, cost_usd=0.9 * estimate))

    pool = PaysMostOfItsHold()
    settings = _settings(max_attempts=3, task_budget_usd=1.5 * estimate)
    await Dispatcher(record, settings, pool, random.Random(0)).run()
    # 0.9 spent + 1.0 for a retry passes 1.5: the spent-only check let two more through.
    assert pool.calls == 1 and record.retries == 0 and record.attempts["m"] == 1
    assert "not retried: the task budget" in record.failures["m"]
    assert any("stopped at the task budget" in note for note in record.notes)
    assert record.usage.cost_usd == pytest.approx(0.9 * estimate)
    assert record.reserved_usd == 0


async def test_a_backup_is_not_started_when_the_budget_cannot_hold_it():
    plan = [_critical(f"fast{i}") for i in range(6)] + [_critical("slow")]
    record = _record(plan)
    estimate = _estimate(record, plan[0])
    # Seven first attempts fit at once; once the six fast ones have cost an estimate each,
    # the slow one's hold plus a copy's (8 estimates) would pass the budget of 7.5.
    pool = FakePool(first_delays={"slow": 0.5}, cost=estimate)

    async def plenty(role: Role) -> int:
        return 100

    settings = _settings(backups=True, backup_min_samples=5, task_budget_usd=7.5 * estimate)
    await Dispatcher(record, settings, pool, random.Random(1), idle_agents=plenty).run()
    assert record.backups == 0  # spent (6) was under the budget: the old check allowed it
    assert record.results["slow"].attempt == 1 and len(record.results) == 7
    assert record.reserved_usd == 0


async def test_holds_are_given_back_when_the_dispatch_is_cancelled():
    record = _record([_mt("hangs")])
    pool = FakePool(delays={"hangs": 60.0})
    dispatch = asyncio.create_task(Dispatcher(record, _settings(), pool, random.Random(0)).run())
    while not pool.calls:
        await asyncio.sleep(0.01)
    assert record.reserved_usd > 0
    dispatch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dispatch
    assert record.reserved_usd == 0  # the synthesis after it must not see phantom holds


# --- a plan that is still arriving (streamed planning) ------------------------------


async def test_a_streamed_plan_runs_while_it_arrives_in_dependency_order():
    pool = FakePool()
    record = _record([])
    dispatcher = Dispatcher(record, _settings(), pool, random.Random(0), open_plan=True)
    running = asyncio.create_task(dispatcher.run())
    dispatcher.add(_mt("r1"))
    while not record.results:  # the first microtask finishes before the plan is complete
        await asyncio.sleep(0.005)
    assert not running.done()  # the plan is not sealed: more may come
    dispatcher.add(_mt("a1", "r1", "r2"))  # r2 is further down the stream
    dispatcher.add(_mt("r2"))
    plan = [_mt("r1"), _mt("a1", "r1", "r2"), _mt("r2")]
    record.set_plan(plan)
    dispatcher.seal(plan)
    await asyncio.wait_for(running, 10)
    assert set(record.results) == {"r1", "r2", "a1"}
    order = [mt_id for mt_id, _, _ in pool.calls]
    assert order.index("a1") > order.index("r2")
    assert record.results["a1"].started_at >= record.results["r2"].finished_at


async def test_a_microtask_the_final_plan_drops_is_cancelled():
    pool = FakePool(delays={"gone": 30.0})
    record = _record([])
    dispatcher = Dispatcher(record, _settings(), pool, random.Random(0), open_plan=True)
    running = asyncio.create_task(dispatcher.run())
    dispatcher.add(_mt("gone"))
    while not pool.calls:
        await asyncio.sleep(0.005)
    final = [_mt("kept")]
    record.set_plan(final)
    dispatcher.seal(final)  # the repair trimmed "gone", which is running
    await asyncio.wait_for(running, 10)  # not 30 s: the dropped call was cancelled
    assert set(record.results) == {"kept"} and record.failures == {}
    assert record.reserved_usd == pytest.approx(0.0)  # its hold was given back


async def test_cancelling_a_dispatch_whose_plan_is_arriving_ends_cleanly():
    pool = FakePool(delays={"r1": 30.0})
    record = _record([])
    dispatcher = Dispatcher(record, _settings(), pool, random.Random(0), open_plan=True)
    running = asyncio.create_task(dispatcher.run())
    dispatcher.add(_mt("r1"))
    while not pool.calls:
        await asyncio.sleep(0.005)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 10)
    assert record.reserved_usd == pytest.approx(0.0) and record.results == {}


# --- the backstop: a pool that stops answering, not one that is busy ----------------


async def test_a_call_queued_past_its_backstop_runs_on_while_its_pool_answers(monkeypatch):
    monkeypatch.setattr("actors.engine.dispatch._BACKSTOP_GRACE_S", 0.05)
    pool = FakePool(delays={"queued": 0.6})  # waits in the pool's queue behind other work
    asked: list[Role] = []

    async def idle(role: Role) -> int:
        asked.append(role)
        return 0

    record = _record([_mt("queued")])
    settings = _settings(microtask_timeout_s=0.05)  # backstop 0.15 s
    await Dispatcher(record, settings, pool, random.Random(0), idle_agents=idle).run()
    assert record.results["queued"].attempt == 1 and record.retries == 0
    assert len(asked) >= 2  # asked again each time the extended backstop passed


async def test_a_call_whose_pool_gives_no_answer_is_cancelled_and_retried(monkeypatch):
    monkeypatch.setattr("actors.engine.dispatch._BACKSTOP_GRACE_S", 0.05)
    monkeypatch.setattr("actors.engine.pool_probe._POOL_ANSWER_S", 0.05)
    pool = FakePool(first_delays={"stuck": 60.0})

    async def stuck(role: Role) -> int:
        await asyncio.sleep(60)
        return 0

    record = _record([_mt("stuck")])
    settings = _settings(microtask_timeout_s=0.05)
    await Dispatcher(record, settings, pool, random.Random(0), idle_agents=stuck).run()
    assert record.results["stuck"].attempt == 2 and record.retries == 1
    retried = [e for e in record.events if e.kind is EventKind.RETRIED]
    assert "stopped answering" in retried[0].detail


# --- warming the prompt cache before a fan-out ----------------------------------------


async def test_a_fan_out_waits_for_one_warm_up_of_its_shared_prefix():
    pool = FakePool()
    warmed: list[tuple[str, float]] = []

    async def warm(request: MicrotaskRequest) -> Usage:
        await asyncio.sleep(0.05)
        warmed.append((request.microtask.role.value, time.time()))
        return Usage(requests=1, cache_write_tokens=5000)

    plan = [_mt("r1"), _mt("r2"), _mt("r3"), _mt("a", "r1", "r2", "r3")]
    record = _record(plan)
    await Dispatcher(record, _settings(), pool, random.Random(0), warm=warm).run()
    assert len(warmed) == 1  # once for the role, not once per call
    assert all(started > warmed[0][1] for _, _, started in pool.calls)  # all after it
    assert record.usage.cache_write_tokens == 5000 and len(record.results) == 4


async def test_a_failed_warm_up_only_costs_the_cache_and_the_fan_out_goes_on():
    async def broken(request: MicrotaskRequest) -> Usage:
        raise RuntimeError("warm-up refused")

    record = _record([_mt("r1"), _mt("r2")])
    off = _settings(warm_cache=False)
    await Dispatcher(record, _settings(), FakePool(), random.Random(0), warm=broken).run()
    assert len(record.results) == 2
    calls: list[MicrotaskRequest] = []

    async def never(request: MicrotaskRequest) -> Usage:
        calls.append(request)
        return Usage()

    await Dispatcher(_record([_mt("r1"), _mt("r2")]), off, FakePool(), random.Random(0),
                     warm=never).run()  # fmt: skip
    assert calls == []  # warm_cache=False
