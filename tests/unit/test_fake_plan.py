"""How many microtasks the simulator's planner puts in each level (pure logic, no Ray).

The simulator's plans are seeded and other tests depend on their sizes, so the table is pinned.
"""

from __future__ import annotations

from actors.sim.fake_plan import plan_sizes

# n: research, analysis, validation, generation
PINNED = {
    1: [0, 0, 0, 1],
    2: [1, 0, 0, 1],
    3: [1, 1, 0, 1],
    4: [1, 1, 1, 1],
    5: [2, 1, 1, 1],
    6: [2, 2, 1, 1],
    7: [3, 2, 1, 1],
    8: [3, 3, 1, 1],
    9: [3, 3, 2, 1],
    10: [4, 3, 2, 1],
    11: [4, 4, 2, 1],
    19: [7, 7, 4, 1],
    20: [8, 7, 4, 1],
    50: [20, 18, 10, 2],
    100: [40, 35, 20, 5],
}


def test_the_level_sizes_are_the_pinned_ones():
    assert {n: plan_sizes(n) for n in PINNED} == PINNED


def test_from_four_on_every_level_has_a_microtask_and_the_sizes_add_up():
    for n in range(4, 501):
        sizes = plan_sizes(n)
        assert sum(sizes) == n, n
        assert min(sizes) >= 1, n
