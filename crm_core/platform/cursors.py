"""Cursor pages (docs/api.md "Pages and cursors"): the opaque `cursor` a list answers as
`next_cursor`, and the condition that selects what comes after it.

A cursor is the sort keys of a page's last item (its `_id` last, the tie-breaker), signed with
an HMAC of the service's `SECRET_KEY` and bound to what it pages: the list (a table, a row's
history...), the sort, the filters, the company and the user. The next page is the list's own
query with one more condition, `after(sort, keys)`, merged in by `merge_after`: a range on the
sort keys that the index serving the first page serves too, so a page costs the same at any
depth and rows written meanwhile neither repeat nor go missing. A blank (null or missing) sort
value sorts before every value, as in MongoDB: first when ascending, last when descending.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import bson
import orjson
from bson.errors import BSONError

from crm_core.platform.errors import CrmError, ValidationFailed
from crm_core.platform.storage.types import Collection

CURSOR_TTL_SECONDS = 24 * 3600  # a cursor older than a day is refused: start from the top again
_MAC_BYTES = 16
_KEY_LABEL = b"crm list cursor v1"

Sort = Sequence[tuple[str, int]]


class Caller(Protocol):
    """Whose page it is (a `TenantContext`, crm_core/accounts/context.py): a cursor works for
    the company and user it was made for only; `max_time_ms` bounds the list's query."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def max_time_ms(self) -> int: ...


class InvalidCursor(CrmError):
    code = "invalid_cursor"
    status = 400
    default_message = "The cursor is not valid"

    def __init__(self, reason: str) -> None:
        super().__init__(f"cursor: {reason}", [{"field": "cursor", "message": reason}])


@dataclass(frozen=True)
class PageScope:
    """What a cursor is bound to: the list (`"rows:contracts"`, `"audit"`...), its sort and its
    filters (any JSON value: the filter parameters as parsed), for one company and user."""

    list_name: str
    sort: tuple[tuple[str, int], ...]
    filters: object = None

    def digest(self, tenant_id: str, user_id: str) -> bytes:
        text = orjson.dumps(
            [self.list_name, self.sort, self.filters, tenant_id, user_id],
            option=orjson.OPT_SORT_KEYS,
            default=str,
        )
        return hashlib.sha256(text).digest()[:16]


class PageCursors:
    """Makes and reads signed cursors (one per process, keyed from `SECRET_KEY`)."""

    def __init__(self, secret: str | bytes, ttl_seconds: int = CURSOR_TTL_SECONDS) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hmac.new(raw, _KEY_LABEL, hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    @classmethod
    def ephemeral(cls) -> PageCursors:
        """A key of this process only (services built without settings, in tests)."""
        return cls(secrets.token_bytes(32))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, scope: PageScope, tenant_id: str, user_id: str, keys: Sequence[object]) -> str:
        payload = bson.encode(
            {
                "b": bson.Binary(scope.digest(tenant_id, user_id)),
                "e": int(time.time()) + self.ttl_seconds,
                "k": list(keys),
            }
        )
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def read(self, scope: PageScope, tenant_id: str, user_id: str, token: str) -> list[object]:
        """The sort keys a cursor holds; 400 `invalid_cursor` naming `cursor` for one that
        is forged or damaged, expired, or made for another list, sort, filter or caller."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor("is not a cursor this server made") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor("is not a cursor this server made") from None
        try:
            doc = bson.decode(payload)
        except (BSONError, ValueError):  # signed by us, so not expected: refused all the same
            raise InvalidCursor("is not a cursor this server made") from None
        if int(doc.get("e", 0)) < time.time():
            raise InvalidCursor("has expired; start again from the first page")
        if bytes(doc.get("b", b"")) != scope.digest(tenant_id, user_id):
            raise InvalidCursor("was made for another list, sort or filter; start again without it")
        keys = doc.get("k")
        if not isinstance(keys, list) or len(keys) != len(scope.sort):
            raise InvalidCursor("was made for another list, sort or filter; start again without it")
        return keys


def check_offset(offset: int, cursor: str | None) -> None:
    """`offset` beside `cursor`: 400 naming `offset` (its maximum, `models.base.MAX_OFFSET`,
    is the query model's)."""
    if cursor is not None and offset:
        raise ValidationFailed.field("offset", "give either offset or cursor, not both")


def sort_keys(doc: Mapping[str, Any], sort: Sort) -> list[object]:
    """The values of a document's sort keys (a missing field is a blank, None)."""
    return [_get(doc, field) for field, _ in sort]


def _get(doc: Mapping[str, Any], path: str) -> object:
    value: object = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _beyond(direction: int, value: object) -> list[object]:
    """The conditions on one key for 'strictly after `value`' in `direction` (a blank sorts
    before every value; `None` as a condition is the blank itself)."""
    if direction > 0:
        return [{"$ne": None}] if value is None else [{"$gt": value}]
    return [] if value is None else [{"$lt": value}, None]


def _bound(direction: int, value: object) -> object | None:
    """A range on the first key that holds every item after the cursor: where the index scan
    starts (None: the scan starts at the index's own start, the blanks)."""
    if value is None:
        return None  # ascending: the blanks come first; descending: only blanks remain
    return {"$gte": value} if direction > 0 else {"$not": {"$gt": value}}


def after(sort: Sort, keys: Sequence[object]) -> dict[str, Any]:
    """The condition of the items strictly after the one whose sort keys are `keys` (the sort
    ends with `_id`, so no two items share all their keys): the union over each key of
    'the keys before it equal, this one beyond', with the first key bounded as a range."""
    branches: list[dict[str, Any]] = []
    for index, (field, direction) in enumerate(sort):
        prefix = {f: keys[i] for i, (f, _) in enumerate(sort[:index])}
        for beyond in _beyond(direction, keys[index]):
            branches.append({**prefix, field: beyond})
    if not branches:
        return {"_id": {"$in": []}}  # nothing comes after: an empty page
    condition: dict[str, Any] = branches[0] if len(branches) == 1 else {"$or": branches}
    first_field, first_direction = sort[0]
    bound = _bound(first_direction, keys[0])
    if bound is not None and len(branches) > 1:
        condition = {first_field: bound, **condition}
    return condition


def merge_after(query: Mapping[str, Any], condition: Mapping[str, Any] | None) -> dict[str, Any]:
    """The list's query with the cursor's condition (None: the first page) merged in. A query
    that is a union (`$or` at its top) takes the condition into each branch, so each branch
    stays served by its own index as on the first page."""
    if not condition:
        return dict(query)
    if not query:
        return dict(condition)
    branches = query.get("$or")
    if isinstance(branches, list) and branches:
        rest = {k: v for k, v in query.items() if k != "$or"}
        return {**rest, "$or": [merge_after(branch, condition) for branch in branches]}
    return {"$and": [dict(query), dict(condition)]}


def page_keys(
    cursors: PageCursors,
    scope: PageScope,
    tenant_id: str,
    user_id: str,
    cursor: str | None,
) -> dict[str, Any] | None:
    """The condition of the page after `cursor` (None for the first page)."""
    if cursor is None:
        return None
    return after(scope.sort, cursors.read(scope, tenant_id, user_id, cursor))


def next_cursor(
    cursors: PageCursors,
    scope: PageScope,
    tenant_id: str,
    user_id: str,
    docs: Sequence[Mapping[str, Any]],
    limit: int,
) -> str | None:
    """The cursor of the page after `docs`, read with one item more than `limit`: None when
    that item is absent (the list ends here)."""
    if len(docs) <= limit or not docs:
        return None
    return cursors.make(scope, tenant_id, user_id, sort_keys(docs[limit - 1], scope.sort))


async def read_page(
    cursors: PageCursors,
    ctx: Caller,
    scope: PageScope,
    collection: Collection,
    query: dict[str, Any],
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
    projection: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `collection` in `scope.sort` order (which ends with a unique field): from
    `offset`, or after `cursor`; and the next page's cursor."""
    check_offset(offset, cursor)
    where = query
    if cursor is not None:
        keys = cursors.read(scope, ctx.tenant_id, ctx.user_id, cursor)
        where = merge_after(query, after(scope.sort, keys))
    found = collection.find(where, projection, max_time_ms=ctx.max_time_ms).sort(list(scope.sort))
    if offset:
        found = found.skip(offset)
    docs = await found.limit(limit + 1).to_list(length=limit + 1)
    following = next_cursor(cursors, scope, ctx.tenant_id, ctx.user_id, docs, limit)
    return docs[:limit], following
