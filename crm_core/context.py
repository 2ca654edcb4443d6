"""The explicit context every domain call takes: who acts, in which tenant, with what rights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.accounts import Tenant, User


@dataclass
class TenantContext:
    tenant: Tenant
    user: User
    db: Any  # the tenant's database, from Storage.tenant_db
    permissions: frozenset[str] = field(default_factory=frozenset)

    @property
    def tenant_id(self) -> str:
        return str(self.tenant.id)

    @property
    def user_id(self) -> str:
        return str(self.user.id)

    def has(self, permission: str) -> bool:
        return permission in self.permissions
