"""Parsing ids that arrive from clients: one check, and the answer for an id in a URL."""

from __future__ import annotations

from typing import Any, TypeGuard

from bson import ObjectId

from crm_core.errors import NotFound


def is_object_id(value: Any) -> TypeGuard[str]:
    """Exactly 24 hex digits (`ObjectId.is_valid` also admits 12-byte strings and ObjectIds)."""
    return isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value)


def object_id(value: Any, what: str = "Object") -> ObjectId:
    """An id from a client naming a thing to act on: anything that is not one of ours is
    simply not found (`Row not found`)."""
    if not is_object_id(value):
        raise NotFound(f"{what} not found")
    return ObjectId(value)
