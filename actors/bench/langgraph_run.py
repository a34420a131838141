"""The LangGraph contestant: the map-reduce users would write, with ``Send`` fan-out.

A ``dispatch`` node routes every microtask whose dependencies are done to a
``work`` node through ``Send``; the results merge into the state by a reducer;
``work`` leads back to ``dispatch``. LangGraph runs in supersteps, so the next
wave starts only when every microtask of the current one has finished: that is
the framework's own behaviour, measured here, not a handicap added by the bench.
The calls and per-role caps are the same as the other contestants'.

LangGraph is optional (``pip install 'parallel-agents[bench]'``); ``available()``
says whether it can be imported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

from actors.bench.inprocess import MicrotaskCaller, RunOutcome
from actors.models import Microtask, MicrotaskResult, Role


def available() -> bool:
    """True when ``langgraph`` is importable."""
    return importlib.util.find_spec("langgraph") is not None


def _merge(
    left: dict[str, MicrotaskResult], right: dict[str, MicrotaskResult]
) -> dict[str, MicrotaskResult]:
    return {**left, **right}


class _State(TypedDict):
    results: Annotated[dict[str, MicrotaskResult], _merge]


async def run_langgraph(
    caller: MicrotaskCaller, microtasks: Sequence[Microtask], capacity: Mapping[Role, int]
) -> RunOutcome:
    """Run the plan as a LangGraph ``StateGraph`` with ``Send`` fan-out."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    slots = {role: asyncio.Semaphore(max(1, capacity.get(role, 0))) for role in Role}
    by_id = {t.id: t for t in microtasks}

    def dispatch(state: _State) -> dict[str, Any]:
        return {}

    def route(state: _State) -> Any:  # list[Send] or END; Any: LangGraph reads the hints
        done = state["results"]
        ready = [t for t in microtasks if t.id not in done and all(d in done for d in t.depends_on)]
        if not ready:
            return END
        return [
            Send("work", {"id": t.id, "context": [done[d] for d in t.depends_on]}) for t in ready
        ]

    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        mt = by_id[payload["id"]]
        async with slots[mt.role]:
            result = await caller.call(mt, payload["context"])
        return {"results": {mt.id: result}}

    builder = StateGraph(_State)
    builder.add_node("dispatch", dispatch)
    node: Any = work  # a Send target takes its payload, which the stubs cannot express
    builder.add_node("work", node)
    builder.add_edge(START, "dispatch")
    builder.add_conditional_edges("dispatch", route, ["work", END])
    builder.add_edge("work", "dispatch")
    graph = builder.compile()
    config: Any = {
        "recursion_limit": 4 * len(microtasks) + 10,
        "max_concurrency": sum(capacity.values()),
    }
    started = time.perf_counter()
    final = await graph.ainvoke({"results": {}}, config=config)
    elapsed = time.perf_counter() - started
    results: dict[str, MicrotaskResult] = final["results"]
    durations = [r.duration_s for r in results.values()]
    failed = len(microtasks) - len(results)
    return RunOutcome("langgraph", elapsed, elapsed, durations, failed=failed)
