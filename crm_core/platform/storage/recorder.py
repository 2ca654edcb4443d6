"""The query recorder: every query the application issues, on either engine, reduced to its
shape (kind, filter fields and operators, sort, call site) while a `recording()` block is open.

The embedded engine reports each call (crm_core/platform/storage/embedded.py), the real driver
each command through PyMongo's command monitoring (crm_core/platform/storage/client.py). Tests
and benchmarks use it to count round trips and to check query shapes against the declared
indexes (tests/support/query_audit.py, docs/storage.md "The query audit"). Recording costs one
list check per query while no block is open.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

IndexKeys = tuple[tuple[tuple[str, int], ...], ...]  # the key patterns of a collection's indexes

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
    indexes: IndexKeys | None = None
    site: str = ""
    filter: object = field(default=None, compare=False, hash=False)

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
    audit's allow-list is keyed by these names (tests/support/query_audit.py)."""
    token = _PURPOSE.set(name)
    try:
        yield
    finally:
        _PURPOSE.reset(token)


def _operators(value: object) -> list[str]:
    if isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
        return list(value)
    return ["$eq"]


def filter_conditions(query: object) -> tuple[tuple[str, str], ...]:
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


_ROOT = str(Path(__file__).resolve().parents[3]).replace("\\", "/") + "/"
_PROJECT_DIRS = ("crm_core/", "handlers/", "tasks/", "models/", "tests/", "benchmarks/", "scripts/")


_STORAGE_DIR = "crm_core/platform/storage/"


def is_recording() -> bool:
    """Is a `recording()` block open (is a query's shape worth taking)?"""
    return bool(_active_logs)


def call_site() -> str:
    """`path:line` of the first project frame outside the storage package on this stack (the
    awaiting coroutines are on it), relative to the repository, e.g. `crm_core/tables/shares.py:54`;
    "" when none is."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if path.startswith(_ROOT):
            relative = path[len(_ROOT) :]
            if relative.startswith(_PROJECT_DIRS) and not relative.startswith(_STORAGE_DIR):
                return f"{relative}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


def _sort_pairs(sort: object) -> tuple[tuple[str, int], ...]:
    """`(field, direction)` pairs of a sort as a driver takes it: a field name, a mapping or
    a list of pairs."""
    if not sort:
        return ()
    if isinstance(sort, str):
        return ((sort, 1),)
    if isinstance(sort, Mapping):
        pairs = list(sort.items())
    elif isinstance(sort, list | tuple):
        pairs = list(sort)
    else:
        return ()
    return tuple((str(k), int(v)) for k, v in pairs)


def record_query(
    database: str,
    collection: str,
    kind: str,
    query: object = None,
    sort: object = None,
    pipeline: Sequence[Mapping[str, Any]] | None = None,
    limited: bool = False,
    indexes: Callable[[], IndexKeys] | None = None,
    site: str = "",
) -> None:
    """Give one query to every open `recording()` log (nothing when none is open). A
    pipeline's leading `$match` and `$sort` stand for the query's filter and sort."""
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


def record_command(command: Mapping[str, Any], database: str, name: str) -> None:
    """One command a real driver sent, recorded like the embedded client's calls."""
    if not _active_logs or name in ("getMore", "endSessions", "hello", "isMaster"):
        return
    collection = command.get(name)
    if not isinstance(collection, str):
        record_query(database, "", "command")
        return
    kind = _COMMAND_KINDS.get(name, "command")
    if name == "find":
        limit = command.get("limit", 0) or 0
        kind = "find_one" if limit == 1 and command.get("singleBatch") else "find"
        record_query(
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
            record_query(database, collection, "count", pipeline[0]["$match"], limited=limited)
        else:
            record_query(database, collection, "aggregate", pipeline=pipeline)
    elif name in ("update", "delete"):
        statements = command.get("updates" if name == "update" else "deletes") or []
        for statement in statements:
            statement_kind = kind
            if name == "update" and not any(str(k).startswith("$") for k in statement.get("u", {})):
                statement_kind = "replace"
            record_query(database, collection, statement_kind, statement.get("q"))
    elif name in ("distinct", "count"):
        record_query(database, collection, kind, command.get("query"))
    elif name == "findAndModify":
        record_query(database, collection, kind, command.get("query"), command.get("sort"))
    else:
        record_query(database, collection, kind)
