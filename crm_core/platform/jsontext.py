"""JSON text as clients send it. A JSON object may name a key twice, and the fast parser keeps
the last value without a word: `{"amount": 1, "amount": 2}` would store 2, and a filter
condition with two `field`s would test one of them. `repeated_key` finds such a key and where
it stands, so the caller can refuse it (docs/api.md "Lists and keys given twice")."""

from __future__ import annotations

import json
from typing import Any


class _Repeats(dict[str, Any]):
    """An object of the parsed text that named `key` twice."""

    key = ""


def repeated_key(text: str | bytes) -> tuple[str, str] | None:
    """(where, key) of the first object of `text` that names `key` twice, `where` a dotted
    path from the top (`""` for the top object, `filters.0` for the first item of `filters`);
    None when no object repeats a key. `text` must be valid JSON."""
    repeats: list[_Repeats] = []

    def as_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen: set[str] = set()
        repeated = _Repeats(obj)
        repeated.key = next(k for k, _ in pairs if k in seen or _add(seen, k))
        repeats.append(repeated)
        return repeated

    parsed = json.loads(text, object_pairs_hook=as_object)
    return _find(parsed, "") if repeats else None


def _add(seen: set[str], key: str) -> bool:
    seen.add(key)
    return False


def _find(value: Any, where: str) -> tuple[str, str] | None:
    if isinstance(value, _Repeats):
        return where, value.key
    if isinstance(value, dict):
        children: Any = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return None
    for name, child in children:
        found = _find(child, f"{where}.{name}" if where else str(name))
        if found is not None:
            return found
    return None
