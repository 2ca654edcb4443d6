"""The query audit: MongoDB's planning rules applied to the queries the query recorder saw
(crm_core/platform/storage/recorder.py), and the allow-list of the queries that scan on purpose.

`unserved(record, indexes)` applies the rules to one recorded query: equality fields first, then
the sort, then one range, each `$or` branch on its own, `_id` always indexed. `audit(records,
declared)` names every application query that no declared index serves
(crm_core/platform/indexes.py) and no exemption allows. tests/platform/test_query_audit.py runs
it over every query the test suite issues; docs/storage.md ("The query audit")
lists the exemptions. Production code never imports this module (tests/platform/test_storage.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crm_core.platform.indexes import SYSTEM_INDEXES, TENANT_INDEXES, IndexSpec, Keys
from crm_core.platform.storage import QueryRecord


def system_indexes(document_models: Iterable[type]) -> list[IndexSpec]:
    """The indexes the beanie documents of the system database declare."""
    specs = [IndexSpec(_collection_name(m), (("_id", 1),), "_id_") for m in document_models]
    for model in document_models:
        for index in getattr(getattr(model, "Settings", None), "indexes", []) or []:
            document = index.document
            specs.append(
                IndexSpec(
                    _collection_name(model),
                    tuple((str(k), int(v)) for k, v in document["key"].items()),
                    document.get("name", ""),
                    unique=bool(document.get("unique")),
                )
            )
    return specs


def declared_indexes(document_models: Iterable[type]) -> list[IndexSpec]:
    """Every index the application declares: the tenants', the system documents' and
    `SYSTEM_INDEXES` (what the query audit checks queries against)."""
    return [*TENANT_INDEXES, *system_indexes(document_models), *SYSTEM_INDEXES]


def _collection_name(model: type) -> str:
    settings = getattr(model, "Settings", None)
    return str(getattr(settings, "name", None) or model.__name__)


# ---- the planning rules --------------------------------------------------------------------

EQUALITY = {"$eq", "$in"}
RANGE = {"$gt", "$gte", "$lt", "$lte"}
# conditions an index cannot bound ($ne, $nin, $not, $exists, unanchored $regex, $expr...):
# harmless when another condition bounds the scan, a full scan when nothing else does


def _conditions(query: dict[str, Any]) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for key, value in query.items():
        if key == "$and":
            for part in value:
                out.extend(_conditions(part))
        elif key.startswith("$"):
            out.append(("", key, value))
        elif isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
            for op, operand in value.items():
                if op == "$elemMatch" and isinstance(operand, dict):
                    out.extend((f"{key}.{f}", o, v) for f, o, v in _conditions(operand) if f)
                elif op == "$regex" and isinstance(operand, str) and operand.startswith("^"):
                    out.append((key, "$gte", operand))  # an anchored prefix is a range
                else:
                    out.append((key, op, operand))
        else:
            out.append((key, "$eq", value))
    return out


def _branches(query: Any) -> list[list[tuple[str, str, Any]]]:
    """The filter as the union of conjunctions the planner sees: each `$or` branch with the
    conditions outside it."""
    if not isinstance(query, dict):
        return [[]]
    top = {k: v for k, v in query.items() if k not in ("$or",)}
    common = _conditions(top)
    ors = query.get("$or")
    if not ors:
        return [common]
    return [common + c for branch in ors for c in _branches(branch)]


def _branch_served(
    conditions: list[tuple[str, str, Any]], sort: Keys, limited: bool, indexes: list[Keys]
) -> str | None:
    equal = {f for f, op, _ in conditions if op in EQUALITY and f}
    ranges = {f for f, op, _ in conditions if op in RANGE and f}
    if "_id" in equal:
        return None  # the _id index finds at most a handful of documents
    sort_rest = tuple((f, d) for f, d in sort if f not in equal)
    if not equal and not ranges and not sort_rest:
        return "no condition bounds the scan (a collection scan)"
    best = "no index starts with the filter's equality fields"
    for keys in indexes:
        fields = [f for f, _ in keys]
        position = 0
        while position < len(fields) and fields[position] in equal:
            position += 1
        bounded = position > 0  # equality fields outside the prefix are filtered after it
        if sort_rest:
            actual = keys[position : position + len(sort_rest)]
            if [f for f, _ in actual] != [f for f, _ in sort_rest]:
                best = f"the sort {list(sort_rest)} is not the index's next keys: in-memory sort"
                continue
            same = all(d == a for (_, d), (_, a) in zip(sort_rest, actual, strict=True))
            flipped = all(d == -a for (_, d), (_, a) in zip(sort_rest, actual, strict=True))
            if not (same or flipped):
                best = "the sort's directions do not match the index"
                continue
            bounded = bounded or limited or any(f in ranges for f, _ in sort_rest)
            position += len(sort_rest)
        elif position < len(fields) and fields[position] in ranges:
            bounded = True
        if bounded:
            return None
        best = "the index is read whole"
    return best


def index_keys_for(record: QueryRecord, declared: list[IndexSpec]) -> list[Keys]:
    keys = [s.keys for s in declared if s.collection == record.collection]
    keys.extend(record.indexes or ())
    keys.append((("_id", 1),))
    return keys


def unserved(record: QueryRecord, indexes: list[Keys]) -> str | None:
    """Why the query's cost would grow with its collection's size, or None when an index
    serves it by MongoDB's rules."""
    if record.kind in ("insert", "command", "bulk_write"):
        return None
    if "$sort" in record.stages:
        before_sort = record.stages[: record.stages.index("$sort")]
        if any(stage in ("$addFields", "$set", "$project") for stage in before_sort):
            return "sorts on a computed field: no index can serve it"
    sort = record.sort if record.kind not in ("count", "distinct", "update", "delete") else ()
    counting = record.kind == "count" or "$group" in record.stages
    if counting and not record.limited and not _single(record.filter):
        return "reads every matching document to count or group them"
    reasons = []
    for branch in _branches(record.filter):
        reason = _branch_served(branch, sort, record.limited, indexes)
        if reason:
            reasons.append(reason)
    return "; ".join(dict.fromkeys(reasons)) or None


def _single(query: Any) -> bool:
    return isinstance(query, dict) and "_id" in query and not isinstance(query["_id"], dict)


def describe(record: QueryRecord) -> str:
    where = f"{_database_kind(record.database)}.{record.collection}"
    sort = f" sort {list(record.sort)}" if record.sort else ""
    purpose = f" [{record.purpose}]" if record.purpose else ""
    site = f" at {record.site}" if record.site else ""
    return f"{record.kind} {where} {list(record.conditions)}{sort}{purpose}{site}"


def _database_kind(name: str) -> str:
    return "tenant" if re.search(r"_t_[0-9a-f]{24}$", name) else "system"


# ---- the allow-lists -----------------------------------------------------------------------

ROWS = "<rows>"  # any row collection of a tenant


@dataclass(frozen=True)
class Exemption:
    """Queries of one shape that may cost what they cost: the collection (`ROWS` for any
    table), the kind and the filter's field names (an empty set: no filter)."""

    collection: str
    kind: str
    fields: frozenset[str] | None  # None: any filter
    reason: str
    # when set, only queries issued there (a path prefix, e.g. crm_core/sms/service.py)
    site: str = ""

    def matches(self, record: QueryRecord) -> bool:
        collection = collection_category(record)
        return (
            self.collection == collection
            and self.kind == record.kind
            and (self.fields is None or self.fields == frozenset(f for f in record.fields if f))
            and record.site.startswith(self.site)
        )


def _e(collection: str, kind: str, fields: str | None, reason: str, site: str = "") -> Exemption:
    names = frozenset(fields.split()) if fields is not None else None
    return Exemption(collection, kind, names, reason, site)


SCHEMA_CHANGE = "a column change rewrites or checks every row of its table (admin, rare)"
META = "crm_core/tables/meta.py"
ADMIN = "crm_core/admin/service.py"
# a company's SMS as the panel reads it: CampaignService's panel reads, which only
# crm_core/admin/service.py calls (through its CompanySms protocol)
SMS_PANEL = "crm_core/sms/service.py"
BUILTIN = "crm_core/tables/builtin.py"


# Documented in docs/storage.md ("The query audit": the queries that scan on purpose).
ALLOWED: tuple[Exemption, ...] = (
    _e("_tables", "find", "", "the table list of an administrator: the tenant's whole schema"),
    _e(
        "_tables",
        "find",
        "builtin_permission key owner_id",
        "the table list of a user: the tenant's schema (one document per table) read whole",
    ),
    _e("_tables", "count", "builtin", "start-up migration: the built-in tables of a tenant"),
    _e(
        "_tables",
        "find",
        "builtin_permission",
        "the table list of a user with built-in table rights: the tenant's schema read whole",
    ),
    _e("_roles", "find", "", "the role list: a tenant's roles read whole"),
    _e("tenants", "find", "", "start-up migration visits every tenant once"),
    _e(
        "_jobs",
        "find",
        "table_id",
        "start-up migration: a tenant's import jobs made before table ids (a tenant's few jobs)",
        "crm_core/files/imports.py",
    ),
    _e(
        "users",
        "count",
        "tenant_id role_ids is_active",
        "the last-owner guard counts a tenant's active owners (tenant index, then a filter)",
    ),
    _e("users", "count", "tenant_id role_ids", "a role in use: counted within the tenant"),
    _e(ROWS, "update", None, SCHEMA_CHANGE, META),
    # a deleted column's values copied into the trash (docs/history.md "Trash")
    _e(ROWS, "find", None, SCHEMA_CHANGE, "crm_core/tables/trash.py"),
    _e(ROWS, "count", None, SCHEMA_CHANGE, META),
    _e(ROWS, "find", None, SCHEMA_CHANGE, META),
    # issue #29: the last pass of a type change (and a write that finds its column changed
    # form under it) reads the column's rows once; the start-up check looks for rows left in
    # collections no table names (one document at most each)
    _e(ROWS, "find", None, SCHEMA_CHANGE, "crm_core/tables/fence.py"),
    # issue #23: an autonumber column added to a table with rows numbers each row once
    _e(ROWS, "count", None, SCHEMA_CHANGE, "crm_core/tables/sequences.py"),
    _e(ROWS, "find", None, SCHEMA_CHANGE, "crm_core/tables/sequences.py"),
    _e(
        ROWS,
        "aggregate",
        None,
        "a column that cannot become unique: its repeated values are grouped once, to report "
        "them (admin, rare)",
        META,
    ),
    _e(ROWS, "count", "", "start-up drift check: is a collection no table names empty", BUILTIN),
    _e(
        "_tables",
        "find",
        "collection",
        "start-up migration: the tables still named by key (a tenant's schema, read once)",
        BUILTIN,
    ),
    # webhooks, bounded by the per-company limit or by retention (issue #12 §1)
    _e(
        "_webhooks",
        "find",
        "",
        "a company's webhooks read whole (at most 100, crm_core/webhooks/service.py MAX_WEBHOOKS): "
        "the webhook list, and the listener cache once per process and change",
    ),
    _e("_webhooks", "count", "", "the 100-webhook limit counts a company's webhooks (≤ 101)"),
    _e(
        "_webhook_deliveries",
        "count",
        "webhook_id",
        "the total of a webhook's delivery-log page: a count of one index range, bounded by "
        "the log's retention (WEBHOOK_LOG_RETENTION_DAYS)",
        "crm_core/webhooks/service.py",
    ),
    _e(
        "_webhook_deliveries",
        "count",
        "webhook_id status",
        "the same total filtered by status (index `webhook_status_log`)",
        "crm_core/webhooks/service.py",
    ),
    _e(
        "_webhook_deliveries",
        "count",
        "webhook_id payload.id",
        "the total of one event's deliveries (index `webhook_event`): a few per event",
        "crm_core/webhooks/service.py",
    ),
    _e(
        "_webhook_deliveries",
        "count",
        "webhook_id status payload.id",
        "the same filtered by status: one event's deliveries (index `webhook_event`)",
        "crm_core/webhooks/service.py",
    ),
    # history, trash and the audit trail (docs/history.md)
    _e(
        "_history",
        "count",
        None,
        "the total of a row's history page (by column or not): a count of the row's range of "
        "`table_row_seq`",
        "crm_core/tables/history.py",
    ),
    _e(
        "_trash",
        "count",
        None,
        "the total of a trash page: one range of `table_deleted_at` per table the caller may "
        "write, bounded by TRASH_RETENTION_DAYS",
        "crm_core/tables/trash.py",
    ),
    _e(
        "_audit",
        "count",
        None,
        "the total of an audit page: a range of one of `_audit`'s indexes, bounded by "
        "AUDIT_RETENTION_DAYS",
        "crm_core/audit/service.py",
    ),
    # the operator's /admin panel (crm_core/admin/service.py): a few requests a day by one operator,
    # over every company; never on a user's request path
    _e("admin_actions", "count", "", "the panel's audit-log total", ADMIN),
    _e("tenants", "count", "", "the panel's company total", ADMIN),
    _e(
        "tenants",
        "count",
        "name _id",
        "the panel's company search: a name containing the text, any case",
        ADMIN,
    ),
    _e(
        "tenants",
        "find",
        "name _id",
        "the panel's company search: a name containing the text, any case",
        ADMIN,
    ),
    _e(
        "users",
        "find",
        "email",
        "the panel's company search by a user's email containing the text (≤ 1000 read)",
        ADMIN,
    ),
    _e(
        "users",
        "aggregate",
        "tenant_id",
        "the user count of each company on one panel page (index `tenant`, 25 companies)",
        ADMIN,
    ),
    _e(
        "_sms_messages",
        "count",
        "sent_at",
        "a company's messages sent in the last 30 days, on the panel (a range count)",
        SMS_PANEL,
    ),
    _e(
        "_sms_messages",
        "aggregate",
        "sent_at",
        "the panel's messages per day over every company (a range read)",
        SMS_PANEL,
    ),
    _e("_sms_campaigns", "count", "", "the panel's campaign total over every company", SMS_PANEL),
    _e(
        "_sms_campaigns",
        "count",
        "status",
        "the panel's campaign total by status over every company",
        SMS_PANEL,
    ),
    # the campaign counters are kept by `$inc`; a campaign's messages are counted only for
    # a campaign stored before the counters existed (once, then kept) and to repair counters a
    # stopped worker left behind (a message write without its `$inc`): cold paths
    _e(
        "_sms_messages",
        "aggregate",
        "campaign_id",
        "a campaign's messages counted: once for one stored before its counters existed, and "
        "to repair counters after a worker stopped between two writes",
        "crm_core/sms/service.py",
    ),
)

# Rows: a client chooses the filter and sort of a listing, a filtered bulk update or delete and
# an SMS audience; an index serves them when the columns are `indexed` (docs/filters.md).
CLIENT_SHAPED = ("rows.client_query",)
WHOLE_DATABASE = "dump.whole_database"  # `crm dump` reads every collection whole (issue #26)


def collection_category(record: QueryRecord) -> str:
    if _database_kind(record.database) == "tenant" and not record.collection.startswith("_"):
        return ROWS
    return record.collection


def audit(records: Iterable[QueryRecord], declared: list[IndexSpec]) -> list[str]:
    """The application's queries that no index serves and no allow-list names."""
    failures = []
    for record in records:
        if record.site.startswith(("tests/", "benchmarks/", "scripts/")):
            continue  # a test or benchmark looking at the database, not the application
        if record.purpose in CLIENT_SHAPED or record.purpose == WHOLE_DATABASE:
            continue
        reason = unserved(record, index_keys_for(record, declared))
        if reason is None:
            continue
        if any(e.matches(record) for e in ALLOWED):
            continue
        failures.append(f"{describe(record)}: {reason}")
    return sorted(set(failures))
