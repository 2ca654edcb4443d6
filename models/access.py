"""Roles, users, shares, aliases and the permission catalogue (docs/api.md "Roles, users, shares,
aliases")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from beanie import PydanticObjectId
from pydantic import EmailStr, Field, field_validator

from models.accounts import PasswordField, UserOut, normalise_email
from models.base import (
    NEXT_CURSOR_DESCRIPTION,
    Cursor,
    InputModel,
    OutputModel,
    QueryModel,
    StoredRecord,
)

# The permission catalogue: the codes a role may hold (docs/api.md "Roles, users, shares,
# aliases"); the built-in roles that hold them are in crm_core/accounts/permissions.py.
PERMISSIONS: dict[str, str] = {
    "tenant.manage": "Change the company's settings and transfer ownership",
    "users.read": "List the company's users",
    "users.manage": "Create, edit and deactivate the company's users",
    "roles.manage": "Create, edit and delete roles",
    "tables.create": "Create custom tables (the creator owns them)",
    "tables.all": "Read, edit and restructure every custom table of the company",
    "shares.manage": "Share any table of the company, not only one's own",
    "aliases.manage": "Rename tables and columns for the whole company",
    "leads.read": "Read leads",
    "leads.write": "Create, edit and delete leads",
    "legal_entities.read": "Read legal entities",
    "legal_entities.write": "Create, edit and delete legal entities",
    "individuals.read": "Read individuals",
    "individuals.write": "Create, edit and delete individuals",
    "sms.read": "See SMS campaigns and their messages",
    "sms.send": "Create and cancel SMS campaigns",
    # integrations
    "webhooks.manage": "Register, change and test the company's webhooks",
    "audit.read": "Read the company's audit trail",
}

PermissionCode = Literal[tuple(sorted(PERMISSIONS))]  # type: ignore[valid-type]
ACCESS_LEVELS = Literal["read", "write", "manage"]


class PermissionOut(OutputModel):
    code: str
    description: str


class PermissionList(OutputModel):
    items: list[PermissionOut]


class RoleIn(InputModel):
    name: str = Field(min_length=1, max_length=100)
    permissions: list[PermissionCode] = Field(default_factory=list, max_length=100)  # type: ignore[valid-type]


class RolePatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    permissions: list[PermissionCode] | None = Field(default=None, max_length=100)  # type: ignore[valid-type]


class RoleRecord(StoredRecord):
    """A document of the tenant's `_roles` collection. Custom roles have no `key` (the sparse
    unique index skips absent fields only: a stored null would collide on a real MongoDB)."""

    id: PydanticObjectId = Field(alias="_id")
    key: str | None = None  # the built-in roles: owner, admin, manager, viewer
    name: str
    permissions: list[str] = Field(default_factory=list)
    builtin: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RoleOut(OutputModel):
    id: str
    key: str | None
    name: str
    permissions: list[str]
    builtin: bool

    @classmethod
    def from_record(cls, role: RoleRecord) -> Self:
        return cls(
            id=str(role.id),
            key=role.key,
            name=role.name,
            permissions=role.permissions,
            builtin=role.builtin,
        )


class RoleList(OutputModel):
    items: list[RoleOut]


class UserCreateIn(PasswordField):
    email: EmailStr
    full_name: str = Field(min_length=1, max_length=200)
    role_ids: list[str] = Field(default_factory=list, max_length=50)

    _email = field_validator("email")(normalise_email)


class UserPatch(InputModel):
    full_name: str | None = Field(default=None, min_length=1, max_length=200)
    role_ids: list[str] | None = Field(default=None, max_length=50)
    is_active: bool | None = None


class UserListQuery(QueryModel):
    limit: int = Field(default=1000, ge=1, le=1000)
    cursor: Cursor = None


class UserList(OutputModel):
    items: list[UserOut]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class ShareIn(InputModel):
    table: str = Field(min_length=1, max_length=63)
    user_id: str | None = Field(default=None, max_length=24)
    role_id: str | None = Field(default=None, max_length=24)
    access: ACCESS_LEVELS


class ShareRecord(StoredRecord):
    """A document of the tenant's `_shares` collection: one table shared with exactly one
    user or role (the other id is stored as null)."""

    id: PydanticObjectId = Field(alias="_id")
    table: str
    user_id: str | None = None
    role_id: str | None = None
    access: str
    granted_by: str
    created_at: datetime
    updated_at: datetime | None = None


class ShareOut(OutputModel):
    id: str
    table: str
    user_id: str | None
    role_id: str | None
    access: str
    granted_by: str
    created_at: datetime

    @classmethod
    def from_record(cls, share: ShareRecord) -> Self:
        return cls(
            id=str(share.id),
            table=share.table,
            user_id=share.user_id,
            role_id=share.role_id,
            access=share.access,
            granted_by=share.granted_by,
            created_at=share.created_at,
        )


class ShareList(OutputModel):
    granted: list[ShareOut] = Field(description="Shares the caller granted")
    received: list[ShareOut] = Field(
        description="Shares that reach the caller, directly or through a role"
    )


class AliasIn(InputModel):
    table: str | None = Field(
        default=None, min_length=1, max_length=255, description="Display name of the table"
    )
    columns: dict[str, str] = Field(
        default_factory=dict, max_length=500, description="Column key to display name"
    )

    @field_validator("columns")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if not 1 <= len(name) <= 255:
                raise ValueError(f"the name of '{key[:64]}' must be 1 to 255 characters")
        return value


class AliasRecord(StoredRecord):
    """A document of the tenant's `_aliases` collection: one table's display names."""

    table: str
    name: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)


class AliasOut(OutputModel):
    table_key: str
    table: str | None
    columns: dict[str, str]

    @classmethod
    def from_record(cls, table_key: str, alias: AliasRecord | None) -> Self:
        """A table without aliases answers its key with no names."""
        if alias is None:
            return cls(table_key=table_key, table=None, columns={})
        return cls(table_key=table_key, table=alias.name, columns=alias.columns)


class AliasList(OutputModel):
    items: list[AliasOut]
