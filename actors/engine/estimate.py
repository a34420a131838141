"""What a request will cost before it runs, and its tokens against one agent answering.

``for_plan`` sums a task's expected calls: the verdict, the plan, each microtask by its
role's model, the reconciling and the answer (one writer, or sections and an overview);
``for_level`` does the same for the level's typical plan, before there is one (the bot
asks before an expensive request, ``Orchestrator.estimate``). Each call's input is its
prompt — the request with its documents, the context of its dependencies — priced as
the prompt cache will bill it when caching is on (the first call of a role writes the
request prefix, the others read it); its output is what such calls typically write,
thinking included (``TYPICAL_OUTPUT``: the current default models at the default
efforts, measured on the simulator, whose sizes follow the models'). The range is the
estimate ×0.67 to ×1.5: plans vary in size, answers in length.

>>> from actors.config import Settings
>>> low = for_level(Settings(), Complexity.SIMPLE, "Compare two queues")
>>> 0 < low.low_usd < low.cost_usd < low.high_usd
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

from actors.config import Purpose, Settings
from actors.llm.catalog import info
from actors.llm.pricing import cost_usd
from actors.models import PLAN_SHARES, Complexity, Microtask, Role, apportion

# Output tokens (thinking included) a call of each purpose typically writes; the visible
# part of a microtask's answer is what its dependents get as context.
TYPICAL_OUTPUT: dict[Purpose, int] = {
    Purpose.ASSESSMENT: 120,
    Purpose.RESEARCH: 500,
    Purpose.VALIDATION: 470,
    Purpose.ANALYSIS: 850,
    Purpose.GENERATION: 850,
    Purpose.RECONCILE: 2200,
    Purpose.SYNTHESIS: 4700,
    Purpose.QUICK: 400,
    Purpose.SUMMARY: 450,
    Purpose.OVERVIEW: 300,
}
PLAN_THINKING = 2500  # tokens the planner thinks before it writes (high effort)
PLAN_TOKENS_PER_MICROTASK = 130  # a compact microtask in the plan's JSON
VISIBLE_SHARE = 0.7  # of a microtask's output, the part its dependents read
DEPENDENCIES = 3  # a typical microtask's dependencies past the first level
SYSTEM_TOKENS = 300  # an agent's system prompt and output rules
USED_SHARE = 0.9  # planners use most of the microtasks a level allows
LOW, HIGH = 0.67, 1.5


class CostEstimate(BaseModel):
    """The expected cost of one request, with a range."""

    complexity: Complexity
    direct: bool  # answered by one agent, no plan
    microtasks: int
    cost_usd: float
    low_usd: float
    high_usd: float


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def for_level(
    settings: Settings, level: Complexity, text: str, direct: bool = False
) -> CostEstimate:
    """The estimate for a request of ``level`` before it is planned (``direct``: one agent)."""
    if direct:
        usd = _call(settings, Purpose.ASSESSMENT, tokens(text) + 200)
        usd += _call(settings, Purpose.GENERATION, SYSTEM_TOKENS + tokens(text))
        return _range(level, True, 1, usd)
    count = max(1, round(settings.levels[level].max_microtasks * USED_SHARE))
    roles = [role for role, n in apportion(count, PLAN_SHARES).items() for _ in range(n)]
    microtasks = [
        Microtask(id=f"m{n}", role=role, title="", instructions="x" * 200,
                  depends_on=[] if role is Role.RESEARCH else ["r"] * DEPENDENCIES)
        for n, role in enumerate(roles)
    ]  # fmt: skip
    return for_plan(settings, level, text, microtasks)


def for_plan(
    settings: Settings, level: Complexity, text: str, microtasks: Sequence[Microtask]
) -> CostEstimate:
    """The estimate for ``text`` planned as ``microtasks`` (the planning call included)."""
    request = tokens(text)
    usd = _call(settings, Purpose.ASSESSMENT, request + 200)
    plan_out = PLAN_THINKING + PLAN_TOKENS_PER_MICROTASK * len(microtasks)
    usd += _call(settings, Purpose.PLANNING, request + 600, plan_out)
    seen: set[Role] = set()
    visible: list[int] = []
    for mt in microtasks:
        purpose = Purpose(mt.role.value)
        shown = int(TYPICAL_OUTPUT[purpose] * VISIBLE_SHARE)
        context = len(mt.depends_on) * shown
        own = tokens(mt.instructions) + 50
        usd += _call(settings, purpose, own + context, cached=SYSTEM_TOKENS + request,
                     first=mt.role not in seen)  # fmt: skip
        seen.add(mt.role)
        visible.append(shown)
    results = sum(visible)
    usd += _call(settings, Purpose.RECONCILE, results // 3 + 400)
    if settings.answer_mode == "sections":
        usd += _call(settings, Purpose.OVERVIEW, min(results, 8000) + request)
    else:
        usd += _call(settings, Purpose.SYNTHESIS, min(results, 15_000) + request)
    return _range(level, False, len(microtasks), usd)


def token_multiple(used_tokens: int, text: str) -> float:
    """Tokens a task used against one agent answering ``text`` directly (its request in,
    a synthesis-sized answer out)."""
    single = tokens(text) + SYSTEM_TOKENS + TYPICAL_OUTPUT[Purpose.SYNTHESIS]
    return round(used_tokens / single, 1)


def _call(
    settings: Settings,
    purpose: Purpose,
    uncached: int,
    output: int | None = None,
    cached: int = 0,
    first: bool = True,
) -> float:
    """One call's expected cost: ``cached`` input tokens are the prefix it shares with
    its role's other calls (written by the first, read by the rest when caching is on
    and the prefix is long enough for the model)."""
    model = settings.models[purpose]
    out = TYPICAL_OUTPUT[purpose] if output is None else output
    caches = settings.prompt_caching and cached >= info(model).min_cache_tokens
    if not caches:
        return cost_usd(model, uncached + cached, out)
    if first:
        return cost_usd(model, uncached, out, cache_write_tokens=cached)
    return cost_usd(model, uncached, out, cache_read_tokens=cached)


def _range(level: Complexity, direct: bool, count: int, usd: float) -> CostEstimate:
    return CostEstimate(
        complexity=level,
        direct=direct,
        microtasks=count,
        cost_usd=round(usd, 4),
        low_usd=round(usd * LOW, 4),
        high_usd=round(usd * HIGH, 4),
    )
