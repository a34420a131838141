"""The pool autoscaling rule: desired size, delays, floor, cap and pressure."""

from __future__ import annotations

from actors.agents.scaling import Autoscaler, desired_agents, pressure_cap


def scaler(**overrides) -> Autoscaler:
    params = dict(
        min_agents=2,
        max_agents=10,
        target_per_agent=1.0,
        upscale_delay_s=1.0,
        downscale_delay_s=5.0,
    )
    params.update(overrides)
    return Autoscaler(**params)


def test_desired_is_ongoing_work_over_target_clamped():
    assert desired_agents(5, 2, 1.0, 1, 20) == 7
    assert desired_agents(5, 2, 2.0, 1, 20) == 4  # ceil(7 / 2)
    assert desired_agents(0, 0, 1.0, 3, 20) == 3  # floor
    assert desired_agents(100, 0, 1.0, 1, 12) == 12  # cap


def test_pressure_shrinks_the_upper_bound_towards_min():
    assert pressure_cap(2, 10, 0.0) == 10
    assert pressure_cap(2, 10, 0.5) == 6
    assert pressure_cap(2, 10, 1.0) == 2
    assert pressure_cap(2, 10, 7.0) == 2  # never below min


def test_scales_up_only_after_the_upscale_delay_and_jumps_to_desired():
    s = scaler()
    assert s.decide(now=0.0, current=2, queued=8, running=0) == 2
    assert s.decide(now=0.5, current=2, queued=8, running=0) == 2
    assert s.decide(now=1.0, current=2, queued=8, running=0) == 8


def test_zero_delay_scales_up_at_once():
    assert scaler(upscale_delay_s=0.0).decide(now=0.0, current=2, queued=5, running=0) == 5


def test_scales_down_only_after_the_downscale_delay():
    s = scaler()
    assert s.decide(now=0.0, current=8, queued=0, running=3) == 8
    assert s.decide(now=4.9, current=8, queued=0, running=3) == 8
    assert s.decide(now=5.0, current=8, queued=0, running=3) == 3


def test_a_vanished_wish_resets_the_timer():
    s = scaler()
    assert s.decide(now=0.0, current=2, queued=8, running=0) == 2
    assert s.decide(now=0.6, current=2, queued=0, running=2) == 2  # wish gone
    assert s.decide(now=1.2, current=2, queued=8, running=0) == 2  # timer restarted
    assert s.decide(now=2.2, current=2, queued=8, running=0) == 8


def test_a_change_of_direction_resets_the_timer():
    s = scaler(upscale_delay_s=1.0, downscale_delay_s=1.0)
    assert s.decide(now=0.0, current=5, queued=9, running=0) == 5  # wants up
    assert s.decide(now=0.9, current=5, queued=0, running=0) == 5  # now wants down
    assert s.decide(now=1.5, current=5, queued=0, running=0) == 5  # down timer only 0.6 s old
    assert s.decide(now=2.0, current=5, queued=0, running=0) == 2


def test_below_min_returns_min_immediately():
    s = scaler()
    assert s.decide(now=0.0, current=0, queued=0, running=0) == 2
    assert s.decide(now=0.0, current=1, queued=50, running=0) == 2


def test_never_above_max():
    s = scaler(upscale_delay_s=0.0)
    assert s.decide(now=0.0, current=2, queued=500, running=0) == 10


def test_pressure_cap_applies_immediately_and_never_below_min():
    s = scaler()
    assert s.decide(now=0.0, current=10, queued=50, running=10, pressure=0.5) == 6
    assert s.decide(now=0.1, current=6, queued=50, running=6, pressure=1.0) == 2
    s = scaler(upscale_delay_s=0.0)
    assert s.decide(now=0.0, current=2, queued=50, running=0, pressure=0.75) == 4


def test_a_known_plan_grows_the_pool_at_once_and_holds_it_while_expected():
    s = scaler()
    # Nothing queued or running yet: the plan's width alone grows the pool, with no delay.
    assert s.decide(now=0.0, current=2, queued=0, running=0, expected=6) == 6
    # While it is expected, the idle agents stay (no downscale wish at all).
    assert s.decide(now=10.0, current=6, queued=0, running=0, expected=6) == 6
    assert s.decide(now=20.0, current=6, queued=0, running=0, expected=6) == 6
    # Once the task is done, the ordinary downscale delay applies.
    assert s.decide(now=30.0, current=6, queued=0, running=0, expected=0) == 6
    assert s.decide(now=36.0, current=6, queued=0, running=0, expected=0) == 2


def test_an_expected_width_stays_within_the_bounds_and_under_pressure():
    assert scaler().decide(now=0.0, current=2, queued=0, running=0, expected=50) == 10
    assert scaler().decide(now=0.0, current=2, queued=0, running=0, pressure=0.5, expected=50) == 6
