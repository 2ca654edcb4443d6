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

import logging
import logging.handlers
import re
import sys
import uuid
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_core.settings import Settings

ACCESS_LOGGER = "crm.access"
REQUEST_ID: ContextVar[str] = ContextVar("crm_request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"
# what we accept from a client (or a proxy in front) as its request id; anything else is replaced
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"


def request_id_from(header: str | None) -> str:
    """The client's `X-Request-ID` when it is a sane token, otherwise a new one."""
    if header and _CLIENT_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the running request's id, "-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class _NotAccess(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(ACCESS_LOGGER)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    return logging.Formatter(TEXT_FORMAT)


def log_paths(settings: Settings) -> tuple[Path | None, Path | None]:
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


def configure_logging(settings: Settings) -> None:
    """Install the handlers for `crm` commands (tests leave logging to pytest)."""
    formatter = make_formatter(settings.log_format)
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

    access = logging.getLogger(ACCESS_LOGGER)
    for old in list(access.handlers):
        access.removeHandler(old)
        old.close()
    if access_path:
        # access lines only in their file: stdout and the error file stay readable
        access.addHandler(_file_handler(access_path, formatter))
        access.propagate = False
    else:
        access.propagate = True
    access.disabled = not settings.access_log
