"""The MongoDB update for a set of changes to a row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def set_unset(set_values: Mapping[str, Any], unset: Iterable[str] = ()) -> dict[str, Any]:
    """`{"$set": set_values, "$unset": {key: ""}}`, leaving out an empty `$unset` (an empty
    `$set` is kept: callers always stamp `_updated_at`)."""
    update: dict[str, Any] = {"$set": dict(set_values)}
    cleared = dict.fromkeys(unset, "")
    if cleared:
        update["$unset"] = cleared
    return update
