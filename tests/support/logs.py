"""Reading the service's log files from tests: access lines are written by a thread."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from handlers.app import create_app


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_text(path: Path, needle: str) -> str:
    """Access lines are written by a thread: wait until `needle` is in the file."""
    for _ in range(500):
        text = read(path)
        if needle in text:
            return text
        await asyncio.sleep(0.01)
    raise AssertionError(f"{needle!r} never reached {path}: {text!r}")


async def crashing_client(aiohttp_client: Any, settings: Any) -> Any:
    """A client of the app with one extra route, /boom, that logs a warning and fails."""
    app = create_app(settings)

    async def boom(request: Any) -> Any:
        logging.getLogger("crm.test").warning("about to fail")
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    return await aiohttp_client(app)
