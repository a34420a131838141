"""The pipeline order and the largest-remainder sharing every plan size is built on."""

from __future__ import annotations

import pytest

from actors.models import PIPELINE, Role, apportion


def test_the_pipeline_holds_every_role_once_in_the_order_work_flows():
    assert PIPELINE == (Role.RESEARCH, Role.ANALYSIS, Role.VALIDATION, Role.GENERATION)
    assert set(PIPELINE) == set(Role)


@pytest.mark.parametrize("weights", [[40, 35, 20], [0.4, 0.35, 0.2, 0.05], [1, 1, 1], [7, 0, 2]])
def test_shares_add_up_to_the_total_exactly(weights):
    for total in range(0, 301):
        shares = apportion(total, weights)
        assert sum(shares) == total, (total, weights)
        # Largest remainder: no share is a whole item away from its exact quota.
        quotas = [total * w / sum(weights) for w in weights]
        assert all(abs(s - q) < 1 for s, q in zip(shares, quotas, strict=True))


def test_the_items_left_go_to_the_largest_remainders():
    # Quotas 2.1, 1.85, 1.05: the one item left over goes to the 0.85.
    assert apportion(5, [42, 37, 21]) == [2, 2, 1]
    assert apportion(10, [1, 2, 7]) == [1, 2, 7]


def test_ties_go_in_the_given_order():
    assert apportion(1, [1, 1, 1]) == [1, 0, 0]
    assert apportion(2, [1, 1, 1]) == [1, 1, 0]
    assert apportion(1, {"c": 1, "a": 1, "b": 1}) == {"c": 1, "a": 0, "b": 0}


def test_a_mapping_keeps_its_keys_and_their_order():
    shares = apportion(8, {Role.GENERATION: 1, Role.RESEARCH: 3})
    assert shares == {Role.GENERATION: 2, Role.RESEARCH: 6}
    assert list(shares) == [Role.GENERATION, Role.RESEARCH]


def test_a_zero_weight_gets_nothing():
    for total in range(0, 50):
        shares = apportion(total, {Role.RESEARCH: 0, Role.ANALYSIS: 3, Role.VALIDATION: 0})
        assert shares[Role.RESEARCH] == shares[Role.VALIDATION] == 0
        assert shares[Role.ANALYSIS] == total


@pytest.mark.parametrize(
    ("total", "weights"), [(5, []), (5, [0, 0]), (5, {"a": 0}), (5, [2, -1]), (-1, [1])]
)
def test_nothing_to_share_by_or_out_is_an_error(total, weights):
    with pytest.raises(ValueError):
        apportion(total, weights)
