"""Tracing in one process: spans of real SDK calls to the simulator, context round trips.

The module installs this test process's tracer provider once, with an in-memory
exporter; what needs a process without tracing (or several writers) runs in a
subprocess.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from actors.config import Purpose, Settings, SimulatorSettings
from actors.errors import ConfigurationError, ProviderError
from actors.llm import LLMClient
from actors.models import Microtask, MicrotaskRequest, Role
from actors.observe import tracing
from actors.sim.simulator import SimulatorServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def memory() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    installed = tracing.configure(Settings(), "unit-test", exporter=exporter)
    assert installed, "another test configured tracing in this process first"
    return exporter


@pytest.fixture
def spans(memory: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    memory.clear()
    yield memory


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=5)) as server:
        yield server


def _client(sim: SimulatorServer) -> LLMClient:
    settings = Settings().with_overrides(
        limiter={"max_attempts": 2, "base_backoff_s": 0.01, "jitter_s": 0.0}
    )
    return LLMClient(settings, base_url=sim.url)


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_an_llm_call_is_a_child_of_the_current_span(spans, sim) -> None:
    client = _client(sim)
    with tracing.span("microtask", task_id="t1", role=Role.RESEARCH) as parent:
        answer = await client.complete(Purpose.RESEARCH, "Be brief.", "Name three moons.")
    await client.close()

    [call] = _named(spans, "llm.call")
    [outer] = _named(spans, "microtask")
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id
    assert call.context.trace_id == outer.context.trace_id
    assert dict(call.attributes or {}) == {
        "model": Settings().models[Purpose.RESEARCH],
        "purpose": "research",
        "input_tokens": answer.usage.input_tokens,
        "output_tokens": answer.usage.output_tokens,
        "status": "ok",
        "retries": 0,
    }
    assert outer.attributes == {"task_id": "t1", "role": "research"}  # enum → its value
    assert call.status.status_code is StatusCode.UNSET
    # The SDK's own span for the HTTP request (if it makes one) sits under ours.
    inner = [s for s in spans.get_finished_spans() if s.name not in ("llm.call", "microtask")]
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in inner)


async def test_a_failing_call_records_its_retries_and_the_error(spans, sim) -> None:
    client = _client(sim)
    sim.reconfigure(rate_500=1.0)
    try:
        with tracing.span("plan"), pytest.raises(ProviderError):
            await client.complete(Purpose.PLANNING, "Plan.", "Split this.")
    finally:
        sim.reconfigure(rate_500=0.0)
        await client.close()

    [call] = _named(spans, "llm.call")
    assert call.attributes is not None
    assert call.attributes["status"] == "server_error"
    assert call.attributes["retries"] == 1  # two attempts, one span
    assert call.status.status_code is StatusCode.ERROR
    assert [e.name for e in call.events] == ["exception"]


async def test_a_cancelled_span_says_so(spans) -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        with tracing.span("microtask", attempt=2):
            started.set()
            await asyncio.Event().wait()

    running = asyncio.create_task(attempt())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    [cancelled] = _named(spans, "microtask")
    assert cancelled.attributes == {"attempt": 2, "cancelled": True}


def test_context_survives_the_trip_in_a_request(spans) -> None:
    assert tracing.inject() == {}  # outside any span there is nothing to carry
    with tracing.span("task") as task:
        carrier = tracing.inject()
    sent = MicrotaskRequest(
        task_id="t1",
        microtask=Microtask(id="a", role=Role.RESEARCH, title="A", instructions="Do A."),
        trace_context=carrier,
    )
    received = MicrotaskRequest.model_validate_json(sent.model_dump_json())  # as Ray ships it

    task_context = task.get_span_context()
    expected = f"00-{task_context.trace_id:032x}-{task_context.span_id:016x}-"
    assert received.trace_context["traceparent"].startswith(expected)  # then the flags
    with tracing.span("microtask", parent=tracing.extract(received.trace_context)):
        pass
    [child] = _named(spans, "microtask")
    assert child.parent is not None and child.parent.span_id == task_context.span_id
    assert child.context.trace_id == task_context.trace_id


def test_the_exporter_follows_the_setting(tmp_path) -> None:
    assert tracing.build_exporter(Settings(trace_exporter="none")) is None
    exporter = tracing.build_exporter(Settings(trace_exporter="jsonl", home=tmp_path))
    assert isinstance(exporter, tracing.JsonLinesExporter)
    assert exporter.path == tmp_path / "traces.jsonl"
    exporter.shutdown()
    if not _otlp_installed():
        otlp = Settings(trace_exporter="otlp")
        with pytest.raises(ConfigurationError, match=tracing.OTLP_PACKAGE):
            tracing.check(otlp)
        with pytest.raises(ConfigurationError, match=tracing.OTLP_PACKAGE):
            tracing.build_exporter(otlp)


def _otlp_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


_NO_TRACING = """
from actors.observe import tracing
from actors.config import Settings
assert not tracing.configure(Settings(trace_exporter="none"), "x")
with tracing.span("task", task_id="t") as span:
    assert not span.is_recording() and tracing.inject() == {}
assert not tracing.enabled()
"""

_WRITER = """
import sys
from pathlib import Path
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from actors.observe.tracing import JsonLinesExporter

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(Path(sys.argv[1]))))
tracer = provider.get_tracer("writer")
for n in range(100):
    with tracer.start_as_current_span("task"):
        with tracer.start_as_current_span("microtask", attributes={"pad": "x" * 6000, "n": n}):
            pass
"""


def _python(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT)


def test_with_none_nothing_is_installed() -> None:
    assert _python(_NO_TRACING).wait(timeout=60) == 0


def test_processes_appending_to_one_file_keep_lines_whole(tmp_path) -> None:
    path = tmp_path / "traces.jsonl"
    writers = [_python(_WRITER, str(path)) for _ in range(2)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]

    records = [json.loads(line) for line in path.read_text().splitlines()]  # each line parses
    assert len(records) == 2 * 100 * 2
    by_id = {r["span_id"]: r for r in records}
    for record in records:
        if record["name"] == "microtask":
            parent = by_id[record["parent_id"]]
            assert parent["name"] == "task" and parent["trace_id"] == record["trace_id"]
            assert parent["pid"] == record["pid"]
    assert len({r["pid"] for r in records}) == 2


def test_a_span_record_has_the_documented_fields(tmp_path) -> None:
    exporter = tracing.JsonLinesExporter(tmp_path / "one.jsonl")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("task", attributes={"task_id": "t1"}):
        pass
    provider.shutdown()
    [record] = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert set(record) == {
        "name",
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "pid",
        "start",
        "end",
        "status",
        "attributes",
        "events",
    }
    assert record["parent_id"] is None and record["attributes"] == {"task_id": "t1"}
    assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
    assert record["start"] <= record["end"] and record["status"] == "UNSET"
