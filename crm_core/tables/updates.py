"""The MongoDB update for a set of changes to a row, and the 409 for a unique value a write
found taken."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from crm_core.platform.errors import Conflict

_INDEX_NAME = re.compile(r"index:\s+u_([a-z][a-z0-9_]*)")

REVISION_FIELD = "_rev"  # the row's write counter: a revision's `seq` (tables/history.py)
# the same counter as the API names it: a row's `_version`, its ETag (crm_core/platform/
# versions.py); one counter, stored as `_rev`, answered as `_version` (docs/storage.md)
VERSION_FIELD = "_version"


def row_version(doc: Mapping[str, Any]) -> int:
    """A stored row's version (0 for a row written before the counter existed)."""
    return int(doc.get(REVISION_FIELD) or 0)


def at_version(version: int) -> dict[str, Any]:
    """The condition 'the row is still at `version`', part of a write's own filter."""
    if version == 0:
        return {REVISION_FIELD: {"$in": [None, 0]}}
    return {REVISION_FIELD: version}


def set_unset(set_values: Mapping[str, Any], unset: Iterable[str] = ()) -> dict[str, Any]:
    """`{"$set": set_values, "$unset": {key: ""}, "$inc": {"_rev": 1}}`, leaving out an empty
    `$unset` (an empty `$set` is kept: callers always stamp `_updated_at`). `_rev` counts the
    row's writes: its revisions are ordered by it (crm_core/tables/history.py)."""
    update: dict[str, Any] = {"$set": dict(set_values), "$inc": {REVISION_FIELD: 1}}
    cleared = dict.fromkeys(unset, "")
    if cleared:
        update["$unset"] = cleared
    return update


def written_row(
    before: Mapping[str, Any], set_values: Mapping[str, Any], unset: Iterable[str] = ()
) -> dict[str, Any]:
    """The row as `set_unset(set_values, unset)` left it, from the row as it was just before
    (the update's own answer: `find_one_and_update`, return the document before): its values
    and the version that update gave it (`seq` of its revision), with no read-back that a
    later write could outrun (docs/history.md)."""
    gone = set(unset)
    after = {k: v for k, v in {**before, **set_values}.items() if k not in gone}
    after[REVISION_FIELD] = row_version(before) + 1
    return after


def unique_conflict(exc: Exception) -> Conflict:
    """The 409 for a duplicate key error of a unique column's index, naming the column."""
    details: dict[str, Any] = getattr(exc, "details", None) or {}
    pattern = details.get("keyPattern")
    if not pattern:
        for error in details.get("writeErrors", []):
            pattern = error.get("keyPattern")
            if pattern:
                break
    column = next(iter(pattern), None) if pattern else None
    if column is None:
        match = _INDEX_NAME.search(str(exc))
        column = match.group(1) if match else None
    if column is None:
        return Conflict("A unique value is already used by another row")
    return Conflict(
        f"The value of unique column '{column}' is already used by another row",
        [{"field": column, "message": "already used by another row"}],
    )
