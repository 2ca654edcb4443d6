"""What the access log costs.

1. On the event loop, per line: the synchronous `logger.info` through a StreamHandler to a file
   (how the access log was written before) against `crm_core.platform.logs.AccessLog.write` (record
   made directly, formatted and written by a thread).
2. End to end: `/health` requests per second of a real `crm serve` process with its access log
   on (LOG_LEVEL=INFO) and off (LOG_LEVEL=WARNING), lines going to ACCESS_LOG_FILE, and the
   ratio. Runs of the two modes alternate to spread out machine noise. `--source DIR` runs the
   server from another checkout (e.g. an older commit, to compare before and after).

    .venv/bin/python -m benchmarks.bench_access_log [--seconds 5] [--rounds 3] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, TCPConnector


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def per_line_costs(lines: int, workdir: Path) -> tuple[float, float]:
    """Microseconds per access line on the calling thread: (synchronous handler, AccessLog)."""
    from crm_core.platform.logs import TEXT_FORMAT, AccessLog, _AccessWriter

    args = ("GET", "/health", 200, 0.4, "-", "-")
    sync_logger = logging.getLogger("bench.sync")
    sync_logger.propagate = False
    with open(workdir / "sync.log", "a") as sync_file:
        handler = logging.StreamHandler(sync_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        sync_logger.addHandler(handler)
        sync_logger.setLevel(logging.INFO)
        started = time.perf_counter()
        for _ in range(lines):
            sync_logger.info("%s %s %s %.1fms tenant=%s user=%s", *args)
        sync_us = (time.perf_counter() - started) / lines * 1e6

        target = logging.StreamHandler(sync_file)
        target.setFormatter(logging.Formatter(TEXT_FORMAT))
        writer = _AccessWriter(AccessLog(logging.getLogger("bench.queued")), [target])
        writer.start()
        access = AccessLog()
        access.sink = writer.lines
        started = time.perf_counter()
        for _ in range(lines):
            access.write(*args, "0123456789abcdef0123456789abcdef")
        queued_us = (time.perf_counter() - started) / lines * 1e6
        writer.stop()
    return sync_us, queued_us


def start_server(
    log_level: str, workdir: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {
        **os.environ,
        "CRM_ENV": "development",
        "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
        "LOG_LEVEL": log_level,
        "PYTHONUNBUFFERED": "0",
        **extra,
    }
    env.pop("MONGODB_URL", None)
    env.pop("REDIS_URL", None)
    log_file = open(workdir / f"serve-{log_level}-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_app.cli", "serve", "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("crm serve did not start") from None
            time.sleep(0.1)


async def load(port: int, seconds: float, clients: int) -> float:
    url = f"http://127.0.0.1:{port}/health"
    done = 0
    async with ClientSession(connector=TCPConnector(limit=clients)) as session:
        for _ in range(50):  # warm up
            async with session.get(url) as resp:
                await resp.read()
        stop = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with session.get(url) as resp:
                    await resp.read()
                    assert resp.status == 200
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return done / (time.perf_counter() - started)


def measure(
    log_level: str, args: argparse.Namespace, workdir: Path, extra: dict[str, str]
) -> float:
    process, port = start_server(log_level, workdir, extra)
    try:
        return asyncio.run(load(port, args.seconds, args.clients))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--source", help="run the server from this checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sync_us, queued_us = per_line_costs(args.lines, workdir)
        print(f"per access line on the event loop ({args.lines} lines):")
        print(f"  synchronous handler to a file: {sync_us:6.1f} us")
        print(f"  AccessLog (queued, written by a thread): {queued_us:6.1f} us")
        print(f"  ratio: {sync_us / queued_us:.1f}x cheaper")
        # production-like: access lines to their own file
        extra = {"ACCESS_LOG_FILE": str(workdir / "access.log")}
        if args.source:
            extra["PYTHONPATH"] = str(Path(args.source).resolve())
        off, on = [], []
        for _ in range(args.rounds):
            off.append(measure("WARNING", args, workdir, extra))
            on.append(measure("INFO", args, workdir, extra))
        lines = (
            sum(1 for _ in open(workdir / "access.log")) if (workdir / "access.log").exists() else 0
        )
    off_rps, on_rps = statistics.median(off), statistics.median(on)
    print(f"/health, {args.clients} clients, {args.rounds} x {args.seconds:.0f} s per mode")
    print(f"access log off: {off_rps:8.0f} req/s  (runs: {', '.join(f'{x:.0f}' for x in off)})")
    print(f"access log on:  {on_rps:8.0f} req/s  (runs: {', '.join(f'{x:.0f}' for x in on)})")
    print(f"access-log lines written: {lines}")
    print(
        f"ratio on/off: {on_rps / off_rps:.2f} (cost of the access log: {1 - on_rps / off_rps:.0%})"
    )


if __name__ == "__main__":
    main()
