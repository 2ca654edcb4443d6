"""Parsing ids that arrive from clients: one check, and the answers for an id in a URL (404)
and elsewhere (the caller's own terms; a column value:
`crm_core.tables.columns.value_object_id`)."""

from __future__ import annotations

from typing import TypeGuard

from bson import ObjectId

from crm_core.platform.errors import NotFound


def is_object_id(value: object) -> TypeGuard[str]:
    """Exactly 24 hex digits (`ObjectId.is_valid` also admits 12-byte strings and ObjectIds)."""
    return isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value)


def object_id(value: object, what: str = "Object") -> ObjectId:
    """An id from a client naming a thing to act on: anything that is not one of ours is
    simply not found (`Row not found`)."""
    parsed = parse_object_id(value)
    if parsed is None:
        raise NotFound(f"{what} not found")
    return parsed


def parse_object_id(value: object) -> ObjectId | None:
    """An id from a client (a body field, a token claim, a stored reference): None when it is
    not one of ours, for the caller to answer in its own terms (a 400 naming the field, a 401)."""
    return ObjectId(value) if is_object_id(value) else None
