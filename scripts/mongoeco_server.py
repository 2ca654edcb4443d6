"""A MongoDB wire-protocol server for the real-driver test lane (issue #12 §6).

Runs under the Python 3.13 virtualenv `.venv-mongoeco` (mongoeco needs 3.13), listens on a
free loopback port and prints its `mongodb://` URI on the first line of stdout, then serves
until it is terminated. scripts/test-mongoeco starts and stops it.
"""

from __future__ import annotations

import asyncio
import signal

from mongoeco.wire import AsyncMongoEcoProxyServer


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=0) as server:
        print(server.address.uri, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
