"""What the API's edges cost (issue 28): the API limits per request, and traces when off.

1. The limiter alone (`ApiLimiter.reserve`): microseconds per request in memory and in Redis
   (a private redis-server on a free loopback port, when `redis-server` is installed), for a
   session (user + company budgets) and an API token (token + user + company).
2. In process, `GET /api/auth/me` through the whole app (aiohttp's test client, embedded
   database): microseconds per request with the limits on and off, and with traces off and on
   (on: the SDK with a no-op exporter). Rounds of the modes alternate to spread noise.
3. Traces off: what every log line and access line pays (`current_trace_id()`), in ns.

    .venv/bin/python -m benchmarks.bench_edges [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def limiter_cost(storage_url: str | None, calls: int) -> tuple[float, float]:
    """Microseconds per reserve: (session, API token)."""
    from crm_core.platform.apilimits import ApiLimiter, limit_storage

    limiter = ApiLimiter(
        limit_storage(storage_url), "10000000/hour", "10000000/hour", "10000000/hour"
    )
    costs = []
    for token in (None, "token-1"):
        await limiter.reserve("company-1", "user-1", token)  # connect, warm up
        started = time.perf_counter()
        for _ in range(calls):
            await limiter.reserve("company-1", "user-1", token)
        costs.append((time.perf_counter() - started) / calls * 1e6)
    await limiter.close()
    return costs[0], costs[1]


async def request_cost(requests: int, **overrides: Any) -> float:
    """Microseconds per authenticated GET /api/auth/me in process."""
    from benchmarks.common import bench_settings as make_settings
    from handlers.app import create_app

    client = TestClient(TestServer(create_app(make_settings(**overrides))))
    await client.start_server()
    try:
        resp = await client.post(
            "/api/auth/register",
            json={
                "company_name": "Bench",
                "email": "bench@example.com",
                "password": "correct-horse",
                "full_name": "Bench",
            },
        )
        headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
        for _ in range(50):
            await client.get("/api/auth/me", headers=headers)
        started = time.perf_counter()
        for _ in range(requests):
            resp = await client.get("/api/auth/me", headers=headers)
            assert resp.status == 200, resp.status
            await resp.read()
        return (time.perf_counter() - started) / requests * 1e6
    finally:
        await client.close()


def tracing_on() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from crm_core.platform import tracing

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Nowhere()))
    tracing.enable_tracing(provider)


async def main(requests: int, rounds: int) -> None:
    calls = requests * 5
    memory = await limiter_cost(None, calls)
    print(
        f"limiter, memory: {memory[0]:.1f} µs per session request, {memory[1]:.1f} µs with a token"
    )
    binary = shutil.which("redis-server")
    if binary:
        port = _free_port()
        with tempfile.TemporaryDirectory() as workdir:
            redis = subprocess.Popen(  # noqa: ASYNC220 - a benchmark's own server
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    workdir,
                ],
                stdout=subprocess.DEVNULL,
            )
            try:
                await asyncio.sleep(0.5)
                cost = await limiter_cost(f"redis://127.0.0.1:{port}/0", requests)
                print(
                    f"limiter, Redis:  {cost[0]:.1f} µs per session request, "
                    f"{cost[1]:.1f} µs with a token"
                )
            finally:
                redis.terminate()
                redis.wait()
    else:
        print("limiter, Redis: redis-server not installed, not measured")

    from crm_core.platform import tracing

    modes: dict[str, list[float]] = {"limits off": [], "limits on": []}
    for _ in range(rounds):
        modes["limits off"].append(await request_cost(requests, api_rate_limits=False))
        modes["limits on"].append(await request_cost(requests))
    traced: dict[str, list[float]] = {"traces off": [], "traces on": []}
    for _ in range(rounds):
        traced["traces off"].append(await request_cost(requests))
        tracing_on()
        traced["traces on"].append(await request_cost(requests))
        tracing.disable_tracing()
    for name, values in {**modes, **traced}.items():
        print(
            f"GET /api/auth/me, {name}: {statistics.median(values):.0f} µs per request "
            f"(median of {rounds})"
        )

    started = time.perf_counter()
    for _ in range(1_000_000):
        tracing.current_trace_id()
    print(f"traces off, per log line: {(time.perf_counter() - started) * 1e3:.0f} ns")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
