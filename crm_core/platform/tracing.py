"""OpenTelemetry traces (docs/operations.md "Traces").

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then, once per process, a tracer provider
exports spans in batches with OTLP over HTTP (`<endpoint>/v1/traces`), and the MongoDB driver
reports a span per command (pymongo's command monitoring, registered before the storage module
builds its client). The HTTP server span is made by handlers/tracing.py and the task spans by
taskiq's OpenTelemetry middleware (tasks/broker.py), which carries the trace into the worker
in the task's labels. Off, nothing of the SDK is imported and no middleware or listener runs.

`current_trace_id()` is what the log lines carry beside the request id.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

NO_TRACE = "-"
TRACES_PATH = "/v1/traces"  # what the OTLP/HTTP exporter appends to the base endpoint

_provider: TracerProvider | None = None
_lock = threading.Lock()


class TraceSettings(Protocol):
    """The settings tracing reads (crm_core/platform/settings.py `Settings`)."""

    @property
    def otel_exporter_otlp_endpoint(self) -> str | None: ...
    @property
    def otel_service_name(self) -> str: ...


def configure_tracing(settings: TraceSettings) -> TracerProvider | None:
    """The process's tracer provider: made on the first call when `OTEL_EXPORTER_OTLP_ENDPOINT`
    is set (later calls answer the same one); None when tracing is off."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if _provider is not None or not endpoint:
        return _provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH)
    provider.add_span_processor(BatchSpanProcessor(exporter))  # flushed at exit by the SDK
    enable_tracing(provider)
    log.info("traces: exported with OTLP to %s", endpoint)
    return provider


def enable_tracing(provider: TracerProvider) -> TracerProvider:
    """Trace with `provider` from now on (tests pass one with an in-memory exporter): the MongoDB
    driver's commands of clients built after this call, and what asks `tracer_provider()`."""
    global _provider
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    with _lock:
        instrumentor = PymongoInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
        # the instrumentor registers its listener with the driver once per process and keeps
        # the tracer of that first call: a later provider (another test's) takes its place
        listener = getattr(instrumentor, "_commandtracer_instance", None)
        if listener is not None:
            listener._tracer = provider.get_tracer("opentelemetry.instrumentation.pymongo")
        _provider = provider
    return provider


def disable_tracing() -> None:
    """Back to no traces (tests)."""
    global _provider
    with _lock:
        if _provider is None:
            return
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

        PymongoInstrumentor().uninstrument()
        _provider = None


def tracer_provider() -> TracerProvider | None:
    return _provider


def current_trace_id() -> str:
    """The running span's trace id (32 hex digits), "-" outside a trace or with tracing off."""
    if _provider is None:
        return NO_TRACE
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else NO_TRACE
