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

from crm_core import metrics
from crm_core.settings import Settings
from crm_core.sms import CAMPAIGNS, MESSAGES, OPEN, bump, count_messages
from crm_core.storage import Storage, update_each
from tasks.providers import (
    AmbiguousSendError,
    PermanentSendError,
    SmsProvider,
    TransientSendError,
)
from tasks.ratelimit import SlotLimiter, until

log = logging.getLogger(__name__)

SENDS_IN_FLIGHT = 100
CLAIM_MARGIN_SECONDS = 2.0  # database latency and clock differences between workers


@dataclass
class SmsRuntime:
    """What the SMS tasks use, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    provider: SmsProvider
    limiter: SlotLimiter
    webhooks: Any = None  # crm_core.webhooks.WebhookService: campaign.finished events
    claims: asyncio.Semaphore | None = None  # claims in flight in this process

    def claim_slots(self) -> asyncio.Semaphore:
        """At most about `SENDS_IN_FLIGHT` requests at once per process (the HTTP client's
        connection pool): more would wait for a connection inside their send timeout."""
        if self.claims is None:
            self.claims = asyncio.Semaphore(max(1, SENDS_IN_FLIGHT // self.settings.sms_claim_size))
        return self.claims


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
        metrics.SMS_MESSAGES.labels("unknown", runtime.provider.name).inc(stale.modified_count)
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
    await _finish_campaign(db, cid, runtime, tenant_id)
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
    await _finish_campaign(db, cid, runtime, tenant_id)
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
        pending = await db[MESSAGES].find(query, FIELDS).sort("_id", 1).to_list(None)
        retried = 0
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            async with runtime.claim_slots():
                moves = await _send_claim(
                    runtime, db, tenant_id, campaign_id, query, chunk, task_id
                )
            sent += moves.get("sent", 0)
            retried += moves.get("pending", 0)
        if not retried:
            break
        await asyncio.sleep(settings.sms_retry_base_seconds * 2 ** (round_ - 1))
    return sent


async def _send_claim(
    runtime: SmsRuntime,
    db: Any,
    tenant_id: str,
    campaign_id: ObjectId,
    query: dict[str, Any],
    chunk: list[dict[str, Any]],
    task_id: str,
) -> dict[str, int]:
    slots = await runtime.limiter.wait(tenant_id, len(chunk))
    claim, claimed = await _claim(db, campaign_id, query, chunk, task_id)
    if not claimed:
        return {}
    if len(claimed) > len(slots):  # a message resent meanwhile fell inside the claim
        slots += await runtime.limiter.wait(tenant_id, len(claimed) - len(slots))
    attempts = zip(claimed, slots, strict=False)  # a claim may get fewer than asked
    results = await asyncio.gather(*(_attempt(runtime, m, slot) for m, slot in attempts))
    return await _record(db, campaign_id, claim, claimed, results)


FIELDS = {"phone": 1, "text": 1, "attempts": 1, "seq": 1}


async def _claim(
    db: Any,
    campaign_id: ObjectId,
    query: dict[str, Any],
    chunk: list[dict[str, Any]],
    task_id: str,
) -> tuple[ObjectId, list[dict[str, Any]]]:
    """Mark the chunk's still-pending messages as ours in one update (`pending` → `sending`,
    stamped with the task id and a claim id): the pending messages of the query between the
    chunk's first and last `_id`. What another delivery or a cancel took first is left out;
    the claim is read back only when it is not exactly the chunk."""
    claim = ObjectId()
    now = _now()
    result = await db[MESSAGES].update_many(
        {**query, "_id": {"$gte": chunk[0]["_id"], "$lte": chunk[-1]["_id"]}},
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
        claimed = await db[MESSAGES].find({"claim": claim}, FIELDS).sort("_id", 1).to_list(None)
    else:
        claimed = []
    await bump(db, campaign_id, {"pending": -len(claimed), "sending": len(claimed)})
    return claim, claimed


Outcome = tuple[str, dict[str, Any]]  # the new status and the fields recorded with it
OUTCOME_FIELDS = ("status", "error", "provider_id", "sent_at")


async def _attempt(runtime: SmsRuntime, message: dict[str, Any], slot: float) -> Outcome:
    outcome = await _send_at(runtime, message, slot)
    # metrics: a transient failure put back to pending is counted as a retry
    state = "retry" if outcome[0] == "pending" else outcome[0]
    metrics.sms_message(state, runtime.provider.name)
    return outcome


async def _send_at(runtime: SmsRuntime, message: dict[str, Any], slot: float) -> Outcome:
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


async def _record(
    db: Any,
    campaign_id: ObjectId,
    claim: ObjectId,
    claimed: list[dict[str, Any]],
    results: list[Outcome],
) -> dict[str, int]:
    """Record a claim's outcomes in one update: each message takes its own status, error and
    provider id from arrays indexed by its `seq` (its position in the campaign). Only messages
    still `sending` under this claim change; if some were not (a redelivery marked them
    `unknown`), the campaign's counters are recounted. Returns the status moves."""
    moves: dict[str, int] = {}
    for status, _ in results:
        moves["sending"] = moves.get("sending", 0) - 1
        moves[status] = moves.get(status, 0) + 1
    rows = [{"status": status, **fields} for status, fields in results]
    if all(isinstance(m.get("seq"), int) for m in claimed):
        low = min(m["seq"] for m in claimed)
        span = max(m["seq"] for m in claimed) - low + 1
        values: dict[str, Any] = {"updated_at": {"$literal": _now()}}
        for name in OUTCOME_FIELDS:
            column = [row.get(name) for row in rows]
            if len({repr(v) for v in column}) == 1:
                values[name] = {"$literal": column[0]}
                continue
            by_seq: list[Any] = [None] * span
            for message, value in zip(claimed, column, strict=True):
                by_seq[message["seq"] - low] = value
            index = {"$subtract": ["$seq", low]}
            values[name] = {"$arrayElemAt": [{"$literal": by_seq}, index]}
        result = await db[MESSAGES].update_many(
            {"claim": claim, "status": "sending"}, [{"$set": values}]
        )
        modified = result.modified_count
    else:  # messages stored before `seq` existed: one update each (a bulk write on a server)
        now = _now()
        updates = [
            (
                {"_id": m["_id"], "claim": claim, "status": "sending"},
                {"$set": {**row, "updated_at": now}},
            )
            for m, row in zip(claimed, rows, strict=True)
        ]
        await update_each(db[MESSAGES], updates, ordered=False)
        modified = await db[MESSAGES].count_documents(
            {"claim": claim, "status": {"$ne": "sending"}}
        )
    if modified == len(claimed):
        await bump(db, campaign_id, moves)
    else:
        await recount(db, campaign_id)
    return moves


async def recount(db: Any, campaign_id: ObjectId) -> dict[str, int]:
    counted = await count_messages(db, campaign_id)
    await db[CAMPAIGNS].update_one(
        {"_id": campaign_id, "counts": {"$exists": True}}, {"$set": {"counts": counted}}
    )
    return counted


async def _finish_campaign(
    db: Any, campaign_id: ObjectId, runtime: SmsRuntime | None = None, tenant_id: str = ""
) -> None:
    """Complete the campaign when nothing is left to send, recounting its messages once
    (which also repairs a counter left behind by a worker that stopped between two writes)."""
    still_open = await db[MESSAGES].count_documents(
        {"campaign_id": campaign_id, "status": {"$in": list(OPEN)}}, limit=1
    )
    if not still_open:
        counted = await count_messages(db, campaign_id)
        finished = await db[CAMPAIGNS].find_one_and_update(
            {"_id": campaign_id, "status": {"$in": ["queued", "sending"]}},
            {"$set": {"status": "completed", "updated_at": _now(), "counts": counted}},
            return_document=True,
        )
        if finished is not None and runtime is not None and runtime.webhooks is not None:
            await runtime.webhooks.campaign_finished(db, tenant_id, finished)
