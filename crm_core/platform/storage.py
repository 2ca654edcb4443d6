"""The one place that builds MongoDB clients; nothing else in the project imports motor.

Without `MONGODB_URL` the client is an in-process mongomock-motor database (embedded mode:
data lives in memory and dies with the process); its calls run on one worker thread of their
own, one at a time, so the event loop keeps answering while the stand-in scans. With it, a
motor client with write concern `majority` and journaling. A later move to PyMongo's async
client changes this module only.

The query recorder (`recording()`) sees every query the application issues, on either client:
the embedded client reports each call, the real driver each command through PyMongo's command
monitoring. Tests and benchmarks use it to count round trips and to check query shapes against
the declared indexes (tests/platform/test_query_audit.py, crm_core/platform/indexes.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import itertools
import logging
import re
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import mongomock_motor
from beanie import init_beanie
from bson import ObjectId
from mongomock import aggregate as _mongomock_aggregate
from mongomock import filtering as _mongomock_filtering
from mongomock import helpers as _mongomock_helpers
from mongomock.collection import Collection as MongomockCollection

# the driver names the rest of the project uses: every other module imports them from here
# (ruff's banned-api rule keeps motor and pymongo out of every other module)
from pymongo import ASCENDING as ASCENDING
from pymongo import DESCENDING as DESCENDING
from pymongo import IndexModel as IndexModel
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError as BulkWriteError
from pymongo.errors import DuplicateKeyError as DuplicateKeyError
from pymongo.errors import OperationFailure as OperationFailure

from crm_core.platform.errors import NotFound
from crm_core.platform.logs import Outages
from crm_core.platform.settings import Settings

log = logging.getLogger(__name__)

DATABASE = "database"  # the service's name in logs, /ready and the error details

TENANT_ID_RE = re.compile(r"^[0-9a-f]{24}$")

Database = Any  # motor's AsyncIOMotorDatabase or mongomock-motor's stand-in
Collection = Any


# ---- the query recorder ---------------------------------------------------------------------

_PURPOSE: ContextVar[str | None] = ContextVar("crm_query_purpose", default=None)


@dataclass(frozen=True)
class QueryRecord:
    """One query as the database received it, reduced to its shape.

    `kind`: find, find_one, count, distinct, aggregate, update, delete, replace, insert,
    find_and_modify, bulk_write, command (pings, index builds, drops). `conditions` are
    `(field, operator)` pairs of the filter (operator `$eq` for a plain value; `$or`/`$nor`
    branches are flattened with the operator named `$or`); `sort` the `(field, direction)`
    pairs; `stages` the aggregation stage names; `purpose` the `query_purpose` in force.
    """

    database: str
    collection: str
    kind: str
    conditions: tuple[tuple[str, str], ...] = ()
    sort: tuple[tuple[str, int], ...] = ()
    stages: tuple[str, ...] = ()
    limited: bool = False
    purpose: str | None = None
    indexes: tuple[tuple[tuple[str, int], ...], ...] | None = None
    site: str = ""
    filter: Any = field(default=None, compare=False, hash=False)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.conditions)


class QueryLog:
    """The queries recorded while one `recording()` block was open (`distinct`: each shape
    once, for long runs such as a whole test session)."""

    def __init__(self, distinct: bool = False) -> None:
        self.records: list[QueryRecord] = []
        self.distinct = distinct
        self._seen: set[QueryRecord] = set()

    def add(self, record: QueryRecord) -> None:
        if self.distinct:
            if record in self._seen:
                return
            self._seen.add(record)
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def round_trips(self) -> int:
        """Database round trips (every recorded call is one; a cursor read whole is one)."""
        return len(self.records)

    def count(self, kind: str | None = None, collection: str | None = None) -> int:
        return sum(
            1
            for r in self.records
            if (kind is None or r.kind == kind)
            and (collection is None or r.collection == collection)
        )

    def kinds(self) -> list[str]:
        return [r.kind for r in self.records]


_active_logs: list[QueryLog] = []
_logs_lock = threading.Lock()


@contextmanager
def recording(distinct: bool = False) -> Iterator[QueryLog]:
    """Record every query issued in this process while the block runs (all tasks, every
    storage). Blocks nest: each open log receives each query."""
    log_ = QueryLog(distinct)
    with _logs_lock:
        _active_logs.append(log_)
    try:
        yield log_
    finally:
        with _logs_lock:
            _active_logs.remove(log_)


@contextmanager
def query_purpose(name: str) -> Iterator[None]:
    """Name why the queries issued inside the block are shaped the way they are; the query
    audit's allow-list is keyed by these names (crm_core/platform/indexes.py)."""
    token = _PURPOSE.set(name)
    try:
        yield
    finally:
        _PURPOSE.reset(token)


def _operators(value: Any) -> list[str]:
    if isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
        return list(value)
    return ["$eq"]


def filter_conditions(query: Any) -> tuple[tuple[str, str], ...]:
    """The `(field, operator)` pairs of a filter; `$and` is flattened, the fields inside an
    `$or`/`$nor` are reported with that operator (an index must serve every branch)."""
    out: list[tuple[str, str]] = []
    if not isinstance(query, dict):
        return ()
    for key, value in query.items():
        if key == "$and":
            for part in value:
                out.extend(filter_conditions(part))
        elif key in ("$or", "$nor"):
            for part in value:
                out.extend((f, key) for f, _ in filter_conditions(part))
        elif key.startswith("$"):
            out.append(("", key))  # $expr, $where, $text...: nothing an index bounds
        else:
            out.extend((key, op) for op in _operators(value))
    return tuple(out)


_ROOT = str(Path(__file__).resolve().parents[2]).replace("\\", "/") + "/"
_PROJECT_DIRS = ("crm_core/", "handlers/", "tasks/", "models/", "tests/", "benchmarks/", "scripts/")


def _call_site() -> str:
    """`path:line` of the first project frame above the storage module on this stack (the
    awaiting coroutines are on it), relative to the repository, e.g. `crm_core/tables/shares.py:54`;
    "" when none is."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if path.startswith(_ROOT):
            relative = path[len(_ROOT) :]
            if relative.startswith(_PROJECT_DIRS) and relative != "crm_core/platform/storage.py":
                return f"{relative}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def _sort_pairs(sort: Any) -> tuple[tuple[str, int], ...]:
    if not sort:
        return ()
    if isinstance(sort, str):
        return ((sort, 1),)
    if isinstance(sort, dict):
        return tuple((str(k), int(v)) for k, v in sort.items())
    return tuple((str(k), int(v)) for k, v in sort)


def _record(
    database: str,
    collection: str,
    kind: str,
    query: Any = None,
    sort: Any = None,
    pipeline: list[dict[str, Any]] | None = None,
    limited: bool = False,
    indexes: Callable[[], Any] | None = None,
    site: str = "",
) -> None:
    if not _active_logs:
        return
    stages: tuple[str, ...] = ()
    if pipeline is not None:
        stages = tuple(next(iter(stage), "") for stage in pipeline)
        if pipeline and "$match" in pipeline[0]:
            query = pipeline[0]["$match"]
        if len(pipeline) > 1 and "$sort" in pipeline[1]:
            sort = pipeline[1]["$sort"]
        limited = any("$limit" in stage for stage in pipeline[:3])
    record = QueryRecord(
        database=database,
        collection=collection,
        kind=kind,
        conditions=filter_conditions(query),
        sort=_sort_pairs(sort),
        stages=stages,
        limited=limited,
        purpose=_PURPOSE.get(),
        indexes=indexes() if indexes is not None else None,
        site=site,
        filter=query,
    )
    with _logs_lock:
        for log_ in _active_logs:
            log_.add(record)


_COMMAND_KINDS = {
    "find": "find",
    "aggregate": "aggregate",
    "count": "count",
    "distinct": "distinct",
    "update": "update",
    "delete": "delete",
    "insert": "insert",
    "findAndModify": "find_and_modify",
}


def _record_command(command: dict[str, Any], database: str, name: str) -> None:
    """One command a real driver sent, recorded like the embedded client's calls."""
    if not _active_logs or name in ("getMore", "endSessions", "hello", "isMaster"):
        return
    collection = command.get(name)
    if not isinstance(collection, str):
        _record(database, "", "command")
        return
    kind = _COMMAND_KINDS.get(name, "command")
    if name == "find":
        limit = command.get("limit", 0) or 0
        kind = "find_one" if limit == 1 and command.get("singleBatch") else "find"
        _record(
            database,
            collection,
            kind,
            command.get("filter"),
            command.get("sort"),
            None,
            bool(limit),
        )
    elif name == "aggregate":
        pipeline = command.get("pipeline") or []
        counting = len(pipeline) >= 2 and "$group" in pipeline[-1] and "$match" in pipeline[0]
        if counting and "n" in pipeline[-1]["$group"]:
            limited = any("$limit" in stage for stage in pipeline)  # count_documents(limit=)
            _record(database, collection, "count", pipeline[0]["$match"], limited=limited)
        else:
            _record(database, collection, "aggregate", pipeline=pipeline)
    elif name in ("update", "delete"):
        statements = command.get("updates" if name == "update" else "deletes") or []
        for statement in statements:
            statement_kind = kind
            if name == "update" and not any(str(k).startswith("$") for k in statement.get("u", {})):
                statement_kind = "replace"
            _record(database, collection, statement_kind, statement.get("q"))
    elif name in ("distinct", "count"):
        _record(database, collection, kind, command.get("query"))
    elif name == "findAndModify":
        _record(database, collection, kind, command.get("query"), command.get("sort"))
    else:
        _record(database, collection, kind)


def _command_listener(outages: Outages) -> Any:
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            _record_command(event.command, event.database_name, event.command_name)

        def succeeded(self, event: Any) -> None:
            outages.up(DATABASE)  # a bool check while all is well

        def failed(self, event: Any) -> None:
            pass

    return Listener()


def _heartbeat_listener(outages: Outages) -> Any:
    """The driver's monitor checks the server every `heartbeatFrequencyMS` (and at once while
    a request waits for a server): its verdicts open and close an outage even without traffic."""
    from pymongo import monitoring

    class Listener(monitoring.ServerHeartbeatListener):
        def started(self, event: Any) -> None:
            pass

        def succeeded(self, event: Any) -> None:
            outages.up(DATABASE)

        def failed(self, event: Any) -> None:
            outages.down(DATABASE, event.reply)

    return Listener()


# ---- storage ---------------------------------------------------------------------------------


class Storage:
    """Hands out the system database and each tenant's database (SPEC §1)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        self.outages = Outages()  # the database's, and the broker's as requests find it
        self._executor: ThreadPoolExecutor | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded_database

    async def start(self, document_models: list[type]) -> None:
        if self.embedded:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-db")
            self.client = _embedded_client(self._executor)
            log.warning(
                "MONGODB_URL is not set: using the embedded in-memory database "
                "(data is lost when the process stops)"
            )
        else:
            from motor.motor_asyncio import AsyncIOMotorClient

            self.client = AsyncIOMotorClient(
                self.settings.mongodb_url,
                tz_aware=True,
                w="majority",
                journal=True,
                # an unreachable server fails a request within these (docs/operations.md,
                # "Faults: the database"); the settings say why each is what it is
                serverSelectionTimeoutMS=self.settings.mongodb_server_selection_timeout_ms,
                connectTimeoutMS=self.settings.mongodb_connect_timeout_ms,
                socketTimeoutMS=self.settings.mongodb_socket_timeout_ms,
                appname="crm-backend",
                event_listeners=[
                    _command_listener(self.outages),
                    _heartbeat_listener(self.outages),
                ],
            )
            log.info("using MongoDB at %s", _redact(self.settings.mongodb_url or ""))
        # beanie creates the declared indexes idempotently (unique email, refresh token hash...)
        await init_beanie(database=self.system_db, document_models=document_models)
        if self.embedded:
            _freeze_start_up()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def system_db(self) -> Database:
        return self.client[self.settings.crm_db_prefix]

    def tenant_db_name(self, tenant_id: str) -> str:
        if not TENANT_ID_RE.match(tenant_id):
            raise NotFound("Tenant not found")
        return f"{self.settings.crm_db_prefix}_t_{tenant_id}"

    def tenant_db(self, tenant_id: str) -> Database:
        return self.client[self.tenant_db_name(tenant_id)]

    async def ping(self) -> bool:
        """The database answers a ping (within the server selection timeout). A failure is
        an outage (one WARNING per outage, crm_core/platform/logs.py `Outages`), not a traceback."""
        try:
            await self.system_db.command("ping")
        except Exception as exc:  # any driver failure means "not ready"
            if not is_database_unreachable(exc):
                log.exception("database ping failed")
            self.outages.down(DATABASE, exc)
            return False
        self.outages.up(DATABASE)
        return True

    @property
    def max_time_ms(self) -> int:
        """Server-side time limit passed on every list query (`maxTimeMS`)."""
        return self.settings.query_time_limit_ms


_frozen = False


def _freeze_start_up() -> None:
    """Once per process: what start-up built (modules, the app) leaves the garbage collector's
    view, so its full passes, which stop every thread, no longer walk it. The embedded database
    makes garbage on every read and keeps its rows in this heap, so those passes come often;
    one took 90-190 ms with the start-up objects in view (docs/operations.md)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _is_embedded(collection: Collection) -> bool:
    return isinstance(collection, _EmbeddedCollectionBase)


class _EmbeddedCollectionBase:
    """Marks the embedded client's collections (the real class is built lazily, below)."""


def skip_missing_index_options(collection: Collection, key: str) -> dict[str, Any]:
    """Options of a unique index that ignores rows without the field (empty values never
    collide). A real server gets a partial index (`$exists: true`). mongomock applies partial
    filters to writes but not when the index is built over existing rows, so there the index is
    `sparse`, which skips exactly the same rows (nulls are never stored: null clears a cell)."""
    if _is_embedded(collection):
        return {"sparse": True}
    return {"partialFilterExpression": {key: {"$exists": True}}}


async def update_each(
    collection: Collection,
    updates: list[tuple[dict[str, Any], dict[str, Any]]],
    ordered: bool = True,
) -> None:
    """Apply many single-document updates: one `bulk_write` on a real server, one update at a
    time on the embedded database, whose `bulk_write` does not take current PyMongo's
    `UpdateOne`. Either way a duplicate key raises (BulkWriteError or DuplicateKeyError)."""
    if not updates:
        return
    if _is_embedded(collection):
        for query, update in updates:
            await collection.update_one(query, update)
        return
    await collection.bulk_write([UpdateOne(q, u) for q, u in updates], ordered=ordered)


# ---- the embedded client: mongomock-motor, its calls on one worker thread --------------------

_COLLECTION_KINDS = {
    "find_one": "find_one",
    "count_documents": "count",
    "distinct": "distinct",
    "update_one": "update",
    "update_many": "update",
    "replace_one": "replace",
    "delete_one": "delete",
    "delete_many": "delete",
    "insert_one": "insert",
    "insert_many": "insert",
    "find_one_and_update": "find_and_modify",
    "find_one_and_replace": "find_and_modify",
    "find_one_and_delete": "find_and_modify",
    "bulk_write": "bulk_write",
}
_COLLECTION_COMMANDS = (
    "create_index",
    "create_indexes",
    "drop_index",
    "drop_indexes",
    "drop",
    "index_information",
    "estimated_document_count",
    "rename",
    "options",
)


def _call_shape(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(filter, sort) of one collection method call, as pymongo's signatures place them."""
    if method == "distinct":
        query = args[1] if len(args) > 1 else kwargs.get("filter")
    elif method.startswith("insert") or method == "bulk_write":
        query = None
    else:
        query = args[0] if args else kwargs.get("filter")
    return query, kwargs.get("sort")


def _embedded_client(executor: ThreadPoolExecutor) -> Any:
    return EmbeddedClient(executor, tz_aware=True)


# typed as Any: the stubs present these classes as motor's, whose signatures we narrow
mm: Any = mongomock_motor


async def _run(
    executor: ThreadPoolExecutor,
    fn: Callable[..., Any],
    *args: Any,
    record: Callable[[], None] | None = None,
) -> Any:
    """Run one call on the database thread; `record` reports it there, in call order, with
    the caller's context (its query purpose)."""

    def work() -> Any:
        if record is not None:
            record()
        return fn(*args)

    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, work)


class EmbeddedCursor(mm.AsyncCursor):  # type: ignore[misc]
    """A find cursor read whole on the worker thread at its first read."""

    def __init__(self, cursor: Any, collection: EmbeddedCollection) -> None:
        super().__init__(cursor)
        self.__dict__["_crm_collection"] = collection
        self.__dict__["_crm_buffer"] = None

    @property
    def _crm_inner(self) -> Any:
        return self.__dict__["_AsyncCursor__cursor"]

    async def _crm_fill(self) -> list[Any]:
        buffer = self.__dict__["_crm_buffer"]
        if buffer is None:
            inner = self._crm_inner
            collection = self.__dict__["_crm_collection"]
            record = collection._crm_recorder(
                "find",
                inner._spec,
                inner._sort,
                limited=bool(inner._limit),
            )
            buffer = await _run(collection._crm_executor, _read_cursor, inner, record=record)
            buffer.reverse()
            self.__dict__["_crm_buffer"] = buffer
        return cast(list[Any], buffer)

    async def next(self) -> Any:
        buffer = await self._crm_fill()
        if not buffer:
            raise StopAsyncIteration()
        return buffer.pop()

    __anext__ = next

    async def to_list(self, *args: Any, **kwargs: Any) -> list[Any]:
        buffer = await self._crm_fill()
        length = args[0] if args else kwargs.get("length")
        taken = buffer[::-1] if not length else buffer[: -length - 1 : -1]
        del buffer[len(buffer) - len(taken) :]
        return taken

    async def distinct(self, key: str) -> Any:
        collection = self.__dict__["_crm_collection"]
        record = collection._crm_recorder("distinct", self._crm_inner._spec)
        return await _run(collection._crm_executor, self._crm_inner.distinct, key, record=record)


class EmbeddedAggregateCursor:
    """An aggregation run on the worker thread at its first read."""

    _buffer: list[Any] | None

    def __init__(self, collection: EmbeddedCollection, args: Any, kwargs: Any) -> None:
        self._collection = collection
        self._args, self._kwargs = args, kwargs
        self._buffer = None

    async def _fill(self) -> list[Any]:
        if self._buffer is None:
            inner = self._collection._crm_inner
            pipeline = self._args[0] if self._args else self._kwargs.get("pipeline", [])
            record = self._collection._crm_recorder("aggregate", pipeline=pipeline)
            compute = functools.partial(_aggregate, inner, pipeline)
            buffer: list[Any] = await _run(
                self._collection._crm_executor, lambda: list(compute())[::-1], record=record
            )
            self._buffer = buffer
        return self._buffer

    def __aiter__(self) -> EmbeddedAggregateCursor:
        return self

    async def __anext__(self) -> Any:
        buffer = await self._fill()
        if not buffer:
            raise StopAsyncIteration()
        return buffer.pop()

    next = __anext__

    async def to_list(self, length: int | None = None) -> list[Any]:
        buffer = await self._fill()
        taken = buffer[::-1] if not length else buffer[: -length - 1 : -1]
        del buffer[len(buffer) - len(taken) :]
        return taken

    async def close(self) -> None:
        self._buffer = []


class EmbeddedCollection(mm.AsyncMongoMockCollection, _EmbeddedCollectionBase):  # type: ignore[misc]
    def __init__(self, database: Any, collection: Any, executor: ThreadPoolExecutor) -> None:
        super().__init__(database, collection)
        self.__dict__["_crm_executor"] = executor

    @property
    def _crm_executor(self) -> ThreadPoolExecutor:
        return cast(ThreadPoolExecutor, self.__dict__["_crm_executor"])

    @property
    def _crm_inner(self) -> Any:
        return self.__dict__["_AsyncMongoMockCollection__collection"]

    def _crm_recorder(self, kind: str, *args: Any, **kwargs: Any) -> Callable[[], None]:
        """The report of one call, to run on the database thread; its call site is taken
        here, on the caller's stack."""
        site = _call_site() if _active_logs else ""
        return functools.partial(self._crm_record, kind, *args, **{**kwargs, "site": site})

    def _crm_record(
        self,
        kind: str,
        query: Any = None,
        sort: Any = None,
        pipeline: Any = None,
        limited: bool = False,
        site: str = "",
    ) -> None:
        inner = self._crm_inner
        _record(
            inner.database.name,
            inner.name,
            kind,
            query,
            sort,
            pipeline,
            limited,
            functools.partial(_index_keys, inner),
            site,
        )

    def find(self, *args: Any, **kwargs: Any) -> EmbeddedCursor:
        return EmbeddedCursor(self._crm_inner.find(*args, **kwargs), self)

    def aggregate(self, *args: Any, **kwargs: Any) -> EmbeddedAggregateCursor:
        return EmbeddedAggregateCursor(self, args, kwargs)

    def list_indexes(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("use index_information")


def _offloaded(method: str) -> Callable[..., Any]:
    kind = _COLLECTION_KINDS.get(method, "command")

    async def call(self: EmbeddedCollection, *args: Any, **kwargs: Any) -> Any:
        query, sort = _call_shape(method, args, kwargs)
        limited = method == "find_one" or bool(kwargs.get("limit"))
        record = self._crm_recorder(kind, query, sort, limited=limited)
        fn = functools.partial(getattr(self._crm_inner, method), *args, **kwargs)
        return await _run(self._crm_executor, fn, record=record)

    call.__name__ = method
    return call


for _method in (*_COLLECTION_KINDS, *_COLLECTION_COMMANDS):
    setattr(EmbeddedCollection, _method, _offloaded(_method))


class EmbeddedDatabase(mm.AsyncMongoMockDatabase):  # type: ignore[misc]
    def __init__(self, client: Any, database: Any, executor: ThreadPoolExecutor) -> None:
        super().__init__(client, database)
        self.__dict__["_crm_executor"] = executor

    def get_collection(self, *args: Any, **kwargs: Any) -> EmbeddedCollection:
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        return EmbeddedCollection(
            self, inner.get_collection(*args, **kwargs), self.__dict__["_crm_executor"]
        )

    async def command(self, *args: Any, **kwargs: Any) -> Any:
        _record(self.name, "", "command")
        parent = super().command
        return await _run(self.__dict__["_crm_executor"], lambda: _sync(parent(*args, **kwargs)))

    async def list_collection_names(self, *args: Any, **kwargs: Any) -> list[str]:
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        fn = functools.partial(inner.list_collection_names, *args, **kwargs)
        return cast(list[str], await _run(self.__dict__["_crm_executor"], fn))

    async def drop_collection(self, *args: Any, **kwargs: Any) -> Any:
        _record(self.name, "", "command")
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        fn = functools.partial(inner.drop_collection, *args, **kwargs)
        return await _run(self.__dict__["_crm_executor"], fn)


class EmbeddedClient(mm.AsyncMongoMockClient):  # type: ignore[misc]
    def __init__(self, executor: ThreadPoolExecutor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["_crm_executor"] = executor

    @property
    def _crm_inner(self) -> Any:
        return self.__dict__["_AsyncMongoMockClient__client"]

    def get_database(self, *args: Any, **kwargs: Any) -> EmbeddedDatabase:
        return EmbeddedDatabase(
            self, self._crm_inner.get_database(*args, **kwargs), self.__dict__["_crm_executor"]
        )

    async def drop_database(self, name: str) -> None:
        _record(name, "", "command")
        await _run(self.__dict__["_crm_executor"], self._crm_inner.drop_database, name)

    async def list_database_names(self) -> list[str]:
        names = await _run(self.__dict__["_crm_executor"], self._crm_inner.list_database_names)
        return cast(list[str], names)


# ---- the embedded client's reads by `_id` ---------------------------------------------------
# mongomock evaluates every filter in Python over every document and copies every match before
# a cursor's skip and limit apply. What MongoDB's `_id` index does for free is done here the
# same way: a filter that names its `_id`s (equality, `$in`) looks them up in the store, a
# read sorted by `_id` walks the ids in order from the filter's `_id` bounds, and a cursor
# copies only the documents it returns. Every candidate still goes through mongomock's own
# filter, so results are the same; ids are returned in `_id` order, as the index returns them.

_ID_RANGE = {"$gt", "$gte", "$lt", "$lte"}
# mongomock is untyped: its functions used here, typed
filter_applies: Callable[[Any, Any], bool] = _mongomock_filtering.filter_applies
process_pipeline: Callable[..., Any] = _mongomock_aggregate.process_pipeline
make_datetime_timezone_aware_in_document: Callable[[Any], Any] = (
    _mongomock_helpers.make_datetime_timezone_aware_in_document
)


def _id_clauses(spec: Any) -> list[Any]:
    """The conditions on `_id` of a filter's top level and of its `$and` parts."""
    if not isinstance(spec, dict):
        return []
    found = [spec["_id"]] if "_id" in spec else []
    for part in spec.get("$and", ()) if isinstance(spec.get("$and"), list) else ():
        found.extend(_id_clauses(part))
    return found


def _named_ids(spec: Any) -> list[Any] | None:
    """The `_id`s a filter restricts itself to (equality or `$in`), None when it names none."""
    named: set[Any] | None = None
    for clause in _id_clauses(spec):
        if isinstance(clause, dict) and any(str(k).startswith("$") for k in clause):
            if "$eq" in clause:
                values = [clause["$eq"]]
            elif isinstance(clause.get("$in"), list):
                values = clause["$in"]
            else:
                continue
        else:
            values = [clause]
        if not all(isinstance(v, ObjectId) for v in values):
            return None
        named = set(values) if named is None else named & set(values)
    return None if named is None else sorted(named, key=_binary)


def _id_bounds(spec: Any) -> tuple[bytes | None, bool, bytes | None, bool] | None:
    """(low, low inclusive, high, high inclusive) of the `_id` ranges of a filter, None when
    it has none."""
    low: bytes | None = None
    high: bytes | None = None
    low_in = high_in = True
    ranged = False
    for clause in _id_clauses(spec):
        if not isinstance(clause, dict):
            continue
        for op, value in clause.items():
            if op not in _ID_RANGE or not isinstance(value, ObjectId):
                continue
            ranged = True
            key = value.binary
            if op in ("$gt", "$gte") and (low is None or key >= low):
                low_in = op == "$gte" and (key != low or low_in)
                low = key
            elif op in ("$lt", "$lte") and (high is None or key <= high):
                high_in = op == "$lte" and (key != high or high_in)
                high = key
    return (low, low_in, high, high_in) if ranged else None


def _binary(value: ObjectId) -> bytes:
    return value.binary


def _iter_documents(self: Any, spec: Any) -> Any:
    """mongomock's `Collection._iter_documents`, with the store looked up by named `_id`s."""
    ids = _named_ids(spec)
    if ids is None:
        return _ORIGINAL_ITER_DOCUMENTS(self, spec)
    store = self._store
    if store.is_empty:  # expires TTL'd documents, as every read of the store does
        filter_applies(spec, {})  # mongomock validates the filter even then
        return iter(())
    found = [doc for doc in map(store._documents.get, ids) if doc is not None]
    return (doc for doc in found if filter_applies(spec, doc))


def _get_dataset(self: Any, spec: Any, sort: Any, fields: Any, as_class: Any) -> Any:
    """mongomock's `Collection._get_dataset`; a read sorted by `_id` walks the ids in order
    (from the filter's `_id` bounds, if any), lazily: a limited read stops early."""
    pairs = list(sort.items()) if isinstance(sort, dict) else list(sort or ())
    if len(pairs) != 1 or pairs[0][0] != "_id" or _named_ids(spec) is not None:
        yield from _ORIGINAL_GET_DATASET(self, spec, sort, fields, as_class)
        return
    self._store._remove_expired_documents()
    documents = self._store._documents
    keys = list(documents)
    if not all(type(k) is ObjectId for k in keys):
        yield from _ORIGINAL_GET_DATASET(self, spec, sort, fields, as_class)
        return
    keys.sort(key=_binary)
    binaries = [k.binary for k in keys]
    low, low_in, high, high_in = _id_bounds(spec) or (None, True, None, True)
    start = 0 if low is None else (bisect_left if low_in else bisect_right)(binaries, low)
    stop = len(keys) if high is None else (bisect_right if high_in else bisect_left)(binaries, high)
    window = keys[start:stop]
    if pairs[0][1] < 0:
        window.reverse()
    for key in window:
        doc = documents.get(key)
        if doc is not None and filter_applies(spec, doc):
            yield self._copy_only_fields(doc, fields, as_class)


def _aggregate(inner: Any, pipeline: list[dict[str, Any]]) -> Any:
    """mongomock's `Collection.aggregate`, its input read by `_read_cursor`: mongomock's own
    cursor slices its results once per document read (quadratic: 40,000 rows took 4.4 s)."""
    documents = _read_cursor(inner.find())
    return process_pipeline(documents, inner.database, pipeline, None)


def _read_cursor(inner: Any) -> list[Any]:
    """A mongomock cursor's documents, skip and limit applied before they are copied."""
    skip = inner._skip or 0
    stop = skip + abs(inner._limit) if inner._limit else None
    docs = list(itertools.islice(inner._factory(), skip, stop))
    if inner.collection.codec_options.tz_aware:
        docs = [make_datetime_timezone_aware_in_document(d) for d in docs]
    return docs


_ORIGINAL_ITER_DOCUMENTS: Callable[..., Any] = MongomockCollection._iter_documents
_ORIGINAL_GET_DATASET: Callable[..., Any] = MongomockCollection._get_dataset
setattr(MongomockCollection, "_iter_documents", _iter_documents)  # noqa: B010
setattr(MongomockCollection, "_get_dataset", _get_dataset)  # noqa: B010


def _index_keys(collection: Any) -> tuple[tuple[tuple[str, int], ...], ...]:
    """The key patterns of an embedded collection's indexes, as its store holds them."""
    return tuple(
        tuple((str(k), int(d)) for k, d in index["key"])
        for index in list(collection._store.indexes.values())
    )


def _sync(value: Any) -> Any:
    """Run a coroutine that never awaits (mongomock-motor's `command`) to its result."""
    if asyncio.iscoroutine(value):
        try:
            value.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the embedded command awaited")
    return value


async def find_in_batches(
    collection: Collection,
    query: dict[str, Any],
    sort: list[tuple[str, int]],
    batch_size: int,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching document in `sort` order, in lists of `batch_size`, holding one batch at
    a time (exports).

    A real server streams from the cursor (`allowDiskUse` for sorts on unindexed columns). The
    embedded database's cursor copies every matching document before it yields the first, so
    there a find walks mongomock's own dataset generator instead (it sorts references and copies
    one document at a time), a batch at a time on the database thread."""
    if _is_embedded(collection):
        embedded: Any = collection
        inner = embedded._crm_inner
        executor = embedded._crm_executor
        tz_aware = collection.codec_options.tz_aware
        dataset = inner._get_dataset(query, sort or None, None, dict)
        loop = asyncio.get_running_loop()

        def take() -> list[dict[str, Any]]:
            docs = list(itertools.islice(dataset, batch_size))
            if tz_aware:
                docs = [make_datetime_timezone_aware_in_document(d) for d in docs]
            return docs

        while chunk := await loop.run_in_executor(executor, take):
            yield chunk
        return
    batch: list[dict[str, Any]] = []
    cursor = collection.find(query, sort=sort, batch_size=batch_size, allow_disk_use=True)
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached or stopped answering: no server to select, a
    connection refused, reset or timed out (pymongo's `ConnectionFailure` family:
    `ServerSelectionTimeoutError`, `AutoReconnect`, `NetworkTimeout`...). The request was not
    at fault; it may succeed when retried later. A query that ran past its `maxTimeMS`
    (`ExecutionTimeout`) is not one: the server answered."""
    from pymongo.errors import ConnectionFailure

    return isinstance(exc, ConnectionFailure)


def is_database_error(exc: BaseException) -> bool:
    """Did the database (driver, connection, server) fail, as opposed to the request? Write
    errors such as duplicate keys are the request's and not counted."""
    from pymongo.errors import PyMongoError, WriteError

    return isinstance(exc, PyMongoError) and not isinstance(exc, WriteError)
