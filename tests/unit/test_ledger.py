"""The call ledger: every call the provider saw is written down by the process that made it.

The simulator logs each request's ``x-parallel-agents-call`` header, so the ledger and
the provider's side can be compared row by row — including for a process SIGKILLed while
its call was in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.config import LimiterSettings, Purpose, Settings, SimulatorSettings
from actors.engine.report import settled
from actors.errors import ProviderTimeoutError
from actors.llm import LLMClient, ledger
from actors.models import Usage
from actors.sim.simulator import SimulatorServer
from tests.unit.factories import report


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=5)) as server:
        yield server


def settings_in(home: Path) -> Settings:
    limiter = LimiterSettings(jitter_s=0.0, base_backoff_s=0.01, max_attempts=6)
    return Settings(home=home, limiter=limiter)


async def test_every_call_the_provider_answered_is_in_the_ledger(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    sim.reconfigure(rate_429=0.3, rate_500=0.2, rate_malformed=0.2)
    settings = settings_in(tmp_path)
    client = LLMClient(settings, base_url=sim.url)
    with ledger.attributed("task-1", "m1"):
        for question in ("Name a moon.", "Name a planet.", "Name a star.", "Name a comet."):
            await client.structured(Purpose.RESEARCH, "Be brief.", question, Usage)
    await client.close()

    assert settings.ledger_folder is not None
    written = ledger.read(settings.ledger_folder, ["task-1"])
    by_id = {call.call_id: call for call in written.calls}
    seen = sim.recent_requests()
    assert len(seen) == len(by_id) > 4  # faults made it retry: more calls than questions
    for entry in seen:
        call = by_id[entry["call_id"]]
        assert call.state == ("paid" if entry["status"] == 200 else "refused")
        assert call.microtask_id == "m1" and call.purpose == "research"
    paid = [e for e in seen if e["status"] == 200]
    assert written.usage.requests == len(paid) == written.count("paid")
    assert written.usage.output_tokens == sum(e["output_tokens"] for e in paid)


async def test_a_call_the_client_gave_up_on_stays_unknown(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    sim.reconfigure(rate_hang=1.0, hang_s=30)
    settings = settings_in(tmp_path).with_overrides(
        limiter=LimiterSettings(max_attempts=1, jitter_s=0.0)
    )
    client = LLMClient(settings, base_url=sim.url)
    with ledger.attributed("task-2"), pytest.raises(ProviderTimeoutError):
        await client.complete(Purpose.RESEARCH, "Be brief.", "Hello?", timeout_s=0.2)
    await client.close()
    assert settings.ledger_folder is not None
    written = ledger.read(settings.ledger_folder, ["task-2"])
    assert [call.state for call in written.calls] == ["unknown"]


_CALLER = """
import asyncio, sys
from pathlib import Path
from actors.config import Purpose, Settings
from actors.llm import LLMClient, ledger
async def main():
    client = LLMClient(Settings(home=Path(sys.argv[2])), base_url=sys.argv[1])
    with ledger.attributed("task-k", "m9"):
        await client.complete(Purpose.RESEARCH, "Be brief.", "[sim-latency 30] Hello?")

asyncio.run(main())
"""


def test_a_process_killed_mid_call_leaves_the_call_it_made(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    caller = subprocess.Popen([sys.executable, "-c", _CALLER, sim.url, str(tmp_path)], env=env)
    try:
        wait_for(lambda: sim.stats()["requests"] == 1)  # the call is in flight
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    wait_for(lambda: bool(sim.recent_requests()))  # the simulator saw the client go
    (entry,) = sim.recent_requests()
    assert entry["status"] == 499
    written = ledger.read(tmp_path / "ledger", ["task-k"])
    (call,) = written.calls
    assert call.call_id == entry["call_id"] and call.microtask_id == "m9"
    assert call.state == "unknown" and written.usage.requests == 0


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_report_takes_the_ledgers_count_when_it_saw_more() -> None:
    counted = report(paid_calls=3)
    answers = [
        ledger.LedgerCall(f"c{i}", "t", state="paid", usage=Usage(requests=1, cost_usd=0.01))
        for i in range(5)
    ]
    seen_more = ledger.LedgerSummary([*answers, ledger.LedgerCall("c9", "t")])
    assert settled(counted, seen_more).paid_calls == 5
    assert settled(counted, seen_more).unsettled_calls == 1
    assert settled(counted, seen_more).cost_usd == pytest.approx(0.05)
    # A cluster node's local ledger misses other machines' calls: the task's count stands.
    assert settled(counted, ledger.LedgerSummary(answers[:2])) == counted


def test_old_task_folders_are_forgotten(tmp_path: Path) -> None:
    book = ledger.CallLedger(tmp_path)
    for task in ("old", "new"):
        with ledger.attributed(task):
            book.sent(ledger.new_call_id(), "m", "research", 100)
    old = tmp_path / "old"
    for path in old.iterdir():
        os.utime(path, (time.time() - 10 * 86400,) * 2)
    assert ledger.forget_older_than(tmp_path, 7 * 86400) == 1
    assert not old.exists() and (tmp_path / "new").is_dir()
    assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"
