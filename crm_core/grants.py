"""The one rule of every grant (SPEC §9): nobody hands out what they do not hold.

Every route that changes what someone may do asks `check_grant` with what the change would
give: the permissions of a role being written, of the roles given to a user (own or another's,
the owner role included), of a user one takes over (roles changed, deactivated, password reset),
or a table access level being shared. Holders pass; anyone else gets 403 naming what they lack.
"""

from __future__ import annotations

from collections.abc import Iterable

from crm_core.context import TenantContext
from crm_core.errors import Forbidden
from crm_core.tables.access import Level


def check_grant(
    ctx: TenantContext,
    permissions: Iterable[str] = (),
    *,
    what: str = "grant",
    level: Level | None = None,
    held_level: Level | None = None,
) -> None:
    """Raise Forbidden unless the caller holds every permission in `permissions` and, for a
    table share, `level` is at most `held_level` (the caller's own access to that table)."""
    missing = sorted(set(permissions) - ctx.permissions)
    if missing:
        raise Forbidden(
            f"You cannot {what} permissions you do not hold: {', '.join(missing)}",
            [{"field": "permissions", "message": f"not held: {code}"} for code in missing],
        )
    if level is not None and (held_level is None or level > held_level):
        held = held_level.name.lower() if held_level is not None else "none"
        raise Forbidden(
            f"You cannot share {level.name.lower()} access: yours is {held}",
            [{"field": "access", "message": f"above your own access ({held})"}],
        )
