"""Creating tenants and resolving a user's rights inside one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from crm_core.builtin_tables import ensure_builtin_tables
from crm_core.indexes import ensure_tenant_indexes
from crm_core.permissions import BUILTIN_ROLES
from crm_core.storage import Storage
from models.accounts import Tenant

ROLES = "_roles"


async def create_tenant(storage: Storage, name: str) -> tuple[Tenant, str]:
    """Create the tenant document and its database with the built-in roles.

    Returns the tenant and the id of its `owner` role.
    """
    settings = storage.settings
    tenant = Tenant(
        name=name, timezone=settings.default_timezone, phone_region=settings.default_phone_region
    )
    await tenant.insert()
    db = storage.tenant_db(str(tenant.id))
    now = datetime.now(UTC)
    roles = [
        {
            "_id": ObjectId(),
            "key": key,
            "name": title,
            "permissions": perms,
            "builtin": True,
            "created_at": now,
            "updated_at": now,
        }
        for key, (title, perms) in BUILTIN_ROLES.items()
    ]
    await db[ROLES].insert_many(roles)
    await ensure_tenant_indexes(db)
    await ensure_builtin_tables(db)
    owner_role = next(r for r in roles if r["key"] == "owner")
    return tenant, str(owner_role["_id"])


async def drop_tenant(storage: Storage, tenant: Tenant) -> None:
    await storage.client.drop_database(storage.tenant_db_name(str(tenant.id)))
    await tenant.delete()


async def resolve_permissions(db: Any, role_ids: list[str]) -> frozenset[str]:
    ids = [ObjectId(r) for r in role_ids if ObjectId.is_valid(r)]
    if not ids:
        return frozenset()
    perms: set[str] = set()
    async for role in db[ROLES].find({"_id": {"$in": ids}}, {"permissions": 1}):
        perms.update(role.get("permissions", []))
    return frozenset(perms)
