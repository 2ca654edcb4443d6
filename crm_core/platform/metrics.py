"""Prometheus metrics (prometheus-client).

Counters and histograms live in prometheus-client's default registry, so any module bumps them
with one line. Values read at scrape time (task queue depth, worker heartbeats) are not kept in
the process: `/metrics` reads them from Redis and adds them to the answer (`scrape_gauges`).

Several API processes on one host: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory shared
by them (cleared at each start of the service); every process writes its counters there and
any one of them answers the sum (prometheus-client's multiprocess mode). Or scrape each process
on its own `METRICS_PORT`. See docs/operations.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404s of no route: never the raw path (unbounded label values)

HTTP_REQUESTS = Counter(
    "crm_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKEND_ERRORS = Counter(
    "crm_backend_errors_total",
    "Requests that failed on a backing service, and failed readiness pings",
    ["backend"],  # database | broker
)
LOGIN_FAILURES = Counter("crm_login_failures_total", "Failed logins (wrong email or password)")
LOGIN_LOCKOUTS = Counter(
    "crm_login_lockouts_total",
    "Logins refused by the failed-login throttle (per email or per client address)",
)
SMS_MESSAGES = Counter(
    "crm_sms_messages_total",
    "SMS messages reaching a state (sent, failed, unknown, retry), by provider",
    ["state", "provider"],
)

# live events (docs/api.md "Live events"): open connections, events published and delivered
# (events/s: their rate), and the drops (a slow client closed, frames it lost)
LIVE_CONNECTIONS = Gauge(
    "crm_live_connections",
    "Open live-event connections, by transport (websocket, sse)",
    ["transport"],
    multiprocess_mode="livesum",
)
LIVE_PUBLISHED = Counter(
    "crm_live_events_published_total", "Live events published, by event", ["event"]
)
LIVE_DELIVERED = Counter(
    "crm_live_events_delivered_total", "Live event frames queued for a client (all connections)"
)
LIVE_DROPS = Counter(
    "crm_live_drops_total",
    "Live connections closed by the server, by reason (slow_client: its queue was full)",
    ["reason"],
)

# the labelled series of each (method, route, status) seen: `labels()` takes a lock and builds
# its key on every call, the dictionary lookup costs nothing (issue #12 §3); the label values
# are bounded (methods, route templates, statuses), so is this
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in KNOWN_METHODS else "other"
    series = _REQUEST_SERIES.get((method, route, status))
    if series is None:
        series = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_LATENCY.labels(method, route),
        )
        _REQUEST_SERIES[(method, route, status)] = series
    series[0].inc()
    series[1].observe(seconds)


def sms_message(state: str, provider: str) -> None:
    SMS_MESSAGES.labels(state, provider).inc()


def is_broker_error(exc: BaseException) -> bool:
    from redis.exceptions import RedisError

    return isinstance(exc, RedisError)


class _Snapshot(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self.families


def scrape_gauges(stats: dict[str, Any] | None, now: float | None = None) -> list[Any]:
    """Gauges from what the broker reported (`BrokerQueue.stats`); none without Redis."""
    if not stats:
        return []
    now = time.time() if now is None else now
    depth = GaugeMetricFamily(
        "crm_task_queue_depth", "Tasks in the Redis stream, by state", labels=["state"]
    )
    depth.add_metric(["waiting"], stats["waiting"])
    depth.add_metric(["pending"], stats["pending"])
    beats = GaugeMetricFamily(
        "crm_worker_heartbeat_timestamp_seconds",
        "Last heartbeat of each task receiver (crm worker, or crm serve running tasks)",
        labels=["worker"],
    )
    for worker, stamp in sorted(stats["heartbeats"].items()):
        beats.add_metric([worker], stamp)
    alive = GaugeMetricFamily(
        "crm_workers_alive", "Receivers whose last heartbeat is at most 3 periods old"
    )
    horizon = 3 * stats["heartbeat_seconds"]
    alive.add_metric([], sum(1 for s in stats["heartbeats"].values() if now - s <= horizon))
    return [depth, beats, alive]


def exposition(extra: list[Any]) -> bytes:
    """The text of a scrape: this process's metrics (or, in multiprocess mode, every process's),
    then the scrape-time gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra:
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Snapshot(extra))
        body += generate_latest(snapshot)
    return body


def serve_metrics(host: str, port: int) -> WSGIServer:
    """A worker's own `/metrics` listener (a thread); `.shutdown()` stops it."""
    from prometheus_client import start_http_server

    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
