"""An answer written in sections by the plan (answer_mode "sections"), without Ray."""

from __future__ import annotations

import asyncio
import random

from factories import result

from actors.config import Settings
from actors.engine.claims import MergeSummary
from actors.engine.merge_step import MergeStep
from actors.engine.report import TaskRecord
from actors.engine.sections import SectionedAnswer, section_ids, sections_rule
from actors.models import CallKind, EventKind, Microtask, MicrotaskRequest, MicrotaskResult, Role
from actors.sim import fake_plan, fake_text
from actors.sim.fake_request import Markers, Prompt


def _mt(id_: str, role: Role, *deps: str) -> Microtask:
    return Microtask(id=id_, role=role, title=f"Title {id_}", instructions=id_, depends_on=deps)


PLAN = [
    _mt("r1", Role.RESEARCH),
    _mt("v1", Role.VALIDATION, "r1"),
    _mt("g1", Role.GENERATION, "v1"),
    _mt("g2", Role.GENERATION, "v1"),
    _mt("g3", Role.GENERATION, "v1"),
]


def _record() -> TaskRecord:
    record = TaskRecord(task_id="t1", text="a request")
    record.set_plan(PLAN)
    return record


def _answers(record: TaskRecord) -> list[str]:
    return [e.detail for e in record.events if e.kind is EventKind.ANSWER]


def test_sections_are_the_generation_microtasks_nothing_depends_on_in_plan_order():
    assert section_ids(PLAN) == ["g1", "g2", "g3"]
    drafts = [*PLAN[:2], _mt("g1", Role.GENERATION, "v1"), _mt("g2", Role.GENERATION, "g1")]
    assert section_ids(drafts) == []  # one sink writes the whole answer: no sections


async def test_a_section_waits_for_the_ones_before_it_and_a_failed_one_is_skipped():
    record = _record()
    asked: list[tuple[list[str], list[str]]] = []

    async def reconcile(results: list[MicrotaskResult], missing: list[str]) -> MergeSummary:
        asked.append(([r.microtask_id for r in results], missing))
        return MergeSummary(confidence=0.8, conflicts=[], agreed_topics=[], missing=missing)

    sections = SectionedAnswer(record, reconcile)
    record.results["r1"] = result("r1")
    await sections.advance()
    assert sections.reconciling is None  # v1 has not settled
    record.failures["v1"] = "failed on purpose"
    record.results["g2"] = result("g2", Role.GENERATION, content="second")
    await sections.advance()
    assert _answers(record) == []  # g2 waits for g1
    assert sections.reconciling is not None  # the groundwork settled: reconciling began
    assert await sections.reconciling is not None and asked == [(["r1"], ["v1: Title v1"])]
    record.failures["g1"] = "failed on purpose"
    record.results["g3"] = result("g3", Role.GENERATION, content="## Own heading\nthird")
    await sections.advance()
    assert _answers(record) == ["## Title g2\n\nsecond\n\n", "## Own heading\nthird\n\n"]
    assert sections.sent == ["g2", "g3"]


class _Writers:
    """The pools for the merge step: reconciling fails (claims grouped by topic name),
    the overview answers or fails as told."""

    def __init__(self, overview_fails: bool = False) -> None:
        self.overview_fails = overview_fails
        self.kinds: list[CallKind] = []

    async def __call__(self, role: Role, request: MicrotaskRequest, delay: float):
        self.kinds.append(request.kind)
        if request.kind is CallKind.RECONCILE or self.overview_fails:
            raise RuntimeError("no answer on purpose")
        return result("overview", Role.GENERATION, content="It adds up to this.")


async def _merged(writers: _Writers) -> TaskRecord:
    record = _record()
    record.plan_source = "model"
    step = MergeStep(Settings(), writers)
    sections = step.sectioned(record)
    for mt in PLAN:
        record.results[mt.id] = result(mt.id, mt.role, content=f"text of {mt.id}")
    await sections.advance()  # during the dispatch: sections sent, reconciling begun
    await step.run(record, sections)
    return record


async def test_the_answer_is_the_sections_then_the_overview_then_the_footer():
    writers = _Writers()
    record = await _merged(writers)
    assert CallKind.SYNTHESIS not in writers.kinds  # no writer rewrites the sections
    assert writers.kinds.count(CallKind.OVERVIEW) == 1
    body, footer = record.answer.split("\n\n---\n")
    assert body == (
        "## Title g1\n\ntext of g1\n\n## Title g2\n\ntext of g2\n\n## Title g3\n\ntext of g3"
        "\n\n## In short\n\nIt adds up to this."
    )
    assert footer.startswith("Confidence:")
    assert "".join(_answers(record)) == body + "\n\n"  # what followers saw is the answer


async def test_a_failed_overview_leaves_the_sections_standing():
    record = await _merged(_Writers(overview_fails=True))
    assert record.answer.startswith("## Title g1\n\ntext of g1")
    assert "In short" not in record.answer
    assert any("overview failed" in note for note in record.notes)


async def test_without_a_section_the_single_writer_writes_the_answer():
    writers = _Writers()
    record = _record()
    record.plan_source = "model"
    step = MergeStep(Settings(), writers)
    sections = step.sectioned(record)
    record.results["r1"] = result("r1")
    record.results["v1"] = result("v1", Role.VALIDATION)
    for section in ("g1", "g2", "g3"):
        record.failures[section] = "failed on purpose"
    await step.run(record, sections)
    assert CallKind.SYNTHESIS in writers.kinds and CallKind.OVERVIEW not in writers.kinds


def test_the_simulated_planner_ends_with_sections_sharing_the_asked_length():
    text = "<request>\nA security analysis of a payments API\n</request>\n\nPlan at most 40 "
    text += "microtasks.\n\n" + sections_rule(1800)
    prompt = Prompt(0, "", text, text, 9000, Markers())
    plan = fake_plan.plan(prompt, random.Random(0))["microtasks"]
    writers = [m for m in plan if m["role"] == "generation"]
    assert 2 <= len(writers) <= 6 and plan[-len(writers) :] == writers
    assert all(f"in about {1800 // len(writers)} words" in m["instructions"] for m in writers)


def test_the_simulator_writes_about_the_length_a_prompt_asks_for():
    prompt = Prompt(0, "", "Write it in about 600 words.", "", 9000, Markers())
    tokens = [fake_text.asked_tokens(prompt, random.Random(seed)) for seed in range(20)]
    assert all(t is not None and 760 <= t <= 920 for t in tokens)  # 600 words: 800 tokens
    assert fake_text.asked_tokens(Prompt(0, "", "Write it.", "", 9000, Markers()), None) is None


async def test_following_ends_once_closed_even_if_a_cancel_was_lost():
    record = _record()

    async def reconcile(results, missing):
        return MergeSummary(confidence=0.8, conflicts=[], agreed_topics=[], missing=missing)

    sections = SectionedAnswer(record, reconcile)
    following = asyncio.create_task(sections.follow())
    record.results["r1"] = result("r1")
    await record.emit(EventKind.FINISHED)
    sections.close()
    await record.emit(EventKind.FINISHED)  # what a lost cancel leaves: the wait just ends
    await asyncio.wait_for(following, 2)
