"""Debian's Chromium for the browser tests: where it is, and the flags it needs on a machine
without outside network (a missing browser fails under CI=true, tests/support/tools.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
