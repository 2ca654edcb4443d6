"""Every index the service declares and builds.

System database indexes are declared on the beanie documents (models/accounts.py) and built by
`init_beanie` at start-up. A tenant's own collections get the indexes of `TENANT_INDEXES`
when the tenant is created and at every start-up/`crm migrate` (`ensure_tenant_indexes`,
idempotent). Row collections carry `_id`, `u_<key>` (unique columns, partial) and `i_<key>`
(indexed columns, link columns); crm_core/tables/meta.py keeps them in step with the columns.

The rules that check every query the test suite issues against these declarations live with
the tests (tests/support/query_audit.py). docs/storage.md lists the indexes and the queries each
serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crm_core.platform.storage.types import Database

Keys = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    keys: Keys
    name: str
    unique: bool = False
    sparse: bool = False
    partial: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    serves: str = ""
    expire_after: int | None = None  # a TTL index: documents go this many seconds after it


def _string(name: str) -> dict[str, Any]:
    # a share stores both subject fields, the unused one null: `$exists` would cover it
    return {name: {"$type": "string"}}


TENANT_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec("_tables", (("key", 1),), "key_unique", unique=True, serves="a table by key"),
    IndexSpec(
        "_tables",
        (("columns.table", 1),),
        "link_targets",
        serves="tables whose link columns point at a table",
    ),
    IndexSpec(
        "_roles",
        (("key", 1),),
        "key_unique",
        unique=True,
        sparse=True,
        serves="a built-in role by key (custom roles have none)",
    ),
    IndexSpec(
        "_shares",
        (("user_id", 1), ("table", 1)),
        "user_table_unique",
        unique=True,
        partial=_string("user_id"),
        serves="a user's shares (access checks, table lists); the share upsert",
    ),
    IndexSpec(
        "_shares",
        (("role_id", 1), ("table", 1)),
        "role_table_unique",
        unique=True,
        partial=_string("role_id"),
        serves="a role's shares; the share upsert; removing a role's shares",
    ),
    IndexSpec("_shares", (("table", 1),), "table", serves="removing a table's shares"),
    IndexSpec("_shares", (("granted_by", 1),), "granted_by", serves="shares a user granted"),
    IndexSpec(
        "_views",
        (("table", 1), ("user_id", 1)),
        "table_user_unique",
        unique=True,
        serves="a user's column view of a table (read, upsert); a table's views",
    ),
    IndexSpec(
        "_aliases",
        (("table", 1),),
        "table_unique",
        unique=True,
        serves="a table's aliases (read, upsert, delete)",
    ),
    IndexSpec(
        "_sms_messages",
        (("campaign_id", 1), ("_id", 1)),
        "campaign_id",
        serves="a campaign's messages page by page; recipients of a campaign",
    ),
    IndexSpec(
        "_sms_messages",
        (("campaign_id", 1), ("status", 1), ("_id", 1)),
        "campaign_status",
        serves="a campaign's messages by status, counts by status, stale claims",
    ),
    IndexSpec(
        "_sms_messages",
        (("campaign_id", 1), ("batch", 1), ("status", 1), ("_id", 1)),
        "campaign_batch_status",
        serves="the pending messages of one batch (the sending task) and its claims by _id range",
    ),
    # a claim's outcomes; per-user manual order (issue #12 §4, §2)
    IndexSpec(
        "_sms_messages",
        (("claim", 1),),
        "claim",
        sparse=True,
        serves="the messages of one claim (outcome update, read back); only claimed ones carry it",
    ),
    IndexSpec(
        "_orders",
        (("table", 1), ("user", 1), ("rank", 1)),
        "user_rank",
        unique=True,
        serves="a user's moved rows in rank order (pages, a move's neighbour); one row per rank",
    ),
    IndexSpec(
        "_orders",
        (("table", 1), ("user", 1), ("row", 1)),
        "user_row",
        unique=True,
        serves="a moved row's entry (the move's upsert, the target's rank, moved rows of a page)",
    ),
    # import jobs, their uploaded chunks and undo journal (issue #15)
    IndexSpec(
        "_jobs",
        (("table", 1), ("kind", 1), ("_id", -1)),
        "table_kind_id",
        serves="a table's imports, newest first",
    ),
    IndexSpec(
        "_jobs",
        (("created_by", 1), ("kind", 1), ("state", 1)),
        "creator_kind_state",
        serves="a user's unfinished imports counted (the pending limit)",
    ),
    IndexSpec("_import_files", (("job_id", 1), ("n", 1)), "job_chunk", serves="an upload's chunks"),
    IndexSpec(
        "_import_rejects",
        (("job_id", 1), ("row", 1)),
        "job_row",
        serves="a skip_invalid import's error report, in file order",
    ),
    IndexSpec(
        "_import_journal", (("job_id", 1), ("batch", 1)), "job_batch", serves="an import's undo"
    ),
    IndexSpec(
        "_orders",
        (("table", 1), ("row", 1)),
        "row",
        serves="every user's entries of deleted rows",
    ),
    # webhooks and their delivery log (crm_core/webhooks/service.py) (issue #12 §1)
    IndexSpec(
        "_webhooks",
        (("events", 1),),
        "events",
        serves="the webhooks listening to an event (campaign completion)",
    ),
    IndexSpec(
        "_webhook_deliveries",
        (("webhook_id", 1), ("_id", -1)),
        "webhook_log",
        serves="a webhook's delivery log, newest first; its deliveries removed with it",
    ),
    IndexSpec(
        "_webhook_deliveries",
        (("webhook_id", 1), ("status", 1), ("_id", -1)),
        "webhook_status_log",
        serves="a webhook's delivery log filtered by status, newest first",
    ),
    IndexSpec(
        "_webhook_deliveries",
        (("webhook_id", 1), ("payload.id", 1)),
        "webhook_event",
        serves="a webhook's deliveries of one event (search by event id)",
    ),
    IndexSpec(
        "_webhook_deliveries",
        (("expires_at", 1),),
        "expiry_ttl",
        expire_after=0,
        serves="the server removes deliveries past their retention (TTL)",
    ),
    # history, trash and the audit trail (docs/history.md)
    IndexSpec(
        "_history",
        (("table", 1), ("row", 1), ("seq", 1), ("_id", 1)),
        "table_row_seq",
        serves="a row's revisions newest first (a page, the fold up to one for a revert)",
    ),
    IndexSpec(
        "_trash",
        (("table", 1), ("deleted_at", -1), ("_id", -1)),
        "table_deleted_at_id",
        serves="the trash of the tables the caller may write, newest first",
    ),
    IndexSpec("_trash", (("row_id", 1),), "row_id", serves="is this row in the trash"),
    IndexSpec(
        "_trash",
        (("kind", 1), ("deleted_at", -1), ("_id", -1)),
        "kind_deleted_at_id",
        serves="the deleted tables in the trash, newest first",
    ),
    IndexSpec(
        "_trash", (("parent", 1),), "parent", serves="a deleted column's values (its children)"
    ),
    IndexSpec(
        "_trash",
        (("unrecorded", 1),),
        "unrecorded",
        sparse=True,
        serves="deletions whose revision a stopped process left unstored (history recovery)",
    ),
    IndexSpec(
        "_trash",
        (("files", 1),),
        "files",
        sparse=True,
        serves="does a row in the trash hold this uploaded file (attachments)",
    ),
    # attachments (crm_core/files/attachments.py, docs/storage.md "Files")
    IndexSpec(
        "_attachments",
        (("attached", 1), ("created_at", 1)),
        "attached_created_at",
        serves="the sweeper: files never attached, uploaded before the grace period",
    ),
    IndexSpec(
        "_attachments",
        (("attached", 1), ("checked_at", 1)),
        "attached_checked_at",
        serves="the sweeper: attached files not checked for a grace period",
    ),
    IndexSpec(
        "_tables",
        (("columns.type", 1),),
        "column_types",
        serves="the tables with columns of the types that hold files",
    ),
    IndexSpec(
        "_trash",
        (("expires_at", 1),),
        "expiry_ttl",
        expire_after=0,
        serves="the server purges items past TRASH_RETENTION_DAYS (TTL)",
    ),
    IndexSpec("_audit", (("at", -1), ("_id", -1)), "at", serves="the audit trail newest first"),
    IndexSpec(
        "_audit",
        (("action", 1), ("at", -1), ("_id", -1)),
        "action_at",
        serves="the audit trail of one action",
    ),
    IndexSpec(
        "_audit",
        (("actor.id", 1), ("at", -1), ("_id", -1)),
        "actor_at",
        serves="the audit trail of one actor",
    ),
    IndexSpec(
        "_audit",
        (("expires_at", 1),),
        "expiry_ttl",
        expire_after=0,
        serves="the server removes entries past AUDIT_RETENTION_DAYS (TTL)",
    ),
)

# Indexes of system-database collections that no beanie document declares (or that a
# document's own list lacks); built with the tenants' at start-up and by `crm migrate`.
SYSTEM_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        "webhook_due",
        (("due_at", 1),),
        "due",
        serves="the sweeper's next due delivery (claimed in due_at order)",
    ),
    IndexSpec(
        "task_outbox",
        (("due_at", 1),),
        "due",
        serves=(
            "the outbox sweeper's next due work (claimed in due_at order; "
            "crm_core/platform/outbox.py)"
        ),
    ),
    IndexSpec(
        "admin_actions",
        (("at", 1), ("_id", 1)),
        "at_id",
        serves="the operator panel's audit log page, newest first (read backwards)",
    ),
    IndexSpec(
        "tenants",
        (("name", 1), ("_id", 1)),
        "name_id",
        serves="the operator panel's company list by name",
    ),
)


async def ensure_tenant_indexes(db: Database) -> None:
    """Create the declared indexes of a tenant's own collections (idempotent: an index that
    exists under its name with the same keys is left alone)."""
    await _ensure(db, TENANT_INDEXES)


async def ensure_system_indexes(db: Database) -> None:
    """Create `SYSTEM_INDEXES` in the system database (idempotent)."""
    await _ensure(db, SYSTEM_INDEXES)


async def _ensure(db: Database, specs: Iterable[IndexSpec]) -> None:
    for spec in specs:
        options: dict[str, Any] = {"name": spec.name}
        if spec.unique:
            options["unique"] = True
        if spec.sparse:
            options["sparse"] = True
        if spec.partial is not None:
            options["partialFilterExpression"] = spec.partial
        if spec.expire_after is not None:
            options["expireAfterSeconds"] = spec.expire_after
        await db[spec.collection].create_index(list(spec.keys), **options)
