"""Bring the system up on Ray, find a running one, or tear it down.

A system is: the LLM simulator (only without an API key), the rate limiter,
four agent pools and the orchestrator, all named actors in one namespace, so
any driver (CLI, Serve app, bot, notebook) finds them by name.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import ray

from actors import tracing
from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    SIMULATOR_NAME,
    Settings,
    pool_actor_name,
)
from actors.llm import RateLimiterActor
from actors.llm.simulator import SimulatorActor
from actors.models import Role
from actors.orchestrator import Orchestrator
from actors.pool import AgentPool

log = logging.getLogger(__name__)


@dataclass
class System:
    """Handles to every actor of one running system."""

    orchestrator: ray.actor.ActorHandle
    pools: dict[Role, ray.actor.ActorHandle]
    limiter: ray.actor.ActorHandle
    simulator: ray.actor.ActorHandle | None
    base_url: str | None


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or a running local one), else start a local Ray."""
    if ray.is_initialized():
        return
    if address is None:
        with contextlib.suppress(ConnectionError):
            ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
            return
    ray.init(
        address=address,
        namespace=NAMESPACE,
        num_cpus=num_cpus,
        include_dashboard=False if address is None else None,
        log_to_driver=False,
    )


def start_system(settings: Settings, *, detached: bool = False) -> System:
    """Create (or reuse, by name) every actor of the system and wait until pools are warm.

    ``detached`` actors outlive this driver (``parallel-agents start``); otherwise
    they end with it (``parallel-agents run`` on a fresh local Ray, tests).
    """
    tracing.check(settings)  # a bad exporter setting fails here, not inside every agent
    options: dict[str, object] = {"namespace": NAMESPACE, "get_if_exists": True}
    if detached:
        options["lifetime"] = "detached"
    pinned = dict(options)
    if settings.head_resource:
        pinned["resources"] = {settings.head_resource: 0.01}
    simulator = None
    base_url = settings.anthropic_base_url
    if settings.simulated:
        simulator = SimulatorActor.options(name=SIMULATOR_NAME, **pinned).remote(  # type: ignore[attr-defined]
            settings.simulator
        )
        base_url = ray.get(simulator.start.remote(host=settings.simulator_host))
        log.info("no ANTHROPIC_API_KEY: simulated Claude at %s", base_url)
    limiter = RateLimiterActor.options(name=LIMITER_NAME, **pinned).remote(  # type: ignore[attr-defined]
        settings.limiter
    )
    pools = {
        role: AgentPool.options(name=pool_actor_name(role), **pinned).remote(  # type: ignore[attr-defined]
            role, settings, base_url
        )
        for role in Role
    }
    ray.get([pool.start.remote() for pool in pools.values()])
    orchestrator = Orchestrator.options(name=ORCHESTRATOR_NAME, **pinned).remote(  # type: ignore[attr-defined]
        settings, base_url
    )
    ray.get(orchestrator.ping.remote())
    return System(orchestrator, pools, limiter, simulator, base_url)


def find_system() -> System | None:
    """The running system's handles, or None when no orchestrator exists."""
    try:
        orchestrator = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
    pools = {role: ray.get_actor(pool_actor_name(role), namespace=NAMESPACE) for role in Role}
    limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
    simulator = None
    with contextlib.suppress(ValueError):
        simulator = ray.get_actor(SIMULATOR_NAME, namespace=NAMESPACE)
    base_url = str(ray.get(simulator.url.remote())) if simulator is not None else None
    return System(orchestrator, pools, limiter, simulator, base_url)


def stop_system(system: System) -> None:
    """Kill every actor of ``system`` (agents die with their pools)."""
    with contextlib.suppress(Exception):
        ray.get([pool.shutdown.remote() for pool in system.pools.values()], timeout=30)
    handles = [system.orchestrator, *system.pools.values(), system.limiter]
    if system.simulator is not None:
        handles.append(system.simulator)
    for handle in handles:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)
