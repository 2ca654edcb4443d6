"""The one rule of every grant (SPEC §9): nobody hands out what they do not hold.

Every route that changes what someone may do asks `check_grant` with the permissions the
change would give (a role's permissions, the roles given to a user, the permissions of a user
one takes over by resetting their password...). Holders of every permission pass; anyone else
gets 403 naming what they lack.
"""

from __future__ import annotations

from collections.abc import Iterable

from crm_core.context import TenantContext
from crm_core.errors import Forbidden


def missing_permissions(ctx: TenantContext, permissions: Iterable[str]) -> list[str]:
    return sorted(set(permissions) - ctx.permissions)


def check_grant(ctx: TenantContext, permissions: Iterable[str], what: str = "grant") -> None:
    """Raise Forbidden unless the caller holds every permission in `permissions`."""
    missing = missing_permissions(ctx, permissions)
    if missing:
        raise Forbidden(
            f"You cannot {what} permissions you do not hold: {', '.join(missing)}",
            [{"field": "permissions", "message": f"not held: {code}"} for code in missing],
        )
