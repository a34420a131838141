"""Fixtures shared by the unit tests: the simulator on loopback and an SDK client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from actors.config import SimulatorSettings
from actors.sim.simulator import SimulatorServer


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A fresh simulator answering at once (modules may override it with other knobs)."""
    with SimulatorServer(SimulatorSettings(latency="zero")) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The real SDK pointed at ``sim``, retries off.

    An explicit timeout: without one the SDK insists on streaming for large max_tokens.
    """
    client = anthropic.AsyncAnthropic(api_key="sim", base_url=sim.url, max_retries=0, timeout=60)
    yield client
    await client.close()
