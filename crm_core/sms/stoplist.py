"""The company's SMS stop list (docs/sms.md, "Stop list"): numbers (E.164, normalised with the
company's region) that are never sent. One document per number in `_sms_stop_list`, the number
as `_id` (so every lookup is served by the `_id` index). A campaign's recipients on the list
are stored `blocked` at creation; a number added later is checked again by the sender right
before each claim, so it is not sent either."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow
from crm_core.platform.errors import ValidationFailed
from crm_core.platform.phones import InvalidPhone, normalise_phone
from crm_core.platform.storage import BulkWriteError, Database

STOP_LIST = "_sms_stop_list"
LOOKUP_CHUNK = 1000  # numbers per `$in` lookup
BLOCKED_ERROR = "the number is on the company's stop list"


def normalised(phones: list[str], region: str) -> list[str]:
    """Each number as E.164, or a 400 naming the first bad one (`phones.N`)."""
    result = []
    errors = []
    for index, raw in enumerate(phones):
        try:
            result.append(normalise_phone(raw, region))
        except InvalidPhone as exc:
            errors.append({"field": f"phones.{index}", "message": str(exc)})
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    return result


async def stopped(db: Database, phones: Iterable[str]) -> set[str]:
    """Which of `phones` are on the stop list."""
    wanted = list(dict.fromkeys(phones))
    found: set[str] = set()
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        async for doc in db[STOP_LIST].find({"_id": {"$in": chunk}}, {"_id": 1}):
            found.add(str(doc["_id"]))
    return found


async def add(ctx: TenantContext, phones: list[str]) -> tuple[int, int, list[str]]:
    numbers = normalised(phones, ctx.tenant.phone_region)
    distinct = list(dict.fromkeys(numbers))
    now = utcnow()
    docs: list[dict[str, Any]] = [
        {"_id": n, "added_by": ctx.user_id, "added_at": now} for n in distinct
    ]
    try:
        result = await ctx.db[STOP_LIST].insert_many(docs, ordered=False)
        added = len(result.inserted_ids)
    except BulkWriteError as exc:  # numbers already listed
        added = int(exc.details.get("nInserted", 0))
    return added, len(numbers) - added, numbers


async def remove(ctx: TenantContext, phones: list[str]) -> tuple[int, int, list[str]]:
    numbers = normalised(phones, ctx.tenant.phone_region)
    distinct = list(dict.fromkeys(numbers))
    removed = 0
    for start in range(0, len(distinct), LOOKUP_CHUNK):
        chunk = distinct[start : start + LOOKUP_CHUNK]
        result = await ctx.db[STOP_LIST].delete_many({"_id": {"$in": chunk}})
        removed += result.deleted_count
    return removed, len(numbers) - removed, numbers


async def page(ctx: TenantContext, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    docs = (
        await ctx.db[STOP_LIST]
        .find({}, max_time_ms=ctx.max_time_ms)
        .sort("_id", 1)
        .skip(offset)
        .limit(limit)
        .to_list(limit)
    )
    total = await ctx.db[STOP_LIST].estimated_document_count()  # the whole list: no scan
    return docs, int(total)
