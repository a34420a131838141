"""Shared test set-up: an isolated state folder and no real provider or bot credentials."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tests talk to loopback servers only: never a real key, never a real token.
for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "TELEGRAM_BOT_TOKEN"):
    os.environ.pop(_name, None)
# Session-wide state folder, so systems started by module fixtures never touch ~/.parallel-agents.
os.environ["PARALLEL_AGENTS_HOME"] = tempfile.mkdtemp(prefix="parallel-agents-test-")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_HOME", str(tmp_path / "home"))
