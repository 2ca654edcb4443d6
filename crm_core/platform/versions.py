"""Optimistic concurrency (docs/api.md "Versions, ETag and If-Match"): a row's `_version` (its
write counter, stored as `_rev`, crm_core/tables/updates.py) and a table definition's `version`
travel as a strong entity tag, `ETag: "7"`; a write sent with `If-Match: "7"` is applied only
while the object is still at that version (a condition of the write itself, never a read
before it) and otherwise answers 412 `precondition_failed` naming the current version."""

from __future__ import annotations

import re

from crm_core.platform.errors import CrmError, ValidationFailed

IF_MATCH = "If-Match"
_TAG = re.compile(r'\s*(W/)?"([^"\x00-\x1f\x7f]*)"\s*')
_MAX_HEADER = 200


class IfMatch(int):
    """A version a client sent as `If-Match`: a stale one answers 412, not the 409 of the
    `?version=N` parameter of the table constructor."""


class PreconditionFailed(CrmError):
    code = "precondition_failed"
    status = 412
    default_message = "The object changed since the version you sent"

    @classmethod
    def at(cls, sent: int, current: int, field: str = IF_MATCH) -> PreconditionFailed:
        return cls(
            f"It changed since version {sent}: it is at version {current}; read it again",
            [{"field": field, "message": f"current version is {current}", "current": current}],
            headers={"ETag": etag(current)},
        )


def etag(version: int) -> str:
    """The strong entity tag of a version (If-Match compares tags strongly, RFC 9110)."""
    return f'"{version}"'


def parse_if_match(value: str | None) -> IfMatch | None:
    """The version an `If-Match` header names: None when absent or `*` (any current version:
    the write's own 404 covers a missing object); 400 naming the header when it is not one
    strong entity tag of a version (`"7"`). A weak tag (`W/"7"`) never matches under the
    strong comparison If-Match uses, so it is refused with that reason."""
    if value is None:
        return None
    text = value.strip()
    if text == "*":
        return None
    if len(text) > _MAX_HEADER:
        raise ValidationFailed.field(IF_MATCH, 'is too long: send one entity tag, e.g. "7"')
    match = _TAG.fullmatch(text)
    if match is None:
        raise ValidationFailed.field(
            IF_MATCH, 'must be one entity tag in double quotes, as ETag gave it: "7"'
        )
    if match.group(1):
        raise ValidationFailed.field(
            IF_MATCH, 'a weak tag never matches (RFC 9110): send the ETag as given, "7"'
        )
    digits = match.group(2)
    if not digits.isascii() or not digits.isdigit() or len(digits) > 15:
        raise ValidationFailed.field(IF_MATCH, f'"{digits[:20]}" is not a version this API gave')
    return IfMatch(int(digits))
