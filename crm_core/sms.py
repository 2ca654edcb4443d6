"""SMS campaigns (SPEC §11): who gets which text, one message document per recipient.

Sending happens in taskiq workers (tasks/sms.py); this module decides what is sent. A campaign's
recipients come from a table (a phone column and a filter, through the filter engine) or from
an explicit list. Texts are rendered per recipient from `{{key}}` placeholders; an unknown
placeholder is a 400 at creation. Phones are normalised to E.164 with the tenant's region;
repeats are dropped (and counted), invalid numbers are stored as `invalid` and never sent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Protocol

import phonenumbers
from bson import ObjectId

from crm_core.context import TenantContext
from crm_core.errors import Conflict, NotFound, ValidationFailed
from crm_core.ids import object_id
from crm_core.storage import query_purpose
from crm_core.tables.access import Level, require
from crm_core.tables.definitions import load_table
from crm_core.tables.rows import CLIENT_QUERY, RowService
from models.sms import MESSAGE_STATUSES, CampaignIn

CAMPAIGNS = "_sms_campaigns"
MESSAGES = "_sms_messages"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,62})\s*\}\}")
OPEN = ("pending", "sending")


class SmsQueue(Protocol):
    """Where campaign work goes (the taskiq broker in the service, a list in some tests)."""

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None: ...

    async def send_one(self, tenant_id: str, message_id: str) -> None: ...


def placeholders(text: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def render(text: str, values: dict[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: _text(values.get(m.group(1))), text)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalise_phone(raw: Any, region: str) -> str | None:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    try:
        number = phonenumbers.parse(str(raw), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


async def _table_recipients(
    ctx: TenantContext, rows: RowService, data: CampaignIn, limit: int
) -> list[tuple[Any, dict[str, Any]]]:
    table = await load_table(ctx, rows.types, data.table or "")
    await require(ctx, table, Level.READ)
    column = table.column(data.phone_column or "")
    if column is None:
        raise ValidationFailed.field("phone_column", "no such column in the table")
    if column["type"] not in ("phone", "string"):
        raise ValidationFailed.field("phone_column", "must be a phone or string column")
    unknown = [p for p in placeholders(data.text) if table.column(p) is None]
    if unknown:
        raise ValidationFailed.field(
            "text", f"unknown placeholder {{{{{unknown[0]}}}}}: not a column of '{table.key}'"
        )
    query = rows.query(ctx, table, data.filters or [])
    recipients = []
    cursor = table.collection(ctx).find(query).sort("_id", 1).limit(limit + 1)
    with query_purpose(CLIENT_QUERY):
        docs = await cursor.to_list(None)
    for doc in docs:
        values = {
            c["key"]: table.column_type(c).export_value(c, doc[c["key"]])
            for c in table.columns
            if c["key"] in doc
        }
        recipients.append((doc.get(column["key"]), values))
    return recipients


def _list_recipients(data: CampaignIn) -> list[tuple[Any, dict[str, Any]]]:
    needed = placeholders(data.text)
    errors = []
    result = []
    for index, recipient in enumerate(data.recipients or []):
        item = recipient.model_dump()
        if "phone" not in item:
            errors.append({"field": f"recipients.{index}.phone", "message": "is required"})
            continue
        for key, value in item.items():
            if not isinstance(value, str | int | float | bool) and value is not None:
                errors.append(
                    {
                        "field": f"recipients.{index}.{key}",
                        "message": "must be text, a number or a boolean",
                    }
                )
        for key in needed:
            if key not in item:
                errors.append(
                    {
                        "field": f"recipients.{index}.{key}",
                        "message": f"is needed by the placeholder {{{{{key}}}}}",
                    }
                )
        result.append((item["phone"], item))
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    return result


async def create_campaign(
    ctx: TenantContext,
    rows: RowService,
    queue: SmsQueue,
    data: CampaignIn,
    batch_size: int,
    max_recipients: int,
) -> dict[str, Any]:
    from_table = data.table is not None or data.phone_column is not None
    if from_table == (data.recipients is not None):
        raise ValidationFailed.field(
            "recipients", "give either table with phone_column, or recipients"
        )
    if from_table and (data.table is None or data.phone_column is None):
        raise ValidationFailed.field("phone_column", "table and phone_column go together")
    if data.filters is not None and not from_table:
        raise ValidationFailed.field("filters", "filters select rows of a table")
    if from_table:
        recipients = await _table_recipients(ctx, rows, data, max_recipients)
    else:
        recipients = _list_recipients(data)
    if len(recipients) > max_recipients:
        raise ValidationFailed.field(
            "recipients", f"a campaign has at most {max_recipients} recipients"
        )
    now = datetime.now(UTC)
    campaign_id = ObjectId()
    seen: set[str] = set()
    messages: list[dict[str, Any]] = []
    duplicates = 0
    for raw_phone, values in recipients:
        phone = normalise_phone(raw_phone, ctx.tenant.phone_region)
        if phone is not None and phone in seen:
            duplicates += 1
            continue
        if phone is not None:
            seen.add(phone)
        index = len(messages)
        messages.append(
            {
                "_id": ObjectId(),
                "campaign_id": campaign_id,
                "phone": phone or _text(raw_phone)[:64],
                "text": render(data.text, values),
                "status": "pending" if phone else "invalid",
                "error": None if phone else "not a valid phone number",
                "batch": index // batch_size,
                "attempts": 0,
                "provider_id": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    batches: list[int] = sorted({int(m["batch"]) for m in messages if m["status"] == "pending"})
    campaign = {
        "_id": campaign_id,
        "name": data.name,
        "text": data.text,
        "status": "queued" if batches else "completed",
        "table": data.table,
        "phone_column": data.phone_column,
        "filters": data.filters,
        "duplicates": duplicates,
        "created_by": ctx.user_id,
        "created_at": now,
        "updated_at": now,
    }
    await ctx.db[CAMPAIGNS].insert_one(campaign)
    if messages:
        await ctx.db[MESSAGES].insert_many(messages)
    for batch in batches:
        await queue.send_batch(ctx.tenant_id, str(campaign_id), batch)
    return campaign


async def counts(db: Any, campaign_id: ObjectId) -> dict[str, int]:
    result = dict.fromkeys(MESSAGE_STATUSES, 0)
    pipeline = [
        {"$match": {"campaign_id": campaign_id}},
        {"$group": {"_id": "$status", "n": {"$sum": 1}}},
    ]
    async for row in db[MESSAGES].aggregate(pipeline):
        result[row["_id"]] = row["n"]
    result["total"] = sum(result.values())
    return result


async def get_campaign(ctx: TenantContext, campaign_id: str) -> dict[str, Any]:
    campaign: dict[str, Any] | None = await ctx.db[CAMPAIGNS].find_one(
        {"_id": object_id(campaign_id, "Campaign")}
    )
    if campaign is None:
        raise NotFound("Campaign not found")
    return campaign


async def list_campaigns(ctx: TenantContext) -> list[dict[str, Any]]:
    campaigns: list[dict[str, Any]] = (
        await ctx.db[CAMPAIGNS].find().sort("_id", -1).limit(1000).to_list(None)
    )
    return campaigns


async def list_messages(
    ctx: TenantContext, campaign_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    campaign = await get_campaign(ctx, campaign_id)
    query: dict[str, Any] = {"campaign_id": campaign["_id"]}
    if status is not None:
        query["status"] = status
    collection = ctx.db[MESSAGES]
    docs = (
        await collection.find(query, max_time_ms=ctx.max_time_ms)
        .sort("_id", 1)
        .skip(offset)
        .limit(limit)
        .to_list(limit)
    )
    return docs, await collection.count_documents(query, maxTimeMS=ctx.max_time_ms)


async def cancel_campaign(ctx: TenantContext, campaign_id: str) -> dict[str, Any]:
    """Pending messages are cancelled; a message being sent right now finishes."""
    campaign = await get_campaign(ctx, campaign_id)
    if campaign["status"] == "completed":
        raise Conflict("The campaign has already completed")
    now = datetime.now(UTC)
    await ctx.db[CAMPAIGNS].update_one(
        {"_id": campaign["_id"]}, {"$set": {"status": "cancelled", "updated_at": now}}
    )
    await ctx.db[MESSAGES].update_many(
        {"campaign_id": campaign["_id"], "status": "pending"},
        {"$set": {"status": "cancelled", "updated_at": now}},
    )
    return await get_campaign(ctx, campaign_id)


async def resolve_message(
    ctx: TenantContext, queue: SmsQueue, message_id: str, outcome: str
) -> dict[str, Any]:
    """The documented rule for `unknown` messages: an operator who checked with the provider
    (its delivery report, the recipient) records `sent` or `failed`, or accepts the risk of a
    second SMS and asks to `resend`."""
    message = await ctx.db[MESSAGES].find_one({"_id": object_id(message_id, "Message")})
    if message is None:
        raise NotFound("Message not found")
    if message["status"] != "unknown":
        raise Conflict(
            f"Only messages whose fate is unknown are resolved; this one is {message['status']}"
        )
    status = "pending" if outcome == "resend" else outcome
    now = datetime.now(UTC)
    resolved: dict[str, Any] | None = await ctx.db[MESSAGES].find_one_and_update(
        {"_id": message["_id"], "status": "unknown"},
        {"$set": {"status": status, "updated_at": now, "resolved_by": ctx.user_id}},
        return_document=True,
    )
    if resolved is None:
        raise Conflict("The message was resolved by someone else")
    if outcome == "resend":
        await ctx.db[CAMPAIGNS].update_one(
            {"_id": message["campaign_id"], "status": "completed"}, {"$set": {"status": "sending"}}
        )
        await queue.send_one(ctx.tenant_id, str(message["_id"]))
    return resolved
