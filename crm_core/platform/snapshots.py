"""The embedded database on disk: snapshots in MongoDB's own dump layout, `crm dump`/`restore`.

A dump directory is what `mongodump` writes and `mongorestore --dir` reads: one directory per
database, in it `<collection>.bson` (the documents, BSON one after another) and
`<collection>.metadata.json` (the index definitions, MongoDB Extended JSON), plus our manifest
`crm-dump.json` at the top (its format version and each collection's document count, so a file
cut at a document boundary is caught too; mongorestore skips it with a "don't know what to do
with file" line).

With `EMBEDDED_DATA_DIR` the embedded engine keeps its data there (docs/operations.md,
"Embedded data on disk"):

    DIR/crm.lock            the holder's pid: one process per directory
    DIR/CURRENT             the name of the complete snapshot to load ("snapshot-000042")
    DIR/snapshot-000042/    a dump directory

A snapshot is taken without stalling requests: on the engine's one thread (between two calls,
so none is half done) each collection's mapping of documents is taken as it is and marked
shared (microseconds a collection; crm_core/platform/storage/embedded.py: a stored document is
never changed, an update stores a changed copy, and the first change of a shared mapping
changes a copy of it). The documents are then encoded on the engine's thread a batch of
`ENCODE_BATCH` at a time (about 1 ms each, queued behind the calls waiting there, so a call
waits at most one batch) and written by another thread beside the old snapshot
(`snapshot-N.tmp`, fsynced, renamed); then `CURRENT` is pointed at it (written aside, fsynced,
renamed) and the older ones are removed. A kill at any moment leaves `CURRENT` naming a
complete snapshot; leftovers are removed at the next start. A snapshot is written only when
the data changed (the engine counts its changes, not the calls asked of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.son import SON

from crm_core.platform.settings import Settings

if TYPE_CHECKING:
    from crm_core.platform.storage.embedded import StoredCopy

log = logging.getLogger(__name__)

FORMAT = 1  # the manifest's "format": bumped when the layout or the stored shapes change
MANIFEST = "crm-dump.json"
CURRENT = "CURRENT"
LOCK = "crm.lock"
SNAPSHOT_PREFIX = "snapshot-"
SKIPPED_DATABASES = ("admin", "config", "local")
# the query purpose of `crm dump`'s whole-collection reads (the query audit lets them scan)
WHOLE_DATABASE = "dump.whole_database"
INSERT_BATCH = 1000
# the snapshot writer encodes this many documents at a time on the engine's thread (about
# 1 ms of CPU; the engine's calls queued meanwhile wait at most that; bench_snapshot.py)
ENCODE_BATCH = 256
# tests only: the snapshot writer stops in the middle of its first .bson file, writes its pid
# (the server's, the writer is one of its threads) to this path and waits to be killed
# (tests/platform/test_snapshots.py)
PAUSE_ENV = "CRM_SNAPSHOT_TEST_PAUSE_FILE"

CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=datetime.UTC)
_METADATA_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL)
_INDEX_OPTIONS = (
    "unique",
    "sparse",
    "partialFilterExpression",
    "expireAfterSeconds",
    "collation",
    "hidden",
)


class SnapshotError(Exception):
    """A dump or data directory cannot be used; the message is one line naming the file."""


# ---- the layout -------------------------------------------------------------------------------


@dataclass
class CollectionDump:
    name: str
    documents: list[dict[str, Any]]
    indexes: list[dict[str, Any]]  # mongodump's entries: v, key, name and the options


@dataclass
class Dump:
    """A dump directory read whole and checked: every file parsed, every count matched."""

    path: Path
    databases: dict[str, list[CollectionDump]] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            db: {c.name: len(c.documents) for c in collections}
            for db, collections in self.databases.items()
        }


def index_entries(index_information: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """pymongo's `index_information()` (both clients answer it) as mongodump's metadata
    entries: `{"v": 2, "key": {...}, "name": ..., "unique": ...}`, `_id_` first."""
    entries = []
    for name, info in index_information.items():
        entry: dict[str, Any] = {"v": int(info.get("v", 2)), "key": SON(info["key"]), "name": name}
        entry.update({k: info[k] for k in _INDEX_OPTIONS if k in info})
        entries.append(entry)
    entries.sort(key=lambda e: e["name"] != "_id_")
    return entries


def metadata_json(collection: str, indexes: list[dict[str, Any]]) -> str:
    """A `<collection>.metadata.json` as mongodump writes it (canonical Extended JSON)."""
    metadata = {
        "options": {},
        "indexes": indexes,
        "uuid": uuid.uuid4().hex,  # mongorestore uses it only with --preserveUUID
        "collectionName": collection,
        "type": "collection",
    }
    return json_util.dumps(metadata, json_options=_METADATA_JSON)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_collection(
    db_dir: Path,
    name: str,
    documents: Iterable[dict[str, Any]],
    indexes: list[dict[str, Any]],
    pause: Callable[[], None] | None = None,
) -> int:
    """Write one collection's two files (fsynced); answers the number of documents."""
    count = 0
    with open(db_dir / f"{name}.bson", "wb") as f:
        for document in documents:
            f.write(bson.encode(document, codec_options=CODEC))
            count += 1
            if pause is not None and count == 1:
                f.flush()
                pause()
        f.flush()
        os.fsync(f.fileno())
    _write_file(db_dir / f"{name}.metadata.json", metadata_json(name, indexes).encode())
    return count


def write_manifest(out: Path, counts: dict[str, dict[str, int]]) -> None:
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "databases": counts,
    }
    _write_file(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def write_dump(out: Path, dump: Dump) -> None:
    """Write an already read dump into `out` (created; must be empty or absent)."""
    out.mkdir(parents=True, exist_ok=True)
    for db, collections in dump.databases.items():
        (out / db).mkdir(exist_ok=True)
        for c in collections:
            write_collection(out / db, c.name, c.documents, c.indexes)
        _fsync_dir(out / db)
    write_manifest(out, dump.counts())
    _fsync_dir(out)


def read_bson_file(path: Path) -> list[dict[str, Any]]:
    """Every document of a `.bson` file; a cut or damaged one raises SnapshotError naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror or exc}") from None
    documents: list[dict[str, Any]] = []
    position = 0
    while position < len(data):
        if len(data) - position < 5:
            raise SnapshotError(f"{path}: truncated after {len(documents)} documents")
        size = int.from_bytes(data[position : position + 4], "little")
        if size < 5:
            raise SnapshotError(f"{path}: corrupted at byte {position} (document size {size})")
        if position + size > len(data):
            raise SnapshotError(f"{path}: truncated after {len(documents)} documents")
        try:
            documents.append(bson.decode(data[position : position + size], codec_options=CODEC))
        except (InvalidBSON, ValueError, OverflowError) as exc:
            raise SnapshotError(f"{path}: corrupted at byte {position}: {exc}") from None
        position += size
    return documents


def _read_metadata(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []  # mongodump without indexes; only `_id_` will exist
    try:
        metadata = json_util.loads(path.read_text("utf-8"))
        indexes = metadata.get("indexes", [])
        if not isinstance(indexes, list) or not all(
            isinstance(i, dict) and isinstance(i.get("key"), dict) and i.get("name")
            for i in indexes
        ):
            raise ValueError("indexes must be a list of {key, name, ...}")
        return list(indexes)
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{path}: not a metadata file: {exc}") from None


def _read_manifest(path: Path, required: bool) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.exists():
        if required:
            raise SnapshotError(f"{file}: missing (the snapshot is incomplete)")
        return None
    try:
        manifest = json.loads(file.read_text("utf-8"))
        version = manifest["format"]
        counts = manifest["databases"]
        if not isinstance(version, int) or not isinstance(counts, dict):
            raise ValueError("format must be a number and databases an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{file}: corrupted: {exc}") from None
    if version != FORMAT:
        # no older format exists yet to migrate from; the data inside is migrated at start
        # (the built-in tables, crm_core/tables/builtin.py `migrate_all`)
        which = "a newer" if version > FORMAT else "an older, unsupported"
        raise SnapshotError(
            f"{file}: format {version} was written by {which} crm; this one reads format "
            f"{FORMAT} (restore it with the crm that wrote it, or go through MongoDB: "
            "docs/operations.md)"
        )
    return dict(manifest)


def read_dump(path: Path, manifest_required: bool = True) -> Dump:
    """Read and check a whole dump directory before anything is loaded from it."""
    if not path.is_dir():
        raise SnapshotError(f"{path}: not a directory")
    manifest = _read_manifest(path, manifest_required)
    dump = Dump(path)
    for db_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        if db_dir.name in SKIPPED_DATABASES:
            continue
        collections = []
        for file in sorted(db_dir.glob("*.bson")):
            name = file.name[: -len(".bson")]
            documents = read_bson_file(file)
            indexes = _read_metadata(db_dir / f"{name}.metadata.json")
            collections.append(CollectionDump(name, documents, indexes))
        dump.databases[db_dir.name] = collections
    if manifest is not None:
        _check_counts(path, manifest["databases"], dump.counts())
    return dump


def _check_counts(path: Path, expected: dict[str, Any], found: dict[str, dict[str, int]]) -> None:
    for db, collections in expected.items():
        for name, count in dict(collections).items():
            file = path / db / f"{name}.bson"
            have = found.get(db, {}).get(name)
            if have is None:
                raise SnapshotError(f"{file}: missing (the manifest lists {count} documents)")
            if have != count:
                raise SnapshotError(
                    f"{file}: truncated: {have} documents, the manifest lists {count}"
                )


# ---- to and from a client (motor or the embedded one: only their public calls) ---------------


def service_databases(names: Iterable[str], prefix: str) -> list[str]:
    """The databases of this service: the system one and each company's."""
    return sorted(n for n in names if n == prefix or n.startswith(f"{prefix}_t_"))


async def dump_client(client: Any, out: Path, prefix: str) -> dict[str, dict[str, int]]:
    """Write every database of the service that `client` holds as a dump directory."""
    from crm_core.platform.storage import query_purpose

    with query_purpose(WHOLE_DATABASE):
        dump = await _read_client(client, out, prefix)
    await asyncio.to_thread(write_dump, out, dump)
    return dump.counts()


async def _read_client(client: Any, out: Path, prefix: str) -> Dump:
    dump = Dump(out)
    for db_name in service_databases(await client.list_database_names(), prefix):
        database = client[db_name]
        dump.databases[db_name] = []
        for name in sorted(await database.list_collection_names()):
            collection = database[name]
            documents = await collection.find({}, sort=[("_id", 1)]).to_list(None)
            indexes = index_entries(await collection.index_information())
            dump.databases[db_name].append(CollectionDump(name, documents, indexes))
    return dump


def _index_options(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in _INDEX_OPTIONS if k in entry}


async def load_dump(client: Any, dump: Dump) -> int:
    """Insert every document of `dump` and build its indexes; answers the documents loaded."""
    loaded = 0
    for db_name, collections in dump.databases.items():
        database = client[db_name]
        for c in collections:
            collection = database[c.name]
            for start in range(0, len(c.documents), INSERT_BATCH):
                await collection.insert_many(c.documents[start : start + INSERT_BATCH])
            # an index the service declared at start (beanie) stays as the code declares it
            existing = set(await collection.index_information()) if c.indexes else set()
            for entry in c.indexes:
                if entry["name"] in existing:
                    continue
                keys = [(str(k), v) for k, v in dict(entry["key"]).items()]
                await collection.create_index(keys, name=entry["name"], **_index_options(entry))
            loaded += len(c.documents)
    return loaded


# ---- the data directory --------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: set[Path] = set()  # the data directories this process holds (a lock with our pid
# that is not in it was left by an earlier process that had the same pid: a container's 1)


class DataDir:
    """`EMBEDDED_DATA_DIR`: its lock, its current snapshot and the writing of the next one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.locked = False

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    def check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SnapshotError(
                f"{self.path}: EMBEDDED_DATA_DIR is not writable: {exc.strerror or exc}"
            ) from None

    def lock(self) -> None:
        """Take the directory for this process; refused while a live process holds it (a lock
        left by a dead one is taken over)."""
        self.check_writable()
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                mine = holder == os.getpid()
                if holder is not None and (self.path in _HELD if mine else _pid_alive(holder)):
                    raise SnapshotError(
                        f"{self.lock_file}: EMBEDDED_DATA_DIR is in use by process {holder} "
                        "(the embedded database lives in one process; stop it or use another "
                        "directory)"
                    ) from None
                log.warning("taking over %s from process %s, which is gone", self.lock_file, holder)
                with contextlib.suppress(FileNotFoundError):
                    self.lock_file.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.locked = True
            _HELD.add(self.path)
            return
        raise SnapshotError(f"{self.lock_file}: could not be taken")

    def _holder(self) -> int | None:
        try:
            return int(self.lock_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def unlock(self) -> None:
        if self.locked and self._holder() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.lock_file.unlink()
        if self.locked:
            _HELD.discard(self.path)
        self.locked = False

    def current(self) -> Path | None:
        """The complete snapshot `CURRENT` names, None for a new directory."""
        pointer = self.path / CURRENT
        try:
            name = pointer.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{pointer}: cannot read: {exc}") from None
        if not name.startswith(SNAPSHOT_PREFIX) or "/" in name or not (self.path / name).is_dir():
            raise SnapshotError(f"{pointer}: names {name!r}, which is not a snapshot here")
        return self.path / name

    def next_name(self) -> str:
        numbers = [
            int(p.name[len(SNAPSHOT_PREFIX) :].split(".")[0])
            for p in self.path.glob(f"{SNAPSHOT_PREFIX}*")
            if p.name[len(SNAPSHOT_PREFIX) :].split(".")[0].isdigit()
        ]
        return f"{SNAPSHOT_PREFIX}{max(numbers, default=0) + 1:06d}"

    def publish(self, name: str) -> None:
        """Point `CURRENT` at the complete snapshot `name`, then drop every other one."""
        aside = self.path / f"{CURRENT}.tmp"
        _write_file(aside, f"{name}\n".encode())
        os.replace(aside, self.path / CURRENT)
        _fsync_dir(self.path)
        self.remove_others(keep=name)

    def remove_others(self, keep: str | None) -> None:
        """Remove snapshots other than `keep` (older ones and leftovers of a killed writer)."""
        for p in self.path.glob(f"{SNAPSHOT_PREFIX}*"):
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"{CURRENT}.tmp").unlink()


# ---- the snapshot writer -------------------------------------------------------------------


def _pause_for_tests() -> None:
    marker = os.environ.get(PAUSE_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()}\n")
        while True:
            time.sleep(3600)


Encoder = Callable[[Callable[[], tuple[bytes, int]]], tuple[bytes, int]]


def _encoded_batches(
    documents: Iterable[dict[str, Any]], encode_on: Encoder | None
) -> Iterator[tuple[bytes, int]]:
    """The documents BSON-encoded, `ENCODE_BATCH` at a time: (bytes, how many documents).
    `encode_on` runs each batch's encoding where it must run (the engine's thread)."""
    remaining = iter(documents)

    def encode() -> tuple[bytes, int]:
        batch = list(itertools.islice(remaining, ENCODE_BATCH))
        return b"".join(bson.encode(d, codec_options=CODEC) for d in batch), len(batch)

    while True:
        data, count = encode_on(encode) if encode_on is not None else encode()
        if not count:
            return
        yield data, count


def _write_batches(
    db_dir: Path,
    name: str,
    batches: Iterable[tuple[bytes, int]],
    indexes: list[dict[str, Any]],
    pause: Callable[[], None] | None,
) -> int:
    """`write_collection` for documents encoded already; answers the number of documents."""
    count = 0
    with open(db_dir / f"{name}.bson", "wb") as f:
        for data, documents in batches:
            f.write(data)
            count += documents
            if pause is not None:
                f.flush()
                pause()
        f.flush()
        os.fsync(f.fileno())
    _write_file(db_dir / f"{name}.metadata.json", metadata_json(name, indexes).encode())
    return count


def write_stored_copy(
    stored: StoredCopy, out: Path, encode_on: Encoder | None = None
) -> dict[str, dict[str, int]]:
    """Write a copy of the engine's databases (`copy_stored`) as the dump directory `out`:
    into `out.tmp`, each file fsynced, then renamed to `out`. The documents are encoded by
    `encode_on` (a batch of `ENCODE_BATCH` at a time), or on this thread; the files are
    written on this one."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir()
    counts: dict[str, dict[str, int]] = {}
    pause = _pause_for_tests if os.environ.get(PAUSE_ENV) else None
    for c in stored.collections:
        if c.database not in counts:
            (tmp / c.database).mkdir()
            counts[c.database] = {}
        indexes = index_entries(c.indexes)
        batches = _encoded_batches(c.documents, encode_on)
        written = _write_batches(tmp / c.database, c.name, batches, indexes, pause)
        counts[c.database][c.name] = written
        pause = None if written else pause
    for db_name in counts:
        _fsync_dir(tmp / db_name)
    write_manifest(tmp, counts)
    _fsync_dir(tmp)
    os.rename(tmp, out)
    _fsync_dir(out.parent)
    return counts


@dataclass
class SnapshotResult:
    name: str
    seconds: float
    engine_held_seconds: float  # how long the engine's thread was taken (taking the stores)
    engine_held_cpu_seconds: float  # its CPU time
    bytes: int


class Snapshots:
    """The embedded engine's snapshots in `EMBEDDED_DATA_DIR`: loaded at start, written every
    `EMBEDDED_SNAPSHOT_SECONDS` when the data changed and at a graceful stop."""

    def __init__(self, storage: Any, data_dir: str | Path, every_seconds: float) -> None:
        self.storage = storage
        self.data_dir = DataDir(data_dir)
        self.every_seconds = every_seconds
        self.saved_writes = -1
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self._stopping = asyncio.Event()

    @property
    def _prefix(self) -> str:
        return str(self.storage.settings.crm_db_prefix)

    async def open(self) -> None:
        """Lock the directory, load its current snapshot (refusing a damaged one) and start the
        periodic writer."""
        from crm_core.platform.storage.embedded import EmbeddedWrites

        self.data_dir.lock()
        try:
            current = self.data_dir.current()
            self.data_dir.remove_others(keep=current.name if current else None)
            if current is not None:
                dump = await asyncio.to_thread(read_dump, current)
                loaded = await load_dump(self.storage.client, dump)
                log.info("embedded database: loaded %d documents from %s", loaded, current)
        except BaseException:
            self.data_dir.unlock()
            raise
        self.saved_writes = EmbeddedWrites.count  # what was loaded is saved already
        log.warning(
            "embedded database: data kept in %s, saved every %g s and at a graceful stop; a "
            "crash loses the changes since the last save",
            self.data_dir.path,
            self.every_seconds,
        )
        self._task = asyncio.create_task(self._periodically(), name="embedded-snapshots")

    async def _periodically(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every_seconds)
                return
            try:
                await self.snapshot()
            except Exception:
                log.exception("embedded database: the snapshot failed; the previous one is kept")

    async def snapshot(self, force: bool = False) -> SnapshotResult | None:
        """Write a new snapshot if the data changed since the last one (or `force`): the
        engine's stores are taken on its thread (shared, not copied: microseconds a
        collection), then their documents are encoded there a batch at a time between the
        engine's calls and written to the files by another thread while requests go on."""
        from crm_core.platform.storage.embedded import (
            EmbeddedWrites,
            copy_stored,
            release_stored,
        )

        async with self._writing:
            if EmbeddedWrites.count == self.saved_writes and not force:
                return None
            started = time.perf_counter()
            name = self.data_dir.next_name()
            prefix = self._prefix
            stored = await copy_stored(
                self.storage.client, lambda names: service_databases(names, prefix)
            )
            try:
                size = await asyncio.to_thread(self._write, stored, name)
            except asyncio.CancelledError:
                raise  # the writer may still read: the stores stay shared (a change copies)
            except Exception:
                await release_stored(self.storage.client, stored)
                raise
            await release_stored(self.storage.client, stored)
            self.saved_writes = stored.changes
            seconds = time.perf_counter() - started
            result = SnapshotResult(
                name, seconds, stored.held_seconds, stored.held_cpu_seconds, size
            )
            log.info(
                "embedded database: snapshot %s written in %.2f s (engine held %.1f ms), %d bytes",
                name,
                result.seconds,
                result.engine_held_seconds * 1000,
                size,
            )
            return result

    def _write(self, stored: StoredCopy, name: str) -> int:
        """Write the snapshot `name` beside the current one, point `CURRENT` at it; answers
        its size in bytes."""
        from crm_core.platform.storage.embedded import run_on_engine

        out = self.data_dir.path / name
        client = self.storage.client
        try:
            write_stored_copy(stored, out, lambda encode: run_on_engine(client, encode))
        except OSError as exc:
            shutil.rmtree(out.with_name(name + ".tmp"), ignore_errors=True)
            raise SnapshotError(f"{out}: cannot be written: {exc.strerror or exc}") from exc
        self.data_dir.publish(name)
        return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())

    async def close(self) -> None:
        """Stop the periodic writer (a snapshot it is writing is finished first) and write the
        last snapshot (a graceful stop)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.snapshot()
        except Exception:
            log.exception("embedded database: the last snapshot failed; the previous one is kept")
        finally:
            self.data_dir.unlock()


async def open_snapshots(storage: Any) -> Snapshots | None:
    """At start, after `storage.start`: with the embedded database and `EMBEDDED_DATA_DIR`,
    the directory's snapshots (loaded); None otherwise (memory only, or MongoDB)."""
    settings: Settings = storage.settings
    if not settings.embedded_database or not settings.embedded_data_dir:
        return None
    snapshots = Snapshots(storage, settings.embedded_data_dir, settings.embedded_snapshot_seconds)
    await snapshots.open()
    return snapshots


# ---- crm dump / crm restore ------------------------------------------------------------------


async def dump_command(settings: Settings, out: Path) -> dict[str, dict[str, int]]:
    """`crm dump --out DIR`: from MongoDB (MONGODB_URL), or the embedded engine's last snapshot
    in EMBEDDED_DATA_DIR (a running server's changes since its last save are not in it)."""
    _check_out(out)
    if settings.embedded_database:
        if not settings.embedded_data_dir:
            raise SnapshotError(
                "crm dump needs MONGODB_URL or EMBEDDED_DATA_DIR (memory-only data lives only "
                "inside its server)"
            )
        current = DataDir(settings.embedded_data_dir).current()
        if current is None:
            raise SnapshotError(f"{settings.embedded_data_dir}: no snapshot yet")
        dump = await asyncio.to_thread(read_dump, current)
        await asyncio.to_thread(write_dump, out, dump)
        return dump.counts()
    from crm_core.platform.storage import Storage

    storage = Storage(settings)
    await storage.start([])
    try:
        return await dump_client(storage.client, out, settings.crm_db_prefix)
    finally:
        storage.close()


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SnapshotError(f"{out}: exists and is not an empty directory")


def restore_command(settings: Settings, source: Path, replace: bool) -> dict[str, dict[str, int]]:
    """`crm restore --from DIR`: make a dump the embedded engine's data in EMBEDDED_DATA_DIR
    (loaded by the next `crm serve`). Refused while a server holds the directory, and over
    existing data unless `replace`."""
    if not settings.embedded_database:
        raise SnapshotError(
            "crm restore loads the embedded database; for MongoDB use `mongorestore --dir DIR`"
        )
    if not settings.embedded_data_dir:
        raise SnapshotError("crm restore needs EMBEDDED_DATA_DIR (where `crm serve` keeps data)")
    dump = read_dump(source, manifest_required=False)
    data_dir = DataDir(settings.embedded_data_dir)
    data_dir.lock()
    try:
        current = data_dir.current()
        if current is not None and not replace:
            raise SnapshotError(
                f"{data_dir.path}: holds data already ({current.name}); pass --replace to "
                "replace it"
            )
        name = data_dir.next_name()
        tmp = data_dir.path / f"{name}.tmp"
        write_dump(tmp, dump)
        os.rename(tmp, data_dir.path / name)
        data_dir.publish(name)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
            raise SnapshotError(f"{data_dir.path}: {exc.strerror}") from None
        raise
    finally:
        data_dir.unlock()
    return dump.counts()


def iter_documents(dump: Dump) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for db, collections in dump.databases.items():
        for c in collections:
            for d in c.documents:
                yield db, c.name, d
