"""What the bot writes: formatted message parts within Telegram's limit, progress, reports."""

from __future__ import annotations

from telegram import MessageEntity
from telegramify_markdown import utf16_len

from actors.bot.telegram_format import (
    MESSAGE_LIMIT,
    EditThrottle,
    MessagePart,
    answer_text,
    message_parts,
    parallel_test_report,
    progress_text,
    render,
    status_text,
)
from actors.models import Complexity, PoolSnapshot, Role, RunReport, TaskState


def _pool(role: Role, busy: int = 1, size: int = 2) -> PoolSnapshot:
    return PoolSnapshot(
        role=role,
        min=1,
        max=4,
        size=size,
        busy=busy,
        idle=size - busy,
        queued=3,
        running=busy,
        utilization=50.0,
        completed=0,
        failed=0,
        replaced=0,
        pressure=0.5,
    )


def _report(**changes: object) -> RunReport:
    data: dict = dict(
        task_id="abc123",
        state=TaskState.DONE,
        complexity=Complexity.COMPLEX,
        plan_source="model",
        microtasks=24,
        agents=6,
        max_parallel=5,
        wall_s=4.0,
        work_s=14.0,
        parallelism=3.5,
        speedup=3.5,
        succeeded=24,
        failed=0,
        retries=1,
        backups=0,
        input_tokens=1000,
        output_tokens=500,
        cost_usd=0.01,
        simulated=True,
        result="The answer.",
        confidence=0.9,
    )
    data.update(changes)
    return RunReport.model_validate(data)


def _spans(part: MessagePart) -> list[tuple[str, str]]:
    """Each entity as (type, the text it covers), cut out in UTF-16 units as Telegram does."""
    units = part.text.encode("utf-16-le")
    return [
        (str(e.type), units[2 * e.offset : 2 * (e.offset + e.length)].decode("utf-16-le"))
        for e in part.entities
    ]


def test_markdown_becomes_text_without_markers_and_with_entities():
    part = render(
        "# Plan\n\nSome **bold**, *italic* and `code`.\n\n- first\n- second\n\n"
        "See [the docs](https://example.com/docs).\n\n```python\nprint(1)\n```"
    )
    assert "#" not in part.text and "*" not in part.text and "`" not in part.text
    assert "Plan\n\nSome bold, italic and code." in part.text
    assert "first\n" in part.text and "- first" not in part.text  # a bullet, not a dash
    spans = _spans(part)
    assert ("bold", "Plan") in spans  # the heading
    assert ("bold", "bold") in spans and ("italic", "italic") in spans
    assert ("code", "code") in spans and ("pre", "print(1)") in spans
    assert ("text_link", "the docs") in spans
    (link,) = [e for e in part.entities if e.type == MessageEntity.TEXT_LINK]
    assert link.url == "https://example.com/docs"
    (pre,) = [e for e in part.entities if e.type == MessageEntity.PRE]
    assert pre.language == "python"


def test_offsets_count_an_emoji_outside_the_bmp_twice():
    part = render("😀 then **bold**")
    assert part.text == "😀 then bold"
    (bold,) = part.entities
    assert (bold.type, bold.offset, bold.length) == (MessageEntity.BOLD, 8, 4)  # not 7
    assert _spans(part) == [("bold", "bold")]


def test_a_bold_left_open_is_closed_instead_of_shown():
    part = render("The answer was cut off **in the middle of")
    assert part.text == "The answer was cut off in the middle of"
    assert _spans(part) == [("bold", "in the middle of")]
    assert render("2 ** 3 is 8").text == "2 ** 3 is 8"  # a literal ** is kept


def _long_answer() -> str:
    paragraphs = [
        f"Paragraph {i} has **bold words {i}** and `code_{i}()` in it, "
        + "then plain words " * (3 + i % 7)
        for i in range(55)
    ]
    paragraphs.insert(
        25, "```\n" + "\n".join(f"line {i} of a long block" for i in range(60)) + "\n```"
    )
    return "## A long answer\n\n" + "\n\n".join(paragraphs)


def test_a_long_answer_splits_within_the_limit_and_keeps_every_entity_inside_its_part():
    markdown = _long_answer()
    assert len(markdown) > 10_000
    whole = render(markdown)
    parts = message_parts(markdown)
    assert len(parts) == 3
    assert "".join(p.text for p in parts) == whole.text
    for part in parts:
        assert utf16_len(part.text) <= MESSAGE_LIMIT
        assert "**" not in part.text and "`" not in part.text
        assert part.entities
        assert all(
            e.offset >= 0 and e.offset + e.length <= utf16_len(part.text) for e in part.entities
        )
    # The formatting survives the cuts: every bold and code span of the whole text is there.
    spans = [s for p in parts for s in _spans(p)]
    assert [kind for kind, _ in spans].count("bold") == 56  # 55 paragraphs and the heading
    assert [kind for kind, _ in spans].count("code") == 55
    assert ("bold", "bold words 54") in spans and ("code", "code_0()") in spans
    # The code block crosses the first cut: its entity is clipped into two, one per part.
    assert [[kind for kind, _ in _spans(p)].count("pre") for p in parts] == [1, 1, 0]
    pre = "".join(text for p in parts for kind, text in _spans(p) if kind == "pre")
    assert pre == "\n".join(f"line {i} of a long block" for i in range(60))


def test_an_entity_crossing_a_cut_is_clipped_into_both_parts():
    parts = message_parts("**" + "a" * 6000 + "**")
    assert [utf16_len(p.text) for p in parts] == [4096, 1904]
    assert [_spans(p) for p in parts] == [[("bold", "a" * 4096)], [("bold", "a" * 1904)]]


def test_parts_end_at_line_breaks_when_there_are_some():
    text = "\n".join("y" * 99 for _ in range(60))
    parts = message_parts(text)
    assert len(parts) == 2
    assert all(len(line) == 99 for part in parts for line in part.text.strip().split("\n"))


def test_text_without_breaks_is_cut_hard():
    assert [len(p.text) for p in message_parts("a" * 9000)] == [4096, 4096, 808]


def test_emoji_count_twice_as_telegram_counts_them():
    parts = message_parts("😀" * 3000)  # 6000 UTF-16 units
    assert len(parts) == 2
    assert all(utf16_len(p.text) <= MESSAGE_LIMIT for p in parts)
    assert "".join(p.text for p in parts) == "😀" * 3000


def test_short_and_empty_texts():
    assert message_parts("hi") == [MessagePart("hi")]
    assert message_parts("   ") == [MessagePart("(empty answer)")]


def test_progress_text_shows_bar_counts_and_pools():
    text = progress_text("t1", 6, 12, [_pool(Role.RESEARCH), _pool(Role.ANALYSIS, 0, 1)])
    assert "t1" in text and "6/12 microtasks" in text and "50%" in text
    assert "research 1/2 busy" in text and "analysis 0/1 busy" in text
    assert "Done" in progress_text("t1", 12, 12, [], finished=True)


def test_edit_throttle_limits_rate_and_skips_same_text():
    throttle = EditThrottle(2.0)
    assert throttle.ready("a", now=0.0)
    throttle.sent("a", now=0.0)
    assert not throttle.ready("b", now=1.0)
    assert throttle.wait_s(now=1.0) == 1.0
    assert throttle.ready("b", now=2.0)
    assert not throttle.ready("a", now=10.0)  # same text as shown: never sent again
    assert not throttle.changed("a") and throttle.changed("b")


def test_parallel_test_report_has_the_figures():
    text = parallel_test_report(_report())
    for expected in ("microtasks: 24", "agents: 6", "wall time: 4.0 s", "14.0 s"):
        assert expected in text
    assert "parallelism: 3.5 (microtasks running at once on average" in text
    assert "speedup" not in text  # work / wall is how wide the run was, not a speedup
    assert "simulated" in text


def test_answer_text_says_when_cancelled_or_failed():
    assert answer_text(_report()) == "The answer."
    assert "Cancelled" in answer_text(_report(state=TaskState.CANCELLED, succeeded=3))
    assert "failed" in answer_text(_report(state=TaskState.FAILED))


def test_status_text_has_parallel_metrics():
    pools = [_pool(role) for role in Role]
    tasks = [{"task_id": "t1", "state": "running"}, {"task_id": "t0", "state": "done"}]
    text = status_text(pools, tasks, simulated=True)
    assert "agents: 4/8 busy, utilisation 50%" in text
    assert "active tasks: 1" in text
    assert all(role.value in text for role in Role)
