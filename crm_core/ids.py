"""Parsing ids that arrive from clients."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.errors import NotFound


def object_id(value: Any, what: str = "Object") -> ObjectId:
    """An id from a URL: anything that is not one of ours is simply not found."""
    parsed = parse_object_id(value)
    if parsed is None:
        raise NotFound(f"{what} not found")
    return parsed


def parse_object_id(value: Any) -> ObjectId | None:
    """An id from a client (a body field, a token claim, a stored reference): None when it is
    not one of ours, for the caller to answer in its own terms (a 400 naming the field, a 401)."""
    if not isinstance(value, str) or len(value) != 24 or not ObjectId.is_valid(value):
        return None
    return ObjectId(value)
