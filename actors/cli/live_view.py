"""What ``parallel-agents run`` shows while a task runs, and its answer when it ends.

Where things go:

- **stderr, a terminal** (not ``--json``, not ``--quiet``): a ``rich`` live display, one
  progress bar per pool role (that role's microtasks done / seen so far, the pool's busy /
  total agents), the microtasks running now, and, once the answer streams, its tail
  rendered as Markdown. It disappears when the task ends.
- **stderr otherwise**: plain lines, no ANSI codes (a line per tenth of the microtasks
  done); nothing with ``--quiet``. The summary line goes to stderr at the end.
- **stdout, a terminal**: the final answer once, rendered as Markdown, when the task ends.
- **stdout, a pipe or a file** (not ``--json``): the answer's text as it is written, then
  the final answer by the rule below.
- ``--json``: nothing here touches stdout; the caller prints the one JSON object.

The piped-stdout rule. Text written to a pipe cannot be taken back, and whether a piece
will survive into the final answer is unknowable while it streams. So the pieces of the
writer's first attempt are written (and flushed) as they arrive, and streaming stops at
the first restart (an ``ANSWER`` event with a new attempt number). When the task ends,
``report.result`` is the authority: if it starts with what was written, the rest of it is
written and stdout holds exactly ``report.result`` (the usual case: the rest is the
merge's footer; for an answer that never streamed, the rest is all of it). Otherwise a
separator line goes to stderr and the whole ``report.result`` to stdout, on a line of its
own after the abandoned draft, so stdout ends with exactly ``report.result``. A newline
ends the output when the result has none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from actors.models import EventKind, PoolSnapshot, ProgressEvent, Role, RunReport

REFRESH_PER_SECOND = 4
RUNNING_SHOWN = 6  # microtasks listed as running; the rest are counted
REWRITTEN = "--- the answer was rewritten after it began streaming; the final answer follows ---"


@dataclass
class _Running:
    role: Role | None
    agent: str | None
    since: float  # the event's wall-clock time


class TaskProgress:
    """What one task's events have said so far; ``apply`` is its only writer."""

    def __init__(self) -> None:
        self.done = self.total = self.retries = 0
        self.planned = self.merging = self.finished = False
        self.running: dict[str, _Running] = {}
        self.answer = ""  # the current attempt's text
        self.quick = ""  # the quick take (quick_answer), shown until the answer streams
        self._quick_attempt: int | None = None
        self.attempt: int | None = None
        self.restarts = 0
        self._seen: dict[Role, set[str]] = {}
        self._ended: dict[Role, set[str]] = {}

    def apply(self, event: ProgressEvent) -> None:
        self.done, self.total = event.done, event.total
        mid, role = event.microtask_id, event.role
        if mid is not None and role is not None:
            self._seen.setdefault(role, set()).add(mid)
        kind = event.kind
        if kind is EventKind.PLANNED:
            self.planned = True
        elif kind in (EventKind.STARTED, EventKind.RETRIED) and mid is not None:
            self.retries += kind is EventKind.RETRIED
            self.running[mid] = _Running(role, event.agent_id, event.at)
        elif kind in (EventKind.FINISHED, EventKind.FAILED) and mid is not None:
            self.running.pop(mid, None)
            if role is not None:
                self._ended.setdefault(role, set()).add(mid)
        elif kind is EventKind.MERGING:
            self.merging = True
            self.running.clear()  # past the time limit, what still runs is given up
        elif kind is EventKind.ANSWER:
            if event.attempt is not None and self.attempt not in (None, event.attempt):
                self.answer = ""
                self.restarts += 1
            self.attempt = event.attempt if event.attempt is not None else self.attempt
            self.answer += event.detail
        elif kind is EventKind.QUICK:
            if event.attempt is not None and self._quick_attempt not in (None, event.attempt):
                self.quick = ""
            self._quick_attempt = event.attempt
            self.quick += event.detail
        elif kind is EventKind.DONE:
            self.finished = True
            self.running.clear()

    def role_counts(self, role: Role) -> tuple[int, int]:
        """(ended, seen) microtasks of ``role``: failed ones count as ended."""
        return len(self._ended.get(role, ())), len(self._seen.get(role, ()))

    def roles(self) -> set[Role]:
        return set(self._seen)


class AnswerStream:
    """The answer on a pipe or a file as it is written (the rule in the module docstring)."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._written = ""
        self._attempt: int | None = None
        self._stopped = False

    def add(self, event: ProgressEvent) -> None:
        if self._stopped:
            return
        if self._attempt is None:
            self._attempt = event.attempt
        elif event.attempt is not None and event.attempt != self._attempt:
            self._stopped = True  # the writer started over: nothing more until the end
            return
        self._write(event.detail)

    def rewrites(self, result: str) -> bool:
        """Whether ``result`` must follow the streamed draft in full."""
        return not result.startswith(self._written)

    def finish(self, result: str) -> None:
        """Make the output end with exactly ``result`` (and hold only it when it can)."""
        if not self.rewrites(result):
            rest = result[len(self._written) :]
        elif self._written and not self._written.endswith("\n"):
            rest = "\n" + result
        else:
            rest = result
        self._write(rest if result.endswith("\n") else rest + "\n")

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        self._written += text


class RunView:
    """Everything ``run`` shows for one task: ``say``, ``update`` per poll, ``close``, then
    ``show_answer`` (unless ``--json``). Whether a stream is a terminal comes from its
    console (``Console(force_terminal=...)`` in tests)."""

    def __init__(
        self,
        err: Console,
        out: Console,
        *,
        json_out: bool = False,
        quiet: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._err = err
        self._out = out
        self._clock = clock
        self._live_wanted = err.is_terminal and not json_out and not quiet
        self._plain = not quiet and not self._live_wanted
        self._quiet = quiet
        self._stream = None if json_out or out.is_terminal else AnswerStream(out.file)
        self._progress = TaskProgress()
        self._live: Live | None = None
        self._last_tenth = -1

    def say(self, text: str) -> None:
        """A line of news on stderr (above the live display while it runs)."""
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        elif not self._quiet:
            print(text, file=self._err.file, flush=True)

    def update(self, events: Iterable[ProgressEvent], pools: list[PoolSnapshot]) -> None:
        """Take the events of one poll and the pools as they are now."""
        merging = self._progress.merging
        for event in events:
            self._progress.apply(event)
            if event.kind is EventKind.ANSWER and self._stream is not None:
                self._stream.add(event)
        if self._live_wanted:
            if self._live is None:
                self._live = Live(
                    console=self._err, transient=True, refresh_per_second=REFRESH_PER_SECOND
                )
                self._live.start()
            self._live.update(self.render(pools), refresh=False)
        elif self._plain:
            self._plain_lines(pools, merging)

    def close(self) -> None:
        """End the live display (it leaves nothing behind on the terminal)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def show_answer(self, report: RunReport, summary: str) -> None:
        """The final answer on stdout, ``summary`` on stderr."""
        self.close()
        if self._stream is not None:
            if self._stream.rewrites(report.result):
                print(REWRITTEN, file=self._err.file, flush=True)
            self._stream.finish(report.result)
        else:
            self._out.print(Markdown(report.result))
            self._out.file.flush()
        if not self._quiet:
            print(summary, file=self._err.file, flush=True)

    def render(self, pools: list[PoolSnapshot]) -> RenderableType:
        """The live display's content now: bars per role, what runs, the answer's tail."""
        p = self._progress
        state = "writing the answer" if p.merging else "running" if p.planned else "planning"
        by_role = {pool.role: pool for pool in pools}
        bars = Table.grid(padding=(0, 1))
        for role in [r for r in Role if r in by_role or r in p.roles()]:
            done, total = p.role_counts(role)
            pool = by_role.get(role)
            busy = f"agents {pool.busy}/{pool.size} busy" if pool else ""
            bar = ProgressBar(total=total or 1, completed=done, width=24)
            bars.add_row(role.value, bar, f"{done}/{total}", busy)
        parts: list[RenderableType] = [
            Text(f"{state} · {p.done}/{p.total} microtasks done · {p.retries} retries"),
            bars,
        ]
        used = 1 + bars.row_count
        if p.running:
            parts.append(self._running())
            used += 1 + min(len(p.running), RUNNING_SHOWN + 1)
        if p.answer or p.quick:
            title = f"answer (attempt {p.attempt}, restarted)" if p.restarts else "answer"
            if not p.answer:
                title = "quick take (the full answer follows)"
            parts.append(Rule(title, align="left"))
            room = max(3, self._err.size.height - used - 2)
            parts.append(_tail(self._err, p.answer or p.quick, room))
        return Group(*parts)

    def _running(self) -> Table:
        """The microtasks running now, longest-running first."""
        now = self._clock()
        table = Table("microtask", "role", "agent", "running", box=None, padding=(0, 1))
        runs = sorted(self._progress.running.items(), key=lambda item: item[1].since)
        for mid, run in runs[:RUNNING_SHOWN]:
            role = run.role.value if run.role else "-"
            table.add_row(mid, role, run.agent or "-", f"{max(0.0, now - run.since):.0f} s")
        if len(runs) > RUNNING_SHOWN:
            table.add_row(f"+{len(runs) - RUNNING_SHOWN} more", "", "", "")
        return table

    def _plain_lines(self, pools: list[PoolSnapshot], was_merging: bool) -> None:
        p = self._progress
        if p.merging and not was_merging:
            print("writing the answer ...", file=self._err.file, flush=True)
        if not p.total or p.merging:
            return
        tenth = 10 * p.done // p.total
        if tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        filled = 24 * p.done // p.total
        busy = " ".join(f"{pool.role.value[:3]} {pool.busy}/{pool.size}" for pool in pools)
        line = f"[{'#' * filled}{'.' * (24 - filled)}] {p.done}/{p.total} microtasks"
        print(f"{line} | {busy} | retries {p.retries}", file=self._err.file, flush=True)


def _tail(console: Console, answer: str, lines: int) -> Segments:
    """The last ``lines`` lines of ``answer`` rendered as Markdown, so a long answer keeps
    its end in view and the display stays within the terminal."""
    recent = "\n".join(answer.splitlines()[-4 * lines :])  # rendering all of it is waste
    rendered = console.render_lines(Markdown(recent), pad=False)[-lines:]
    return Segments(segment for line in rendered for segment in [*line, Segment.line()])
