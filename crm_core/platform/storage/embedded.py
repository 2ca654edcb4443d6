"""The embedded engine: the single-process trial engine, used when `MONGODB_URL` is not set.

mongomock-motor's in-memory stand-in for MongoDB, its calls run one at a time on a worker
thread of their own so the event loop keeps answering while it scans; two of mongomock's read
paths are patched to use `_id` the way MongoDB's `_id` index does (below); every call reports
to the query recorder; its stored documents are copied on write and its changes counted, for
snapshots (below). It is for a trial, a demo and the test suite, in one process.

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
import contextvars
import copy
import functools
import gc
import itertools
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
from typing import Any, NoReturn, TypeVar, cast

import mongomock_motor
from bson import ObjectId
from mongomock import aggregate as _mongomock_aggregate
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
        return _ORIGINAL_ITER_DOCUMENTS(self, spec)
    store = self._store
    if store.is_empty:  # expires TTL'd documents, as every read of the store does
        filter_applies(spec, {})  # mongomock validates the filter even then
        return iter(())
    found = [doc for doc in map(store._documents.get, ids) if doc is not None]
    return (doc for doc in found if filter_applies(_without_named_id(spec), doc))


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
    for key in window:
        doc = documents.get(key)
        if doc is not None and filter_applies(spec, doc):
            yield self._copy_only_fields(doc, fields, as_class)


def _aggregate(inner: Any, pipeline: object) -> list[MongoDocument]:  # inner: untyped
    """mongomock's `Collection.aggregate`, its input read by `_read_cursor`: mongomock's own
    cursor slices its results once per document read (quadratic: 40,000 rows took 4.4 s)."""
    documents = _read_cursor(inner.find())
    return process_pipeline(documents, inner.database, pipeline, None)


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
    for document in documents:
        key = document["_id"]
        copied = copy.deepcopy(document)
        _writable(store)[_hashdict(key) if isinstance(key, dict) else key] = copied
        yield copied


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
