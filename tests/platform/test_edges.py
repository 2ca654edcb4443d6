"""Edges a newcomer meets (issue #10 §6): malformed HTTP, `crm serve` errors, `--help`, a
self-contained repository."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from crm_app import cli
from handlers.app import create_app
from handlers.middlewares import ServerLog
from tests.support.api import TEST_SECRET, make_settings

ROOT = Path(__file__).resolve().parents[2]

MALFORMED = [
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\x02\xff\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHo st: x\r\n\r\n",
    b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
]


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer


@pytest.mark.parametrize("data", MALFORMED)
async def test_malformed_http_is_a_client_error_without_traceback(caplog, data):
    server = TestServer(create_app(make_settings()))
    await server.start_server(logger=ServerLog())
    try:
        with caplog.at_level(logging.DEBUG):
            answer = await _raw(server.port, data)
            # the server still answers well-formed requests
            healthy = await _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert b"200 OK" in healthy
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "crm.http"]
    assert len(warnings) == 1 and warnings[0].startswith("malformed HTTP request from")


def test_serve_uses_the_client_error_logger(monkeypatch):
    seen = {}
    monkeypatch.setattr("aiohttp.web.run_app", lambda app, **kwargs: seen.update(kwargs))
    cli.serve(make_settings(), "127.0.0.1", 1234)
    assert isinstance(seen["logger"], ServerLog)
    assert seen["port"] == 1234


@pytest.mark.parametrize("port", ["0", "65536", "70000", "-1"])
def test_serve_port_out_of_range_is_one_line_and_status_2(capsys, port):
    assert cli.main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crm: --port must be 1 to 65535")


def _crm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB", "REDIS", "PORT"))}
    env.update(CRM_ENV="test", SECRET_KEY=TEST_SECRET, LOG_LEVEL="WARNING")
    return env


def test_serve_on_a_port_in_use_is_one_line_and_status_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "crm_app.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            env={**_crm_env(), "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"crm: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([], ["serve", "worker", "migrate", "create-superuser"]),
        (["serve"], ["HTTP API", "--host", "127.0.0.1", "--port", "8005"]),
        (["worker"], ["background tasks", "MONGODB_URL", "REDIS_URL"]),
        (["migrate"], ["built-in tables", "again changes nothing"]),
        (["create-superuser"], ["superadmin", "--email", "default: Superadmin"]),
    ],
)
def test_every_command_describes_itself(capsys, command, words):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in out, word


# ---- a self-contained repository ----------------------------------------------------------


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_and_docs_point_only_inside_the_repository():
    for doc in _docs():
        text = doc.read_text()
        assert "../" not in text, f"{doc.name} points outside the repository"
        assert "SPEC" not in text, f"{doc.name} cites a contract a clone does not have"
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"
        for path in re.findall(r"`((?:docs|scripts|tests|benchmarks|deploy)/[\w./-]+)`", text):
            assert (ROOT / path).exists() or "*" in path, f"{doc.name}: {path}"


def test_fuzz_state_is_not_tracked():
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert ".schemathesis/" in gitignore
    if (ROOT / ".git").exists():
        tracked = subprocess.run(
            ["git", "ls-files", ".schemathesis"], capture_output=True, text=True, cwd=ROOT
        )
        assert tracked.stdout == ""
