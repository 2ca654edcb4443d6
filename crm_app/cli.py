"""The `crm` command: `serve`, `worker`, `worker-health`, `migrate`, `create-superuser`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from typing import Any

from crm_app import snapshots
from crm_core.platform.logs import configure_logging
from crm_core.platform.settings import Settings, SettingsError, load_settings

MAX_REQUEST_LINE = 1024 * 1024


def serve(settings: Settings, host: str | None, port: int | None) -> None:
    from aiohttp import web

    from handlers.app import create_app
    from handlers.middlewares import ServerLog

    web.run_app(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        logger=ServerLog(),  # malformed requests: one client-error line, no traceback
        access_log=None,  # our middleware writes one richer line per request
        # long filter URLs: the request line may be up to 1 MiB (aiohttp's default is 8 KiB,
        # and its parser answers longer lines with a plain-text 400 before our middleware)
        max_line_size=MAX_REQUEST_LINE,
        max_field_size=64 * 1024,
        # in-flight requests get this long after SIGTERM (systemd's TimeoutStopSec and
        # compose's stop_grace_period are set above it)
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )


async def create_superuser(settings: Settings, email: str, password: str, full_name: str) -> str:
    from crm_core.services import build_services
    from models.accounts import SYSTEM_DOCUMENTS
    from models.admin import ADMIN_DOCUMENTS

    services = build_services(settings)
    storage = services.storage
    await storage.start(SYSTEM_DOCUMENTS + ADMIN_DOCUMENTS)
    try:
        user = await services.admin.create_superuser(email, password, full_name)
        return str(user.id)
    finally:
        storage.close()


WORKER_NEEDS_DATABASE = (
    "crm worker needs MONGODB_URL: the embedded database lives inside one process, so a "
    "separate worker could not see it. With the embedded database, `crm serve` runs the "
    "tasks itself."
)
WORKER_NEEDS_REDIS = "crm worker needs REDIS_URL: without Redis, `crm serve` runs the tasks."


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (for the running loop)."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_worker(settings: Settings, stop: asyncio.Event, storage: Any = None) -> None:
    """Receive and run tasks until `stop` is set (SIGTERM/SIGINT in `crm worker`); running
    tasks finish first. `storage`: an already started one (tests share their embedded
    database this way), else the worker opens and closes its own."""
    from crm_core.platform.storage import Storage
    from crm_core.services import build_services
    from models.accounts import SYSTEM_DOCUMENTS
    from tasks.broker import receiving, start_broker, stop_broker

    own_storage = storage is None
    if storage is None:
        storage = Storage(settings)
        await storage.start(SYSTEM_DOCUMENTS)
    broker = await start_broker(build_services(settings, storage))
    exporter = None
    if settings.metrics_port is not None:  # this worker's counters (SMS states...)
        from crm_core.platform.metrics import serve_metrics

        exporter = serve_metrics(settings.metrics_host, settings.metrics_port)
    try:
        async with receiving(broker, settings):
            logging.getLogger(__name__).info("worker started")
            await stop.wait()
    finally:
        if exporter is not None:
            exporter.shutdown()
            exporter.server_close()
        await stop_broker(broker)
        if own_storage:
            storage.close()


def worker(settings: Settings) -> int:
    if settings.embedded_database:
        print(f"crm: {WORKER_NEEDS_DATABASE}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(f"crm: {WORKER_NEEDS_REDIS}", file=sys.stderr)
        return 2

    async def _main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_worker(settings, stop)

    asyncio.run(_main())
    return 0


def migrate(settings: Settings) -> int:
    from crm_core.platform.storage import Storage
    from crm_core.services import TENANT_MIGRATIONS
    from crm_core.tables.builtin import migrate_all
    from models.accounts import SYSTEM_DOCUMENTS

    if settings.embedded_database:
        print(
            "crm: migrate needs MONGODB_URL (the embedded database starts empty and current)",
            file=sys.stderr,
        )
        return 2

    drift: list[str] = []

    async def _main() -> int:
        storage = Storage(settings)
        await storage.start(SYSTEM_DOCUMENTS)
        try:
            return await migrate_all(storage, drift, TENANT_MIGRATIONS)
        finally:
            storage.close()

    print(f"migrated {asyncio.run(_main())} tenants")
    for line in drift:  # docs/operations.md "Schema changes"
        print(f"index drift: {line}")
    return 1 if drift else 0


def worker_health(settings: Settings) -> int:
    """Exit 0 when this host's worker beat recently (its WORKER_HEARTBEAT_FILE is fresh)."""
    import time

    if not settings.worker_heartbeat_file:
        print("crm: worker-health needs WORKER_HEARTBEAT_FILE", file=sys.stderr)
        return 2
    limit = 3 * settings.worker_heartbeat_seconds
    try:
        age = time.time() - os.stat(settings.worker_heartbeat_file).st_mtime
    except OSError:
        print("crm: no worker heartbeat yet", file=sys.stderr)
        return 1
    if age > limit:
        print(f"crm: last worker heartbeat {age:.0f} s ago (limit {limit:.0f} s)", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "serve": (
        "start the HTTP API",
        "Serve the HTTP API (docs at /docs, OpenAPI at /api/openapi.json). Settings come from "
        "the environment and .env (README, Configuration). At start it adds the built-in tables "
        "to companies created before them. Without MONGODB_URL the data lives in memory and "
        "background tasks run in this process.",
    ),
    "worker": (
        "run background tasks (needs MONGODB_URL and REDIS_URL)",
        "Run queued background tasks (SMS sending) until SIGTERM or SIGINT; run as many as "
        "you like. Needs MONGODB_URL and REDIS_URL: with the embedded database `crm serve` "
        "runs the tasks itself and this command exits with status 2.",
    ),
    "migrate": (
        "add built-in tables to companies created before them",
        "Add the built-in tables (leads, legal entities, individuals) and their predefined "
        "columns to every company that lacks them; running it again changes nothing. Needs "
        "MONGODB_URL.",
    ),
    "worker-health": (
        "exit 0 if the worker's heartbeat file is fresh (health checks)",
        "Exit 0 when WORKER_HEARTBEAT_FILE was touched within three WORKER_HEARTBEAT_SECONDS "
        "(a running `crm worker` touches it), 1 otherwise: the container health check.",
    ),
    "create-superuser": (
        "create a platform superadmin for /admin",
        "Create a platform superadmin with its own company. Needs MONGODB_URL (on the embedded "
        "database set CRM_SUPERUSER_EMAIL and CRM_SUPERUSER_PASSWORD and `crm serve` creates "
        "it at start). The password comes from --password, else CRM_SUPERUSER_PASSWORD, else "
        "a prompt.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm",
        description="CRM backend: a multi-tenant CRM API and its background workers.",
        epilog="`crm COMMAND --help` describes each command. Exit status 2: bad usage or "
        "configuration.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        summary, description = COMMANDS[name]
        return commands.add_parser(
            name,
            help=summary,
            description=description,
        )

    serve_cmd = command("serve")
    serve_cmd.add_argument(
        "--host", help="address to listen on (default: HOST, else 127.0.0.1)", default=None
    )
    serve_cmd.add_argument(
        "--port",
        type=int,
        help="port to listen on, 1-65535 (default: PORT, else 8005)",
        default=None,
    )
    command("worker")
    command("worker-health")
    command("migrate")
    snapshots.add_commands(commands)  # crm dump, crm restore (crm_app/snapshots.py)
    su = command("create-superuser")
    su.add_argument("--email", required=True, help="the superadmin's email")
    su.add_argument(
        "--full-name", default="Superadmin", help="the superadmin's name (default: %(default)s)"
    )
    su.add_argument(
        "--password",
        help="8 characters to 72 bytes; read from CRM_SUPERUSER_PASSWORD or asked for if absent",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from crm_core.platform.storage import is_database_unreachable

    try:
        return _main(argv)
    except Exception as exc:
        if not is_database_unreachable(exc):
            raise
        # at start-up (indexes, migrations): one line, no traceback; the supervisor retries
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(", Timeout:")[0]
        print(f"crm: the database is not reachable: {reason}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve" and args.port is not None and not 1 <= args.port <= 65535:
        print(f"crm: --port must be 1 to 65535, not {args.port}", file=sys.stderr)
        return 2

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"crm: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker-health":  # a healthcheck probe: no log files, no threads
        return worker_health(settings)
    configure_logging(settings)

    if args.command in ("dump", "restore"):
        return snapshots.run(settings, args)
    if args.command == "serve":
        from crm_core.platform.snapshots import SnapshotError

        try:
            serve(settings, args.host, args.port)
        except SnapshotError as exc:  # EMBEDDED_DATA_DIR: damaged, in use, not writable
            print(f"crm: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # address in use, unknown host, no permission for the port
            where = f"{args.host or settings.host}:{args.port or settings.port}"
            print(f"crm: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "worker":
        return worker(settings)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "create-superuser":
        if settings.embedded_database:
            print(
                "crm: create-superuser needs MONGODB_URL: the embedded database lives only "
                "inside a running server; set CRM_SUPERUSER_EMAIL and CRM_SUPERUSER_PASSWORD "
                "and `crm serve` creates the superadmin at start",
                file=sys.stderr,
            )
            return 2
        password = args.password or os.environ.get("CRM_SUPERUSER_PASSWORD") or getpass.getpass()
        from crm_core.platform.errors import CrmError

        try:
            user_id = asyncio.run(create_superuser(settings, args.email, password, args.full_name))
        except CrmError as exc:
            print(f"crm: {exc.message}", file=sys.stderr)
            return 1
        print(f"superuser created: {user_id}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
