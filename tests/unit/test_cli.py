"""The CLI's options for follow-ups, checked before anything starts (no Ray)."""

from __future__ import annotations

import pytest

from actors.cli import main as cli


def test_continue_and_conversation_together_are_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--continue", "--conversation", "t-1", "make it shorter"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_run_help_explains_both_ways_to_follow_up(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "--continue follow up on the last conversation" in shown
    assert "--conversation ID follow up in conversation ID" in shown
