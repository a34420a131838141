"""Bring the system up on Ray, find a running one, or tear it down.

A system is: the LLM simulator (only without an API key), the rate limiter,
four agent pools and the orchestrator, all named actors in one namespace, so
any driver (CLI, Serve app, bot, notebook) finds them by name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError

from actors import home_lock
from actors.agents.pool import AgentPool
from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    SIMULATOR_NAME,
    Settings,
    pool_actor_name,
)
from actors.engine.orchestrator import Orchestrator
from actors.errors import ConfigurationError
from actors.llm import RateLimiterActor
from actors.llm.model_client import stop_model_clients
from actors.models import Role
from actors.observe import tracing
from actors.sim.simulator import SimulatorActor

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's switch for "this machine only" (named for the platforms where it is the default).
_SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class System:
    """Handles to every actor of one running system."""

    orchestrator: ray.actor.ActorHandle
    pools: dict[Role, ray.actor.ActorHandle]
    limiter: ray.actor.ActorHandle | None  # None only when found with its limiter gone
    simulator: ray.actor.ActorHandle | None
    base_url: str | None


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, start: bool = True
) -> None:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``, else the latest local one);
    with none to join, start a local Ray that listens on loopback only.

    ``address="local"`` always starts a new local Ray. ``start=False`` (``parallel-agents
    stop``) never starts one: with nothing to join it raises ``ConnectionError``.
    """
    if ray.is_initialized():
        return
    chosen = address
    if address is None:
        chosen = _cluster_address()
        if chosen is not None and not _answers(chosen) and not os.environ.get("RAY_ADDRESS"):
            chosen = None  # a stale record of a Ray that is gone (a reboot, a kill -9)
    if chosen is not None and chosen != "local":
        if not _answers(chosen):
            raise ConnectionError(f"no Ray answers at {chosen}")
        if _is_loopback(chosen):
            _bind_loopback()  # else Ray turns 127.0.0.1 into this machine's outward address
            _use_local_token()
        # A found address goes in as None: Ray finds the same one and, for a cluster it
        # found itself, uses the local auth token (never for an address it was given).
        ray.init(
            address=None if address is None else chosen, namespace=NAMESPACE, log_to_driver=False
        )
        return
    if not start:
        raise ConnectionError("no running Ray to connect to")
    _bind_loopback()
    ray.init(
        address="local",
        namespace=NAMESPACE,
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address=LOOPBACK,
    )


def _cluster_address() -> str | None:
    """``RAY_ADDRESS``, else the cluster ``ray start`` last recorded (Ray's own lookup).

    Not ``address="auto"``, which falls back to any GCS process on the machine: with
    several Rays here (tests, other users) that joins an arbitrary one.
    """
    from ray._private.services import get_ray_address_from_environment

    found: str | None = get_ray_address_from_environment(None, None)  # type: ignore[arg-type]
    return found


def _host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return None  # ray://... (Ray Client) and other forms: Ray itself parses them
    return host.strip("[]"), int(port)


def _answers(address: str, timeout_s: float = 2.0) -> bool:
    """Something listens at ``address`` (Ray takes a minute to give up on a dead GCS)."""
    parsed = _host_port(address)
    if parsed is None:
        return True
    with contextlib.suppress(OSError), socket.create_connection(parsed, timeout=timeout_s):
        return True
    return False


def _is_loopback(address: str) -> bool:
    parsed = _host_port(address)
    if parsed is None:
        return False
    with contextlib.suppress(ValueError):
        return parsed[0] == "localhost" or ipaddress.ip_address(parsed[0]).is_loopback
    return False


def _use_local_token() -> None:
    """Authenticate with this machine's Ray token (``~/.ray/auth_token``) if there is one.

    Ray does that for a cluster it finds itself, never for an address it is given; a
    loopback address is this machine's own cluster. An explicit ``RAY_AUTH_MODE`` wins.
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _bind_loopback() -> None:
    """Make Ray in this process (and the Ray processes it starts) keep to 127.0.0.1.

    Ray replaces 127.0.0.1 with the machine's outward address, so that other nodes
    could join, unless its single-machine switch is off; with it off, the GCS, the
    raylet, every worker and the metrics export port listen on loopback alone (checked
    with ``ss -ltn`` on Ray 2.60). The switch is read when ``ray`` is imported: set in
    the environment for processes started from here, and in the module for this one.
    """
    from ray._private import ray_constants

    os.environ[_SINGLE_MACHINE_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def start_system(settings: Settings, *, detached: bool = False, resume: bool = True) -> System:
    """Create (or reuse, by name) every actor of the system and wait until pools are warm.

    ``detached`` actors outlive this driver (``parallel-agents start``); otherwise
    they end with it (``parallel-agents run`` on a fresh local Ray, tests). With
    ``resume=False`` (a private ``run``) the orchestrator resumes only tasks it accepted
    itself, never other runs' unfinished ones.

    A system already running in this cluster is joined as it is. Otherwise the home must
    be free: while another orchestrator (another cluster's) holds it, this raises
    ``ConfigurationError`` naming the holder, before any actor is created.
    """
    tracing.check(settings)  # a bad exporter setting fails here, not inside every agent
    if not _named_actor_exists(ORCHESTRATOR_NAME):
        home_lock.check_free(
            settings.home, home_lock.ORCHESTRATOR_LOCK, wait_s=home_lock.EXIT_WAIT_S
        )
    resume_since = None if resume else time.time()
    options: dict[str, object] = {"namespace": NAMESPACE, "get_if_exists": True}
    if detached:
        options["lifetime"] = "detached"
    pinned = dict(options)
    if settings.head_resource:
        pinned["resources"] = {settings.head_resource: 0.01}
    simulator = None
    base_url = settings.anthropic_base_url
    if settings.simulation == "embedded":
        # A fixed port, so that a restarted simulator serves on the URL every client holds.
        host = settings.simulator_host
        simulator = SimulatorActor.options(name=SIMULATOR_NAME, **pinned).remote(  # type: ignore[attr-defined]
            settings.simulator, host, _free_port(host)
        )
        base_url = ray.get(simulator.start.remote())
        log.info("simulated Claude (embedded simulator) at %s", base_url)
        # Every actor finds the endpoint in its settings; a restarted simulator serves on
        # the same port, so the URL stays good.
        settings = settings.with_overrides(anthropic_base_url=base_url)
    limiter = RateLimiterActor.options(name=LIMITER_NAME, **pinned).remote(  # type: ignore[attr-defined]
        settings.limiter
    )
    pools = {
        role: AgentPool.options(name=pool_actor_name(role), **pinned).remote(  # type: ignore[attr-defined]
            role, settings
        )
        for role in Role
    }
    ray.get([pool.start.remote() for pool in pools.values()])
    orchestrator = Orchestrator.options(name=ORCHESTRATOR_NAME, **pinned).remote(  # type: ignore[attr-defined]
        settings, resume_since
    )
    try:
        ray.get(orchestrator.ping.remote())
    except RayActorError as exc:  # e.g. another cluster took the home in the meantime
        raise ConfigurationError(f"the orchestrator did not start: {_reason(exc)}") from None
    return System(orchestrator, pools, limiter, simulator, base_url)


def find_system() -> System | None:
    """The running system's handles, or None when no orchestrator exists."""
    try:
        orchestrator = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
    pools = {role: ray.get_actor(pool_actor_name(role), namespace=NAMESPACE) for role in Role}
    limiter = simulator = None
    with contextlib.suppress(ValueError):  # gone for good: callers limit themselves meanwhile
        limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
    with contextlib.suppress(ValueError):
        simulator = ray.get_actor(SIMULATOR_NAME, namespace=NAMESPACE)
    base_url = str(ray.get(simulator.url.remote())) if simulator is not None else None
    return System(orchestrator, pools, limiter, simulator, base_url)


def stop_system(system: System) -> None:
    """Kill every actor of ``system`` (agents die with their pools), restarts included."""
    with contextlib.suppress(Exception):
        ray.get([pool.shutdown.remote() for pool in system.pools.values()], timeout=30)
    handles = [system.orchestrator, *system.pools.values(), system.limiter, system.simulator]
    for handle in handles:
        if handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
    stop_model_clients()  # detached, one per node: they do not die with the pools


def _named_actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def _free_port(host: str) -> int:
    """A port nobody listens on now at ``host`` (the simulator binds it right after)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _reason(exc: RayActorError) -> str:
    """The line of Ray's actor error that names the cause (our error, when we raised one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if "Error: " in line]
    return (ours or lines or [type(exc).__name__])[-1]
