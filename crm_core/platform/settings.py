"""Service settings, read from the environment and an optional `.env` file.

Settings are an object built once by the entry point (`crm serve`, the tests) and passed in;
nothing reads the environment at import time.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_core.platform.netguard import http_url_problem
from crm_core.platform.passwords import PASSWORD_MAX_BYTES, PASSWORD_MIN_CHARS, password_problem

log = logging.getLogger(__name__)

MIN_SECRET_KEY_BYTES = 32


# an origin as browsers send it (RFC 6454): scheme, host, optional port; lower case, no path
_ORIGIN = re.compile(
    r"[a-z][a-z0-9+.-]*://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?"
)


def origin_problem(origin: str) -> str | None:
    """Why `origin` cannot be a CORS origin (issue 28), or None."""
    if not _ORIGIN.fullmatch(origin):
        return "is not an origin: scheme://host[:port] in lower case, without a path"
    return None


class SettingsError(Exception):
    """The configuration cannot start the service; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `KEY=` in .env means "the default", as in .env.example
    )

    crm_env: Literal["development", "production", "test"] = "development"
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=8005, ge=1, le=65535)

    mongodb_url: str | None = None
    crm_db_prefix: str = Field(default="crm", pattern=r"^[a-z][a-z0-9_]{0,20}$")
    query_time_limit_ms: int = Field(default=5000, ge=1)
    # an unreachable database fails a request fast, answered 503 with Retry-After
    # (docs/operations.md, "Faults: the database"): how long a request waits for a server
    # to talk to, for a TCP connection, and for the answer to one command (above the
    # server-side QUERY_TIME_LIMIT_MS, so that limit answers first on a slow query)
    mongodb_server_selection_timeout_ms: int = Field(default=2000, ge=100, le=120_000)
    mongodb_connect_timeout_ms: int = Field(default=2000, ge=100, le=120_000)
    mongodb_socket_timeout_ms: int = Field(default=30_000, ge=1000, le=3_600_000)
    # the Retry-After (seconds) of a 503 for an unreachable database or broker
    unavailable_retry_after_seconds: int = Field(default=5, ge=1, le=3600)

    redis_url: str | None = None

    access_token_ttl_seconds: int = Field(default=900, ge=10)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # a refresh token presented again this soon after its rotation answers the same successor
    # (two tabs, a retry after a timeout); later reuse is theft (docs/api.md "Sessions")
    refresh_reuse_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    registration_enabled: bool = True
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=30, ge=1)
    login_lockout_seconds: int = Field(default=900, ge=1)
    # failed sign-ins per account from addresses it does not know: free ones, then one per
    # doubling delay (docs/operations.md "Failed-login throttling")
    login_account_free_failures: int = Field(default=20, ge=1)
    login_account_max_delay_seconds: int = Field(default=60, ge=1, le=3600)
    login_known_address_days: int = Field(default=30, ge=0, le=3650)

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    default_phone_region: str = Field(default="RU", pattern=r"^[A-Z]{2}$")
    default_timezone: str = "UTC"
    # the language of error messages when `Accept-Language` names none the service speaks
    # (crm_core/platform/i18n.py)
    default_language: Literal["en", "ru"] = "en"
    string_max_length: int = Field(default=10_000, ge=1)

    sms_provider: Literal["log", "smsru"] = "log"
    smsru_api_id: str = ""
    smsru_base_url: str = "https://sms.ru"
    sms_sender: str = ""
    sms_rate_per_second: float = Field(default=10.0, gt=0, le=10_000)
    sms_max_attempts: int = Field(default=4, ge=1, le=20)
    sms_retry_base_seconds: float = Field(default=1.0, ge=0, le=600)
    sms_send_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    sms_redelivery_seconds: float = Field(default=600.0, gt=0)
    sms_batch_size: int = Field(default=100, ge=1, le=10_000)
    sms_max_recipients: int = Field(default=100_000, ge=1)
    # delivery reports (docs/sms.md): poll `sent` messages no callback settled after this long,
    # again every as long, until final or given up
    sms_status_poll_after_seconds: float = Field(default=900.0, gt=0, le=7 * 86400)
    sms_status_give_up_hours: float = Field(default=72.0, gt=0, le=24 * 30)
    # whether `crm serve` receives Redis tasks itself; unset: only with the embedded database
    api_runs_tasks: bool | None = None

    # webhooks (docs/integrations.md)
    webhook_allow_private_addresses: bool = False  # SSRF guard off: only for tests and labs
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_retry_base_seconds: float = Field(default=30.0, ge=0, le=86_400)
    webhook_disable_after_failures: int = Field(default=8, ge=1, le=1000)
    webhook_sweep_seconds: float = Field(default=5.0, gt=0, le=3600)
    webhook_log_retention_days: int = Field(default=30, ge=1, le=3650)
    # delivery isolation (docs/integrations.md "Isolation"): requests in flight per destination
    # (scheme, host, port) in one process; a delivery finding them all busy is put back for
    # this many seconds, not counted as an attempt
    webhook_connections_per_destination: int = Field(default=4, ge=1, le=100)
    webhook_defer_seconds: float = Field(default=1.0, ge=0, le=3600)
    # seconds the previous secret stays valid (and signed with) after rotate-secret
    webhook_rotation_overlap: int = Field(default=86_400, ge=0, le=30 * 86_400)
    # live events (docs/api.md "Live events"): how far back `since` / Last-Event-ID replays
    # from the row history (older: a `reload` frame), and at most how many events
    events_replay_seconds: int = Field(default=300, ge=0, le=7 * 86_400)
    events_replay_max: int = Field(default=1000, ge=1, le=100_000)
    # frames waiting for one client; a client that falls this far behind is closed (4408)
    events_queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    events_heartbeat_seconds: float = Field(default=20.0, gt=0, le=3600)
    # how often each signed-in viewer is authenticated again and its table access re-read
    # (a revoked share, role or token is honoured within this; a share change at once)
    events_recheck_seconds: float = Field(default=0.5, gt=0, le=3600)
    events_max_connections_per_user: int = Field(default=20, ge=1, le=100_000)
    # a WebSocket that sends no `auth` frame (and no token in Sec-WebSocket-Protocol) in time
    events_auth_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    events_max_subscriptions: int = Field(default=100, ge=1, le=10_000)
    # history, trash and the audit trail (docs/history.md)
    trash_retention_days: int = Field(default=30, ge=1, le=3650)
    audit_retention_days: int = Field(default=365, ge=1, le=36500)
    # how often the sweeper stores the revisions a stopped process left unrecorded
    history_recovery_seconds: float = Field(default=60.0, ge=0.01, le=86_400)
    # a mark older than this is a write whose process stopped (a live one stores its revision
    # within milliseconds)
    history_recovery_grace_seconds: float = Field(default=60.0, ge=0.1, le=86_400)
    # a test's barrier (CRM_ENV=test only): writes to this table wait forever before their
    # revision, so a test can kill the process there (tests/history/test_crash.py)
    history_pause_before_revision: str | None = None
    # CSV/XLSX import and export (docs/integrations.md)
    import_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    import_max_rows: int = Field(default=200_000, ge=1)
    import_max_columns: int = Field(default=500, ge=1, le=10_000)
    import_batch_size: int = Field(default=1000, ge=1, le=10_000)
    import_max_pending: int = Field(default=10, ge=1)
    # an import (uploading or running) without a heartbeat for this long lost its process
    import_stale_seconds: float = Field(default=120.0, gt=0, le=86_400)
    export_max_concurrent: int = Field(default=2, ge=1)
    # attachments (docs/storage.md "Files"): the largest upload, where the embedded engine keeps
    # the bytes (unset: a temporary directory of the process), and how long an uploaded file
    # may stay unattached to any row before the sweeper removes it
    file_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    files_dir: str | None = None
    file_orphan_grace_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    # embedded mode: authenticated requests at work at once (the others wait their turn before
    # any work); the one database thread serves them in turn anyway, and a short queue on the
    # event loop keeps cheap requests (/health) answered promptly under load. 0: no limit
    embedded_max_active_requests: int = Field(default=4, ge=0, le=10_000)
    # embedded mode: keep the data in this directory as mongodump-layout snapshots, written
    # every EMBEDDED_SNAPSHOT_SECONDS when something changed and on a graceful stop (docs/
    # operations.md "Embedded data on disk"); unset: memory only
    embedded_data_dir: str | None = None
    embedded_snapshot_seconds: float = Field(default=30.0, gt=0, le=86_400)

    log_level: str = "INFO"
    log_file: str | None = None
    # log files and format (crm_core/platform/logs.py), metrics, shutdown, worker heartbeat
    log_format: Literal["text", "json"] = "text"
    log_dir: str | None = None
    access_log_file: str | None = None
    error_log_file: str | None = None
    access_log: bool = True
    metrics_token: str | None = Field(default=None, min_length=16)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    worker_heartbeat_file: str | None = None
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0, le=3600)

    # the operator's panel (/admin): a superadmin that `crm serve` creates at start if its email
    # is new (the only way to have one on the embedded database), and the panel's sessions
    crm_superuser_email: str | None = Field(default=None, max_length=320)
    crm_superuser_password: str | None = Field(default=None, repr=False)
    crm_superuser_name: str = Field(default="Superadmin", min_length=1, max_length=200)
    admin_session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)

    # issue 28, the API's edges (docs/api.md "CORS", "Rate limits"; docs/operations.md
    # "Traces"): browser origins allowed to call /api (comma-separated `scheme://host[:port]`;
    # empty: no CORS at all), whether they may send cookies, how long a preflight is cached
    cors_origins: str = ""
    cors_allow_credentials: bool = False
    cors_max_age_seconds: int = Field(default=600, ge=0, le=86_400)
    # requests per API token, per user and per company (`limits` notation: N/second|minute|hour)
    api_rate_limits: bool = True
    api_rate_limit_per_token: str = "15000/minute"
    api_rate_limit_per_user: str = "30000/minute"
    api_rate_limit_per_company: str = "60000/minute"
    # OpenTelemetry traces, exported with OTLP over HTTP; unset: tracing is off
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = Field(default="crm", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.crm_env == "production":
            if len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
                raise SettingsError(
                    f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_BYTES} bytes in production"
                )
            if not self.mongodb_url:
                raise SettingsError(
                    "MONGODB_URL must be set in production (the embedded database is in memory)"
                )
        elif not self.secret_key:
            self.secret_key = secrets.token_urlsafe(48)
            log.warning("SECRET_KEY is not set: generated one; tokens end with the process")
        if len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise SettingsError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes long")
        if self.mongodb_socket_timeout_ms <= self.query_time_limit_ms:
            raise SettingsError(
                "MONGODB_SOCKET_TIMEOUT_MS must exceed QUERY_TIME_LIMIT_MS, or a slow query "
                "would be cut by the driver before the server's own limit answers"
            )
        if self.sms_redelivery_seconds <= self.longest_send_seconds:
            raise SettingsError(
                f"SMS_REDELIVERY_SECONDS must exceed the longest send of one message "
                f"({self.longest_send_seconds:.0f} s with these timeouts and retries), or a slow "
                "send would be taken over by a second worker"
            )
        if self.crm_superuser_email:
            password = self.crm_superuser_password or ""
            if "@" not in self.crm_superuser_email:
                raise SettingsError("CRM_SUPERUSER_EMAIL must be an email address")
            if password_problem(password) is not None:
                raise SettingsError(
                    f"CRM_SUPERUSER_PASSWORD must be set, {PASSWORD_MIN_CHARS} characters to "
                    f"{PASSWORD_MAX_BYTES} bytes, when CRM_SUPERUSER_EMAIL is"
                )
        self._check_edges()
        if self.sms_provider == "smsru" and not self.smsru_api_id:
            raise SettingsError("SMSRU_API_ID is required with SMS_PROVIDER=smsru")
        if self.sms_provider == "smsru" and (problem := http_url_problem(self.smsru_base_url)):
            raise SettingsError(f"SMSRU_BASE_URL {problem}")
        return self

    def _check_edges(self) -> None:
        """CORS origins and API limits (issue 28)."""
        from crm_core.platform.apilimits import parse_limit

        for origin in self.cors_origin_list:
            if origin == "*":
                if self.cors_allow_credentials:
                    raise SettingsError(
                        "CORS_ORIGINS=* cannot go with CORS_ALLOW_CREDENTIALS=true: list the "
                        "origins that may send credentials"
                    )
            elif problem := origin_problem(origin):
                raise SettingsError(f"CORS_ORIGINS: {origin!r} {problem}")
        for name in ("token", "user", "company"):
            text = getattr(self, f"api_rate_limit_per_{name}")
            try:
                parse_limit(text)
            except ValueError:
                raise SettingsError(
                    f"API_RATE_LIMIT_PER_{name.upper()} must read like 3000/minute, not {text!r}"
                ) from None
        if self.otel_exporter_otlp_endpoint and (
            problem := http_url_problem(self.otel_exporter_otlp_endpoint)
        ):
            raise SettingsError(f"OTEL_EXPORTER_OTLP_ENDPOINT {problem}")

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def longest_send_seconds(self) -> float:
        """Every attempt timing out, with the exponential backoff between them."""
        attempts = self.sms_max_attempts
        backoff = sum(self.sms_retry_base_seconds * 2**i for i in range(attempts - 1))
        return float(attempts * self.sms_send_timeout_seconds + backoff)

    @property
    def embedded_database(self) -> bool:
        return not self.mongodb_url

    @property
    def api_receives_tasks(self) -> bool:
        """With Redis: does the API process run queued tasks (it must with the embedded
        database, which no other process can reach)?"""
        if self.api_runs_tasks is not None:
            return self.api_runs_tasks
        return self.embedded_database


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and `.env`), raising SettingsError on bad config."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        inner = first.get("ctx", {}).get("error")
        if isinstance(inner, SettingsError):
            raise inner from None
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"{field.upper()}: {first['msg']}") from None
