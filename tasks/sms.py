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
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from crm_core.settings import Settings
from crm_core.sms import CAMPAIGNS, MESSAGES, OPEN
from crm_core.storage import Storage
from tasks.providers import (
    AmbiguousSendError,
    PermanentSendError,
    SmsProvider,
    TransientSendError,
)
from tasks.ratelimit import SlotLimiter

log = logging.getLogger(__name__)


@dataclass
class SmsRuntime:
    """What the SMS tasks use, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    provider: SmsProvider
    limiter: SlotLimiter
    webhooks: Any = None  # crm_core.webhooks.WebhookService: campaign.finished events


def _now() -> datetime:
    return datetime.now(UTC)


async def send_batch(
    runtime: SmsRuntime, task_id: str, tenant_id: str, campaign_id: str, batch: int
) -> dict[str, int]:
    db = runtime.storage.tenant_db(tenant_id)
    cid = ObjectId(campaign_id)
    campaign = await db[CAMPAIGNS].find_one({"_id": cid})
    if campaign is None or campaign["status"] == "cancelled":
        return {"sent": 0}
    stale = await db[MESSAGES].update_many(
        {"campaign_id": cid, "batch": batch, "status": "sending", "claimed_by": task_id},
        {
            "$set": {
                "status": "unknown",
                "updated_at": _now(),
                "error": "the worker stopped while sending; check before resending",
            }
        },
    )
    if stale.modified_count:
        log.warning(
            "campaign %s batch %s: %d messages were being sent by a worker that "
            "stopped; marked unknown",
            campaign_id,
            batch,
            stale.modified_count,
        )
    await db[CAMPAIGNS].update_one(
        {"_id": cid, "status": "queued"}, {"$set": {"status": "sending", "updated_at": _now()}}
    )
    sent = 0
    pending = (
        db[MESSAGES]
        .find({"campaign_id": cid, "batch": batch, "status": "pending"}, {"_id": 1})
        .sort("_id", 1)
    )
    for message_id in [d["_id"] async for d in pending]:
        sent += await _deliver(runtime, db, tenant_id, message_id, task_id)
    await _finish_campaign(db, cid, runtime, tenant_id)
    return {"sent": sent}


async def send_one(runtime: SmsRuntime, task_id: str, tenant_id: str, message_id: str) -> int:
    db = runtime.storage.tenant_db(tenant_id)
    sent = await _deliver(runtime, db, tenant_id, ObjectId(message_id), task_id)
    message = await db[MESSAGES].find_one({"_id": ObjectId(message_id)}, {"campaign_id": 1})
    if message is not None:
        await _finish_campaign(db, message["campaign_id"], runtime, tenant_id)
    return sent


async def _deliver(
    runtime: SmsRuntime, db: Any, tenant_id: str, message_id: ObjectId, task_id: str
) -> int:
    settings = runtime.settings
    messages = db[MESSAGES]
    for attempt in range(1, settings.sms_max_attempts + 1):
        await runtime.limiter.wait(tenant_id)
        message = await messages.find_one_and_update(
            {"_id": message_id, "status": "pending"},
            {
                "$set": {
                    "status": "sending",
                    "claimed_by": task_id,
                    "claimed_at": _now(),
                    "updated_at": _now(),
                },
                "$inc": {"attempts": 1},
            },
            return_document=True,
        )
        if message is None:
            return 0  # cancelled, or already handled by another delivery
        try:
            provider_id = await runtime.provider.send(
                message["phone"], message["text"], str(message_id)
            )
        except TransientSendError as exc:
            if attempt == settings.sms_max_attempts:
                await _set(
                    messages,
                    message_id,
                    "failed",
                    error=f"gave up after {attempt} attempts: {exc.reason}",
                )
                return 0
            # definitely not sent: back to pending until the retry
            await _set(messages, message_id, "pending", error=exc.reason)
            await asyncio.sleep(settings.sms_retry_base_seconds * 2 ** (attempt - 1))
            continue
        except PermanentSendError as exc:
            await _set(messages, message_id, "failed", error=exc.reason)
            return 0
        except AmbiguousSendError as exc:
            await _set(messages, message_id, "unknown", error=exc.reason)
            return 0
        except Exception as exc:  # a provider bug: the request may have left, so never resend
            log.exception("unexpected error sending message %s", message_id)
            await _set(messages, message_id, "unknown", error=f"unexpected error: {exc!r}")
            return 0
        await _set(
            messages, message_id, "sent", provider_id=provider_id, error=None, sent_at=_now()
        )
        return 1
    return 0


async def _set(messages: Any, message_id: ObjectId, status: str, **fields: Any) -> None:
    await messages.update_one(
        {"_id": message_id}, {"$set": {"status": status, "updated_at": _now(), **fields}}
    )


async def _finish_campaign(
    db: Any, campaign_id: ObjectId, runtime: SmsRuntime | None = None, tenant_id: str = ""
) -> None:
    still_open = await db[MESSAGES].count_documents(
        {"campaign_id": campaign_id, "status": {"$in": list(OPEN)}}, limit=1
    )
    if not still_open:
        finished = await db[CAMPAIGNS].find_one_and_update(
            {"_id": campaign_id, "status": {"$in": ["queued", "sending"]}},
            {"$set": {"status": "completed", "updated_at": _now()}},
            return_document=True,
        )
        if finished is not None and runtime is not None and runtime.webhooks is not None:
            await runtime.webhooks.campaign_finished(db, tenant_id, finished)
