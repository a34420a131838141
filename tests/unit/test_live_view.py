"""What ``parallel-agents run`` shows: the live display, plain progress, the answer on stdout."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from actors.cli import main as cli
from actors.cli.live_view import REWRITTEN, RunView
from actors.models import EventKind, PoolSnapshot, ProgressEvent, Role
from tests.unit.factories import report

T0 = 1_000.0


def _event(kind: EventKind, seq: int, done: int = 0, total: int = 4, **fields) -> ProgressEvent:
    fields.setdefault("at", T0 + seq)
    return ProgressEvent(seq=seq, kind=kind, task_id="t1", done=done, total=total, **fields)


def _work() -> list[ProgressEvent]:
    """A plan of four microtasks over two roles; three finish, a2 is still running."""
    E = EventKind
    return [
        _event(E.PLANNED, 0, detail="model"),
        _event(E.STARTED, 1, microtask_id="r1", role=Role.RESEARCH, attempt=1),
        _event(E.STARTED, 2, microtask_id="r2", role=Role.RESEARCH, attempt=1),
        _event(E.STARTED, 3, microtask_id="a1", role=Role.ANALYSIS, attempt=1),
        _event(E.FINISHED, 4, 1, microtask_id="r1", role=Role.RESEARCH, agent_id="research-0"),
        _event(E.FINISHED, 5, 2, microtask_id="r2", role=Role.RESEARCH, agent_id="research-1"),
        _event(E.STARTED, 6, 2, microtask_id="a2", role=Role.ANALYSIS, attempt=1),
        _event(E.FINISHED, 7, 3, microtask_id="a1", role=Role.ANALYSIS, agent_id="analysis-0"),
    ]


def _answer(*pieces: tuple[int, str], seq: int = 10) -> list[ProgressEvent]:
    merging = [_event(EventKind.MERGING, seq, 4)]
    return merging + [
        _event(EventKind.ANSWER, seq + 1 + i, 4, attempt=attempt, detail=text)
        for i, (attempt, text) in enumerate(pieces)
    ]


DONE = [_event(EventKind.DONE, 99, 4, detail="done")]
FOOTER = "\n\n_4 microtasks, 2 roles_"


def _pools() -> list[PoolSnapshot]:
    common = {"min": 1, "max": 4, "idle": 0, "queued": 0, "running": 0, "utilization": 0.0}
    common |= {"completed": 0, "failed": 0, "replaced": 0, "pressure": 0.0}
    return [
        PoolSnapshot(role=Role.RESEARCH, size=2, busy=0, **common),
        PoolSnapshot(role=Role.ANALYSIS, size=3, busy=1, **common),
    ]


def _view(err_tty: bool, out_tty: bool, **options) -> tuple[RunView, io.StringIO, io.StringIO]:
    err, out = io.StringIO(), io.StringIO()
    view = RunView(
        Console(file=err, force_terminal=err_tty, width=100, height=40),
        Console(file=out, force_terminal=out_tty, width=100),
        clock=lambda: T0 + 12,
        **options,
    )
    return view, err, out


def _finish(view: RunView, result: str) -> None:
    view.update(DONE, _pools())
    view.close()
    view.show_answer(report(result=result), "done: summary")


def test_piped_stdout_gets_the_pieces_as_they_come_then_exactly_the_result():
    view, err, out = _view(err_tty=False, out_tty=False)
    view.update(_work(), _pools())
    view.update(_answer((1, "# Title\n\nPostgres "), (1, "wins.")), _pools())
    assert out.getvalue() == "# Title\n\nPostgres wins."  # streamed before the task ends
    _finish(view, "# Title\n\nPostgres wins." + FOOTER)
    assert out.getvalue() == "# Title\n\nPostgres wins." + FOOTER + "\n"
    assert REWRITTEN not in err.getvalue() and "done: summary" in err.getvalue()


def test_piped_stdout_after_a_restart_ends_with_exactly_the_result():
    view, err, out = _view(err_tty=False, out_tty=False)
    view.update(_work(), _pools())
    view.update(_answer((1, "A draft "), (1, "that broke"), (2, "The final "), (2, "body")), [])
    assert out.getvalue() == "A draft that broke"  # attempt 2 is not streamed
    result = "The final body" + FOOTER + "\n"
    _finish(view, result)
    assert out.getvalue() == "A draft that broke\n" + result
    assert REWRITTEN in err.getvalue()


def test_piped_stdout_whose_restart_kept_the_streamed_start_holds_only_the_result():
    view, err, out = _view(err_tty=False, out_tty=False)
    view.update(_answer((1, "Same "), (2, "Same start, "), (2, "new end")), [])
    _finish(view, "Same start, new end\n")
    assert out.getvalue() == "Same start, new end\n"
    assert REWRITTEN not in err.getvalue()


@pytest.mark.parametrize("out_tty", [False, True])
def test_a_direct_answer_is_printed_once(out_tty):
    view, _, out = _view(err_tty=False, out_tty=out_tty)
    view.update([_event(EventKind.PLANNED, 0, total=0, detail="direct")], [])
    _finish(view, "Hello! How can I help?")
    assert out.getvalue().count("Hello! How can I help?") == 1


def test_the_terminal_view_shows_roles_running_microtasks_and_the_answer():
    view, _, _ = _view(err_tty=True, out_tty=True)
    view.update(_work(), _pools())
    shown = _text(view)
    assert "research" in shown and "2/2" in shown and "agents 0/2 busy" in shown
    assert "analysis" in shown and "1/2" in shown and "agents 1/3 busy" in shown
    assert "a2" in shown and "6 s" in shown  # started at T0 + 6, the clock says T0 + 12
    view.update(_answer((1, "**Postgres** wins "), (1, "for writes.")), _pools())
    shown = _text(view)
    assert "Postgres wins for writes." in shown and "**" not in shown  # rendered Markdown
    view.close()


def test_the_terminal_view_discards_a_restarted_attempt():
    view, _, _ = _view(err_tty=True, out_tty=True)
    view.update(_answer((1, "Broken draft"), (2, "Fresh text")), [])
    shown = _text(view)
    assert "Fresh text" in shown and "Broken draft" not in shown and "restarted" in shown
    view.close()


def test_the_quick_take_shows_until_the_answer_streams():
    view, _, _ = _view(err_tty=True, out_tty=True)
    quick = [_event(EventKind.QUICK, 8, attempt=1, detail="Short take: *Postgres*.")]
    view.update(_work() + quick, _pools())
    shown = _text(view)
    assert "quick take" in shown and "Short take: Postgres." in shown
    view.update(_answer((1, "The full answer.")), _pools())
    shown = _text(view)
    assert "The full answer." in shown and "Short take" not in shown
    view.close()


def test_a_long_answer_shows_its_tail_within_the_terminal():
    view, _, _ = _view(err_tty=True, out_tty=True)
    lines = "".join(f"line {i}\n\n" for i in range(200))
    view.update(_work() + _answer((1, lines)), _pools())
    shown = _text(view)
    assert "line 199" in shown and "line 0\n" not in shown
    assert len(shown.splitlines()) <= 40
    view.close()


def test_on_a_terminal_the_live_display_ends_and_stdout_gets_the_answer_once():
    view, err, out = _view(err_tty=True, out_tty=True)
    view.update(_work(), _pools())
    view.update(_answer((1, "Streaming body")), _pools())
    _finish(view, "Streaming body" + FOOTER)
    assert "2/2" in err.getvalue() and "Streaming body" in err.getvalue()  # the live frames
    assert out.getvalue().count("Streaming body") == 1
    assert "4 microtasks, 2 roles" in out.getvalue()


def test_progress_on_a_plain_stderr_is_lines_without_escape_codes():
    view, err, _ = _view(err_tty=False, out_tty=False)
    view.say("task t1 submitted")
    view.update(_work(), _pools())
    view.update(_answer((1, "x")), _pools())
    lines = err.getvalue().splitlines()
    assert lines[0] == "task t1 submitted"
    assert "3/4 microtasks" in lines[-2] and lines[-1] == "writing the answer ..."
    assert "\x1b" not in err.getvalue()


def test_json_leaves_stdout_alone_and_draws_no_live_display():
    view, err, out = _view(err_tty=True, out_tty=False, json_out=True)
    view.update(_work() + _answer((1, "not for stdout")) + DONE, _pools())
    view.close()
    assert out.getvalue() == ""
    assert "\x1b" not in err.getvalue()


def test_quiet_shows_no_progress_but_still_the_answer():
    view, err, out = _view(err_tty=True, out_tty=False, quiet=True)
    view.say("connecting to Ray ...")
    view.update(_work() + _answer((1, "Answer")), _pools())
    _finish(view, "Answer")
    assert err.getvalue() == "" and out.getvalue() == "Answer\n"


def test_run_help_says_what_is_shown_where(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "progress goes to stderr" in shown and "The answer goes to stdout" in shown
    assert "--json: one JSON object on stdout" in shown


def _text(view: RunView) -> str:
    """The live display's content now, as plain text."""
    console = Console(file=io.StringIO(), width=100, height=40, color_system=None)
    console.print(view.render(_pools()))
    return console.file.getvalue()  # type: ignore[attr-defined]
