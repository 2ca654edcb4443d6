"""The one rule of every grant (docs/api.md "Roles, users, shares, aliases"): nobody hands out what
they do not hold; and the one rule of every "its owner may" (docs/api.md "API tokens"): a token acts
only within its scope.

Every route that changes what someone may do asks `check_grant` with what the change would
give: the permissions of a role being written, of the roles given to a user (own or another's,
the owner role included), of a user one takes over (roles changed, deactivated, password reset),
or a table access level being shared. Holders pass; anyone else gets 403 naming what they lack.

Every rule that lets a user act on what is theirs without a permission code (the granter of a
share revokes it, a user ends their own sessions, revokes their own tokens, changes their own
password) asks `check_token_scope`: a signed-in session passes, an API token only when its
scope (its permission codes, its `table_access`) covers the action. Routes guarded by a
permission code or a table level need nothing more: for a token, `ctx.permissions` is already
the token's codes that the user holds and table levels are capped by `table_access`.
"""

from __future__ import annotations

from collections.abc import Iterable

from crm_core.accounts.context import TenantContext
from crm_core.accounts.permissions import LEVEL_NAMES, Level
from crm_core.platform.errors import Forbidden


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


def check_token_scope(
    ctx: TenantContext,
    action: str,
    *,
    permission: str | None = None,
    level: Level | None = None,
) -> None:
    """Raise Forbidden when the call is made with an API token whose scope covers neither
    `permission` nor table access `level`; with neither given, only a signed-in session (an
    access token from login) may `action`."""
    if ctx.api_token_id is None:
        return
    if permission is not None and ctx.has(permission):
        return
    cap = ctx.table_level_cap
    if level is not None and cap is not None and cap >= level:
        return
    # each case a whole message, so each is a msgid of its own (docs/api.md "Languages")
    name = None if level is None else next(n for n, v in LEVEL_NAMES.items() if v == level)
    if permission is not None and name is not None:
        message = (
            f"This API token's scope does not cover: {action}. "
            f"It needs the '{permission}' permission or table_access '{name}'"
        )
    elif permission is not None:
        message = (
            f"This API token's scope does not cover: {action}. "
            f"It needs the '{permission}' permission"
        )
    elif name is not None:
        message = f"This API token's scope does not cover: {action}. It needs table_access '{name}'"
    else:
        message = (
            f"This API token's scope does not cover: {action}. "
            "It needs a signed-in session (sign in; tokens cannot)"
        )
    raise Forbidden(message)
