"""Reading the service's log files from tests: access lines are written by a thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from handlers.app import create_app
from tests.support.waits import until


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_text(path: Path, needle: str) -> str:
    """Access lines are written by a thread: wait until `needle` is in the file."""

    async def written() -> str | None:
        text = read(path)
        return text if needle in text else None

    try:
        return await until(written, f"{needle!r} in {path}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the file holds: {read(path)!r}") from None


async def crashing_client(aiohttp_client: Any, settings: Any) -> Any:
    """A client of the app with one extra route, /boom, that logs a warning and fails."""
    app = create_app(settings)

    async def boom(request: Any) -> Any:
        logging.getLogger("crm.test").warning("about to fail")
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    return await aiohttp_client(app)
