"""Live events (issue #25, docs/api.md "Live events"): write-to-delivery latency and the
server's CPU per delivered event, with many WebSocket subscribers.

    .venv/bin/python -m benchmarks.bench_live [--subscribers 1000] [--writes 50]
    .venv/bin/python -m benchmarks.bench_live --redis [--subscribers 1000] [--writes 50]

One process: a `crm serve` subprocess on the embedded database; `--subscribers` WebSockets
(one user) subscribe to a table; `--writes` rows are created one after another through the
API, each once every subscriber has the previous one. Latency: from just before the POST to
the moment a subscriber's frame is read (wall clock, one machine). CPU: the server process's
user+system time over the writes divided by the frames delivered (the writes' own handling
included).

`--redis`: two `crm serve` processes on one mongoeco server (.venv-mongoeco, as
scripts/test-mongoeco makes it) and one redis-server; the subscribers are split between them,
the rows are written through the first, so half the deliveries cross Redis.

The subscribers run in `--clients` client processes (aiohttp), the writes come one every
`--pace` seconds; on a small machine the clients' own reading is part of the latency measured.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout, ClientWebSocketResponse, TCPConnector, WSMsgType

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def processes(redis: bool, logs: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """`crm serve` (one, or two on mongoeco + Redis): [(base URL, process)]."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "CRM_ENV": "test",
        "SECRET_KEY": "b" * 40,
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        "EVENTS_MAX_CONNECTIONS_PER_USER": "100000",
        "EVENTS_QUEUE_SIZE": "100000",
    }

    def start(argv: list[str], name: str, port: int, extra: dict[str, str]) -> Any:
        log = (logs / f"{name}.log").open("wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**env, **extra})
        started.append(process)
        wait_port(port, process, name)
        return process

    crm = str(Path(sys.executable).with_name("crm"))
    try:
        extra: dict[str, str] = {}
        count = 1
        if redis:
            count = 2
            redis_port, mongo_port = free_port(), free_port()
            binary = shutil.which("redis-server")
            if binary is None:
                raise SystemExit("redis-server is not installed")
            start(
                [binary, "--port", str(redis_port), "--bind", LOOPBACK, "--save", ""],
                "redis",
                redis_port,
                {},
            )
            mongoeco = ROOT / ".venv-mongoeco" / "bin" / "python"
            if not mongoeco.exists():
                raise SystemExit("no .venv-mongoeco: run scripts/test-mongoeco once")
            start(
                [
                    str(mongoeco),
                    str(ROOT / "scripts" / "mongoeco_server.py"),
                    "--port",
                    str(mongo_port),
                ],
                "mongoeco",
                mongo_port,
                {},
            )
            extra = {
                "REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/0",
                "MONGODB_URL": f"mongodb://{LOOPBACK}:{mongo_port}/?directConnection=true",
            }
        servers = []
        for n in range(count):
            port = free_port()
            process = start(
                [crm, "serve", "--host", LOOPBACK, "--port", str(port)], f"serve-{n}", port, extra
            )
            servers.append((f"http://{LOOPBACK}:{port}", process))
        yield servers
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def subscriber_process(
    urls: list[str], token: str, count: int, first: int, writes: int, ready: Any, results: Any
) -> None:
    """A client process: `count` WebSockets; answers {title: [arrival wall times]} per
    server index once every socket has every row."""
    asyncio.run(_subscribe(urls, token, count, first, writes, ready, results))


async def _subscribe(
    urls: list[str], token: str, count: int, first: int, writes: int, ready: Any, results: Any
) -> None:
    arrivals: list[tuple[int, str, float]] = []

    async def read(ws: ClientWebSocketResponse, where: int) -> None:
        seen = 0
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                break
            if '"row.created"' not in message.data:
                continue
            arrivals.append((where, orjson.loads(message.data)["row"]["title"], time.time()))
            seen += 1
            if seen == writes:
                return

    connector = TCPConnector(limit=0)
    async with ClientSession(timeout=ClientTimeout(total=300), connector=connector) as session:
        sockets = []
        for n in range(first, first + count):
            where = n % len(urls)
            ws = await session.ws_connect(
                f"{urls[where]}/api/events?tables=deals",
                protocols=["crm.events", f"bearer.{token}"],
            )
            sockets.append((ws, where))
        readers = [asyncio.create_task(read(ws, where)) for ws, where in sockets]
        ready.set()
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        for ws, _ in sockets:
            await ws.close()
    results.put(arrivals)


async def call(session: ClientSession, method: str, url: str, token: str = "", **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body or None, headers=headers) as response:
        data = await response.json()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {data}")
        return data


async def run(subscribers: int, writes: int, redis: bool, clients: int, pace: float) -> None:
    logs = Path(tempfile.mkdtemp(prefix="bench-live-"))
    context = multiprocessing.get_context("spawn")
    with processes(redis, logs) as servers:
        async with ClientSession(timeout=ClientTimeout(total=120)) as session:
            base = servers[0][0]
            tokens = await call(
                session,
                "POST",
                f"{base}/api/auth/register",
                company_name="Bench",
                email="bench-live@example.com",
                password="bench-password",
                full_name="Bench",
            )
            token = tokens["access_token"]
            await call(
                session,
                "POST",
                f"{base}/api/meta/tables",
                token,
                key="deals",
                columns=[{"key": "title", "type": "string"}],
            )
            urls = [url for url, _ in servers]
            results = context.Queue()
            children = []
            per = subscribers // clients
            for n in range(clients):
                ready = context.Event()
                count = per if n < clients - 1 else subscribers - per * (clients - 1)
                child = context.Process(
                    target=subscriber_process,
                    args=(urls, token, count, n * per, writes, ready, results),
                )
                child.start()
                children.append((child, ready))
            for _, ready in children:
                await asyncio.to_thread(ready.wait, 300)
            await asyncio.sleep(1.0)  # the subscribed frames are read; not measured
            cpu_before = [cpu_seconds(p.pid) for _, p in servers]
            sent: dict[str, float] = {}
            started = time.perf_counter()
            for n in range(writes):
                title = f"row-{n}"
                sent[title] = time.time()
                await call(session, "POST", f"{base}/api/data/deals", token, title=title)
                await asyncio.sleep(max(0.0, started + (n + 1) * pace - time.perf_counter()))
            arrivals = []
            for _ in children:
                arrivals.extend(await asyncio.to_thread(results.get, True, 300))
            elapsed = time.perf_counter() - started
            cpu = [cpu_seconds(p.pid) - b for (_, p), b in zip(servers, cpu_before, strict=True)]
            for child, _ in children:
                child.join(timeout=30)
    latencies: dict[int, list[float]] = {n: [] for n in range(len(servers))}
    for where, title, at in arrivals:
        latencies[where].append(at - sent[title])
    delivered = len(arrivals)
    every = sorted(x for values in latencies.values() for x in values)
    mode = "two processes through Redis (mongoeco)" if redis else "one process (embedded)"
    print(
        f"{mode}: {subscribers} subscribers in {clients} client processes, {writes} writes "
        f"(one every {pace * 1000:.0f} ms), {delivered} frames delivered"
    )
    print(
        f"write-to-delivery p50 {pct(every, 50)} ms, p99 {pct(every, 99)} ms, "
        f"max {every[-1] * 1000:.1f} ms"
    )
    if redis:
        for where, values in latencies.items():
            label = "the writing process" if where == 0 else "the other process (via Redis)"
            print(
                f"  on {label}: p50 {pct(sorted(values), 50)} ms, p99 {pct(sorted(values), 99)} ms"
            )
    for where, seconds in enumerate(cpu):
        share = len(latencies[where])
        print(
            f"server {where}: CPU {seconds:.2f} s over {elapsed:.1f} s, "
            f"{seconds / share * 1e6:.0f} us per delivered event (its {share})"
        )


def pct(values: list[float], p: int) -> str:
    if len(values) < 2:
        return f"{values[0] * 1000:.1f}"
    return f"{statistics.quantiles(values, n=100)[p - 1] * 1000:.1f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--pace", type=float, default=0.2, help="seconds between writes")
    args = parser.parse_args()
    asyncio.run(run(args.subscribers, args.writes, args.redis, args.clients, args.pace))
