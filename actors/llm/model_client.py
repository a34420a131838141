"""One model client per node: the SDK, its connections and the node's limiter allowance.

Agents make their model calls through the ``ModelClientActor`` of their node instead of
holding an SDK client each: the ``anthropic`` package is ~54 MB of the ~58 MB an agent
process would add over a bare Ray actor and ~1.5 s of its start-up CPU, and one rate-limit
allowance serves the whole node (`bench/README.md`, "Agent processes"). An agent keeps its
role, prompts, identity and counters, and finds its node's client by name::

    client = model_client_for(node_id, settings)  # created on first use
    reply = await client.call.remote(ModelCall(...))

This module does not import the SDK at its top (the actor loads it when it starts), so an
agent importing ``ModelCall`` and ``model_client_for`` stays light. The actor is detached
(it outlives the agent that created it) and restartable; the system kills it on stop
(``stop_model_clients``). It keeps each call's deadline on its own work
(``held_back``), writes the call ledger under the call's task and microtask, relays a
streamed answer's pieces to the orchestrator, and makes its spans children of the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.config import (
    MODEL_CLIENT_PREFIX,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    Purpose,
    Settings,
    model_client_name,
)
from actors.errors import MicrotaskTimeoutError
from actors.llm import held_back, ledger
from actors.llm.answer_relay import AnswerRelay
from actors.llm.limiter_actor import RemoteLimiter
from actors.llm.prompt_parts import Prompt
from actors.models import AgentOutput, Reconciliation, Usage
from actors.observe import tracing

if TYPE_CHECKING:
    from actors.llm.client import LLMClient

log = logging.getLogger(__name__)

_WARM_UP_S = 30.0  # the warm-up token count is given up after this


class CallShape(StrEnum):
    """Which ``LLMClient`` call the model client makes, and what it parses."""

    TEXT = "text"  # complete: plain text
    STREAMED_TEXT = "streamed_text"  # stream_text: plain text, relayed as answer pieces
    AGENT_OUTPUT = "agent_output"  # structured: an ``AgentOutput``
    RECONCILIATION = "reconciliation"  # structured: a ``Reconciliation``


@dataclass(frozen=True)
class ModelCall:
    """One model call of one microtask attempt, as the agent hands it over."""

    shape: CallShape
    purpose: Purpose
    system: str
    prompt: Prompt
    task_id: str
    microtask_id: str
    attempt: int = 1
    agent_id: str = ""  # who asks, for messages
    max_paid_calls: int | None = None
    timeout_s: float | None = None  # on the call's own work (``actors.llm.held_back``)
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReply:
    """The answer: text, or the parsed value of a structured call."""

    text: str
    value: AgentOutput | Reconciliation | None
    usage: Usage
    simulated: bool


# Async (up to 1,000 calls at once by Ray's default): every agent of the node calls here.
@ray.remote(num_cpus=0, max_restarts=-1)
class ModelClientActor:
    """The ``LLMClient`` of one node, shared by its agents."""

    def __init__(self, settings: Settings) -> None:
        # Imported here, in this actor's own process: agents import this module for
        # ``ModelCall`` and ``model_client_for`` and must not load the SDK with it.
        from actors.llm.client import LLMClient

        tracing.configure(settings, "model-client")
        limiter = RemoteLimiter(settings=settings.limiter)  # by name, again after a restart
        self._client: LLMClient = LLMClient(settings, limiter=limiter)
        self._orchestrator: ray.actor.ActorHandle | None = None  # for streamed answers
        self._warmed: asyncio.Task[None] | None = None

    async def call(self, call: ModelCall) -> ModelReply:
        """Make ``call`` within its deadline on its own work; errors as the client raised
        them (``MicrotaskTimeoutError`` past the deadline)."""
        with (
            tracing.attached(call.trace_context),
            ledger.attributed(call.task_id, call.microtask_id),
        ):
            if call.timeout_s is None:
                return await self._call(call)
            try:
                reply, _ = await held_back.within(self._call(call), call.timeout_s)
            except TimeoutError:
                raise MicrotaskTimeoutError(
                    f"agent {call.agent_id} gave no result for {call.task_id}/"
                    f"{call.microtask_id} within {call.timeout_s:g} s of work"
                ) from None
            return reply

    async def _call(self, call: ModelCall) -> ModelReply:
        client, cap = self._client, call.max_paid_calls
        if call.shape is CallShape.STREAMED_TEXT:
            relay = AnswerRelay(self._answer_sender(call.task_id))
            text = await client.stream_text(
                call.purpose, call.system, call.prompt, on_text=relay.update, max_paid_calls=cap
            )
            await relay.flush()
            return ModelReply(text.text, None, text.usage, text.simulated)
        if call.shape is CallShape.TEXT:
            text = await client.complete(call.purpose, call.system, call.prompt, max_paid_calls=cap)
            return ModelReply(text.text, None, text.usage, text.simulated)
        schema: type[AgentOutput] | type[Reconciliation] = (
            AgentOutput if call.shape is CallShape.AGENT_OUTPUT else Reconciliation
        )
        value = await client.structured(
            call.purpose, call.system, call.prompt, schema, max_paid_calls=cap
        )
        parsed: AgentOutput | Reconciliation = value.value
        return ModelReply("", parsed, value.usage, value.simulated)

    def _answer_sender(self, task_id: str) -> Callable[[int, str], None]:
        """Sends pieces of a streamed answer to the orchestrator (found by name, once)."""

        def send(attempt: int, piece: str) -> None:
            if self._orchestrator is None:
                self._orchestrator = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
            self._orchestrator.answer.remote(task_id, attempt, piece)

        return send

    async def warm_up(self, purpose: Purpose, system: str) -> None:
        """Pay the SDK's first-call costs once per node, before the first real call
        (``LLMClient.warm_up``); later asks wait for that one. A failure costs nothing but
        the head start."""
        if self._warmed is None:
            self._warmed = asyncio.ensure_future(self._warm_up(purpose, system))
        await asyncio.shield(self._warmed)

    async def _warm_up(self, purpose: Purpose, system: str) -> None:
        try:
            await asyncio.wait_for(self._client.warm_up(purpose, system), _WARM_UP_S)
        except Exception as exc:  # the first real call pays instead
            log.info("model client warm-up failed: %s", exc)

    async def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


def model_client_for(node_id: str, settings: Settings) -> ray.actor.ActorHandle:
    """The model client of ``node_id``, created there if it is not running yet."""
    return ModelClientActor.options(  # type: ignore[attr-defined]
        name=model_client_name(node_id),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(settings)


def stop_model_clients() -> None:
    """Kill every node's model client (``stop_system``)."""
    with contextlib.suppress(Exception):
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] == NAMESPACE and entry["name"].startswith(MODEL_CLIENT_PREFIX):
                with contextlib.suppress(Exception):
                    actor = ray.get_actor(entry["name"], namespace=NAMESPACE)
                    ray.kill(actor, no_restart=True)
