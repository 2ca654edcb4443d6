"""Traces (issue 28 §5, docs/operations.md "Traces"): off unless OTEL_EXPORTER_OTLP_ENDPOINT is
set; on, a server span per request (continuing a caller's `traceparent`), its trace id beside
the request id in the log lines, carried into the task that sends an SMS, and the MongoDB
driver's commands as child spans. Checked with the SDK's in-memory exporter."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crm_core.platform import logs, tracing
from crm_core.platform.settings import SettingsError, load_settings
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import TEST_SECRET, Api, make_settings, sent_campaign
from tests.support.logs import crashing_client, wait_for_text

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing(provider)
    try:
        yield exporter
    finally:
        tracing.disable_tracing()


@pytest.fixture
async def traced(aiohttp_client, spans) -> Any:
    return await aiohttp_client(create_app(make_settings()))


def trace_id(span: Any) -> str:
    return f"{span.context.trace_id:032x}"


async def test_a_request_is_a_server_span_continuing_the_callers_trace(traced, spans):
    owner = await Api(traced).register()
    spans.clear()
    resp = await traced.get(
        "/api/auth/me",
        headers={**owner.headers, "traceparent": TRACEPARENT, "X-Request-ID": "find-me"},
    )
    assert resp.status == 200
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET /api/auth/me"]
    assert trace_id(span) == PARENT_TRACE
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.route"] == "/api/auth/me"
    assert span.attributes["crm.request_id"] == "find-me"
    assert span.attributes["crm.tenant_id"] == owner.tenant_id
    assert span.attributes["crm.user_id"] == owner.user_id


async def test_the_log_lines_carry_the_trace_id_beside_the_request_id(traced, spans, caplog):
    owner = await Api(traced).register()
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(logs.RequestIdFilter())
    resp = await traced.get(
        "/api/data/missing", headers={**owner.headers, "traceparent": TRACEPARENT}
    )
    assert resp.status == 404
    access = [r for r in caplog.records if r.name == logs.ACCESS_LOGGER]
    assert access[-1].trace_id == PARENT_TRACE
    assert access[-1].request_id == resp.headers["X-Request-ID"]
    # the text format puts it beside the request id when traces are on
    line = logs.make_formatter("text", traced=True).format(access[-1])
    assert f"[{access[-1].request_id} trace={PARENT_TRACE}]" in line


async def test_every_line_of_a_request_carries_its_trace_id(aiohttp_client, spans, tmp_path):
    """With `crm serve`'s logging: the access line and a line the request logged (an error with
    its traceback here) both read `[<request id> trace=<trace id>]`."""
    settings = make_settings(
        log_dir=str(tmp_path), otel_exporter_otlp_endpoint="http://127.0.0.1:4318"
    )
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    resp = await client.get("/boom", headers={"X-Request-ID": "r-1", "traceparent": TRACEPARENT})
    assert resp.status == 500
    access = await wait_for_text(tmp_path / "access.log", "r-1")
    error = (tmp_path / "error.log").read_text()
    assert f"crm.access [r-1 trace={PARENT_TRACE}] GET /boom 500" in access
    assert f"WARNING crm.test [r-1 trace={PARENT_TRACE}] about to fail" in error
    assert f"ERROR handlers.middlewares [r-1 trace={PARENT_TRACE}] unhandled error" in error


async def test_the_trace_continues_into_the_task_that_sends_an_sms(traced, spans):
    owner = await Api(traced).register()
    spans.clear()
    await sent_campaign(Api(traced), owner)
    # the message is `sent` a moment before its task returns and its span ends: wait for the
    # in-process broker's running tasks (a barrier, not a pause)
    await traced.app[SERVICES].queue.probe.broker.wait_all()
    finished = spans.get_finished_spans()
    (post,) = [s for s in finished if s.name == "POST /api/sms/campaigns"]
    tasks = [s for s in finished if s.name.startswith("execute/crm.sms")]
    assert tasks, [s.name for s in finished]
    assert {trace_id(s) for s in tasks} == {trace_id(post)}
    sends = [s for s in finished if s.name.startswith("send/crm.sms")]
    assert sends and sends[0].parent.span_id == post.context.span_id


async def test_traces_are_off_without_an_endpoint(aiohttp_client):
    assert tracing.tracer_provider() is None
    app = create_app(make_settings())
    assert not [m for m in app.middlewares if m.__name__ == "trace_request"]
    client = await aiohttp_client(app)
    resp = await client.get("/health", headers={"traceparent": TRACEPARENT})
    assert resp.status == 200
    assert tracing.current_trace_id() == "-"


def test_a_bad_endpoint_is_refused_at_start():
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load_settings(_env_file=None, secret_key=TEST_SECRET, otel_exporter_otlp_endpoint="nope")


async def test_an_endpoint_turns_traces_on_with_the_otlp_exporter(monkeypatch):
    """What `crm serve` does with OTEL_EXPORTER_OTLP_ENDPOINT (nothing is sent here: the
    provider is shut down before any batch leaves)."""
    settings = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    try:
        provider = tracing.configure_tracing(settings)
        assert provider is not None and tracing.configure_tracing(settings) is provider
        app = create_app(settings)
        assert app.middlewares[0].__name__ == "trace_request"
        exporter = provider._active_span_processor._span_processors[0]._batch_processor._exporter
        assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        provider.shutdown()
        tracing.disable_tracing()


async def test_the_database_commands_are_child_spans_of_the_request(
    aiohttp_client, spans, tmp_path
):
    """On a real driver (a mongoeco server; the embedded database has no driver to watch)."""
    from tests.support.servers import MongoecoServer

    server = MongoecoServer(tmp_path / "mongoeco.log")
    server.start()
    try:
        client = await aiohttp_client(create_app(make_settings(mongodb_url=server.uri)))
        owner = await Api(client).register()
        spans.clear()
        resp = await client.get("/api/auth/me", headers=owner.headers)
        assert resp.status == 200
        finished = spans.get_finished_spans()
        (request,) = [s for s in finished if s.name == "GET /api/auth/me"]
        commands = [s for s in finished if s.parent and s.parent.span_id == request.context.span_id]
        names = {s.name.rsplit(".", 1)[-1] for s in commands}
        assert "find" in names, [s.name for s in finished]
        assert {trace_id(s) for s in commands} == {trace_id(request)}
    finally:
        server.terminate()
