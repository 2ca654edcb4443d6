"""Delivery reports (docs/sms.md, "Delivery reports"): what becomes of a message after `sent`.

SMS.ru tells us by a callback (`POST /api/sms/callbacks/smsru`, handlers/sms.py) or, when no
callback came, by `sms/status` polled later (`DeliveryPoller`, through the outbox). Either way
a report names the provider's `sms_id` and a code; the code decides the message's new state:

- 103 → `delivered` (with `delivered_at`, the provider's moment);
- 104 → `expired`;
- 105, 106, 107, 108, 150 → `undelivered`, with the provider's code and text;
- 100, 101, 102 (queued, passed to the operator, sent): no change, a final report follows.

Only a `sent` message changes (a report never moves a message twice, nor one in another state).
The callback carries no company: `sms_reports` (system database) maps each provider id a send
returned to its company and message; an unknown id is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from crm_core.platform import metrics
from crm_core.platform.clock import utcnow
from crm_core.platform.storage import BulkWriteError, Database, Storage
from crm_core.sms.names import CAMPAIGNS, MESSAGES

log = logging.getLogger(__name__)

REPORTS = "sms_reports"  # system database: provider id → company and message

DELIVERED = {103}
EXPIRED = {104}
UNDELIVERED = {105, 106, 107, 108, 150}
NOT_FINAL = {100, 101, 102}
CODE_TEXT = {
    100: "queued",
    101: "passed to the operator",
    102: "sent, in transit",
    103: "delivered",
    104: "not delivered: its lifetime expired",
    105: "deleted by the operator",
    106: "failure at the phone",
    107: "not delivered: unknown reason",
    108: "rejected",
    150: "not delivered: no route to this number",
}
MAX_ENTRIES = 1000  # entries one callback may carry (SMS.ru sends far fewer)


class MalformedReport(ValueError):
    """The callback's body is not what SMS.ru sends."""


@dataclass(frozen=True)
class Report:
    provider_id: str
    code: int
    at: datetime | None


def report_key(provider: str, provider_id: str) -> str:
    return f"{provider}:{provider_id}"


def new_state(code: int) -> str | None:
    """The message state a provider code leads to, None while it is not final."""
    if code in DELIVERED:
        return "delivered"
    if code in EXPIRED:
        return "expired"
    if code in UNDELIVERED:
        return "undelivered"
    return None  # 100-102, or a code this version does not know: wait for the next report


def smsru_hash(api_id: str, data: Sequence[str]) -> str:
    """SMS.ru's callback signature: sha256 of the api_id followed by the data entries."""
    return hashlib.sha256((api_id + "".join(data)).encode()).hexdigest()


def verify_smsru(api_id: str, data: Sequence[str], given: str) -> bool:
    # bytes: compare_digest refuses str with non-ASCII characters (a forged hash may hold any)
    expected = smsru_hash(api_id, data).encode()
    return bool(api_id) and hmac.compare_digest(expected, given.lower().encode("utf-8", "replace"))


def parse_smsru(data: Sequence[str]) -> list[Report]:
    """The entries of a callback's `data[]`: lines `sms_status`, id, code, unix time. Other
    kinds of entry (SMS.ru sends e.g. `callcheck_status` too) are skipped."""
    if not data:
        raise MalformedReport("data[] is empty")
    if len(data) > MAX_ENTRIES:
        raise MalformedReport(f"data[] has more than {MAX_ENTRIES} entries")
    reports = []
    for index, entry in enumerate(data):
        lines = entry.replace("\r\n", "\n").split("\n")
        if lines[0] != "sms_status":
            continue
        if len(lines) < 3:
            raise MalformedReport(f"data[{index}]: an sms_status entry has id, code and time")
        provider_id, code = lines[1].strip(), lines[2].strip()
        if not provider_id or len(provider_id) > 100:
            raise MalformedReport(f"data[{index}]: the sms id is missing or too long")
        if not code.isdigit() or len(code) > 4:
            raise MalformedReport(f"data[{index}]: the status code is not a number")
        at = None
        if len(lines) > 3 and lines[3].strip():
            moment = lines[3].strip()
            if not moment.isdigit() or len(moment) > 12:
                raise MalformedReport(f"data[{index}]: the time is not a unix time")
            at = datetime.fromtimestamp(int(moment), UTC)
        reports.append(Report(provider_id, int(code), at))
    return reports


async def remember_sent(
    system_db: Database,
    provider: str,
    tenant_id: str,
    campaign_id: ObjectId,
    sent: Sequence[tuple[ObjectId, str]],
) -> None:
    """Record which company and message each provider id belongs to (one write per claim)."""
    if not sent:
        return
    now = utcnow()
    docs = [
        {
            "_id": report_key(provider, provider_id),
            "tenant_id": tenant_id,
            "campaign_id": campaign_id,
            "message_id": message_id,
            "sent_at": now,
        }
        for message_id, provider_id in sent
    ]
    try:
        await system_db[REPORTS].insert_many(docs, ordered=False)
    except BulkWriteError:  # a repeated id (a resend of the same provider id): keep the first
        pass


async def apply_reports(
    storage: Storage, provider: str, reports: Sequence[Report]
) -> dict[str, int]:
    """Move each reported `sent` message to its final state; unknown ids and reports that are
    not final change nothing. Returns the moves made, by state."""
    final = [r for r in reports if new_state(r.code) is not None]
    if not final:
        return {}
    keys = [report_key(provider, r.provider_id) for r in final]
    known = {
        doc["_id"]: doc async for doc in storage.system_db[REPORTS].find({"_id": {"$in": keys}})
    }
    moves: dict[str, int] = {}
    done: list[str] = []
    for report, key in zip(final, keys, strict=True):
        entry = known.get(key)
        if entry is None:
            continue
        db = storage.tenant_db(str(entry["tenant_id"]))
        state = await settle(db, entry["message_id"], entry["campaign_id"], report)
        done.append(key)
        if state is not None:
            moves[state] = moves.get(state, 0) + 1
            metrics.sms_message(state, provider)
    if done:
        await storage.system_db[REPORTS].delete_many({"_id": {"$in": done}})
    return moves


async def settle(
    db: Database, message_id: ObjectId, campaign_id: ObjectId, report: Report
) -> str | None:
    """One report on one message: its new state if it was `sent`, else None."""
    state = new_state(report.code)
    if state is None:
        return None
    fields: dict[str, Any] = {
        "status": state,
        "provider_code": report.code,
        "provider_text": CODE_TEXT.get(report.code, f"code {report.code}"),
        "updated_at": utcnow(),
    }
    if state == "delivered":
        fields["delivered_at"] = report.at or utcnow()
    moved = await db[MESSAGES].update_one({"_id": message_id, "status": "sent"}, {"$set": fields})
    if not moved.modified_count:
        return None
    await db[CAMPAIGNS].update_one(
        {"_id": campaign_id, "counts": {"$exists": True}},
        {"$inc": {"counts.sent": -1, f"counts.{state}": 1}},
    )
    return state
