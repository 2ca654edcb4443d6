"""A MongoDB wire-protocol server for the real-driver test lane (issue #12 §6).

Runs under the Python 3.13 virtualenv `.venv-mongoeco` (mongoeco needs 3.13), listens on a
loopback port (`--port`, default a free one) and prints its `mongodb://` URI on the first line
of stdout, then serves until it is terminated. scripts/test-mongoeco starts and stops it; the
fault tests (tests/support/servers.py) start it on a fixed port so that a stopped server can
be started again on the same address.

The data lives in this process's memory: a restarted server starts empty. The outage tests
keep the data by cutting a TCP proxy in front of it instead (tests/support/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from mongoeco.wire import AsyncMongoEcoProxyServer


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=port) as server:
        print(server.address.uri, flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="mongoeco wire-protocol server on loopback")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    asyncio.run(main(parser.parse_args().port))
