"""The pool autoscaling rule: Ray Serve's, tuned for seconds instead of minutes.

Desired size is ``ceil((queued + running) / target_per_agent)`` clamped to the
pool's bounds. A change must be wanted for a while before it happens (upscale
and downscale delays), except three moves that apply at once: refilling a
pool that fell below its minimum (dead agents), shrinking under provider
pressure (fewer concurrent calls against a struggling provider), and growing to
the width the known plans will need (``expected``: predictive allocation).

::

    scaler = Autoscaler(min_agents=2, max_agents=8, target_per_agent=1.0,
                        upscale_delay_s=0.5, downscale_delay_s=10.0)
    size = scaler.decide(now=time.monotonic(), current=2, queued=6, running=2)
"""

from __future__ import annotations

import math


def desired_agents(
    queued: int, running: int, target_per_agent: float, min_agents: int, max_agents: int
) -> int:
    """``clamp(ceil((queued + running) / target_per_agent), min_agents, max_agents)``."""
    if target_per_agent <= 0:
        raise ValueError(f"target_per_agent must be > 0, got {target_per_agent}")
    wanted = math.ceil(max(0, queued + running) / target_per_agent)
    return max(min_agents, min(max_agents, wanted))


def pressure_cap(min_agents: int, max_agents: int, pressure: float) -> int:
    """Upper bound under provider pressure (0..1): ``max - round((max - min) * pressure)``.

    Pressure 0 leaves ``max_agents``; pressure 1 brings the bound down to
    ``min_agents``, never below.
    """
    pressure = min(1.0, max(0.0, pressure))
    span = max(0, max_agents - min_agents)
    return max(min_agents, max_agents - round(span * pressure))


class Autoscaler:
    """Decides a pool's size tick by tick; the pool calls ``decide`` on its timer."""

    def __init__(
        self,
        min_agents: int,
        max_agents: int,
        target_per_agent: float,
        upscale_delay_s: float,
        downscale_delay_s: float,
    ) -> None:
        if min_agents < 0 or max_agents < max(1, min_agents):
            raise ValueError(f"bad pool bounds: min={min_agents} max={max_agents}")
        if target_per_agent <= 0:
            raise ValueError(f"target_per_agent must be > 0, got {target_per_agent}")
        self.min_agents = min_agents
        self.max_agents = max_agents
        self.target_per_agent = target_per_agent
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self._direction = 0  # +1 wanting up, -1 wanting down, 0 content
        self._since: float | None = None  # when the current wish started

    def decide(
        self,
        now: float,
        current: int,
        queued: int,
        running: int,
        pressure: float = 0.0,
        expected: int = 0,
    ) -> int:
        """The size to move to now (``current`` when nothing should change yet).

        ``expected``: microtasks the known plans will run at once (predictive allocation).
        The pool grows to them at once, before they are ready, and keeps them while they
        are expected; the downscale delay applies once they are not."""
        cap = pressure_cap(self.min_agents, self.max_agents, pressure)
        if current < self.min_agents:
            self._reset()
            return self.min_agents
        if current > cap:
            self._reset()
            return cap
        bounds = (self.target_per_agent, self.min_agents, self.max_agents)
        foreseen = min(cap, desired_agents(0, expected, *bounds))
        if foreseen > current:
            self._reset()
            return foreseen
        desired = min(cap, desired_agents(queued, max(running, expected - queued), *bounds))
        direction = (desired > current) - (desired < current)
        if direction == 0:
            self._reset()
            return current
        if direction != self._direction or self._since is None:
            self._direction = direction
            self._since = now
        delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
        if now - self._since >= delay:
            self._reset()
            return desired
        return current

    def _reset(self) -> None:
        self._direction = 0
        self._since = None
