"""Per-process caches of what every request needs and rarely changes (issue #12 §3).

A tenant's roles and table definitions are cached in each process under the tenant's version
counters, kept on the tenant document (`versions.roles`, `versions.tables`). Authentication
reads the user and the tenant anyway (two round trips), so every process sees a new version at
its next request and stops using what it cached under the old one: no message between
processes, no expiry to tune. The tenant document itself (timezone, region, active) is read on
every request and needs no invalidation.

Writers call exactly one function per cached thing, after their write:
- `roles_changed(tenant_id)`: a role was created, changed or deleted;
- `tables_changed(tenant_id)`: a table definition was created, changed or deleted;
- `webhooks_changed(tenant_id)`: a webhook's events, tables or active state changed (the row
  writes' listener cache, `ListenerCache`).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from bson import ObjectId
from cachetools import LRUCache
from pydantic import BaseModel

from crm_core.platform.storage.types import Database, system_collection
from models.accounts import Tenant

ROLES = "_roles"
TABLES = "_tables"


async def roles_changed(tenant: Tenant | str | ObjectId) -> None:
    """Every process reloads the tenant's roles at its next request."""
    await _bump(tenant, "roles")


async def tables_changed(tenant: Tenant | str | ObjectId) -> None:
    """Every process reloads the tenant's table definitions at their next use."""
    await _bump(tenant, "tables")


async def _bump(tenant: Tenant | str | ObjectId, name: str) -> None:
    """`$inc` the counter; given the request's own `Tenant`, also move its copy, so the rest
    of the request does not read what it has just replaced from the cache."""
    tenant_id = tenant.id if isinstance(tenant, Tenant) else tenant
    await system_collection(Tenant).update_one(
        {"_id": ObjectId(str(tenant_id))}, {"$inc": {f"versions.{name}": 1}}
    )
    if isinstance(tenant, Tenant):
        tenant.versions = {**(tenant.versions or {}), name: version(tenant, name) + 1}


def version(tenant: Tenant, name: str) -> int:
    return int((tenant.versions or {}).get(name, 0))


class DefinitionCache:
    """Roles (by role id, their permissions) and table definitions (by key) per tenant and
    version; least recently used entries go first when full."""

    def __init__(self, size: int = 10_000) -> None:
        self._roles: LRUCache[tuple[str, int], dict[str, frozenset[str]]] = LRUCache(size)
        self._tables: LRUCache[tuple[str, int, str], dict[str, Any]] = LRUCache(size)

    async def permissions(
        self, db: Database, tenant: Tenant, role_ids: list[str]
    ) -> frozenset[str]:
        key = (str(tenant.id), version(tenant, "roles"))
        roles = self._roles.get(key)
        if roles is None:
            roles = {
                str(r["_id"]): frozenset(r.get("permissions", []))
                async for r in db[ROLES].find({}, {"permissions": 1})
            }
            self._roles[key] = roles
        found: set[str] = set()
        for role_id in role_ids:
            found |= roles.get(role_id, frozenset())
        return frozenset(found)

    async def table(self, db: Database, tenant: Tenant, key: str) -> dict[str, Any] | None:
        """The stored definition (a copy: callers may change theirs), None when absent."""
        cache_key = (str(tenant.id), version(tenant, "tables"), key)
        doc = self._tables.get(cache_key)
        if doc is None:
            doc = await db[TABLES].find_one({"key": key})
            if doc is None:
                return None
            self._tables[cache_key] = doc
        return {key: _fresh(item) for key, item in doc.items()}


def _fresh(value: object) -> object:
    """A copy of a stored document: its dicts and lists are new, its scalars (str, numbers,
    ObjectId, datetime: immutable) shared. Ten times cheaper than `copy.deepcopy`, which every
    request that names a table pays (issue #12 §3)."""
    if type(value) is dict:
        return {key: _fresh(item) for key, item in value.items()}
    if type(value) is list:
        return [_fresh(item) for item in value]
    return value


# ---- validated documents of the request path -------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


class ValidatedDocuments(Generic[Model]):
    """The model of a stored document, validated once per version of it. Authentication reads
    the user and the tenant on every request (what they say now decides); building the beanie
    model from them costs more than the read, so the model of the same stored bytes is reused.
    Every call returns its own copy: its lists and dicts are new, so a request changing its
    copy changes nothing for another."""

    def __init__(self, model: type[Model], size: int = 10_000) -> None:
        self.model = model
        self._models: LRUCache[Any, tuple[dict[str, Any], Model]] = LRUCache(size)

    def validate(self, doc: dict[str, Any]) -> Model:
        cached: tuple[dict[str, Any], Model] | None = self._models.get(doc["_id"])
        if cached is None or cached[0] != doc:
            cached = (doc, self.model.model_validate(doc))
            self._models[doc["_id"]] = cached
        model = cached[1]
        containers = {
            name: _fresh(value)
            for name, value in model.__dict__.items()
            if type(value) in (list, dict)
        }
        return model.model_copy(update=containers)


# ---- webhook listeners (audit, issue #12 §1/§2 of this round) --------------------------------
# Every row write asks who listens; the answer is cached per tenant under `versions.webhooks`,
# bumped by every change to a webhook's events, tables or active state
# (crm_core/webhooks/service.py).

WEBHOOKS = "webhooks"


async def webhooks_changed(tenant: Tenant | str | ObjectId) -> None:
    """Every process reloads the tenant's webhook listeners at their next use."""
    await _bump(tenant, WEBHOOKS)


class Listener:
    """One webhook as a row write needs it: what it listens to."""

    __slots__ = ("events", "id", "tables")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.id: ObjectId = doc["_id"]
        self.events = frozenset(doc.get("events") or ())
        self.tables = frozenset(doc.get("tables") or ())

    def wants(self, event: str, table_key: str | None) -> bool:
        """Also while disabled: its events are kept, `skipped`, for a replay after it is
        enabled again (docs/integrations.md "Redelivery and replay")."""
        return event in self.events and (table_key is None or table_key in self.tables)


class ListenerCache:
    """A tenant's webhooks (their ids, events, tables) per version; a company has
    at most `crm_core.webhooks.service.MAX_WEBHOOKS`, read whole once per version and process."""

    def __init__(self, size: int = 10_000) -> None:
        self._listeners: LRUCache[tuple[str, int], tuple[Listener, ...]] = LRUCache(size)

    async def listeners(
        self, db: Database, tenant: Tenant, collection: str
    ) -> tuple[Listener, ...]:
        key = (str(tenant.id), version(tenant, WEBHOOKS))
        found: tuple[Listener, ...] | None = self._listeners.get(key)
        if found is None:
            projection = {"events": 1, "tables": 1}
            docs: list[dict[str, Any]] = (
                await db[collection].find({}, projection).sort("_id", 1).to_list(None)
            )
            found = tuple(Listener(d) for d in docs)
            self._listeners[key] = found
        return found
