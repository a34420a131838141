"""A leased agent is reported dead only when the actor that died is that agent."""

from __future__ import annotations

from ray.exceptions import RayActorError, RayTaskError

from actors.agents.leases import _died
from actors.agents.pool import AgentLease

AGENT_ID = "aa" * 16
LIMITER_ID = "bb" * 16


class _ActorId:
    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex


class _Handle:
    """The one thing ``_died`` reads of an ``ActorHandle``: its actor id."""

    def __init__(self, hex_id: str) -> None:
        self._actor_id = _ActorId(hex_id)


def _member() -> AgentLease:
    return AgentLease(lease_id=1, agent_id="research-0", handle=_Handle(AGENT_ID))


def test_the_agents_own_death_is_its_death():
    assert _died(_member(), RayActorError(actor_id=AGENT_ID))
    assert _died(_member(), RayActorError())  # no id: Ray could not say, assume the agent


def test_another_actors_death_is_not_the_agents():
    assert not _died(_member(), RayActorError(actor_id=LIMITER_ID))


def test_a_death_the_agent_ran_into_and_raised_is_not_the_agents():
    # The agent awaited the limiter, which died; the agent's code raised that error, and
    # Ray hands it to the caller as RayTaskError that is also a RayActorError.
    raised = RayTaskError("Agent.run", "Traceback ...", RayActorError(LIMITER_ID))
    error = raised.as_instanceof_cause()
    assert isinstance(error, RayActorError)
    assert not _died(_member(), error)
