"""What the Telegram bot writes: answer parts with formatting, progress text, reports, status.

Answers are Markdown. ``message_parts`` turns one into plain text plus a list of
``telegram.MessageEntity`` with ``telegramify-markdown`` (headings become a bold,
underlined line after an emoji, lists get bullets, code and links keep their
entities) and cuts it into messages of at most 4096 UTF-16 code units, the unit
Telegram counts lengths and entity offsets in (an emoji outside the Basic
Multilingual Plane counts twice). The text is converted before it is cut, so no
cut can leave a ``**`` or ``#`` marker unpaired; an entity that crosses a cut is
clipped into one entity per part. Sending with ``entities`` and no
``parse_mode`` means Telegram never parses the text itself, and the caller can
always fall back to the part's plain text.

Progress messages, reports and status texts are plain text, and so is the footer
line (``cost_line``) that ``with_footer`` puts under an answer's last message: it is
added after the Markdown is converted, so an answer cut off inside a code block
cannot swallow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import telegramify_markdown
from telegram import MessageEntity

from actors.models import PoolSnapshot, Role, RunReport, TaskState

MESSAGE_LIMIT = 4096  # UTF-16 code units per message
EMPTY = "(empty answer)"  # Telegram refuses an empty message
_BAR_WIDTH = 16


@dataclass(frozen=True)
class MessagePart:
    """One message: its plain text and the entities that format it (UTF-16 offsets)."""

    text: str
    entities: tuple[MessageEntity, ...] = ()


def render(markdown: str) -> MessagePart:
    """``markdown`` as one formatted text, whatever its length.

    >>> part = render("**Hi** there")
    >>> part.text, [(str(e.type), e.offset, e.length) for e in part.entities]
    ('Hi there', [('bold', 0, 2)])
    """
    return _part(*_convert(markdown))


def message_parts(markdown: str, limit: int = MESSAGE_LIMIT) -> list[MessagePart]:
    """``markdown`` formatted and cut into parts of at most ``limit`` UTF-16 units.

    Parts end at line breaks where one fits; every entity lies inside its part.

    >>> [len(p.text) for p in message_parts("a" * 9000)]
    [4096, 4096, 808]
    """
    chunks = telegramify_markdown.split_entities(*_convert(markdown), limit)
    return [_part(text, entities) for text, entities in chunks] or [MessagePart(EMPTY)]


def with_footer(
    parts: list[MessagePart], footer: str, limit: int = MESSAGE_LIMIT
) -> list[MessagePart]:
    """``parts`` with the plain line ``footer`` ending the last one (in a message of its
    own when it does not fit there).

    >>> [p.text for p in with_footer([MessagePart("Answer")], "Cost $0.01")]
    ['Answer\\n\\nCost $0.01']
    """
    last = parts[-1]
    text = f"{last.text}\n\n{footer}"
    if _units(text) > limit:
        return [*parts, MessagePart(footer)]
    return [*parts[:-1], MessagePart(text, last.entities)]


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _convert(markdown: str) -> tuple[str, list[telegramify_markdown.MessageEntity]]:
    text, entities = telegramify_markdown.convert(markdown)
    if "**" in text:  # a bold left open, e.g. an answer cut off mid-phrase: close it
        closed = telegramify_markdown.convert(markdown.rstrip() + "**")
        if closed[0].count("**") < text.count("**"):
            return closed
    return text, entities


def _part(text: str, entities: Iterable[telegramify_markdown.MessageEntity]) -> MessagePart:
    """The library's entities as python-telegram-bot's, the one place they are converted."""
    return MessagePart(text, tuple(MessageEntity.de_json(e.to_dict(), None) for e in entities))


BUSY = "Sorry, the system is taking too long to answer. Please try again in a moment."
CONVERSATION_GONE = (
    "The conversation you followed up on is gone (forgotten or past its retention), so "
    "this request starts a new one."
)
NEW_CONVERSATION = "Done: your next message starts a new conversation."
JOB_KEPT = (
    "Sorry, something went wrong on my side with that request. It is kept and will be "
    "picked up again when the bot restarts; your new requests are served meanwhile."
)


def too_slow_text(task_id: str | None) -> str:
    """The answer to a request the orchestrator did not answer in time."""
    stopped = f" (task {task_id} was stopped)" if task_id else ""
    return (
        f"Sorry, the system took too long to answer that request{stopped}. "
        "Please try again in a moment."
    )


def progress_bar(done: int, total: int, width: int = _BAR_WIDTH) -> str:
    """``▓▓▓▓░░░░ 50%``."""
    share = done / total if total else 0.0
    filled = round(width * share)
    return "▓" * filled + "░" * (width - filled) + f" {share:.0%}"


def progress_text(
    task_id: str,
    done: int,
    total: int,
    pools: Iterable[PoolSnapshot],
    finished: bool = False,
    roles: Mapping[Role, tuple[int, int]] | None = None,
) -> str:
    """The live progress message: a bar, what is done in words and per-pool activity.

    ``roles`` maps a role to its microtasks (done, seen so far), e.g. ``12/34 microtasks ·
    research done · analysis 3/8``; a finished task shows the count alone.
    """
    head = "Done" if finished else "Working on it"
    lines = [
        f"{head} (task {task_id})",
        progress_bar(done, total),
        " · ".join([f"{done}/{total} microtasks", *_role_words({} if finished else roles or {})]),
    ]
    activity = [f"{p.role.value} {p.busy}/{p.size} busy, {p.queued} queued" for p in pools]
    if activity and not finished:
        lines.append("")
        lines.extend(activity)
    return "\n".join(lines)


def _role_words(roles: Mapping[Role, tuple[int, int]]) -> list[str]:
    words = []
    for role in Role:
        if role in roles:
            done, seen = roles[role]
            words.append(f"{role.value} done" if done == seen else f"{role.value} {done}/{seen}")
    return words


def answer_text(report: RunReport) -> str:
    """What the user gets for a request: the answer, or what happened instead."""
    if report.state is TaskState.CANCELLED:
        kept = f" {report.succeeded} finished microtasks were kept." if report.succeeded else ""
        return f"Cancelled (task {report.task_id}).{kept}\n\n{report.result}".strip()
    if report.state is TaskState.FAILED:
        return (
            f"The task {report.task_id} failed; here is what was finished.\n\n{report.result}"
        ).strip()
    return report.result.strip() or f"The task {report.task_id} produced an empty answer."


def cost_line(report: RunReport) -> str:
    """What an answer cost: ``Cost $0.42 (caching saved $0.31) · 14x the tokens of one
    direct answer`` (the saving only when there was one, the multiple when known)."""
    line = f"Cost {_usd(report.cost_usd)}"
    if report.cache_saved_usd > 0:
        line += f" (caching saved {_usd(report.cache_saved_usd)})"
    if report.token_multiple is not None:
        line += f" · {report.token_multiple:g}x the tokens of one direct answer"
    return line


def _usd(amount: float) -> str:
    """Cents from a dime up; below, two significant digits ($0.0042), so no cost reads $0.00."""
    return f"${amount:.2f}" if amount >= 0.1 or amount == 0 else f"${amount:.2g}"


def confirmation_question(estimate: Mapping[str, Any]) -> str:
    """The question before an expensive request, from ``Orchestrator.estimate``'s answer."""
    return (
        f"This looks like a {estimate['complexity']} request: about {estimate['microtasks']} "
        f"microtasks, ~{_usd(float(estimate['cost_usd']))} (between "
        f"{_usd(float(estimate['low_usd']))} and {_usd(float(estimate['high_usd']))}). Run it?"
    )


CONFIRM_CANCELLED = "Cancelled, nothing was spent on it."


def confirmed_text(limit_usd: float | None, ahead: int) -> str:
    """What the question says once "Run it" was pressed."""
    limit = f"; it stops at {_usd(limit_usd)} at the most" if limit_usd is not None else ""
    if ahead:
        return f"Queued: {ahead} earlier request(s) of yours must finish first{limit}."
    return f"Started{limit}."


def parallel_test_report(report: RunReport) -> str:
    """The /parallel_test summary: how much work ran in parallel, and how wide."""
    label = " (simulated Claude: no ANTHROPIC_API_KEY)" if report.simulated else ""
    return "\n".join(
        [
            f"Parallel test {report.state.value}{label}",
            f"task {report.task_id}, complexity {report.complexity.value}",
            f"microtasks: {report.microtasks} ({report.succeeded} ok, {report.failed} failed, "
            f"{report.retries} retries)",
            f"agents: {report.agents} (peak {report.max_parallel} microtasks at once)",
            f"wall time: {report.wall_s:.1f} s",
            f"sum of microtask times: {report.work_s:.1f} s",
            f"parallelism: {report.parallelism:.1f} (microtasks running at once on average: "
            "sum of microtask times / wall time)",
            f"tokens: {report.input_tokens + report.output_tokens:,}, cost ${report.cost_usd:.4f}",
        ]
    )


def pools_lines(pools: Iterable[PoolSnapshot]) -> list[str]:
    return [
        f"{p.role.value}: {p.busy}/{p.size} busy (min {p.min}, max {p.max}), "
        f"{p.queued} queued, {p.utilization:.0f}% used"
        for p in pools
    ]


def _active(tasks: list[dict]) -> list[dict]:
    return [t for t in tasks if t.get("state") not in ("done", "failed", "cancelled")]


def status_text(pools: list[PoolSnapshot], tasks: list[dict], simulated: bool) -> str:
    """/status: the system at a glance, parallel metrics first."""
    size = sum(p.size for p in pools)
    busy = sum(p.busy for p in pools)
    utilisation = 100.0 * busy / size if size else 0.0
    active = _active(tasks)
    lines = [
        "System is up" + (" (simulated Claude)" if simulated else ""),
        f"agents: {busy}/{size} busy, utilisation {utilisation:.0f}%",
        f"active tasks: {len(active)}, queued microtasks: {sum(p.queued for p in pools)}",
        f"tasks seen: {len(tasks)}",
        "",
        *pools_lines(pools),
    ]
    return "\n".join(lines)


def parallel_status_text(pools: list[PoolSnapshot], tasks: list[dict]) -> str:
    """/parallel_status: pools, queue and every active task's progress."""
    active = _active(tasks)
    lines = ["Pools", *pools_lines(pools), "", f"queue: {sum(p.queued for p in pools)} microtasks"]
    lines.append(f"active tasks: {len(active)}")
    for task in active:
        lines.append(
            f"  {task.get('task_id')}: {task.get('state')}, "
            f"{task.get('done', 0)}/{task.get('total', 0)} microtasks"
        )
    return "\n".join(lines)


class EditThrottle:
    """Decides when a message (or draft) may be updated: not too often, never to the same text.

    With ``refresh_s`` the same text is due again that long after it was last sent, for a
    draft that Telegram drops when it is not renewed.

    >>> throttle = EditThrottle(2.0)
    >>> throttle.ready("a", now=0.0), throttle.sent("a", now=0.0), throttle.ready("b", now=1.0)
    (True, None, False)
    """

    def __init__(self, interval_s: float, refresh_s: float | None = None) -> None:
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self._last_text: str | None = None  # what the message shows now
        self._last_at = float("-inf")  # when it was last sent or edited

    def ready(self, text: str, now: float) -> bool:
        elapsed = now - self._last_at
        if elapsed < self.interval_s:
            return False
        return self.changed(text) or (self.refresh_s is not None and elapsed >= self.refresh_s)

    def wait_s(self, now: float) -> float:
        """How long until the next edit is allowed."""
        return max(0.0, self._last_at + self.interval_s - now)

    def changed(self, text: str) -> bool:
        return text != self._last_text

    def sent(self, text: str, now: float) -> None:
        self._last_text = text
        self._last_at = now
