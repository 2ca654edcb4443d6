"""`crm dump` and `crm restore`: the embedded engine's data to and from MongoDB's dump layout
(crm_core/platform/snapshots.py; docs/operations.md "From the embedded database to MongoDB")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from crm_core.platform.settings import Settings

DUMP_HELP = (
    "write the data as a mongodump directory",
    "Write every database of the service as a mongodump directory (<db>/<collection>.bson and "
    ".metadata.json) that `mongorestore --dir DIR` loads into MongoDB and `crm restore` into the "
    "embedded database. From MongoDB with MONGODB_URL; else from the last snapshot in "
    "EMBEDDED_DATA_DIR (stop the server first to include its latest changes).",
)
RESTORE_HELP = (
    "load a mongodump directory into the embedded database",
    "Make a dump directory (from `crm dump` or mongodump) the data of the embedded database in "
    "EMBEDDED_DATA_DIR; the next `crm serve` loads it. Refused while a server uses the "
    "directory, and over existing data unless --replace.",
)


def add_commands(commands: Any) -> None:
    """Add `dump` and `restore` to the `crm` command's subparsers."""
    dump = commands.add_parser("dump", help=DUMP_HELP[0], description=DUMP_HELP[1])
    dump.add_argument("--out", required=True, type=Path, help="a new or empty directory")
    restore = commands.add_parser("restore", help=RESTORE_HELP[0], description=RESTORE_HELP[1])
    restore.add_argument(
        "--from", dest="source", required=True, type=Path, help="the dump directory"
    )
    restore.add_argument(
        "--replace", action="store_true", help="replace the data EMBEDDED_DATA_DIR holds"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run `crm dump` or `crm restore`; a refused one prints one line and exits 1."""
    from crm_core.platform.snapshots import SnapshotError, dump_command, restore_command

    try:
        if args.command == "dump":
            counts = asyncio.run(dump_command(settings, args.out))
            where = args.out
        else:
            counts = restore_command(settings, args.source, args.replace)
            where = Path(settings.embedded_data_dir or "")
    except SnapshotError as exc:
        print(f"crm: {exc}", file=sys.stderr)
        return 1
    documents = sum(sum(c.values()) for c in counts.values())
    print(f"{args.command}: {len(counts)} databases, {documents} documents ({where})")
    return 0
