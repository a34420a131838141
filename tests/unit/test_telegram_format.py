"""What the bot writes: message parts within Telegram's limit, progress text, reports."""

from __future__ import annotations

from actors.models import Complexity, PoolSnapshot, Role, RunReport, TaskState
from actors.telegram_format import (
    MESSAGE_LIMIT,
    EditThrottle,
    answer_text,
    parallel_test_report,
    progress_text,
    split_message,
    status_text,
    utf16_len,
)


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


def test_9000_characters_become_three_parts_within_the_limit():
    text = "\n".join(f"line {i:05d} " + "x" * 80 for i in range(100))[:9000]
    parts = split_message(text)
    assert len(parts) == 3
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_parts_end_at_line_breaks_when_there_are_some():
    text = "\n".join("y" * 99 for _ in range(60))
    parts = split_message(text)
    assert all(len(line) == 99 for part in parts for line in part.split("\n"))


def test_text_without_breaks_is_cut_hard():
    assert [len(p) for p in split_message("a" * 9000)] == [4096, 4096, 808]


def test_emoji_count_twice_as_telegram_counts_them():
    parts = split_message("😀" * 3000)  # 6000 UTF-16 units
    assert len(parts) == 2
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in parts)
    assert "".join(parts) == "😀" * 3000


def test_short_and_empty_texts():
    assert split_message("hi") == ["hi"]
    assert split_message("   ") == ["(empty answer)"]


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
