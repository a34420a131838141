"""OpenTelemetry tracing: one provider per process, the context carried across actors by hand.

One request reads as one trace::

    task                      orchestrator: task_id, complexity, microtasks, state
    ├── plan                  orchestrator: the decomposer's model calls
    │   └── llm.call          model, purpose, input/output tokens, status, retries
    ├── microtask             agent, one per attempt: task_id, microtask_id, role, attempt, agent_id
    │   └── llm.call
    └── merge                 orchestrator
        └── synthesis         agent, one per attempt
            └── llm.call

Ray's own tracing hook is unmaintained, so the orchestrator puts the W3C
``traceparent`` of its current span into each ``MicrotaskRequest.trace_context``
(``inject``) and the agent starts its span from it (``extract``).

>>> tracing.configure(settings, "agent")          # once per process, in the actor's __init__
>>> with tracing.span("microtask", parent=tracing.extract(carrier), task_id=tid) as current:
...     current.set_attribute("agent_id", "research-00")

With ``trace_exporter="none"`` (the default) nothing is installed: ``span``
yields a shared non-recording span and ``inject`` returns ``{}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from actors.config import Settings
from actors.errors import ConfigurationError

# OpenTelemetry is imported where tracing is on, never at import: an agent with tracing off
# (the default) loads none of it for itself.
if TYPE_CHECKING:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
_lock = threading.Lock()
_tracer: trace.Tracer | None = None  # None: tracing is off in this process


def configure(
    settings: Settings, service_name: str, *, exporter: SpanExporter | None = None
) -> bool:
    """Install this process's tracer provider with the exporter ``settings`` choose.

    The first call that installs one wins; later calls return False and change
    nothing (an actor restart is a new process and configures afresh).
    ``exporter`` overrides the setting (tests pass an in-memory exporter).
    Raises ``ConfigurationError`` when the OTLP exporter package is missing.
    """
    global _tracer
    with _lock:
        if _tracer is not None:
            return False
        # Batching pays only for network export; files and memory get every span at its
        # end, so a killed actor loses nothing it finished and a test sees spans at once.
        batched = exporter is None and settings.trace_exporter == "otlp"
        exporter = exporter or build_exporter(settings)
        if exporter is None:
            return False
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create(
            {"service.name": service_name, "service.namespace": "parallel-agents"}
        )
        provider = TracerProvider(resource=resource)
        processor: SpanProcessor
        if batched:
            processor = BatchSpanProcessor(exporter, schedule_delay_millis=1000)
        else:
            processor = SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)  # for any other instrumented library in the process
        _tracer = provider.get_tracer("actors")
        log.info("tracing on: %s spans from %s", type(exporter).__name__, service_name)
        return True


def build_exporter(settings: Settings) -> SpanExporter | None:
    """The span exporter ``settings.trace_exporter`` names (None for ``"none"``)."""
    kind = settings.trace_exporter
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "jsonl":
        return JsonLinesExporter(settings.trace_file or settings.home / "traces.jsonl")
    # Endpoint and headers come from the standard OTEL_EXPORTER_OTLP_* variables.
    exporter: SpanExporter = _otlp_exporter_class()()
    return exporter


def check(settings: Settings) -> None:
    """Raise ``ConfigurationError`` if the chosen exporter cannot work in this environment.

    For the edge (CLI, ``start_system``): a clear error before any actor starts.
    """
    if settings.trace_exporter == "otlp":
        _otlp_exporter_class()


def _otlp_exporter_class() -> type[SpanExporter]:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigurationError(
            f"trace_exporter='otlp' needs the package {OTLP_PACKAGE} "
            f"(pip install {OTLP_PACKAGE}); or choose none, console or jsonl"
        ) from None
    exporter_class: type[SpanExporter] = OTLPSpanExporter
    return exporter_class


def enabled() -> bool:
    """True once ``configure`` installed a provider in this process."""
    return _tracer is not None


@contextmanager
def span(name: str, parent: Context | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """A span around the block, child of ``parent`` or else of the current span.

    ``None`` attributes are left out, enums become their values. An exception
    marks the span as an error; a cancellation sets ``cancelled=True``.
    """
    if _tracer is None:
        yield cast("trace.Span", _UNRECORDED)
        return
    with _tracer.start_as_current_span(
        name, context=parent, attributes=_attributes(attributes)
    ) as current:
        try:
            yield current
        except asyncio.CancelledError:
            current.set_attribute("cancelled", True)
            raise


def inject() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``), to send along to another actor."""
    carrier: dict[str, str] = {}
    if _tracer is not None:
        from opentelemetry import propagate

        propagate.inject(carrier)
    return carrier


def extract(carrier: dict[str, str]) -> Context | None:
    """The context ``inject`` wrote, to pass as ``span(..., parent=...)``; None when there
    is none (or tracing is off)."""
    if _tracer is None or not carrier:
        return None
    from opentelemetry import propagate

    return propagate.extract(carrier)


@contextmanager
def attached(carrier: dict[str, str]) -> Iterator[None]:
    """The span ``carrier`` names (``inject``) is the current one inside the block, so spans
    made there, in this process, are its children."""
    parent = extract(carrier)
    if parent is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


class _Unrecorded:
    """What ``span`` yields with tracing off: OpenTelemetry's ``INVALID_SPAN`` without
    importing OpenTelemetry. It drops whatever it is given."""

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
        pass

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        pass

    def update_name(self, name: str) -> None:
        pass


_UNRECORDED = _Unrecorded()


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.value if isinstance(value, Enum) else value
        for key, value in values.items()
        if value is not None
    }


# ``SpanExporter`` for the type checker only: the SDK's span processors call ``export``,
# ``shutdown`` and ``force_flush``, and inheriting would import the SDK wherever this module is.
if TYPE_CHECKING:
    _ExporterBase = SpanExporter
else:
    _ExporterBase = object


class JsonLinesExporter(_ExporterBase):
    """Appends one JSON object per finished span to a file shared by every actor of a machine.

    Each line goes out in one ``write`` on an ``O_APPEND`` descriptor, so lines
    from several processes never interleave, and nothing waits in a buffer.
    Fields: name, trace_id, span_id, parent_id (null for a root), service, pid,
    start, end (epoch seconds), status (UNSET, OK or ERROR), attributes, events.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        # Spans carry task ids and request details: this user's only, an older file too.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._fd is None:
            return SpanExportResult.FAILURE
        try:
            for finished in spans:
                line = json.dumps(_record(finished), default=str) + "\n"
                os.write(self._fd, line.encode())
        except OSError:
            log.warning("could not write spans to %s", self.path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every span is written as it ends


def _record(finished: ReadableSpan) -> dict[str, Any]:
    """One finished span as the plain dict ``JsonLinesExporter`` writes."""
    context = finished.get_span_context()
    parent = finished.parent
    return {
        "name": finished.name,
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "service": finished.resource.attributes.get("service.name"),
        "pid": os.getpid(),
        "start": (finished.start_time or 0) / 1e9,
        "end": (finished.end_time or 0) / 1e9,
        "status": finished.status.status_code.name,
        "attributes": dict(finished.attributes or {}),
        "events": [
            {"name": e.name, "at": e.timestamp / 1e9, "attributes": dict(e.attributes or {})}
            for e in finished.events
        ],
    }
