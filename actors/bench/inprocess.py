"""The in-process contestants: sequential (one agent) and an asyncio dependency-driven executor.

Both make exactly the call a Ray agent makes for a microtask (same system
prompt, same prompt built from the microtask and its dependencies' results,
same structured output) through the same ``LLMClient`` and SDK, so the only
difference from the Ray contestant is where the scheduling and the calls run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from actors.agents.agent import build_prompt, microtask_system
from actors.config import Purpose
from actors.engine import dag
from actors.engine.scheduler import DagScheduler
from actors.llm import LLMClient
from actors.models import AgentOutput, Microtask, MicrotaskRequest, MicrotaskResult, Role


@dataclass
class RunOutcome:
    """One contestant's run of one workload."""

    contestant: str
    makespan_s: float  # start → last microtask result in the scheduler's hands
    wall_s: float  # everything the caller waited for (Ray: includes the synthesis)
    durations: list[float] = field(default_factory=list)  # each microtask's call, seconds
    failed: int = 0
    retries: int = 0
    backups: int = 0
    note: str = ""


class MicrotaskCaller:
    """Runs one microtask as an agent would: the agent's prompts, one structured call."""

    def __init__(self, client: LLMClient, request_text: str, task_id: str = "bench") -> None:
        self._client = client
        self._text = request_text
        self._task_id = task_id

    async def call(self, mt: Microtask, context: Sequence[MicrotaskResult]) -> MicrotaskResult:
        request = MicrotaskRequest(
            task_id=self._task_id, microtask=mt, context=list(context), request_text=self._text
        )
        started = time.time()
        answer = await self._client.structured(
            Purpose(mt.role.value),
            microtask_system(mt.role),
            build_prompt(request),
            AgentOutput,
        )
        return MicrotaskResult(
            task_id=self._task_id,
            microtask_id=mt.id,
            role=mt.role,
            agent_id="in-process",
            node_id="driver",
            content=answer.value.content,
            claims=answer.value.claims,
            confidence=answer.value.confidence,
            usage=answer.usage,
            started_at=started,
            finished_at=time.time(),
            simulated=answer.simulated,
        )


async def run_sequential(caller: MicrotaskCaller, microtasks: Sequence[Microtask]) -> RunOutcome:
    """One agent, one microtask at a time, in topological order."""
    by_id = {t.id: t for t in microtasks}
    results: dict[str, MicrotaskResult] = {}
    started = time.perf_counter()
    for level in dag.levels(microtasks):
        for tid in level:
            mt = by_id[tid]
            results[tid] = await caller.call(mt, [results[d] for d in mt.depends_on])
    elapsed = time.perf_counter() - started
    return RunOutcome("sequential", elapsed, elapsed, [r.duration_s for r in results.values()])


async def run_asyncio(
    caller: MicrotaskCaller, microtasks: Sequence[Microtask], capacity: Mapping[Role, int]
) -> RunOutcome:
    """Every microtask starts the moment its dependencies are done, within per-role caps.

    The no-Ray floor: one event loop, one semaphore per role sized like the pools.
    """
    slots = {role: asyncio.Semaphore(max(1, capacity.get(role, 0))) for role in Role}
    scheduler = DagScheduler(microtasks)
    results: dict[str, MicrotaskResult] = {}
    failed = 0

    async def run_one(mt: Microtask) -> MicrotaskResult:
        async with slots[mt.role]:
            return await caller.call(mt, [results[d] for d in mt.depends_on if d in results])

    inflight: dict[asyncio.Task[MicrotaskResult], Microtask] = {}
    started = time.perf_counter()
    try:
        while scheduler.is_active():
            for mt in scheduler.ready():
                inflight[asyncio.create_task(run_one(mt))] = mt
            if not inflight:
                break
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for call in done:
                mt = inflight.pop(call)
                if call.exception() is None:
                    results[mt.id] = call.result()
                    scheduler.done(mt.id)
                else:
                    failed += 1
                    scheduler.failed(mt.id)
    finally:
        for call in inflight:
            call.cancel()
    elapsed = time.perf_counter() - started
    durations = [r.duration_s for r in results.values()]
    return RunOutcome("asyncio", elapsed, elapsed, durations, failed=failed)
