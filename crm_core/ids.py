"""Parsing ids that arrive from clients."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.errors import NotFound, ValidationFailed


def object_id(value: Any, what: str = "Object") -> ObjectId:
    """An id from a URL: anything that is not one of ours is simply not found."""
    if not isinstance(value, str) or len(value) != 24 or not ObjectId.is_valid(value):
        raise NotFound(f"{what} not found")
    return ObjectId(value)


def object_id_field(value: Any, field: str) -> ObjectId:
    """An id inside a body: a malformed one is a 400 naming the field."""
    if not isinstance(value, str) or len(value) != 24 or not ObjectId.is_valid(value):
        raise ValidationFailed.field(field, "is not a valid id")
    return ObjectId(value)
