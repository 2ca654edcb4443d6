from __future__ import annotations

import pytest
import yaml

from crm_app.cli import main
from crm_core.platform.settings import Settings, SettingsError, load_settings

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_production_needs_a_long_secret_key(monkeypatch):
    monkeypatch.setenv("CRM_ENV", "production")
    monkeypatch.setenv("MONGODB_URL", "mongodb://db:27017")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings(_env_file=None)
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings(_env_file=None)
    monkeypatch.setenv("SECRET_KEY", "k" * 32)
    assert load_settings(_env_file=None).crm_env == "production"


def test_production_refuses_the_embedded_database(monkeypatch):
    monkeypatch.setenv("CRM_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.delenv("MONGODB_URL", raising=False)
    with pytest.raises(SettingsError, match="MONGODB_URL"):
        load_settings(_env_file=None)


def test_development_generates_a_key(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("CRM_ENV", raising=False)
    settings = load_settings(_env_file=None)
    assert len(settings.secret_key) >= 32
    assert settings.embedded_database


def test_bad_values_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("PORT", "seventy")
    with pytest.raises(SettingsError, match="PORT"):
        load_settings(_env_file=None)


def test_cli_reports_configuration_errors(monkeypatch, capsys):
    monkeypatch.setenv("CRM_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "SECRET_KEY" in err and err.count("\n") == 1


def test_create_superuser_needs_a_real_database(monkeypatch, capsys):
    monkeypatch.delenv("MONGODB_URL", raising=False)
    monkeypatch.setenv("CRM_ENV", "development")
    assert main(["create-superuser", "--email", "root@example.com", "--password", "x" * 12]) == 2
    assert "MONGODB_URL" in capsys.readouterr().err


def test_env_example_lists_every_setting():
    listed = {
        line.split("=", 1)[0].lower()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert listed == set(Settings.model_fields)


def test_compose_file_wiring():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"mongo", "redis", "api", "worker"}
    assert services["mongo"]["image"].startswith("mongo:7")
    assert "--replSet" in " ".join(services["mongo"]["entrypoint"])
    assert "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    for name in ("api", "worker"):
        env = services[name]["environment"]
        # MONGODB_URL (with credentials) and SECRET_KEY come from compose.env
        # (tests/platform/test_deploy.py)
        assert services[name]["env_file"] == "compose.env"
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["CRM_ENV"] == "production"
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert services["api"]["command"][:2] == ["crm", "serve"]
    assert services["worker"]["command"] == ["crm", "worker"]
    assert "8005:8005" in services["api"]["ports"]
    assert (ROOT / "Dockerfile").exists()


def test_worker_refuses_the_embedded_database(monkeypatch, capsys):
    monkeypatch.delenv("MONGODB_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CRM_ENV", "development")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "MONGODB_URL" in err and "embedded database" in err


def test_worker_needs_redis(monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:1")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CRM_ENV", "development")
    assert main(["worker"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_redelivery_must_exceed_the_longest_send(monkeypatch):
    monkeypatch.setenv("SMS_SEND_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("SMS_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("SMS_REDELIVERY_SECONDS", "30")
    with pytest.raises(SettingsError, match="SMS_REDELIVERY_SECONDS"):
        load_settings(_env_file=None)


def test_env_example_works_as_a_dot_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.embedded_database and settings.redis_url is None
    assert settings.api_runs_tasks is None and settings.port == 8005
