"""Logging set-up: the request id of the running request, access and error log files, the
JSON line format.

- `REQUEST_ID` holds the id of the request being served (the aiohttp task of that request);
  `RequestIdFilter` stamps it on every record as `request_id` ("-" outside a request), so every
  line a request causes carries it, whichever logger wrote it.
- Access lines (`crm.access`) go to `ACCESS_LOG_FILE` (or `LOG_DIR/access.log`) when set, and
  then only there; warnings and errors of every other logger go to `ERROR_LOG_FILE` (or
  `LOG_DIR/error.log`). Stdout keeps everything else (journald, docker logs).
- Files are `WatchedFileHandler`s: after logrotate moves a file away, the next line reopens it
  (no copytruncate, no signal needed; deploy/logrotate/crm is the shipped config).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import random
import re
import sys
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

from crm_core.platform.tracing import current_trace_id

ACCESS_LOGGER = "crm.access"
REQUEST_ID: ContextVar[str] = ContextVar("crm_request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"
# the client address of the request being served (aiohttp's `request.remote`, the one the login
# throttle counts): the audit trail's `address` (docs/history.md)
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("crm_client_address", default=None)
# what we accept from a client (or a proxy in front) as its request id; anything else is replaced
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(trace_id)s %(message)s"
# with traces on (OTEL_EXPORTER_OTLP_ENDPOINT, crm_core/platform/tracing.py): the trace id
# beside the request id
TRACED_TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(request_id)s trace=%(trace_id)s] %(message)s"
)


def request_id_from(header: str | None) -> str:
    """The client's `X-Request-ID` when it is a sane token, otherwise a new one: 128 random
    bits as 32 hex digits. An id to find lines by, not a secret, so from `random` (reseeded in
    each forked worker) rather than the system's randomness: no system call per request."""
    if header and _CLIENT_REQUEST_ID.fullmatch(header):
        return header
    return f"{random.getrandbits(128):032x}"


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the running request's id, "-" outside a request) and
    `record.trace_id` (the running trace's id, "-" outside a trace or with traces off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "trace_id"):
            record.trace_id = current_trace_id()
        return True


class _NotAccess(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(ACCESS_LOGGER)


AccessLine = tuple[float, str, str, int, float, str, str, str, str]


class AccessLog:
    """One line per request, cheap on the event loop.

    With `crm serve`'s logging (`configure_logging`) the request only puts a tuple on a queue:
    a thread makes the record, formats and writes it. Without it (tests), the record is handled
    at once. Fields go on the record too, so the JSON format has them as keys.
    """

    MESSAGE = "%s %s %s %.1fms tenant=%s user=%s"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.sink: queue.SimpleQueue[AccessLine | None] | None = None

    def write(
        self,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        tenant: str,
        user: str,
        request_id: str,
        trace_id: str = "-",
    ) -> None:
        sink = self.sink
        if sink is not None:
            sink.put(
                (time.time(), method, path, status, duration_ms, tenant, user, request_id, trace_id)
            )
            return
        logger = self.logger
        if logger.disabled or not logger.isEnabledFor(logging.INFO):
            return
        line = (time.time(), method, path, status, duration_ms, tenant, user, request_id, trace_id)
        logger.handle(self.record(line))

    def record(self, line: AccessLine) -> logging.LogRecord:
        created, method, path, status, duration_ms, tenant, user, request_id, trace_id = line
        record = self.logger.makeRecord(
            self.logger.name,
            logging.INFO,
            "",
            0,
            self.MESSAGE,
            (method, path, status, duration_ms, tenant, user),
            None,
            extra={
                "request_id": request_id,
                "trace_id": trace_id,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 1),
                "tenant": tenant,
                "user": user,
            },
        )
        record.created = created
        record.msecs = (created - int(created)) * 1000
        return record


ACCESS = AccessLog()


class _AccessWriter(threading.Thread):
    """Turns queued access lines into records and hands them to the access handlers."""

    def __init__(self, access: AccessLog, handlers: list[logging.Handler]) -> None:
        super().__init__(name="crm-access-log", daemon=True)
        self.access = access
        self.handlers = handlers
        self.lines: queue.SimpleQueue[AccessLine | None] = queue.SimpleQueue()

    def run(self) -> None:
        while (line := self.lines.get()) is not None:
            record = self.access.record(line)
            for handler in self.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)

    def stop(self) -> None:
        """Write what is queued, then end."""
        self.lines.put(None)
        self.join(timeout=10)


def make_formatter(log_format: str, traced: bool = False) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    return logging.Formatter(TRACED_TEXT_FORMAT if traced else TEXT_FORMAT)


class LogSettings(Protocol):
    """The settings logging reads (crm_core/platform/settings.py `Settings`; docs/operations.md
    lists them)."""

    @property
    def log_level(self) -> str: ...
    @property
    def log_file(self) -> str | None: ...
    @property
    def log_format(self) -> str: ...
    @property
    def log_dir(self) -> str | None: ...
    @property
    def access_log_file(self) -> str | None: ...
    @property
    def error_log_file(self) -> str | None: ...
    @property
    def access_log(self) -> bool: ...
    @property
    def otel_exporter_otlp_endpoint(self) -> str | None: ...


def log_paths(settings: LogSettings) -> tuple[Path | None, Path | None]:
    """(access log file, error log file): explicit settings win over `LOG_DIR`."""
    directory = Path(settings.log_dir) if settings.log_dir else None
    access = settings.access_log_file or (directory / "access.log" if directory else None)
    error = settings.error_log_file or (directory / "error.log" if directory else None)
    return (Path(access) if access else None, Path(error) if error else None)


def _file_handler(path: Path, formatter: logging.Formatter) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(settings: LogSettings) -> None:
    """Install the handlers for `crm` commands (tests leave logging to pytest)."""
    formatter = make_formatter(settings.log_format, bool(settings.otel_exporter_otlp_endpoint))
    level = settings.log_level.upper()
    access_path, error_path = log_paths(settings)

    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(formatter)
    stdout.addFilter(RequestIdFilter())
    handlers: list[logging.Handler] = [stdout]
    if settings.log_file:
        handlers.append(_file_handler(Path(settings.log_file), formatter))
    if error_path:
        error = _file_handler(error_path, formatter)
        error.setLevel(logging.WARNING)
        error.addFilter(_NotAccess())
        handlers.append(error)
    logging.basicConfig(level=level, handlers=handlers, force=True)

    # access lines: only in their file when there is one (stdout and the error file stay
    # readable), else stdout (and LOG_FILE); written by a thread fed through a queue
    targets: list[logging.Handler] = []
    if access_path:
        targets.append(_file_handler(access_path, formatter))
    else:
        targets.append(stdout)
        if settings.log_file:
            targets.append(handlers[1])
    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    access.disabled = not settings.access_log
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None
    ACCESS.sink = None
    if settings.access_log and access.isEnabledFor(logging.INFO):
        _writer = _AccessWriter(ACCESS, targets)
        _writer.start()
        ACCESS.sink = _writer.lines


_writer: _AccessWriter | None = None


@atexit.register
def stop_access_log() -> None:
    """Write what is still queued (at exit; tests call it to flush)."""
    global _writer
    ACCESS.sink = None
    if _writer is not None:
        _writer.stop()
        _writer = None


class Outages:
    """Which backing services (the database, the task broker) this process finds unreachable,
    logged once per outage: one WARNING when a service is first found down (with the driver's
    reason, no traceback) and one INFO when it answers again (with how long it was gone).
    Requests that fail meanwhile are answered 503 and add no line of their own beyond the
    access line (docs/operations.md, "Faults: the database").

    Thread-safe: the MongoDB driver reports from its monitor and pool threads."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("crm.outages")
        self._down: dict[str, float] = {}  # service -> monotonic time it was found down
        self._lock = threading.Lock()

    def down(self, service: str, reason: object) -> bool:
        """Mark `service` unreachable; True (and the WARNING) when it was not already."""
        with self._lock:
            if service in self._down:
                return False
            self._down[service] = time.monotonic()
        self.logger.warning(
            "%s unreachable: %s; requests that need it answer 503 until it is back",
            service,
            _one_line(reason),
        )
        return True

    def up(self, service: str) -> bool:
        """Mark `service` reachable; True (and the INFO) when it was down."""
        if service not in self._down:  # the hot path: no lock while all is well
            return False
        with self._lock:
            since = self._down.pop(service, None)
        if since is None:
            return False
        self.logger.info("%s reachable again after %.1f s", service, time.monotonic() - since)
        return True

    def is_down(self, service: str) -> bool:
        return service in self._down

    def down_services(self) -> list[str]:
        with self._lock:
            return sorted(self._down)


def _one_line(reason: object) -> str:
    text = str(reason).strip().splitlines()
    line = text[0] if text else type(reason).__name__
    return line if len(line) <= 300 else line[:297] + "..."
