"""The standard entities (docs/api.md "Standard entities"): legal entities, individuals and leads
are built-in tables with predefined columns, served by the same row engine as custom tables.

They are created with every tenant and added idempotently to tenants that existed before
(`crm migrate`, which start-up runs). Tenants may add their own columns; predefined ones cannot
be removed or change type.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bson import ObjectId

from crm_core.accounts.cache import roles_changed, tables_changed
from crm_core.accounts.permissions import ADDED_LATER, BUILTIN_ROLES
from crm_core.platform.indexes import ensure_system_indexes, ensure_tenant_indexes
from crm_core.platform.registry import Registry
from crm_core.platform.storage import ASCENDING, DESCENDING, Collection, Database, Storage
from crm_core.tables.columns import Column, ColumnType, default_column_types
from crm_core.tables.definitions import TABLES, rows_collection_name, utcnow
from crm_core.tables.meta import plain_index_keys, plain_index_name
from models.accounts import Tenant

log = logging.getLogger(__name__)


def _col(key: str, type_: str, **extra: object) -> dict[str, Any]:
    column = {
        "key": key,
        "name": extra.pop("name", key.replace("_", " ").capitalize()),
        "type": type_,
        "required": False,
        "unique": False,
        "indexed": False,
        "default": None,
        "predefined": True,
    }
    column.update(extra)
    return column


def _options(*labels: str) -> dict[str, Any]:
    return {
        "options": [{"id": i, "label": label} for i, label in enumerate(labels, 1)],
        "max_option_id": len(labels),
    }


BUILTIN_TABLES: list[dict[str, Any]] = [
    {
        "key": "legal_entities",
        "name": "Legal entities",
        "slug": "legal-entities",
        "singular": "legal entity",
        "columns": [
            _col("name", "string", required=True, indexed=True),
            _col("inn", "string", name="INN", max_length=12, validators=["inn"], indexed=True),
            _col("kpp", "string", name="KPP", max_length=9, validators=["kpp"]),
            _col("ogrn", "string", name="OGRN", max_length=15, validators=["ogrn"]),
            _col("address", "string"),
            _col("phone", "phone"),
            _col("email", "email"),
            _col("website", "url"),
        ],
    },
    {
        "key": "individuals",
        "name": "Individuals",
        "slug": "individuals",
        "singular": "individual",
        "require_any": [["last_name", "first_name"]],
        "columns": [
            _col("last_name", "string", indexed=True),
            _col("first_name", "string"),
            _col("middle_name", "string"),
            _col("phone", "phone"),
            _col("email", "email"),
            _col("birth_date", "date"),
            _col("address", "string"),
        ],
    },
    {
        "key": "leads",
        "name": "Leads",
        "slug": "leads",
        "singular": "lead",
        "columns": [
            _col("title", "string", required=True),
            _col(
                "status",
                "select",
                default=1,
                indexed=True,
                **_options("New", "In progress", "Won", "Lost"),
            ),
            _col(
                "source",
                "select",
                **_options("Website", "Referral", "Cold call", "Advertising", "Other"),
            ),
            _col("amount", "float"),
            _col("phone", "phone"),
            _col("email", "email"),
            _col("legal_entity", "link", table="legal_entities"),
            _col("individual", "link", table="individuals"),
            _col("assigned_to", "user", indexed=True),
            _col("notes", "string"),
        ],
    },
]
BUILTIN_KEYS = {t["key"]: t for t in BUILTIN_TABLES}


async def ensure_builtin_tables(db: Database) -> list[str]:
    """Create the built-in tables a tenant lacks and add predefined columns it lacks.
    Returns what changed; running it again changes nothing."""
    changed = []
    types = default_column_types()  # built-in tables use built-in types only
    for spec in BUILTIN_TABLES:
        key = spec["key"]
        existing = await db[TABLES].find_one({"key": key})
        if existing is not None and not existing.get("builtin"):
            log.warning(
                "tenant database %s has a custom table '%s'; the built-in one is not created there",
                db.name,
                key,
            )
            continue
        if existing is None:
            now = utcnow()
            table_id = ObjectId()
            collection = rows_collection_name(table_id)
            await _builtin_indexes(db, collection, types, spec)  # before anyone can write
            await db[TABLES].insert_one(
                {
                    "_id": table_id,
                    "key": key,
                    "collection": collection,
                    "name": spec["name"],
                    "builtin": True,
                    "builtin_permission": key,
                    "owner_id": None,
                    "version": 1,
                    "columns": spec["columns"],
                    "require_any": spec.get("require_any", []),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            changed.append(f"created {key}")
        else:
            have = {c["key"] for c in existing["columns"]}
            missing = [c for c in spec["columns"] if c["key"] not in have]
            if missing:
                await db[TABLES].update_one(
                    {"_id": existing["_id"]},
                    {
                        "$push": {"columns": {"$each": missing}},
                        "$inc": {"version": 1},
                        "$set": {"updated_at": utcnow()},
                    },
                )
                changed.append(f"added {', '.join(c['key'] for c in missing)} to {key}")
            await _builtin_indexes(db, str(existing.get("collection") or key), types, spec)
    # the operator panel counts SMS sent per day and in the last 30 days by `sent_at`
    await db["_sms_messages"].create_index([("sent_at", ASCENDING)], name="sent_at", sparse=True)
    return changed


async def _builtin_indexes(
    db: Database, collection: str, types: Registry[ColumnType], spec: dict[str, Any]
) -> None:
    for column in map(Column.from_doc, spec["columns"]):
        if types.get(column.type).plain_index(column):
            await ensure_plain_index(db[collection], column.key, create_missing=True)


def rebuild_index_name(key: str) -> str:
    """The index that keeps a column indexed while its plain index is rebuilt."""
    return f"r_{key}"


def _index_keys(info: dict[str, Any]) -> list[tuple[str, int]]:
    return [(str(field), int(direction)) for field, direction in info["key"]]


async def ensure_plain_index(rows: Collection, key: str, create_missing: bool = False) -> bool:
    """Give the column `key` its plain index `(key, _id)` (crm_core/tables/meta.py
    `plain_index_keys`), rebuilding one of another shape (`(key)` alone, made before the
    `_id` key was added); True when it rebuilt one. MongoDB renames no index and refuses two
    indexes of one key pattern, so the column stays indexed throughout by a stand-in of its
    own pattern, `(key, _id descending)` under `r_<key>`: the stand-in is built, the old index
    dropped, the new one built under the old name, the stand-in dropped. A rebuild cut short
    leaves the stand-in, and the next run finishes it (docs/operations.md "Schema changes").
    `create_missing`: build the index when the collection has none under its name."""
    name, keys, stand_in = plain_index_name(key), plain_index_keys(key), rebuild_index_name(key)
    existing = await rows.index_information()
    current = existing.get(name)
    if current is not None and _index_keys(current) == keys:
        if stand_in in existing:
            await rows.drop_index(stand_in)  # a rebuild stopped after its last build
        return False
    rebuilding = current is not None or stand_in in existing
    if not rebuilding and not create_missing:
        return False
    if rebuilding and stand_in not in existing:
        await rows.create_index([(key, ASCENDING), ("_id", DESCENDING)], name=stand_in)
    if current is not None:
        await rows.drop_index(name)
    await rows.create_index(keys, name=name)
    if rebuilding:
        await rows.drop_index(stand_in)
    return rebuilding


def _plain(types: Registry[ColumnType], column: Column) -> bool:
    """Whether the column has a plain index (a unique one has its unique index instead)."""
    if column.unique:
        return False
    if column.type not in types:
        return column.indexed
    return types.get(column.type).plain_index(column)


async def rebuild_plain_indexes(db: Database) -> list[str]:
    """Rebuild the plain column indexes of the tables of `db` that have another shape than
    `(key, _id)` (`ensure_plain_index`); a missing one is left to `index_drift` to report."""
    types = default_column_types()
    changed = []
    names = set(await db.list_collection_names())
    async for doc in db[TABLES].find():
        collection = str(doc.get("collection") or doc["key"])
        if collection not in names:
            continue
        for column in map(Column.from_doc, doc.get("columns", [])):
            if _plain(types, column) and await ensure_plain_index(db[collection], column.key):
                changed.append(f"rebuilt the index of {doc['key']}.{column.key} as (key, _id)")
    return changed


async def move_row_collections(db: Database) -> list[str]:
    """Tables made before rows were kept by table id (issue #29) get their `rows.<id>`
    collection: the collection named by the key is renamed (its indexes go with it), then the
    definition names the new one. Rows a process of the old layout wrote under the key in
    between are moved over. Running it again changes nothing."""
    changed = []
    async for doc in db[TABLES].find({"collection": {"$exists": False}}):
        key, target = doc["key"], rows_collection_name(doc["_id"])
        names = set(await db.list_collection_names())
        if key in names and target not in names:
            await db[key].rename(target)
        elif target not in names:
            await db.create_collection(target)
        await db[TABLES].update_one(
            {"_id": doc["_id"]}, {"$set": {"collection": target}, "$inc": {"version": 1}}
        )
        late = await db[key].find().to_list(None) if key in await db.list_collection_names() else []
        for row in late:
            await db[target].replace_one({"_id": row["_id"]}, row, upsert=True)
        if late or key in await db.list_collection_names():
            await db.drop_collection(key)
        changed.append(f"moved the rows of {key} to {target}")
    return changed


async def index_drift(db: Database) -> list[str]:
    """What the definitions claim and the database does not enforce (or the reverse): a
    unique column without its unique index, a unique index of a column that is not unique, a
    missing plain index, a schema change left unfinished by a process that died, row
    collections no table names. Start-up logs each line; `crm migrate` prints them."""
    types = default_column_types()
    found: list[str] = []
    names = set(await db.list_collection_names())
    used = set()
    async for doc in db[TABLES].find():
        collection = str(doc.get("collection") or doc["key"])
        used.add(collection)
        indexes = await db[collection].index_information() if collection in names else {}
        key = doc["key"]
        for column in map(Column.from_doc, doc.get("columns", [])):
            unique = indexes.get(f"u_{column.key}")
            if column.unique and not (unique and unique.get("unique")):
                found.append(f"{key}.{column.key}: unique in the definition, no unique index")
            if not column.unique and unique:
                found.append(f"{key}.{column.key}: a unique index the definition does not claim")
            plain = indexes.get(plain_index_name(column.key))
            if not _plain(types, column):
                continue
            if plain is None:
                found.append(f"{key}.{column.key}: indexed in the definition, no index")
            elif _index_keys(plain) != plain_index_keys(column.key):
                shape = ", ".join(field for field, _ in _index_keys(plain))
                found.append(f"{key}.{column.key}: an index on ({shape}), not ({column.key}, _id)")
        if doc.get("changing"):
            columns = ", ".join(doc["changing"].get("columns") or ())
            found.append(f"{key}: a schema change of {columns} started and never finished")
    for name in sorted(n for n in names if n.startswith("rows.") and n not in used):
        if await db[name].count_documents({}, limit=1):
            found.append(f"{name}: rows in a collection no table names")
    return found


async def ensure_builtin_role_permissions(db: Database) -> list[str]:
    """Give the built-in roles the permission codes added since the company was created."""
    changed = []
    for key, (_title, permissions) in BUILTIN_ROLES.items():
        added = [p for p in ADDED_LATER if p in permissions]
        if not added:
            continue
        result = await db["_roles"].update_one(
            {"key": key, "builtin": True},
            {"$addToSet": {"permissions": {"$each": added}}},
        )
        if result.modified_count:
            changed.append(f"gave {', '.join(added)} to role {key}")
    return changed


TenantStep = Callable[[Database], Awaitable[list[str]]]


async def migrate_all(
    storage: Storage, drift: list[str] | None = None, steps: Sequence[TenantStep] = ()
) -> int:
    """Bring every tenant up to date; returns how many tenants changed. Index drift found
    (`index_drift`) is logged and, given a list, added to it. `steps`: the other domains'
    own migrations of a tenant's database (`crm_core.services.TENANT_MIGRATIONS`), each
    answering what it changed."""
    await ensure_system_indexes(storage.system_db)  # system collections (webhook_due...)
    count = 0
    async for tenant in Tenant.find_all():
        db = storage.tenant_db(str(tenant.id))
        await ensure_tenant_indexes(db)  # indexes added since the tenant was created
        changes = await move_row_collections(db)
        changes += await rebuild_plain_indexes(db)  # before the built-in tables' are ensured
        changes += await ensure_builtin_tables(db)
        role_changes = await ensure_builtin_role_permissions(db)
        if changes:
            await tables_changed(tenant)  # processes already running drop their copies
        if role_changes:
            await roles_changed(tenant)
        changes += role_changes
        for step in steps:
            changes += await step(db)
        for line in await index_drift(db):
            log.warning("tenant %s: index drift: %s", tenant.id, line)
            if drift is not None:
                drift.append(f"tenant {tenant.id}: {line}")
        if changes:
            count += 1
            log.info("tenant %s: %s", tenant.id, "; ".join(changes))
    return count
