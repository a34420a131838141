"""An agent process stays light: its node's model client holds the SDK, the agent does not."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_agent_loads_neither_the_sdk_nor_the_simulator():
    probe = (
        "import sys, actors.agents.agent; "
        "print(sorted(m for m in ('anthropic', 'actors.llm.client', 'actors.sim.simulator', "
        "'opentelemetry.sdk') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert loaded == "[]"
