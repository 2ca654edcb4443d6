"""A company's daily SMS cap (docs/sms.md, "Daily cap"): `sms_daily_cap` in its settings, per
day of its time zone. A campaign reserves its messages on the day it starts (its `send_at`, or
now) with one conditional `$inc` before anything of it is stored, so campaigns created at the
same moment cannot go past the cap together; one that would is refused (409 `sms_daily_cap`).
Messages cancelled before they were sent are given back. One document per day in
`_sms_daily` (`_id` the day, `reserved` the messages reserved)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_core.platform.clock import as_utc
from crm_core.platform.errors import Conflict
from crm_core.platform.storage import Database

DAILY = "_sms_daily"


class DailyCapReached(Conflict):
    code = "sms_daily_cap"
    default_message = "The company's daily SMS cap is reached"


def cap_day(zone_name: str, moment: datetime) -> str:
    """The company's day (`YYYY-MM-DD`, its time zone) of `moment`."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return as_utc(moment).astimezone(zone).date().isoformat()


async def reserved(db: Database, day: str) -> int:
    """Messages reserved on `day` so far."""
    doc = await db[DAILY].find_one({"_id": day}, {"reserved": 1})
    return int(doc.get("reserved", 0)) if doc else 0


async def reserve(db: Database, cap: int, day: str, count: int) -> None:
    """Reserve `count` messages of `day` under `cap`, atomically (one conditional `$inc` on
    the day's document); `DailyCapReached` naming what is left when they do not fit."""
    if count <= 0:
        return
    if count <= cap:
        await db[DAILY].update_one({"_id": day}, {"$setOnInsert": {"reserved": 0}}, upsert=True)
        taken = await db[DAILY].update_one(
            {"_id": day, "reserved": {"$lte": cap - count}}, {"$inc": {"reserved": count}}
        )
        if taken.modified_count:
            return
    left = max(0, cap - await reserved(db, day))
    message = (
        f"The company's daily SMS cap of {cap} leaves {left} for {day}; this campaign sends {count}"
    )
    raise DailyCapReached(
        message,
        [{"field": "recipients", "message": message, "cap": cap, "left": left, "day": day}],
    )


async def release(db: Database, day: str, count: int) -> None:
    """Give back `count` reserved messages of `day` (they were cancelled before sending)."""
    if count > 0:
        await db[DAILY].update_one({"_id": day}, {"$inc": {"reserved": -count}})
