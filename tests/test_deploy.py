"""The shipped deployment files: systemd units and the compose stack (docs/operations.md)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crm_core.cli import build_parser, main
from crm_core.settings import Settings

ROOT = Path(__file__).parent.parent
UNITS = ROOT / "deploy" / "systemd"
UNIT_FILES = ["crm-api.service", "crm-worker@.service"]


def read_unit(name: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value given (systemd keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def crm_subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("crm has no subcommands")


@pytest.mark.parametrize("name", UNIT_FILES)
def test_exec_start_names_a_real_crm_command(name):
    (exec_start,) = read_unit(name)["Service.ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "crm"
    assert argv[1] in crm_subcommands(), argv
    # and argparse accepts the whole line as written
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.command == argv[1]


@pytest.mark.parametrize("name", UNIT_FILES)
def test_units_run_hardened_as_their_own_user_and_restart(name):
    unit = read_unit(name)
    service = {k.split(".", 1)[1]: v[-1] for k, v in unit.items() if k.startswith("Service.")}
    assert service["User"] == "crm" and service["Group"] == "crm"
    assert service["EnvironmentFile"] == "/etc/crm/crm.env"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_stop_timeouts_cover_graceful_shutdown():
    defaults = Settings(_env_file=None, crm_env="test", secret_key="x" * 40)  # type: ignore[call-arg]
    api = read_unit("crm-api.service")
    assert "SHUTDOWN_TIMEOUT_SECONDS=10" in api["Service.Environment"][0]
    assert defaults.shutdown_timeout_seconds == 10
    assert int(api["Service.TimeoutStopSec"][0]) > defaults.shutdown_timeout_seconds
    worker = read_unit("crm-worker@.service")
    # a worker lets its running task finish: at most SMS_SEND_TIMEOUT_SECONDS + 5 s
    assert int(worker["Service.TimeoutStopSec"][0]) > defaults.sms_send_timeout_seconds + 5


def test_systemd_analyze_verify(tmp_path):
    binary = shutil.which("systemd-analyze")
    if binary is None:
        message = "systemd-analyze is not installed: the units were NOT verified"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    crm = Path(sys.executable).parent / "crm"
    assert crm.exists(), "the project is not installed in this environment"
    for name in UNIT_FILES:
        text = (UNITS / name).read_text()
        # the install paths do not exist here: point at this checkout's `crm`, and let the
        # environment file be absent
        text = text.replace("/opt/crm/venv/bin/crm", str(crm))
        text = text.replace("EnvironmentFile=/etc/crm/", "EnvironmentFile=-/etc/crm/")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            binary,
            "verify",
            str(tmp_path / "crm-api.service"),
            str(tmp_path / "crm-worker@1.service"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify warns (unknown keys, bad values) on stderr without failing: both must be clean
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_sysusers_creates_the_service_user():
    text = (UNITS / "crm.sysusers").read_text()
    assert re.search(r"^u crm - ", text, re.M)


def test_worker_health(tmp_path, monkeypatch, capsys):
    beat = tmp_path / "heartbeat"
    monkeypatch.setenv("CRM_ENV", "development")
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    monkeypatch.setenv("WORKER_HEARTBEAT_FILE", str(beat))
    monkeypatch.setenv("WORKER_HEARTBEAT_SECONDS", "10")
    assert main(["worker-health"]) == 1
    assert "no worker heartbeat" in capsys.readouterr().err
    beat.touch()
    assert main(["worker-health"]) == 0
    os.utime(beat, (beat.stat().st_atime, beat.stat().st_mtime - 31))
    assert main(["worker-health"]) == 1
    assert "limit 30 s" in capsys.readouterr().err
