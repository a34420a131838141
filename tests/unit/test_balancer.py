"""The load balancer's promises, strategy by strategy (pure logic, no Ray)."""

from __future__ import annotations

from collections import Counter

import pytest

from actors.agents.balancer import AgentSlot, LoadBalancer
from actors.config import Strategy
from actors.models import Microtask, MicrotaskRequest, Role


def request(
    mid: str = "m1",
    *,
    priority: int = 0,
    critical: bool = False,
    branch: str = "",
    exclude: list[str] | None = None,
) -> MicrotaskRequest:
    microtask = Microtask(
        id=mid,
        role=Role.RESEARCH,
        title=mid,
        instructions="look it up",
        priority=priority,
        critical=critical,
        branch=branch,
    )
    return MicrotaskRequest(
        task_id="t1", microtask=microtask, exclude_agents=exclude or [], affinity_key=branch
    )


def slots(n: int, capacity: int = 1) -> list[AgentSlot]:
    return [AgentSlot(f"a{i}", capacity=capacity) for i in range(n)]


def test_round_robin_cycles_through_agents_in_order():
    lb = LoadBalancer(Strategy.ROUND_ROBIN)
    agents = slots(3)
    picks = [lb.pick(agents, request()) for _ in range(7)]
    assert picks == ["a0", "a1", "a2", "a0", "a1", "a2", "a0"]


def test_round_robin_skips_busy_agents_and_keeps_cycling():
    lb = LoadBalancer(Strategy.ROUND_ROBIN)
    agents = slots(3)
    agents[1].in_flight = 1
    assert [lb.pick(agents, request()) for _ in range(4)] == ["a0", "a2", "a0", "a2"]


def test_least_loaded_picks_the_idlest_agent():
    lb = LoadBalancer(Strategy.LEAST_LOADED)
    agents = [
        AgentSlot("a0", capacity=4, in_flight=3),
        AgentSlot("a1", capacity=4, in_flight=1),
        AgentSlot("a2", capacity=2, in_flight=1),
    ]
    assert lb.pick(agents, request()) == "a1"


def test_least_loaded_breaks_ties_by_fewest_completed_then_id():
    lb = LoadBalancer(Strategy.LEAST_LOADED)
    agents = [AgentSlot("b", completed=5), AgentSlot("c", completed=2), AgentSlot("a", completed=2)]
    assert lb.pick(agents, request()) == "a"


def test_weighted_gives_fast_reliable_agent_more_picks_than_slow_failing_one():
    lb = LoadBalancer(Strategy.WEIGHTED)
    agents = [AgentSlot("fast", capacity=1000), AgentSlot("slow", capacity=1000)]
    for i in range(10):
        lb.record("fast", request(), duration_s=0.2, ok=True)
        lb.record("slow", request(), duration_s=2.0, ok=i % 2 == 0)
    picks = Counter(lb.pick(agents, request()) for _ in range(100))
    assert picks["fast"] + picks["slow"] == 100
    assert picks["fast"] > 3 * picks["slow"]
    assert picks["slow"] >= 1  # proportional, not starved


def test_weighted_treats_new_agents_like_the_average():
    lb = LoadBalancer(Strategy.WEIGHTED)
    agents = [AgentSlot("known", capacity=1000), AgentSlot("new", capacity=1000)]
    lb.record("known", request(), duration_s=1.0, ok=True)
    picks = Counter(lb.pick(agents, request()) for _ in range(100))
    assert picks["known"] == picks["new"] == 50


def test_priority_dispatches_critical_first_then_higher_priority_then_fifo():
    lb = LoadBalancer(Strategy.PRIORITY)
    queue = [
        request("low"),
        request("high", priority=5),
        request("crit", critical=True),
        request("high2", priority=5),
    ]
    order = []
    while queue:
        order.append(queue.pop(lb.next_index(queue)).microtask.id)
    assert order == ["crit", "high", "high2", "low"]


def test_other_strategies_dispatch_fifo():
    queue = [request("first"), request("second", critical=True, priority=9)]
    for strategy in (Strategy.ROUND_ROBIN, Strategy.LEAST_LOADED, Strategy.AFFINITY):
        assert LoadBalancer(strategy).next_index(queue) == 0


def test_priority_chooses_the_least_loaded_agent():
    lb = LoadBalancer(Strategy.PRIORITY)
    agents = [AgentSlot("a0", capacity=2, in_flight=1), AgentSlot("a1", capacity=2)]
    assert lb.pick(agents, request()) == "a1"


def test_affinity_keeps_a_branch_on_one_agent_while_it_is_free():
    lb = LoadBalancer(Strategy.AFFINITY)
    agents = slots(3, capacity=10)
    first = lb.pick(agents, request("r1", branch="b1"))
    assert first is not None
    by_id = {a.agent_id: a for a in agents}
    by_id[first].in_flight += 1  # now it is the busiest, yet still free
    lb.record(first, request("r1", branch="b1"), duration_s=1.0, ok=True)
    assert lb.pick(agents, request("a1", branch="b1")) == first
    assert lb.pick(agents, request("x1", branch="other")) != first


def test_affinity_moves_a_branch_when_its_agent_is_busy_and_rebinds():
    lb = LoadBalancer(Strategy.AFFINITY)
    agents = slots(2)
    first = lb.pick(agents, request("r1", branch="b1"))
    by_id = {a.agent_id: a for a in agents}
    by_id[first].in_flight = 1  # full
    second = lb.pick(agents, request("r2", branch="b1"))
    assert second is not None and second != first
    by_id[first].in_flight = 0
    assert lb.pick(agents, request("r3", branch="b1")) == second


@pytest.mark.parametrize(("max_keys", "expected"), [(10, "a0"), (2, "a1")])
def test_affinity_map_is_bounded_and_forgets_the_oldest_branch(max_keys, expected):
    lb = LoadBalancer(Strategy.AFFINITY, max_affinity_keys=max_keys)
    agents = slots(2, capacity=10)
    assert lb.pick(agents, request(branch="b0")) == "a0"
    agents[0].in_flight = 5  # a0 is busy now; new branches go to a1
    assert lb.pick(agents, request(branch="b1")) == "a1"
    assert lb.pick(agents, request(branch="b2")) == "a1"
    # With room for 10 keys b0 still sticks to a0; with 2 it was evicted.
    assert lb.pick(agents, request(branch="b0")) == expected


@pytest.mark.parametrize("strategy", list(Strategy))
def test_excluded_and_dead_agents_are_never_picked(strategy):
    lb = LoadBalancer(strategy)
    agents = slots(4, capacity=100)
    agents[1].alive = False
    lb.record("a1", request(branch="b"), duration_s=0.01, ok=True)  # tempting, but dead
    picks = {lb.pick(agents, request(branch="b", exclude=["a0", "a2"])) for _ in range(20)}
    assert picks == {"a3"}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_none_when_every_agent_is_busy(strategy):
    lb = LoadBalancer(strategy)
    agents = [AgentSlot("a0", capacity=1, in_flight=1), AgentSlot("a1", capacity=2, in_flight=2)]
    assert lb.pick(agents, request()) is None
    assert lb.pick([], request()) is None


def test_forget_drops_bindings_of_a_removed_agent():
    lb = LoadBalancer(Strategy.AFFINITY)
    agents = slots(2, capacity=5)
    agents[1].in_flight = 3  # a0 is the idlest, so it gets the branch
    assert lb.pick(agents, request(branch="b")) == "a0"
    lb.forget("a0")
    agents[0].in_flight = 4  # a0 comes back busier; without a binding a1 wins
    assert lb.pick(agents, request(branch="b")) == "a1"
