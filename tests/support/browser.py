"""Debian's Chromium for the browser tests: where it is, and the flags it needs on a machine
without outside network (a missing browser fails under CI=true, tests/support/tools.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright import sync_api as playwright_api

from tests.support.tools import missing_tool

CHROMIUM_FLAGS = [
    # without these Chromium stalls on a machine without outside network
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
INSTALL_HINT = "Debian/Ubuntu: `apt-get install chromium`, or set CRM_CHROMIUM to its path"


def chromium_path() -> str:
    path = os.environ.get("CRM_CHROMIUM") or shutil.which("chromium")
    path = path or shutil.which("chromium-browser")
    if not path or not Path(path).exists():
        missing_tool("chromium", "the browser tests of /docs and /admin", INSTALL_HINT)
    return path


@contextlib.contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium through Playwright (sync API), closed on exit."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


class LoopThread:
    """aiohttp applications served on loopback from an event loop in a thread of its own, so a
    synchronous Playwright test can drive a browser against them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def serve(self, app: web.Application, port: int = 0) -> str:
        """Serves `app` on 127.0.0.1 (`port` 0: a free one) and answers its base URL."""
        runner = web.AppRunner(app)
        self.run(runner.setup())
        self.run(web.TCPSite(runner, "127.0.0.1", port).start())
        self.runners.append(runner)
        host, bound = runner.addresses[0][:2]
        return f"http://{host}:{bound}"

    def stop(self) -> None:
        for runner in self.runners:
            self.run(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
