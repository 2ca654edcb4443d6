"""Parsing ids that arrive from clients."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.errors import NotFound


def object_id(value: Any, what: str = "Object") -> ObjectId:
    """An id from a URL: anything that is not one of ours is simply not found."""
    if not isinstance(value, str) or len(value) != 24 or not ObjectId.is_valid(value):
        raise NotFound(f"{what} not found")
    return ObjectId(value)
