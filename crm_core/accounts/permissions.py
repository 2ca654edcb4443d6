"""The built-in roles every tenant starts with (docs/api.md "Roles, users, shares, aliases"; the
permission catalogue they draw on is models/access.py) and the levels of access to a table
(decided in crm_core/tables/access.py)."""

from __future__ import annotations

from enum import IntEnum

from models.access import PERMISSIONS

_STANDARD = [
    "leads.read",
    "leads.write",
    "legal_entities.read",
    "legal_entities.write",
    "individuals.read",
    "individuals.write",
]

BUILTIN_ROLES: dict[str, tuple[str, list[str]]] = {
    "owner": ("Owner", sorted(PERMISSIONS)),
    "admin": ("Administrator", sorted(set(PERMISSIONS) - {"tenant.manage"})),
    "manager": ("Manager", [*_STANDARD, "tables.create", "sms.read", "sms.send", "users.read"]),
    "viewer": ("Viewer", ["leads.read", "legal_entities.read", "individuals.read"]),
}

# Codes added after companies existed: `crm migrate` (and `crm serve` at start) gives them to
# the built-in roles that hold them in BUILTIN_ROLES.
ADDED_LATER: list[str] = ["webhooks.manage", "audit.read"]


class Level(IntEnum):
    """How far a caller reaches a table: by ownership, `tables.all`, a share, or an API
    token's `table_access` (the cap)."""

    NONE = 0
    READ = 1  # list and read rows
    WRITE = 2  # also create, edit and delete rows
    MANAGE = 3  # also change the table's columns, rename and delete it, share it


LEVEL_NAMES = {"read": Level.READ, "write": Level.WRITE, "manage": Level.MANAGE}
