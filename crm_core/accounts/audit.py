"""What the domains tell the company's audit trail (crm_core/audit/service.py
`AuditTrail`, passed in by crm_core/services.py; docs/history.md "Audit trail"): sign-ins and
failed ones, password changes, users, roles, API tokens and the company's settings."""

from __future__ import annotations

from typing import Any, Protocol

from crm_core.accounts.context import TenantContext
from crm_core.platform.storage.types import Database


class AuditSink(Protocol):
    """The company's audit trail as every domain that changes things sees it (tables,
    columns, shares and the trash; files; SMS; webhooks and their automatic disable; the
    accounts): appends entries; a failure to record is logged by the trail, never raised."""

    async def record(
        self,
        ctx: TenantContext,
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
    ) -> None:
        """An entry for what the signed-in caller of `ctx` did."""

    async def record_in(
        self,
        db: Database,
        actor: dict[str, Any],
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> None:
        """An entry in the company database `db` outside a signed-in request (a sign-in)."""


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`{field: {before, after}}` of the fields of `after` whose value differs."""
    return {
        key: {"before": before.get(key), "after": value}
        for key, value in after.items()
        if before.get(key) != value
    }


def user_target(user_id: object, email: str) -> dict[str, Any]:
    return {"type": "user", "id": str(user_id), "email": email}
