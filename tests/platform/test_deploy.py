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

from crm_app.cli import build_parser, main
from crm_core.platform.settings import Settings
from tests.support.tools import missing_tool

ROOT = Path(__file__).parents[2]
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
        missing_tool(
            "systemd-analyze",
            "the check of the systemd units",
            "apt-get install systemd, or run ./scripts/test",
        )
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


# ---- docker compose ----------------------------------------------------------------------


def compose() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / "compose.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_every_service_restarts_and_reports_its_health():
    services = compose()["services"]
    assert set(services) == {"mongo", "redis", "api", "worker"}
    for name, service in services.items():
        assert service["restart"] in ("always", "unless-stopped"), name
        assert service["healthcheck"]["test"], name
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8005/ready" in api_check
    worker_check = services["worker"]["healthcheck"]["test"]
    assert worker_check[1:3] == ["crm", "worker-health"]
    assert "worker-health" in crm_subcommands()
    assert services["worker"]["environment"]["WORKER_HEARTBEAT_FILE"]
    for name in ("api", "worker"):
        for backend in ("mongo", "redis"):
            assert services[name]["depends_on"][backend]["condition"] == "service_healthy"


def test_data_lives_in_named_volumes():
    data = compose()
    mounts = {name: service.get("volumes", []) for name, service in data["services"].items()}
    assert "mongo-data:/data/db" in mounts["mongo"]
    assert "mongo-config:/data/configdb" in mounts["mongo"]  # the replica set's key file
    assert "redis-data:/data" in mounts["redis"]
    assert set(data["volumes"]) >= {"mongo-data", "mongo-config", "redis-data"}


def test_mongodb_runs_with_authentication_and_an_application_user():
    data = compose()
    mongo = data["services"]["mongo"]
    start = " ".join(mongo["entrypoint"])
    assert "--keyFile /data/configdb/keyfile" in start and "--replSet rs0" in start
    assert mongo["env_file"] == "compose.env"
    init = "./deploy/mongo/init-crm-user.js:/docker-entrypoint-initdb.d/init-crm-user.js:ro"
    assert init in mongo["volumes"]
    script = (ROOT / "deploy" / "mongo" / "init-crm-user.js").read_text()
    assert "createUser" in script and "process.env.CRM_MONGO_PASSWORD" in script
    # the health check authenticates as the administrator from compose.env
    check = " ".join(mongo["healthcheck"]["test"])
    assert '-p "$$MONGO_INITDB_ROOT_PASSWORD"' in check and "rs.initiate" in check
    env = env_example()
    for key in ("SECRET_KEY", "MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"):
        assert key in env
    assert re.fullmatch(
        r"mongodb://crm:[^@]+@mongo:27017/\?replicaSet=rs0&authSource=admin", env["MONGODB_URL"]
    )
    # secrets are never written into the compose file itself
    for name in ("api", "worker"):
        assert "MONGODB_URL" not in data["services"][name]["environment"]
        assert "SECRET_KEY" not in data["services"][name]["environment"]
    assert "compose.env" in (ROOT / ".gitignore").read_text().split()


def test_stop_grace_periods_cover_graceful_shutdown():
    services = compose()["services"]
    defaults = Settings(_env_file=None, crm_env="test", secret_key="x" * 40)  # type: ignore[call-arg]
    api_grace = int(services["api"]["stop_grace_period"].rstrip("s"))
    assert api_grace > float(services["api"]["environment"]["SHUTDOWN_TIMEOUT_SECONDS"])
    worker_grace = int(services["worker"]["stop_grace_period"].rstrip("s"))
    assert worker_grace > defaults.sms_send_timeout_seconds + 5


async def test_the_api_healthcheck_command_follows_ready(aiohttp_client, monkeypatch):
    """Run the compose healthcheck's own command against a live app (its port swapped in)."""
    import asyncio

    from handlers.app import create_app
    from handlers.routing import SERVICES
    from tests.support.api import make_settings

    client = await aiohttp_client(create_app(make_settings()))
    argv = compose()["services"]["api"]["healthcheck"]["test"][1:]
    argv = [sys.executable if a == "python" else a for a in argv]
    argv[-1] = argv[-1].replace(":8005/", f":{client.port}/")

    async def probe() -> int:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await process.wait()

    assert await probe() == 0

    async def down():
        return False

    monkeypatch.setattr(client.app[SERVICES].storage, "ping", down)
    assert await probe() != 0
