"""The client generators the contract tests run: npm packages from the committed lock file
(package.json, package-lock.json: `npm ci` when node_modules is missing or older than the lock)
and openapi-python-client from the test extra. A missing tool fails under CI=true."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.servers import missing_tool

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 300  # seconds for one tool run (npm ci on a cold cache is the slowest)


def run(args: list[str], cwd: Path, what: str) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def node_tools() -> Path:
    """node_modules/.bin, installed with `npm ci` from the lock file when needed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing_tool("node and npm are needed for the TypeScript client and Redocly checks")
    lock = ROOT / "package-lock.json"
    marker = ROOT / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        assert npm is not None
        run([npm, "ci", "--no-audit", "--no-fund"], ROOT, "npm ci")
    return NODE_BIN


def python_generator() -> Path:
    tool = VENV_BIN / "openapi-python-client"
    if not tool.exists():
        missing_tool("openapi-python-client is not installed: ./scripts/install (test extra)")
    return tool


def write_document(document: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path
