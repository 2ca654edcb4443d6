"""Tests that need a tool from the system (scripts/install-system installs them) and a free
loopback port for the servers they start."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

NOT_RUN = "NOT RUN, missing tool:"  # marks the skips the terminal summary lists


def missing_tool(tool: str, what: str, how: str) -> NoReturn:
    """A test that cannot run without `tool`: under CI=true it fails; elsewhere it is skipped
    and listed, loudly, at the end of the run (tests/conftest.py `pytest_terminal_summary`)."""
    message = f"{NOT_RUN} {tool}: {what} did NOT run ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
