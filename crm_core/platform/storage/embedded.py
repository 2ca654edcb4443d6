"""The embedded engine: the single-process trial engine, used when `MONGODB_URL` is not set.

mongomock-motor's in-memory stand-in for MongoDB, its calls run one at a time on a worker
thread of their own so the event loop keeps answering while it scans; two of mongomock's read
paths are patched to use `_id` the way MongoDB's `_id` index does (below); a filter's leading
plain equalities are decided without mongomock's filter, and its copies, counts and `$set` are
cheaper, with the same results (below; docs/operations.md, "Embedded limits"); every call
reports to the query recorder; its stored documents are copied on write and its changes
counted, for snapshots (below). It is for a trial, a demo and the test suite, in one process.

What it does not guarantee: durability (data lives in this process's memory; with
`EMBEDDED_DATA_DIR` a crash loses the changes since the last snapshot, crm_core/platform/
snapshots.py),
sharing (a second process, such as a task worker, sees a database of its own), MongoDB's
performance (every filter is evaluated in Python over the collection's documents; only reads by
`_id` avoid the scan), nor MongoDB's behaviour in every detail (mongomock's emulation: partial
indexes are not applied to existing rows, `bulk_write` takes no current PyMongo operations,
server-side time limits are ignored). Production runs against MongoDB (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import calendar
import contextvars
import copy
import decimal
import functools
import gc
import itertools
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn, TypeVar, cast
from zoneinfo import ZoneInfo

import mongomock_motor
from bson import Decimal128, Int64, ObjectId
from bson.errors import InvalidDocument
from mongomock import OperationFailure
from mongomock import aggregate as _mongomock_aggregate
from mongomock import collection as _mongomock_collection_module
from mongomock import filtering as _mongomock_filtering
from mongomock import helpers as _mongomock_helpers
from mongomock.collection import Collection as MongomockCollection
from mongomock.collection import Cursor as MongomockCursor
from mongomock.database import Database as MongomockDatabase
from mongomock.store import CollectionStore, DatabaseStore

from crm_core.platform.storage import embedded_decimal  # noqa: F401 - Decimal128 like MongoDB
from crm_core.platform.storage.recorder import (
    IndexKeys,
    call_site,
    is_recording,
    record_query,
)
from crm_core.platform.storage.types import Client, Collection, MongoDocument


class _EmbeddedCollectionBase:
    """Marks the embedded engine's collections (the real class derives from mongomock-motor's)."""


def is_embedded(collection: Collection) -> bool:
    """Is this collection the embedded engine's (rather than a real server's)?"""
    return isinstance(collection, _EmbeddedCollectionBase)


def embedded_client(executor: ThreadPoolExecutor) -> Client:
    """A new embedded engine whose calls run on `executor` (one worker thread). Its classes
    implement the part of motor's interface the application uses, so it is handed out as a
    motor client."""
    return cast("Client", EmbeddedClient(executor, tz_aware=True))


_frozen = False


def freeze_start_up() -> None:
    """Once per process: what start-up built (modules, the app) leaves the garbage collector's
    view, so its full passes, which stop every thread, no longer walk it. The embedded database
    makes garbage on every read and keeps its rows in this heap, so those passes come often;
    one took 90-190 ms with the start-up objects in view (docs/operations.md)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


async def embedded_batches(
    collection: Collection, query: MongoDocument, sort: list[tuple[str, int]], batch_size: int
) -> AsyncIterator[list[MongoDocument]]:
    """Every matching document in `sort` order, in lists of `batch_size`. The embedded
    cursor copies every matching document before it yields the first, so this walks
    mongomock's own dataset generator instead (it sorts references and copies one document at
    a time), a batch at a time on the database thread."""
    embedded = cast("EmbeddedCollection", collection)
    inner = embedded._crm_inner
    tz_aware = collection.codec_options.tz_aware
    dataset = inner._get_dataset(query, sort or None, None, dict)
    loop = asyncio.get_running_loop()

    def take() -> list[MongoDocument]:
        docs = list(itertools.islice(dataset, batch_size))
        if tz_aware:
            docs = [make_datetime_timezone_aware_in_document(d) for d in docs]
        return docs

    while chunk := await loop.run_in_executor(embedded._crm_executor, take):
        yield chunk


# ---- mongomock-motor, its calls on one worker thread ----------------------------------------

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


def _call_shape(
    method: str, args: tuple[object, ...], kwargs: Mapping[str, object]
) -> tuple[object, object]:
    """(filter, sort) of one collection method call, as pymongo's signatures place them."""
    if method == "distinct":
        query = args[1] if len(args) > 1 else kwargs.get("filter")
    elif method.startswith("insert") or method == "bulk_write":
        query = None
    else:
        query = args[0] if args else kwargs.get("filter")
    return query, kwargs.get("sort")


# typed as Any: the stubs present these classes as motor's, whose signatures we narrow
mm: Any = mongomock_motor
_mongomock_collection: Any = _mongomock_collection_module  # mongomock's module: untyped


Result = TypeVar("Result")


async def _run(
    executor: ThreadPoolExecutor,
    fn: Callable[..., Result],
    *args: object,
    record: Callable[[], None] | None = None,
) -> Result:
    """Run one call on the database thread; `record` reports it there, in call order, with
    the caller's context (its query purpose)."""

    def work() -> Result:
        if record is not None:
            record()
        return fn(*args)

    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, work)


class EmbeddedCursor(mm.AsyncCursor):  # type: ignore[misc]
    """A find cursor read whole on the worker thread at its first read."""

    def __init__(self, cursor: MongomockCursor, collection: EmbeddedCollection) -> None:
        super().__init__(cursor)
        self.__dict__["_crm_collection"] = collection
        self.__dict__["_crm_buffer"] = None

    @property
    def _crm_inner(self) -> Any:  # mongomock's Cursor, read through its private state
        return self.__dict__["_AsyncCursor__cursor"]

    async def _crm_fill(self) -> list[MongoDocument]:
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
        return cast(list[MongoDocument], buffer)

    async def next(self) -> MongoDocument:
        buffer = await self._crm_fill()
        if not buffer:
            raise StopAsyncIteration()
        return buffer.pop()

    __anext__ = next

    async def to_list(self, length: int | None = None) -> list[MongoDocument]:
        buffer = await self._crm_fill()
        taken = buffer[::-1] if not length else buffer[: -length - 1 : -1]
        del buffer[len(buffer) - len(taken) :]
        return taken

    async def distinct(self, key: str) -> list[object]:
        collection = self.__dict__["_crm_collection"]
        record = collection._crm_recorder("distinct", self._crm_inner._spec)
        return await _run(collection._crm_executor, self._crm_inner.distinct, key, record=record)


class EmbeddedAggregateCursor:
    """An aggregation run on the worker thread at its first read."""

    _buffer: list[MongoDocument] | None

    def __init__(
        self, collection: EmbeddedCollection, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> None:
        self._collection = collection
        self._args, self._kwargs = args, kwargs
        self._buffer = None

    async def _fill(self) -> list[MongoDocument]:
        if self._buffer is None:
            inner = self._collection._crm_inner
            pipeline = self._args[0] if self._args else self._kwargs.get("pipeline", [])
            record = self._collection._crm_recorder("aggregate", pipeline=pipeline)
            compute = functools.partial(_aggregate, inner, pipeline)
            buffer: list[MongoDocument] = await _run(
                self._collection._crm_executor, lambda: list(compute())[::-1], record=record
            )
            self._buffer = buffer
        return self._buffer

    def __aiter__(self) -> EmbeddedAggregateCursor:
        return self

    async def __anext__(self) -> MongoDocument:
        buffer = await self._fill()
        if not buffer:
            raise StopAsyncIteration()
        return buffer.pop()

    next = __anext__

    async def to_list(self, length: int | None = None) -> list[MongoDocument]:
        buffer = await self._fill()
        taken = buffer[::-1] if not length else buffer[: -length - 1 : -1]
        del buffer[len(buffer) - len(taken) :]
        return taken

    async def close(self) -> None:
        self._buffer = []


class EmbeddedCollection(mm.AsyncMongoMockCollection, _EmbeddedCollectionBase):  # type: ignore[misc]
    def __init__(
        self,
        database: EmbeddedDatabase,
        collection: MongomockCollection,
        executor: ThreadPoolExecutor,
    ) -> None:
        super().__init__(database, collection)
        self.__dict__["_crm_executor"] = executor

    @property
    def _crm_executor(self) -> ThreadPoolExecutor:
        return cast(ThreadPoolExecutor, self.__dict__["_crm_executor"])

    @property
    def _crm_inner(self) -> Any:  # mongomock's Collection: untyped
        return self.__dict__["_AsyncMongoMockCollection__collection"]

    def _crm_recorder(
        self,
        kind: str,
        query: object = None,
        sort: object = None,
        pipeline: object = None,
        limited: bool = False,
    ) -> Callable[[], None]:
        """The report of one call, to run on the database thread; its call site is taken
        here, on the caller's stack."""
        site = call_site() if is_recording() else ""
        stages = pipeline if isinstance(pipeline, list) else None
        return functools.partial(self._crm_record, kind, query, sort, stages, limited, site)

    def _crm_record(
        self,
        kind: str,
        query: object = None,
        sort: object = None,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        limited: bool = False,
        site: str = "",
    ) -> None:
        inner = self._crm_inner
        record_query(
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

    def find(self, *args: object, **kwargs: object) -> EmbeddedCursor:
        return EmbeddedCursor(self._crm_inner.find(*args, **kwargs), self)

    def aggregate(self, *args: object, **kwargs: object) -> EmbeddedAggregateCursor:
        return EmbeddedAggregateCursor(self, args, kwargs)

    def list_indexes(self, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("use index_information")


def _offloaded(method: str) -> Callable[..., Awaitable[object]]:
    kind = _COLLECTION_KINDS.get(method, "command")

    async def call(self: EmbeddedCollection, *args: object, **kwargs: object) -> object:
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
    def __init__(
        self, client: EmbeddedClient, database: MongomockDatabase, executor: ThreadPoolExecutor
    ) -> None:
        super().__init__(client, database)
        self.__dict__["_crm_executor"] = executor

    def get_collection(self, *args: object, **kwargs: object) -> EmbeddedCollection:
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        return EmbeddedCollection(
            self, inner.get_collection(*args, **kwargs), self.__dict__["_crm_executor"]
        )

    async def command(self, *args: object, **kwargs: object) -> object:
        record_query(self.name, "", "command")
        parent = super().command
        return await _run(self.__dict__["_crm_executor"], lambda: _sync(parent(*args, **kwargs)))

    async def list_collection_names(self, *args: object, **kwargs: object) -> list[str]:
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        fn = functools.partial(inner.list_collection_names, *args, **kwargs)
        return cast(list[str], await _run(self.__dict__["_crm_executor"], fn))

    async def drop_collection(self, *args: object, **kwargs: object) -> object:
        record_query(self.name, "", "command")
        inner = self.__dict__["_AsyncMongoMockDatabase__database"]
        fn = functools.partial(inner.drop_collection, *args, **kwargs)
        return await _run(self.__dict__["_crm_executor"], fn)


class EmbeddedClient(mm.AsyncMongoMockClient):  # type: ignore[misc]
    def __init__(self, executor: ThreadPoolExecutor, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.__dict__["_crm_executor"] = executor

    @property
    def _crm_inner(self) -> Any:  # mongomock's MongoClient: its stubs claim pymongo's
        return self.__dict__["_AsyncMongoMockClient__client"]

    def get_database(self, *args: object, **kwargs: object) -> EmbeddedDatabase:
        return EmbeddedDatabase(
            self, self._crm_inner.get_database(*args, **kwargs), self.__dict__["_crm_executor"]
        )

    async def drop_database(self, name: str) -> None:
        record_query(name, "", "command")
        await _run(self.__dict__["_crm_executor"], self._crm_inner.drop_database, name)

    async def list_database_names(self) -> list[str]:
        names: list[str] = await _run(
            self.__dict__["_crm_executor"], self._crm_inner.list_database_names
        )
        return names


# ---- the embedded client's reads by `_id` ---------------------------------------------------
# mongomock evaluates every filter in Python over every document and copies every match before
# a cursor's skip and limit apply. What MongoDB's `_id` index does for free is done here the
# same way: a filter that names its `_id`s (equality, `$in`) looks them up in the store, a
# read sorted by `_id` walks the ids in order from the filter's `_id` bounds, and a cursor
# copies only the documents it returns. Every candidate still goes through mongomock's own
# filter, so results are the same; ids are returned in `_id` order, as the index returns them.

_ID_RANGE = {"$gt", "$gte", "$lt", "$lte"}
# mongomock is untyped: its functions used here, typed
filter_applies: Callable[[object, object], bool] = _mongomock_filtering.filter_applies
process_pipeline: Callable[..., list[MongoDocument]] = _mongomock_aggregate.process_pipeline
make_datetime_timezone_aware_in_document: Callable[[MongoDocument], MongoDocument] = (
    _mongomock_helpers.make_datetime_timezone_aware_in_document
)


def _id_clauses(spec: object) -> list[object]:
    """The conditions on `_id` of a filter's top level and of its `$and` parts."""
    if not isinstance(spec, dict):
        return []
    found = [spec["_id"]] if "_id" in spec else []
    for part in spec.get("$and", ()) if isinstance(spec.get("$and"), list) else ():
        found.extend(_id_clauses(part))
    return found


def _named_ids(spec: object) -> list[ObjectId] | None:
    """The `_id`s a filter restricts itself to (equality or `$in`), None when it names none."""
    named: set[ObjectId] | None = None
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


def _id_bounds(spec: object) -> tuple[bytes | None, bool, bytes | None, bool] | None:
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


def _iter_documents(self: MongomockCollection, spec: object) -> Iterator[MongoDocument]:
    """mongomock's `Collection._iter_documents`, with the store looked up by named `_id`s."""
    ids = _named_ids(spec)
    if ids is None:
        return _scan(self, spec)
    store = self._store
    if store.is_empty:  # expires TTL'd documents, as every read of the store does
        filter_applies(spec, {})  # mongomock validates the filter even then
        return iter(())
    found = [doc for doc in map(store._documents.get, ids) if doc is not None]
    return filter(_matcher(_without_named_id(spec)), found)


def _scan(self: MongomockCollection, spec: object) -> Iterator[MongoDocument]:
    """mongomock's scan of every document (its `Collection._iter_documents`), the filter's
    leading plain equalities tested first (`_matcher`)."""
    equalities = _leading_equalities(spec)
    if not equalities:
        return _ORIGINAL_ITER_DOCUMENTS(self, spec)
    store = self._store
    if store.is_empty:
        filter_applies(spec, {})
    key, value, kind = equalities[0]
    candidates = [
        doc
        for doc in list(store.documents)
        if type(held := doc.get(key, _MISSING)) is not kind or held == value
    ]
    return filter(_matcher(spec), candidates)


_MISSING = object()
_EQUALITY_TYPES = (str, int, ObjectId)  # exactly these types (a bool is not an int here)


def _leading_equalities(spec: object) -> list[tuple[str, object, type]]:
    """The conditions at the start of a filter that compare a top-level field with a string,
    an integer or an ObjectId: (field, value, its type)."""
    found: list[tuple[str, object, type]] = []
    if not isinstance(spec, dict):
        return found
    for key, value in spec.items():
        kind = type(value)
        if type(key) is not str or key[:1] in ("$", "") or "." in key:
            break
        if kind not in _EQUALITY_TYPES:
            break
        found.append((key, value, kind))
    return found


def _matcher(spec: object) -> Callable[[MongoDocument], bool]:
    """`filter_applies(spec, document)` as a test of documents, with the filter's leading
    plain equalities (`_leading_equalities`) decided here where they can be. mongomock tests
    a filter's conditions in order and stops at the first that fails; a plain equality on a
    top-level field compares with `==` a value that is not an array. So a document whose
    field holds a value of the equality's own type fails there when it differs (before any
    later condition is looked at, or could raise) and passes it when equal; a filter made only
    of such equalities, all passed, matches. Any other document (the field missing, an array,
    a number of another type) goes through mongomock's filter."""
    equalities = _leading_equalities(spec)
    if not equalities:
        return functools.partial(filter_applies, spec)
    complete = isinstance(spec, dict) and len(equalities) == len(spec)

    def matches(doc: MongoDocument) -> bool:
        for key, value, kind in equalities:
            held = doc.get(key, _MISSING)
            if type(held) is not kind:
                return filter_applies(spec, doc)
            if held != value:
                return False
        return complete or filter_applies(spec, doc)

    return matches


def _without_named_id(spec: object) -> object:
    """The filter less a top-level `_id` equality or `$in` that the store lookup has already
    applied (mongomock's `$in` compares each document with every listed id)."""
    if not isinstance(spec, dict) or "_id" not in spec:
        return spec
    clause = spec["_id"]
    if isinstance(clause, dict) and (len(clause) != 1 or set(clause) - {"$in", "$eq"}):
        return spec
    return {key: value for key, value in spec.items() if key != "_id"}


def _get_dataset(
    self: Any, spec: object, sort: object, fields: object, as_class: type
) -> Iterator[MongoDocument]:
    """mongomock's `Collection._get_dataset`; a read sorted by `_id` walks the ids in order
    (from the filter's `_id` bounds, if any), lazily: a limited read stops early."""
    if isinstance(sort, dict):
        pairs = list(sort.items())
    else:
        pairs = list(sort) if isinstance(sort, list | tuple) else []
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
    matches = _matcher(spec)
    for key in window:
        doc = documents.get(key)
        if doc is not None and matches(doc):
            yield self._copy_only_fields(doc, fields, as_class)


def _aggregate(inner: Any, pipeline: object) -> list[MongoDocument]:  # inner: untyped
    """mongomock's `Collection.aggregate`, its input read by `_read_cursor`: mongomock's own
    cursor slices its results once per document read (quadratic: 40,000 rows took 4.4 s).
    A leading `$match`, then `$sort`, `$skip` and `$limit`, are the read's own filter, sort and
    window (as MongoDB's planner pushes them into the collection scan): a page of a list with
    computed columns copies the page's documents only (docs/computed.md "Listing")."""
    stages = list(pipeline) if isinstance(pipeline, list) else []
    cursor = inner.find(_leading(stages, "$match") or {})
    sort = _leading(stages, "$sort")
    if sort:
        cursor = cursor.sort(list(sort.items()))
        skip = _leading(stages, "$skip")
        if skip:
            cursor = cursor.skip(skip)
        limit = _leading(stages, "$limit")
        if limit:
            cursor = cursor.limit(limit)
    documents = _read_cursor(cursor)
    return process_pipeline(documents, inner.database, stages, None)


def _leading(stages: list[Any], name: str) -> Any:
    """The first stage's argument when it is `name` (taken off the list), else None."""
    if stages and isinstance(stages[0], dict) and set(stages[0]) == {name}:
        return stages.pop(0)[name]
    return None


def _read_cursor(inner: MongomockCursor) -> list[MongoDocument]:
    """A mongomock cursor's documents, skip and limit applied before they are copied."""
    skip = inner._skip or 0
    stop = skip + abs(inner._limit) if inner._limit else None
    docs = list(itertools.islice(inner._factory(), skip, stop))
    if inner.collection.codec_options.tz_aware:
        docs = [make_datetime_timezone_aware_in_document(d) for d in docs]
    return docs


_ORIGINAL_ITER_DOCUMENTS: Callable[..., Iterator[MongoDocument]] = (
    MongomockCollection._iter_documents
)
_ORIGINAL_GET_DATASET: Callable[..., Iterator[MongoDocument]] = MongomockCollection._get_dataset
setattr(MongomockCollection, "_iter_documents", _iter_documents)  # noqa: B010
setattr(MongomockCollection, "_get_dataset", _get_dataset)  # noqa: B010


def _index_keys(collection: MongomockCollection) -> IndexKeys:
    """The key patterns of an embedded collection's indexes, as its store holds them."""
    return tuple(
        tuple((str(k), int(d)) for k, d in index["key"])
        for index in list(collection._store.indexes.values())
    )


def _sync(value: object) -> object:
    """Run a coroutine that never awaits (mongomock-motor's `command`) to its result."""
    if asyncio.iscoroutine(value):
        try:
            value.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the embedded command awaited")
    return value


# ---- aggregation expressions as MongoDB 7 documents them -------------------------------------
# mongomock lacks some operators the computed columns use (`$dateDiff`, `$dateAdd`, `$round`,
# `$sortArray`, `$reduce`) and answers others unlike MongoDB (`$not: [x]` reads the list
# itself, `$year` and its kin fail on null and take no time zone but with `date`,
# `$toUpper`/`$toLower` change letters beyond ASCII, `$trim` ignores `chars`). These are
# evaluated here, each as the MongoDB 7 manual describes it (docs/storage.md "The embedded
# engine's expressions"); the rest stays mongomock's.

# `$trim`'s default characters (the MongoDB manual's list)
_TRIM_WHITESPACE = (
    "\x00 \t\n\x0b\x0c\r\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000"
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _value(parser: Any, expression: object) -> Any:  # parser: mongomock's, untyped
    """An argument's value; a missing field is null, as MongoDB's expressions read it."""
    try:
        return parser.parse(expression)
    except KeyError:
        return None


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _zone(parser: Any, spec: Mapping[str, Any]) -> ZoneInfo:
    name = _value(parser, spec["timezone"]) if "timezone" in spec else None
    return ZoneInfo(name or "UTC")


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return _naive_utc(moment).replace(tzinfo=UTC).astimezone(zone)


def _epoch_millis(moment: datetime) -> int:
    delta = _naive_utc(moment) - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _expr_not(parser: Any, value: object) -> bool:
    argument = value[0] if isinstance(value, list) and len(value) == 1 else value
    return not bool(parser._parse_to_bool(argument))


def _expr_round(parser: Any, value: object) -> object:
    """`$round: [number, place]`: half to even; null in, null out; integers stay integers."""
    args = value if isinstance(value, list) else [value]
    number = _value(parser, args[0])
    place = _value(parser, args[1]) if len(args) > 1 else 0
    if number is None or place is None:
        return None
    if isinstance(number, int) and place >= 0:
        return number
    if isinstance(number, float) and not math.isfinite(number):
        return number
    quantum = decimal.Decimal(1).scaleb(-int(place))
    rounded = decimal.Decimal(repr(number)).quantize(quantum, rounding=decimal.ROUND_HALF_EVEN)
    return int(rounded) if isinstance(number, int) else float(rounded)


def _date_part(read: Callable[[datetime], int]) -> Callable[[Any, object], object]:
    """`$year` and its kin: `{date, timezone}` or the date alone; null for a null date."""

    def evaluate(parser: Any, value: object) -> object:
        spec = value if isinstance(value, dict) and "date" in value else {"date": value}
        moment = _value(parser, spec["date"])
        if moment is None:
            return None
        return read(_local(moment, _zone(parser, spec)))

    return evaluate


def _expr_date_diff(parser: Any, value: object) -> object:
    """`$dateDiff`: how many `unit` boundaries lie between the dates (days and longer counted
    in `timezone`; weeks start on `startOfWeek`, Sunday by default)."""
    spec = cast(Mapping[str, Any], value)
    start, end = _value(parser, spec["startDate"]), _value(parser, spec["endDate"])
    unit = _value(parser, spec["unit"])
    if start is None or end is None or unit is None:
        return None
    zone = _zone(parser, spec)
    sizes = {"hour": 3_600_000, "minute": 60_000, "second": 1000, "millisecond": 1}
    if unit in sizes:
        return _epoch_millis(end) // sizes[unit] - _epoch_millis(start) // sizes[unit]
    a, b = _local(start, zone), _local(end, zone)
    if unit == "year":
        return b.year - a.year
    if unit == "quarter":
        return (b.year * 4 + (b.month - 1) // 3) - (a.year * 4 + (a.month - 1) // 3)
    if unit == "month":
        return (b.year * 12 + b.month) - (a.year * 12 + a.month)
    if unit == "day":
        return (b.date() - a.date()).days
    first = _week_start(parser, spec)
    starts = [d.date() - timedelta(days=(d.weekday() - first) % 7) for d in (a, b)]
    return (starts[1] - starts[0]).days // 7


def _week_start(parser: Any, spec: Mapping[str, Any]) -> int:
    name = str(_value(parser, spec.get("startOfWeek", "sunday"))).lower()
    for index, day in enumerate(_WEEKDAYS):
        if day.startswith(name[:3]):
            return index
    raise OperationFailure(f"unknown startOfWeek '{name}'")


def _expr_date_add(parser: Any, value: object) -> object:
    """`$dateAdd`: `amount` (a whole number) of `unit` after `startDate`; days and longer in
    `timezone` keep the local time of day, a month past a shorter month's end lands on its
    last day."""
    spec = cast(Mapping[str, Any], value)
    start, amount = _value(parser, spec["startDate"]), _value(parser, spec["amount"])
    unit = _value(parser, spec["unit"])
    if start is None or amount is None or unit is None:
        return None
    if isinstance(amount, float):
        if not amount.is_integer():
            raise OperationFailure("$dateAdd requires 'amount' to be an integer")
        amount = int(amount)
    start = _naive_utc(start)
    try:
        fixed = {"hour": 3600, "minute": 60, "second": 1, "millisecond": 0.001}
        if unit in fixed:
            return (start + timedelta(seconds=amount * fixed[unit])).replace(tzinfo=UTC)
        moment = _local(start, _zone(parser, spec))
        if unit in ("day", "week"):
            day = moment.date() + timedelta(days=amount * (7 if unit == "week" else 1))
        else:
            months = amount * {"year": 12, "quarter": 3, "month": 1}[unit]
            index = moment.month - 1 + months
            year, month = moment.year + index // 12, index % 12 + 1
            day = date(year, month, min(moment.day, calendar.monthrange(year, month)[1]))
        wall = datetime.combine(day, moment.time().replace(tzinfo=None), tzinfo=moment.tzinfo)
        return wall.astimezone(UTC)
    except (OverflowError, ValueError):
        # MongoDB answers a date outside Python's range; the edge stands for it here
        edge = datetime.min if amount < 0 else datetime.max
        return edge.replace(tzinfo=UTC)


def _ascii(shift: int, low: str, high: str) -> Callable[[Any, object], object]:
    """`$toUpper`/`$toLower`: ASCII letters only, as MongoDB; null is the empty string."""

    def evaluate(parser: Any, value: object) -> object:
        text = _value(parser, value[0] if isinstance(value, list) else value)
        if text is None:
            return ""
        return "".join(chr(ord(c) + shift) if low <= c <= high else c for c in str(text))

    return evaluate


def _expr_trim(parser: Any, value: object) -> object:
    spec = cast(Mapping[str, Any], value)
    text = _value(parser, spec["input"])
    if text is None:
        return None
    chars = _value(parser, spec["chars"]) if "chars" in spec else _TRIM_WHITESPACE
    return str(text).strip(chars)


def _expr_str_len_cp(parser: Any, value: object) -> object:
    text = _value(parser, value[0] if isinstance(value, list) else value)
    if not isinstance(text, str):
        raise OperationFailure("$strLenCP requires a string argument")
    return len(text)


def _expr_substr_cp(parser: Any, value: object) -> object:
    args = cast(list[Any], value)
    text, start, count = (_value(parser, a) for a in args)
    if text is None:
        return ""
    if (
        not isinstance(start, int | float)
        or not isinstance(count, int | float)
        or start < 0
        or count < 0
    ):
        raise OperationFailure("$substrCP: start and count must be non-negative whole numbers")
    return str(text)[int(start) : int(start) + int(count)]


def _expr_sort_array(parser: Any, value: object) -> object:
    """`$sortArray: {input, sortBy: 1|-1}` of plain values (BSON order within one type)."""
    spec = cast(Mapping[str, Any], value)
    items = _value(parser, spec["input"])
    if items is None:
        return None
    return sorted(items, key=_sort_key, reverse=spec.get("sortBy") == -1)


def _sort_key(item: object) -> tuple[int, Any]:
    if item is None:
        return (0, 0)
    if isinstance(item, bool):
        return (4, item)
    if isinstance(item, int | float):
        return (1, item)
    if isinstance(item, str):
        return (2, item)
    if isinstance(item, datetime):
        return (5, _naive_utc(item))
    return (3, str(item))


def _expr_reduce(parser: Any, value: object) -> object:
    """`$reduce: {input, initialValue, in}`: `in` applied to each item in turn, with `$$value`
    the result so far and `$$this` the item; null for a null input."""
    spec = cast(Mapping[str, Any], value)
    items = _value(parser, spec["input"])
    if items is None:
        return None
    result = _value(parser, spec["initialValue"])
    for item in items:
        variables = {**parser._user_vars, "value": result, "this": item}
        step = _PARSER(parser._doc_dict, variables, ignore_missing_keys=parser._ignore_missing_keys)
        result = _value(step, spec["in"])
    return result


def _expr_array_elem_at(parser: Any, value: object) -> object:
    """`$arrayElemAt: [array, index]`: null for a null array; missing (a KeyError here, as
    mongomock marks it) for an index out of range; a negative index counts from the end."""
    array, index = (_value(parser, a) for a in cast(list[Any], value))
    if array is None or index is None:
        return None
    if not isinstance(array, list):
        raise OperationFailure("$arrayElemAt's first argument must be an array")
    if not -len(array) <= int(index) < len(array):
        raise KeyError("$arrayElemAt: out of range")
    return array[int(index)]


def _expr_literal(parser: Any, value: object) -> object:
    """`$literal`: its value, unparsed (as mongomock's; reached without its operator-list
    lookups, which cost more than the rest of an update pipeline's `$set` of a document)."""
    return value


def _expr_subtract(parser: Any, value: object) -> object:
    """`$subtract` of two numbers (int or float); other operands (dates, null, a missing
    field, a wrong arity) as mongomock evaluates them."""
    if isinstance(value, list) and len(value) == 2:
        try:
            first, second = parser.parse(value[0]), parser.parse(value[1])
        except KeyError:
            first = second = None
        if type(first) in _NUMBERS and type(second) in _NUMBERS:
            return first - second
    return parser._handle_arithmetic_operator("$subtract", value)


_NUMBERS = (int, float)

EXPRESSIONS: dict[str, Callable[[Any, object], object]] = {
    "$literal": _expr_literal,
    "$subtract": _expr_subtract,
    "$reduce": _expr_reduce,
    "$arrayElemAt": _expr_array_elem_at,
    "$not": _expr_not,
    "$round": _expr_round,
    "$year": _date_part(lambda d: d.year),
    "$month": _date_part(lambda d: d.month),
    "$dayOfMonth": _date_part(lambda d: d.day),
    "$isoDayOfWeek": _date_part(lambda d: d.isoweekday()),
    "$dateDiff": _expr_date_diff,
    "$dateAdd": _expr_date_add,
    "$toUpper": _ascii(-32, "a", "z"),
    "$toLower": _ascii(32, "A", "Z"),
    "$trim": _expr_trim,
    "$strLenCP": _expr_str_len_cp,
    "$substrCP": _expr_substr_cp,
    "$sortArray": _expr_sort_array,
}


def _parse_expression(self: Any, expression: object) -> object:
    """mongomock's `_Parser.parse`, with the operators of `EXPRESSIONS` evaluated here."""
    if isinstance(expression, dict) and len(expression) == 1:
        ((operator, value),) = expression.items()
        handler = EXPRESSIONS.get(operator)
        if handler is not None:
            return handler(self, value)
    return _ORIGINAL_PARSE(self, expression)


_PARSER: Any = _mongomock_aggregate._Parser  # mongomock's, untyped
_ORIGINAL_PARSE: Callable[..., object] = _mongomock_aggregate._Parser.parse
setattr(_mongomock_aggregate._Parser, "parse", _parse_expression)  # noqa: B010


def _lookup_stage(
    in_collection: list[MongoDocument], database: Any, options: Mapping[str, Any]
) -> list[MongoDocument]:
    """`$lookup` by `localField`/`foreignField`, with an optional `pipeline` run on each
    document's matches (MongoDB 5.0+; mongomock refuses the two together). The foreign
    collection is read once and grouped by `foreignField`, as its index would serve it; a
    missing or null local value matches foreign documents whose field is null or missing, as
    MongoDB's equality does."""
    keys = set(options)
    if not {"from", "localField", "foreignField", "as"} <= keys or keys - {
        "from",
        "localField",
        "foreignField",
        "as",
        "pipeline",
    }:
        return cast(list[MongoDocument], _ORIGINAL_LOOKUP(in_collection, database, options))
    local_field, foreign_field = options["localField"], options["foreignField"]
    foreign_collection = database.get_collection(options["from"])
    by_id = foreign_field == "_id"  # the `_id` index: each local value looked up in the store
    by_value: dict[object, list[MongoDocument]] = {}
    if not by_id:
        # a page's few values are looked up as an index would find them; many, by one read
        locals_: set[object] = set()
        for doc in in_collection:
            local = doc.get(local_field)
            locals_.update(local if isinstance(local, list) else [local])
        scalar = all(isinstance(v, ObjectId | str | int | float) for v in locals_)
        few = scalar and len(locals_) <= _LOOKUP_IN_LIMIT
        query = {foreign_field: {"$in": list(locals_)}} if few else {}
        for foreign in foreign_collection.find(query):
            by_value.setdefault(_lookup_key(foreign.get(foreign_field)), []).append(foreign)
    pipeline = options.get("pipeline") or []
    for doc in in_collection:
        local = doc.get(local_field)
        values = local if isinstance(local, list) else [local]
        if by_id:
            matches = _stored_by_id(foreign_collection, values)
        else:
            matches = [dict(m) for v in values for m in by_value.get(_lookup_key(v), [])]
        if pipeline:
            matches = list(process_pipeline(matches, database, pipeline, None))
        doc[options["as"]] = matches
    return in_collection


_LOOKUP_IN_LIMIT = 200  # local values looked up with `$in` rather than one whole read


def _stored_by_id(collection: Any, ids: list[object]) -> list[MongoDocument]:
    """Copies of the documents of a mongomock collection with these `_id`s."""
    store = collection._store._documents
    found = []
    for value in dict.fromkeys(v for v in ids if isinstance(v, ObjectId | str | int)):
        doc = store.get(value)
        if doc is not None:
            found.append(make_datetime_timezone_aware_in_document(dict(doc)))
    return found


def _lookup_key(value: object) -> object:
    if isinstance(value, datetime):
        return _naive_utc(value)
    if isinstance(value, list | dict):
        return repr(value)
    return value


_ORIGINAL_LOOKUP: Callable[..., object] = cast(
    "Callable[..., object]", _mongomock_aggregate._PIPELINE_HANDLERS["$lookup"]
)
_mongomock_aggregate._PIPELINE_HANDLERS["$lookup"] = _lookup_stage


# ---- stored documents copied on write; the count of changes (snapshots) ---------------------
# A snapshot (crm_core/platform/snapshots.py) takes, on the engine's thread, each collection's
# mapping of stored documents as it is (no copy: microseconds per collection) and marks it
# shared; it then encodes those documents a batch at a time between the engine's calls while
# requests go on changing the data. For the snapshot to show the data as it was when taken,
# neither the mapping nor a document in it may change while it is shared:
# - a stored document is never changed once stored: mongomock's updates change the stored
#   document in place, so here an update first stores a deep copy of each document it matches
#   and changes that copy (inserts store a copy of their own already, mongomock's
#   `patch_datetime_awareness_in_document`);
# - the first change of a shared mapping (a document stored, replaced or removed) first puts a
#   copy of the mapping in the store (the references only: 1-2 ms at 50,000 documents, once
#   per collection written while a snapshot is being written), and changes that.
#
# `EmbeddedWrites.count` counts the changes the engine made, on its own thread: a document
# stored, changed or removed (TTL expiry included), an index made or dropped, a collection
# dropped or renamed. A call that changes nothing counts nothing: a sweeper's claim that finds
# nothing due, an update that sets what is there, an index that exists (each start declares
# its indexes again).


class EmbeddedWrites:
    """Changes made to the embedded engine's data so far, counted on the engine's thread;
    snapshots compare it to skip an unchanged database (crm_core/platform/snapshots.py)."""

    count = 0


_update_pending: MongomockCollection | None = None  # the update whose own read comes next


def _update_copied_on_write(
    self: MongomockCollection, spec: object, document: object, *args: object, **kwargs: object
) -> dict[str, Any]:
    """mongomock's `Collection._update`, changing copies of the documents it matches; counts
    the documents it changed (an upserted one is counted as it is stored)."""
    global _update_pending
    _update_pending = self
    try:
        result: dict[str, Any] = _ORIGINAL_UPDATE(self, spec, document, *args, **kwargs)
    except BaseException:
        EmbeddedWrites.count += 1  # it may have changed documents before it failed
        raise
    finally:
        _update_pending = None
    EmbeddedWrites.count += int(result.get("nModified") or 0)
    return result


def _iter_documents_for_update(self: MongomockCollection, spec: object) -> Iterator[MongoDocument]:
    """`_iter_documents`; the first read of an update (the documents it changes) yields
    copies, put in the store in place of the documents read."""
    global _update_pending
    documents = _PLAIN_ITER_DOCUMENTS(self, spec)
    if _update_pending is not self:
        return documents
    _update_pending = None  # the update's unique-index checks read the store as it is
    return _stored_copies(self._store, documents)


def _stored_copies(store: Any, documents: Iterator[MongoDocument]) -> Iterator[MongoDocument]:
    global _replaced
    for document in documents:
        key = document["_id"]
        copied = _plain_copy(document)
        _writable(store)[_hashdict(key) if isinstance(key, dict) else key] = copied
        _replaced = (copied, document)
        yield copied


# (the copy an update changes, the document it replaced in the store): mongomock's update
# next takes a deep copy of that copy to tell whether the update changed it; the replaced
# document, never changed once stored, is that copy already (`_MongomockCopy.deepcopy`)
_replaced: tuple[MongoDocument, MongoDocument] | None = None


_SHARED = "_crm_shared"  # a store's attribute: [its mapping snapshots are reading, how many]


def _writable(store: Any) -> dict[object, MongoDocument]:
    """The store's mapping of documents, to change: a copy put in its place first if a
    snapshot is reading it. The copy is a plain dict, and so is what replaces mongomock's
    OrderedDict at a store's first change (then empty): a dict's copy is many times faster
    (docs/operations.md, "Embedded data on disk")."""
    documents: dict[object, MongoDocument] = store._documents
    shared = store.__dict__.get(_SHARED)
    if (shared and shared[0] is documents) or type(documents) is not dict:
        documents = store._documents = dict(documents)
        store.__dict__[_SHARED] = None
    return documents


def _store_setitem(self: CollectionStore, key: object, value: MongoDocument) -> None:
    _writable(self)
    EmbeddedWrites.count += 1
    _ORIGINAL_STORE_SETITEM(self, key, value)


def _store_delitem(self: CollectionStore, key: object) -> None:
    _writable(self)
    _ORIGINAL_STORE_DELITEM(self, key)
    EmbeddedWrites.count += 1


def _store_drop(self: CollectionStore) -> None:
    EmbeddedWrites.count += bool(self.is_created)
    _ORIGINAL_STORE_DROP(self)


def _store_create_index(
    self: CollectionStore, index_name: str, index_dict: Mapping[str, object]
) -> None:
    EmbeddedWrites.count += self.indexes.get(index_name) != index_dict
    _ORIGINAL_STORE_CREATE_INDEX(self, index_name, index_dict)


def _store_drop_index(self: CollectionStore, index_name: str) -> None:
    _ORIGINAL_STORE_DROP_INDEX(self, index_name)
    EmbeddedWrites.count += 1


def _store_rename(self: DatabaseStore, name: str, new_name: str) -> None:
    _ORIGINAL_STORE_RENAME(self, name, new_name)
    EmbeddedWrites.count += 1


def _drop_indexes(self: MongomockCollection, *args: object, **kwargs: object) -> None:
    EmbeddedWrites.count += bool(self._store.indexes)
    _ORIGINAL_DROP_INDEXES(self, *args, **kwargs)


_hashdict: Callable[[Mapping[str, object]], object] = _mongomock_helpers.hashdict
_ORIGINAL_UPDATE: Callable[..., dict[str, Any]] = MongomockCollection._update
_PLAIN_ITER_DOCUMENTS: Callable[..., Iterator[MongoDocument]] = MongomockCollection._iter_documents
_ORIGINAL_DROP_INDEXES: Callable[..., None] = MongomockCollection.drop_indexes
_ORIGINAL_STORE_SETITEM: Callable[..., None] = CollectionStore.__setitem__
_ORIGINAL_STORE_DELITEM: Callable[..., None] = CollectionStore.__delitem__
_ORIGINAL_STORE_DROP: Callable[..., None] = CollectionStore.drop
_ORIGINAL_STORE_CREATE_INDEX: Callable[..., None] = CollectionStore.create_index
_ORIGINAL_STORE_DROP_INDEX: Callable[..., None] = CollectionStore.drop_index
_ORIGINAL_STORE_RENAME: Callable[..., None] = DatabaseStore.rename
setattr(MongomockCollection, "_update", _update_copied_on_write)  # noqa: B010
setattr(MongomockCollection, "_iter_documents", _iter_documents_for_update)  # noqa: B010
setattr(MongomockCollection, "drop_indexes", _drop_indexes)  # noqa: B010
setattr(CollectionStore, "__setitem__", _store_setitem)  # noqa: B010
setattr(CollectionStore, "__delitem__", _store_delitem)  # noqa: B010
setattr(CollectionStore, "drop", _store_drop)  # noqa: B010
setattr(CollectionStore, "create_index", _store_create_index)  # noqa: B010
setattr(CollectionStore, "drop_index", _store_drop_index)  # noqa: B010
setattr(DatabaseStore, "rename", _store_rename)  # noqa: B010


# ---- mongomock's own copies and counts, cheaper with the same results ----------------------
# mongomock deep-copies each document an update matches (to tell whether it changed) and each
# value a `$set` stores, with `copy.deepcopy`, whose memo and reduce protocol cost more than
# the copy: a stored document is dicts and lists of immutable values, so `_plain_copy` copies
# the dicts and lists and shares the values (anything else still goes to `copy.deepcopy`).
# `count_documents` with a limit stops at the limit instead of matching every document, and
# the PyMongo version checks mongomock makes on every insert parse their version once.

_IMMUTABLE = frozenset(
    {str, int, float, bool, type(None), bytes, ObjectId, datetime, date, Decimal128, Int64}
)


# mongomock's own walks of a document (every insert makes its stored datetimes naive and
# millisecond-precise; a read with `tz_aware` gives them UTC back): the same results, without
# testing every plain value against each container type first
_PLAIN = frozenset({str, int, float, bool, type(None), bytes, ObjectId, Decimal128, Int64})
_ORIGINAL_PATCH_DATETIMES: Callable[[Any], Any] = (
    _mongomock_helpers.patch_datetime_awareness_in_document
)
_ORIGINAL_AWARE_DATETIMES: Callable[[Any], Any] = (
    _mongomock_helpers.make_datetime_timezone_aware_in_document
)


def _past_plain_values(leaf: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """mongomock's walk `leaf` over a document, which leaves the plain values (`_PLAIN`) as
    they are without calling it for each: dicts and lists are walked here, the rest is
    `leaf`'s."""

    def walk(value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:
            return value
        if kind is dict:
            return {key: walk(item) for key, item in value.items()}
        if kind is list:
            return [walk(item) for item in value]
        return leaf(value)

    return walk


# mongomock's `patch_datetime_awareness_in_document` and
# `make_datetime_timezone_aware_in_document`
_patch_datetimes = _past_plain_values(_ORIGINAL_PATCH_DATETIMES)
_aware_datetimes = _past_plain_values(_ORIGINAL_AWARE_DATETIMES)


def _check_field_names(data: Mapping[str, Any]) -> None:
    """mongomock's check that no field name of an inserted document, at any depth, holds the
    null character; plain values are not tested for being mappings first."""
    for key, value in data.items():
        if "\0" in key:
            raise InvalidDocument(f"Field names cannot contain the null character (found: {key})")
        if type(value) not in _PLAIN and isinstance(value, Mapping):
            _check_field_names(value)


def _plain_copy(value: Any, memo: dict[int, object] | None = None) -> Any:
    """A deep copy of a stored value: dicts and lists copied, immutable values shared."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {key: _plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [_plain_copy(item) for item in value]
    return copy.deepcopy(value, memo)


def _update_snapshot(value: Any, memo: dict[int, object] | None = None) -> Any:
    """mongomock's deep copy: the document an update's copy replaced in the store stands for
    a copy of it (`_stored_copies`), anything else is copied by `_plain_copy`."""
    global _replaced
    if _replaced is not None and value is _replaced[0]:
        original = _replaced[1]
        _replaced = None
        return original
    return _plain_copy(value, memo)


class _MongomockCopy:
    """The `copy` module as mongomock's collection and aggregation code sees it."""

    deepcopy = staticmethod(_update_snapshot)
    copy = staticmethod(copy.copy)


class _MongomockVersion:
    """`packaging.version` as mongomock's collection code sees it: each version parsed once."""

    parse = staticmethod(functools.lru_cache(maxsize=64)(_mongomock_collection.version.parse))


_ORIGINAL_SET_UPDATER: Callable[[Any, str, Any], None] = _mongomock_collection._set_updater
_ENCODABLE = frozenset({bool, type(None), ObjectId, float})  # BSON encodes any such value
_INT64 = range(-(2**63), 2**63)


def _set_field(doc: Any, field_name: str, value: Any) -> None:
    """mongomock's `$set` of one field (`_set_updater`), which first encodes the value to BSON
    to refuse what BSON cannot hold: a value BSON always encodes (an ASCII string, a 64-bit
    integer, a naive datetime as every update's values are made, a boolean, null, a float, an
    ObjectId) is set without the trial encoding; anything else, a list or a field name it
    refuses go through mongomock's."""
    kind = type(value)
    if (
        type(doc) is dict
        and (
            kind in _ENCODABLE
            or (kind is str and value.isascii())
            or (kind is int and value in _INT64)
            or (kind is datetime and value.tzinfo is None)
        )
        and "\0" not in field_name
        and field_name[:1] != "$"
    ):
        doc[field_name] = value
        return
    _ORIGINAL_SET_UPDATER(doc, field_name, value)


def _count_documents(self: MongomockCollection, filter: object, **kwargs: object) -> int:
    """mongomock's `count_documents`; with a limit (and no other option than `skip`), the
    matching stops once `skip + limit` documents matched."""
    limit, skip = kwargs.get("limit"), kwargs.get("skip", 0)
    if set(kwargs) - {"limit", "skip"} or type(skip) is not int or type(limit) is not int:
        return _ORIGINAL_COUNT_DOCUMENTS(self, filter, **kwargs)
    if skip < 0 or limit <= 0:
        return _ORIGINAL_COUNT_DOCUMENTS(self, filter, **kwargs)
    spec = _patch_datetimes(filter)
    inner: Any = self  # mongomock's collection: untyped
    found = sum(1 for _ in itertools.islice(inner._iter_documents(spec), skip + limit))
    return int(min(max(found - skip, 0), limit))


_ORIGINAL_COUNT_DOCUMENTS: Callable[..., int] = MongomockCollection.count_documents
setattr(MongomockCollection, "count_documents", _count_documents)  # noqa: B010
setattr(_mongomock_collection, "copy", _MongomockCopy)  # noqa: B010
setattr(_mongomock_aggregate, "copy", _MongomockCopy)  # noqa: B010
setattr(_mongomock_collection, "version", _MongomockVersion)  # noqa: B010
setattr(_mongomock_collection, "_recursive_key_check_null_character", _check_field_names)  # noqa: B010
if _mongomock_collection.BSON and not (
    _mongomock_helpers.PYMONGO_VERSION < _mongomock_collection.version.parse("3.6")
):  # field names checked, no `check_keys`: the only way `_set_updater` validates here
    setattr(_mongomock_collection, "_set_updater", _set_field)  # noqa: B010
    _mongomock_collection._updaters["$set"] = _set_field
setattr(_mongomock_helpers, "patch_datetime_awareness_in_document", _patch_datetimes)  # noqa: B010
setattr(_mongomock_helpers, "make_datetime_timezone_aware_in_document", _aware_datetimes)  # noqa: B010
make_datetime_timezone_aware_in_document = _aware_datetimes


@dataclass(frozen=True)
class StoredCollection:
    """One collection as `copy_stored` took it: its stored documents in the store's order (not
    changed while the copy is held: they may be read on any thread) and its indexes
    (`index_information()`)."""

    database: str
    name: str
    documents: Iterable[MongoDocument]
    indexes: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class StoredCopy:
    """What `copy_stored` took; `release_stored` gives it back once it has been read."""

    collections: list[StoredCollection]
    changes: int  # `EmbeddedWrites.count` when it was taken: every change before is in it
    held_seconds: float  # how long the engine's thread was taken
    held_cpu_seconds: float  # the CPU time of that (the rest: waiting for a CPU, the GIL)
    shared: list[tuple[Any, dict[object, MongoDocument]]]  # (store, its mapping taken)


async def copy_stored(
    client: Client, select_databases: Callable[[list[str]], Iterable[str]]
) -> StoredCopy:
    """The documents and indexes of the databases `select_databases` picks from the engine's
    database names, taken on the engine's thread between two calls (so no call is half done):
    each store's mapping itself, marked shared (a change copies it first), not a copy."""
    embedded = cast("EmbeddedClient", client)
    inner = embedded._crm_inner

    def take() -> StoredCopy:
        started, cpu = time.perf_counter(), time.thread_time()
        collections, shared = [], []
        for db_name in select_databases(inner.list_database_names()):
            database = inner[db_name]
            for name in sorted(database.list_collection_names()):
                collection = database[name]
                store = collection._store
                documents = store._documents
                readers = store.__dict__.get(_SHARED)
                if readers and readers[0] is documents:
                    readers[1] += 1
                else:
                    store.__dict__[_SHARED] = [documents, 1]
                shared.append((store, documents))
                indexes = collection.index_information()
                collections.append(StoredCollection(db_name, name, documents.values(), indexes))
        held, held_cpu = time.perf_counter() - started, time.thread_time() - cpu
        return StoredCopy(collections, EmbeddedWrites.count, held, held_cpu, shared)

    return await _run(embedded.__dict__["_crm_executor"], take)


async def release_stored(client: Client, stored: StoredCopy) -> None:
    """The copy is read: its stores' mappings may be changed in place again."""

    def release() -> None:
        for store, documents in stored.shared:
            readers = store.__dict__.get(_SHARED)
            if readers and readers[0] is documents:
                readers[1] -= 1
                if not readers[1]:
                    store.__dict__[_SHARED] = None

    await _run(cast("EmbeddedClient", client).__dict__["_crm_executor"], release)


def run_on_engine(client: Client, fn: Callable[[], Result]) -> Result:
    """Run `fn` on the engine's thread, from a thread other than the event loop's (which
    awaits instead), and wait for it: the engine's calls queued before it run first."""
    executor: ThreadPoolExecutor = cast("EmbeddedClient", client).__dict__["_crm_executor"]
    return executor.submit(fn).result()
