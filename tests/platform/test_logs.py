"""Request ids, access and error log files, the JSON format, rotation (docs/operations.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crm_core.platform import logs
from tests.support.api import make_settings
from tests.support.logs import crashing_client, wait_for_text


async def test_a_request_id_is_made_and_echoed(client):
    resp = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    other = await client.get("/health")
    assert other.headers["X-Request-ID"] != resp.headers["X-Request-ID"]


async def test_the_clients_request_id_is_kept_in_header_and_error_body(client):
    resp = await client.get("/api/auth/me", headers={"X-Request-ID": "edge-7f3a:42"})
    assert resp.status == 401
    assert resp.headers["X-Request-ID"] == "edge-7f3a:42"
    assert (await resp.json())["error"]["request_id"] == "edge-7f3a:42"


@pytest.mark.parametrize("bad", ["x" * 129, "two words", 'quote"s', "ünïcode", "a;b"])
async def test_an_unsafe_request_id_is_replaced(client, bad):
    resp = await client.get("/health", headers={"X-Request-ID": bad})
    assert resp.status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


async def test_access_and_error_files_share_the_request_id(aiohttp_client, tmp_path):
    settings = make_settings(log_dir=str(tmp_path / "logs"))
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    resp = await client.get("/boom", headers={"X-Request-ID": "find-me-1"})
    assert resp.status == 500
    assert (await resp.json())["error"]["request_id"] == "find-me-1"
    await client.get("/health", headers={"X-Request-ID": "fine-2"})

    access = await wait_for_text(tmp_path / "logs" / "access.log", "fine-2")
    error = (tmp_path / "logs" / "error.log").read_text()
    boom_line = next(line for line in access.splitlines() if "[find-me-1]" in line)
    assert "crm.access" in boom_line and "GET /boom 500 " in boom_line
    # both lines the failing request wrote reach the error file, with its id, and the trace
    assert re.search(r"WARNING crm\.test \[find-me-1\] about to fail", error)
    assert re.search(
        r"ERROR handlers\.middlewares \[find-me-1\] unhandled error in GET /boom", error
    )
    assert "Traceback" in error and "secret internals" in error
    # and nothing else crosses over
    assert "crm.access" not in error
    assert "unhandled" not in access and "fine-2" not in error


async def test_explicit_file_settings_win_over_log_dir(aiohttp_client, tmp_path):
    settings = make_settings(
        log_dir=str(tmp_path / "dir"),
        access_log_file=str(tmp_path / "a" / "requests.log"),
        error_log_file=str(tmp_path / "e" / "problems.log"),
    )
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    await client.get("/boom", headers={"X-Request-ID": "explicit-1"})
    await wait_for_text(tmp_path / "a" / "requests.log", "explicit-1")
    assert "explicit-1" in (tmp_path / "e" / "problems.log").read_text()
    assert not (tmp_path / "dir" / "access.log").exists()


async def test_json_lines(aiohttp_client, tmp_path):
    settings = make_settings(log_dir=str(tmp_path), log_format="json")
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    await client.get("/boom", headers={"X-Request-ID": "json-1"})
    text = await wait_for_text(tmp_path / "access.log", "json-1")
    line = json.loads(text.splitlines()[-1])
    assert {k: line[k] for k in ("logger", "level", "request_id", "method", "path", "status")} == {
        "logger": "crm.access",
        "level": "INFO",
        "request_id": "json-1",
        "method": "GET",
        "path": "/boom",
        "status": 500,
    }
    assert line["message"].startswith("GET /boom 500 ") and line["tenant"] == "-"
    errors = [json.loads(x) for x in (tmp_path / "error.log").read_text().splitlines()]
    crash = next(e for e in errors if e["logger"] == "handlers.middlewares")
    assert crash["request_id"] == "json-1" and "secret internals" in crash["exc_info"]


async def test_a_rotated_file_is_reopened(aiohttp_client, tmp_path):
    """What logrotate does (move the file away, no copytruncate): the next line goes to a new
    file at the configured path."""
    settings = make_settings(log_dir=str(tmp_path))
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    await client.get("/boom", headers={"X-Request-ID": "before-rotate"})
    await wait_for_text(tmp_path / "access.log", "before-rotate")
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")
    (tmp_path / "error.log").rename(tmp_path / "error.log.1")
    await client.get("/boom", headers={"X-Request-ID": "after-rotate"})
    fresh = await wait_for_text(tmp_path / "access.log", "after-rotate")
    assert "before-rotate" not in fresh
    assert "after-rotate" in (tmp_path / "error.log").read_text()
    assert "after-rotate" not in (tmp_path / "access.log.1").read_text()


async def test_access_log_can_be_switched_off(aiohttp_client, tmp_path):
    settings = make_settings(log_dir=str(tmp_path), access_log=False)
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    await client.get("/boom", headers={"X-Request-ID": "quiet-1"})
    logs.stop_access_log()  # writes whatever was queued
    assert (
        not (tmp_path / "access.log").exists()
        or "quiet-1" not in (tmp_path / "access.log").read_text()
    )
    assert "quiet-1" in (tmp_path / "error.log").read_text()


def test_the_shipped_logrotate_config_moves_files_away():
    text = (Path(__file__).parents[2] / "deploy" / "logrotate" / "crm").read_text()
    config = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/var/log/crm/*.log" in config
    # WatchedFileHandler reopens a moved file; copytruncate would lose lines and is not needed
    assert "copytruncate" not in config
    assert re.search(r"^\s*create 0640 crm crm$", config, re.M)


async def test_an_encoded_newline_in_the_path_cannot_forge_a_log_line(aiohttp_client, tmp_path):
    settings = make_settings(log_dir=str(tmp_path))
    logs.configure_logging(settings)
    client = await crashing_client(aiohttp_client, settings)
    forged = "/x%0A2026-01-01%2000:00:00,000%20INFO%20crm.access%20[admin]%20GET%20/ok%20200"
    resp = await client.get(forged, headers={"X-Request-ID": "forge-1"})
    assert resp.status == 404
    text = await wait_for_text(tmp_path / "access.log", "forge-1")
    (line,) = [x for x in text.splitlines() if "forge-1" in x]
    assert "%0A" in line and "[admin]" not in text.replace(line, "")
