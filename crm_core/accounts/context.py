"""The explicit context every domain call takes: who acts, in which tenant, with what rights."""

from __future__ import annotations

from dataclasses import dataclass, field

from crm_core.accounts.cache import DefinitionCache
from crm_core.platform.storage.types import Database
from crm_core.platform.values import ValueContext
from models.accounts import Tenant, User


@dataclass
class TenantContext:
    tenant: Tenant
    user: User
    db: Database  # the tenant's database, from Storage.tenant_db
    permissions: frozenset[str] = field(default_factory=frozenset)
    values: ValueContext = field(default_factory=ValueContext.default)
    max_time_ms: int = 5000  # server-side limit on list queries (QUERY_TIME_LIMIT_MS)
    # API tokens (crm_core/accounts/tokens.py): the token that authenticated the call, and the
    # highest table access level (crm_core.tables.access.Level) its scope allows; None: a session
    api_token_id: str | None = None
    table_level_cap: int | None = None
    # the process's roles and tables (crm_core/accounts/cache.py)
    cache: DefinitionCache | None = None

    @property
    def tenant_id(self) -> str:
        return str(self.tenant.id)

    @property
    def user_id(self) -> str:
        return str(self.user.id)

    def has(self, permission: str) -> bool:
        return permission in self.permissions
