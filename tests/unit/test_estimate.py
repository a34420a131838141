"""Cost estimates before a run (``actors.engine.estimate``)."""

from __future__ import annotations

import pytest

from actors.config import Settings
from actors.engine.admission import budget_of
from actors.engine.estimate import for_level, for_plan, token_multiple
from actors.engine.report import TaskRecord
from actors.models import Complexity, Microtask, Role

SPEC = "The payments API accepts card tokens and returns receipts. " * 600  # ~9,000 tokens


def _plan(n: int) -> list[Microtask]:
    return [
        Microtask(id=f"m{i}", role=Role.RESEARCH if i < n // 2 else Role.ANALYSIS,
                  title="t", instructions="Do it.", depends_on=[] if i < n // 2 else ["m0"])
        for i in range(n)
    ]  # fmt: skip


def test_bigger_levels_and_plans_cost_more_and_the_range_holds_the_estimate():
    settings = Settings()
    simple, massive = (for_level(settings, level, "Audit the API") for level in
                       (Complexity.SIMPLE, Complexity.MASSIVE))  # fmt: skip
    assert simple.cost_usd < massive.cost_usd and massive.microtasks > simple.microtasks
    assert massive.low_usd < massive.cost_usd < massive.high_usd
    small, large = (for_plan(settings, Complexity.COMPLEX, "Audit", _plan(n)) for n in (4, 40))
    assert small.cost_usd < large.cost_usd
    direct = for_level(settings, Complexity.SIMPLE, "Hello", direct=True)
    assert direct.direct and direct.microtasks == 1 and direct.cost_usd < simple.cost_usd


def test_a_long_shared_request_costs_less_with_caching_and_an_answer_in_sections_less_still():
    on, off = Settings(), Settings(prompt_caching=False)
    cached = for_plan(on, Complexity.COMPLEX, SPEC, _plan(30)).cost_usd
    uncached = for_plan(off, Complexity.COMPLEX, SPEC, _plan(30)).cost_usd
    assert cached < 0.8 * uncached  # output, the larger part, is not cached
    sections = for_plan(Settings(answer_mode="sections"), Complexity.COMPLEX, SPEC, _plan(30))
    assert sections.cost_usd < cached


def test_a_cost_limit_below_the_task_budget_is_the_one_named():
    settings = Settings(task_budget_usd=5.0)
    record = TaskRecord(task_id="t", text="x")
    assert budget_of(record, settings)[0] == 5.0
    record.budget_usd = 0.5
    budget, named = budget_of(record, settings)
    assert budget == 0.5 and "cost limit of $0.50 set for this request" in named
    record.budget_usd = 9.0  # never above the operator's budget
    assert budget_of(record, settings)[0] == 5.0


def test_the_token_multiple_is_against_one_direct_answer():
    assert token_multiple(0, "x") == 0
    assert token_multiple(50_000, "Audit the API") == pytest.approx(50_000 / 5004, abs=0.1)
