"""Sending SMS campaigns: the taskiq tasks and the rules they follow.

A task takes ids (tenant, campaign, batch) and builds what it needs from them. Each message is
claimed atomically (`pending` → `sending`, stamped with the task id) before its request leaves,
so two workers never send the same message. When a task is delivered again (its worker died
before acknowledging it), messages that its earlier delivery left in `sending` are marked
`unknown`, never sent blindly a second time (see `crm_core.sms.resolve_message`). Transient
provider errors are retried with exponential backoff up to `SMS_MAX_ATTEMPTS`; permanent ones
fail the message with the provider's reason; an ambiguous answer makes it `unknown`. Every send
first takes the tenant's next rate slot.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from crm_core.settings import Settings
from crm_core.sms import CAMPAIGNS, MESSAGES, OPEN, bump, count_messages
from crm_core.storage import Storage
from tasks.providers import (
    AmbiguousSendError,
    PermanentSendError,
    SmsProvider,
    TransientSendError,
)
from tasks.ratelimit import SlotLimiter, until

log = logging.getLogger(__name__)

CLAIM_MARGIN_SECONDS = 2.0  # database latency and clock differences between workers


@dataclass
class SmsRuntime:
    """What the SMS tasks use, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    provider: SmsProvider
    limiter: SlotLimiter


def _now() -> datetime:
    return datetime.now(UTC)


async def send_batch(
    runtime: SmsRuntime, task_id: str, tenant_id: str, campaign_id: str, batch: int
) -> dict[str, int]:
    db = runtime.storage.tenant_db(tenant_id)
    cid = ObjectId(campaign_id)
    campaign = await db[CAMPAIGNS].find_one({"_id": cid}, {"status": 1})
    if campaign is None or campaign["status"] == "cancelled":
        return {"sent": 0}
    stale = await _abandoned(runtime, db, cid, batch, task_id)
    if stale.modified_count:
        log.warning(
            "campaign %s batch %s: %d messages were being sent by a worker that "
            "stopped; marked unknown",
            campaign_id,
            batch,
            stale.modified_count,
        )
        await bump(db, cid, {"sending": -stale.modified_count, "unknown": stale.modified_count})
    if campaign["status"] == "queued":
        await db[CAMPAIGNS].update_one(
            {"_id": cid, "status": "queued"},
            {"$set": {"status": "sending", "updated_at": _now()}},
        )
    query = {"campaign_id": cid, "batch": batch, "status": "pending"}
    sent = await _send_all(runtime, db, tenant_id, cid, query, task_id)
    await _finish_campaign(db, cid)
    return {"sent": sent}


async def _abandoned(
    runtime: SmsRuntime, db: Any, campaign_id: ObjectId, batch: int, task_id: str
) -> Any:
    """Mark `unknown` what an earlier delivery of this task left in `sending`. That delivery
    may still be alive (taken over because the batch ran longer than the redelivery timeout):
    a claim is presumed abandoned only once it is older than the longest a live worker takes
    to record it (the claim's rate slots, one send timeout, and a margin), so this waits for
    younger claims first."""
    settings = runtime.settings
    bound = timedelta(
        seconds=settings.sms_claim_size / settings.sms_rate_per_second
        + settings.sms_send_timeout_seconds
        + CLAIM_MARGIN_SECONDS
    )
    query = {"campaign_id": campaign_id, "batch": batch, "status": "sending", "claimed_by": task_id}
    young = await (
        db[MESSAGES]
        .find({**query, "claimed_at": {"$gt": _now() - bound}}, {"claimed_at": 1})
        .to_list(None)
    )
    if young:
        newest = max(_aware(m["claimed_at"]) for m in young)
        await asyncio.sleep(max(0.0, (newest + bound - _now()).total_seconds()))
    return await db[MESSAGES].update_many(
        query,
        {
            "$set": {
                "status": "unknown",
                "updated_at": _now(),
                "error": "the worker stopped while sending; check before resending",
            }
        },
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def send_one(runtime: SmsRuntime, task_id: str, tenant_id: str, message_id: str) -> int:
    db = runtime.storage.tenant_db(tenant_id)
    message = await db[MESSAGES].find_one({"_id": ObjectId(message_id)}, {"campaign_id": 1})
    if message is None:
        return 0
    cid = message["campaign_id"]
    query = {"_id": message["_id"], "status": "pending"}
    sent = await _send_all(runtime, db, tenant_id, cid, query, task_id)
    await _finish_campaign(db, cid)
    return sent


async def _send_all(
    runtime: SmsRuntime,
    db: Any,
    tenant_id: str,
    campaign_id: ObjectId,
    query: dict[str, Any],
    task_id: str,
) -> int:
    """Send every pending message matching `query`: one read per round, then claims of
    `sms_claim_size` messages sent concurrently, each on its own rate slot. Messages a
    transient error put back to `pending` are tried again in the next round, after the
    backoff; the others are never touched again by this delivery."""
    settings = runtime.settings
    size = settings.sms_claim_size
    sent = 0
    for round_ in range(1, settings.sms_max_attempts + 1):
        pending = (
            await db[MESSAGES]
            .find(query, {"phone": 1, "text": 1, "attempts": 1})
            .sort("_id", 1)
            .to_list(None)
        )
        retried = 0
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            slots = await runtime.limiter.wait(tenant_id, len(chunk))
            claimed = await _claim(db, campaign_id, chunk, task_id)
            if not claimed:
                continue
            attempts = zip(claimed, slots, strict=False)  # a claim may get fewer than asked
            results = await asyncio.gather(*(_attempt(runtime, m, slot) for m, slot in attempts))
            moves = await _record(db, claimed, results)
            await bump(db, campaign_id, moves)
            sent += moves.get("sent", 0)
            retried += moves.get("pending", 0)
        if not retried:
            break
        await asyncio.sleep(settings.sms_retry_base_seconds * 2 ** (round_ - 1))
    return sent


async def _claim(
    db: Any, campaign_id: ObjectId, chunk: list[dict[str, Any]], task_id: str
) -> list[dict[str, Any]]:
    """Mark the chunk's still-pending messages as ours in one update (`pending` → `sending`,
    stamped with the task id and a claim id); what another delivery or a cancel took first is
    left out."""
    ids = [m["_id"] for m in chunk]
    claim = ObjectId()
    now = _now()
    result = await db[MESSAGES].update_many(
        {"_id": {"$in": ids}, "status": "pending"},
        {
            "$set": {
                "status": "sending",
                "claimed_by": task_id,
                "claim": claim,
                "claimed_at": now,
                "updated_at": now,
            },
            "$inc": {"attempts": 1},
        },
    )
    if result.modified_count == len(chunk):
        claimed = [{**m, "attempts": m.get("attempts", 0) + 1} for m in chunk]
    elif result.modified_count:
        claimed = (
            await db[MESSAGES]
            .find({"_id": {"$in": ids}, "claim": claim}, {"phone": 1, "text": 1, "attempts": 1})
            .sort("_id", 1)
            .to_list(None)
        )
    else:
        claimed = []
    await bump(db, campaign_id, {"pending": -len(claimed), "sending": len(claimed)})
    return claimed


Outcome = tuple[str, dict[str, Any]]  # the new status and the fields recorded with it


async def _attempt(runtime: SmsRuntime, message: dict[str, Any], slot: float) -> Outcome:
    await until(slot)
    try:
        provider_id = await runtime.provider.send(
            message["phone"], message["text"], str(message["_id"])
        )
    except TransientSendError as exc:
        if message["attempts"] >= runtime.settings.sms_max_attempts:
            reason = f"gave up after {message['attempts']} attempts: {exc.reason}"
            return "failed", {"error": reason}
        return "pending", {"error": exc.reason}  # definitely not sent: tried again later
    except PermanentSendError as exc:
        return "failed", {"error": exc.reason}
    except AmbiguousSendError as exc:
        return "unknown", {"error": exc.reason}
    except Exception as exc:  # a provider bug: the request may have left, so never resend
        log.exception("unexpected error sending message %s", message["_id"])
        return "unknown", {"error": f"unexpected error: {exc!r}"}
    return "sent", {"provider_id": provider_id, "error": None, "sent_at": _now()}


async def _record(db: Any, claimed: list[dict[str, Any]], results: list[Outcome]) -> dict[str, int]:
    """Record a claim's outcomes: one update per resulting status, each message's own fields
    (provider id, error) picked by `_id` inside it. Only messages still `sending` under this
    claim change. Returns the counter moves."""
    groups: dict[str, list[tuple[ObjectId, dict[str, Any]]]] = {}
    for message, (status, fields) in zip(claimed, results, strict=True):
        groups.setdefault(status, []).append((message["_id"], fields))
    moves: dict[str, int] = {}
    now = _now()
    for status, items in groups.items():
        ids = [i for i, _ in items]
        values: dict[str, Any] = {"status": {"$literal": status}, "updated_at": {"$literal": now}}
        for name in sorted({name for _, fields in items for name in fields}):
            values[name] = _by_id([(i, fields.get(name)) for i, fields in items])
        result = await db[MESSAGES].update_many(
            {"_id": {"$in": ids}, "status": "sending"}, [{"$set": values}]
        )
        moves["sending"] = moves.get("sending", 0) - result.modified_count
        moves[status] = moves.get(status, 0) + result.modified_count
    return moves


def _by_id(values: list[tuple[ObjectId, Any]]) -> dict[str, Any]:
    """An update-pipeline expression giving each message its own value (a literal when they
    all share one)."""
    distinct = {repr(v) for _, v in values}
    if len(distinct) == 1:
        return {"$literal": values[0][1]}
    return {
        "$switch": {
            "branches": [
                {"case": {"$eq": ["$_id", {"$literal": i}]}, "then": {"$literal": v}}
                for i, v in values
            ],
            "default": None,
        }
    }


async def _finish_campaign(db: Any, campaign_id: ObjectId) -> None:
    """Complete the campaign when nothing is left to send, recounting its messages once
    (which also repairs a counter left behind by a worker that stopped between two writes)."""
    still_open = await db[MESSAGES].count_documents(
        {"campaign_id": campaign_id, "status": {"$in": list(OPEN)}}, limit=1
    )
    if not still_open:
        counted = await count_messages(db, campaign_id)
        await db[CAMPAIGNS].update_one(
            {"_id": campaign_id, "status": {"$in": ["queued", "sending"]}},
            {"$set": {"status": "completed", "updated_at": _now(), "counts": counted}},
        )
