"""SMS campaigns (docs/sms.md): who gets which text, one message document per recipient, and the
state machine that sends them.

`CampaignService` (built in `create_app`, held on `Services.sms`) creates, reads and cancels
campaigns and resolves messages; `SmsSender` is the message state machine (claim, attempt,
record, finish): the taskiq tasks of tasks/sms.py receive ids and call it, nothing more. A
campaign's recipients come from a table (a phone column and a filter, through the filter engine)
or from an explicit list. Texts are rendered per recipient from `{{key}}` placeholders; an
unknown placeholder is a 400 at creation. Phones are normalised to E.164 with the tenant's
region; repeats are dropped (and counted), invalid numbers are stored as `invalid` and never
sent. The exactly-once rules and the claim design are in docs/sms.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beanie import PydanticObjectId
from bson import ObjectId

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.platform import metrics
from crm_core.platform.clock import as_utc, utcnow
from crm_core.platform.cursors import PageCursors, PageScope, read_page
from crm_core.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crm_core.platform.ids import object_id
from crm_core.platform.outbox import Lease, Outbox, Work, work_key
from crm_core.platform.phones import InvalidPhone, normalise_phone
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database, query_purpose
from crm_core.sms import dailycap, stoplist
from crm_core.sms import parts as sms_parts
from crm_core.sms.contract import (
    AmbiguousSendError,
    LimitSendError,
    Outbound,
    PermanentSendError,
    SendError,
    SmsProvider,
    TransientSendError,
)
from crm_core.sms.delivery import (
    REPORTS,
    MalformedReport,
    Report,
    apply_reports,
    parse_smsru,
    remember_sent,
    report_key,
    settle,
    verify_smsru,
)
from crm_core.sms.names import CAMPAIGNS, MESSAGES
from crm_core.tables.access import Level, require
from crm_core.tables.definitions import load_table
from crm_core.tables.rows import CLIENT_QUERY, RowService
from models.accounts import Tenant
from models.sms import (
    MESSAGE_STATUSES,
    BatchResult,
    CampaignIn,
    CampaignPreview,
    CampaignRecord,
    MessageQuery,
    MessageRecord,
    Outgoing,
    ResolveOutcome,
    SendOutcome,
)

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,62})\s*\}\}")
OPEN = ("pending", "sending")
# outbox kinds (crm_core/platform/outbox.py): a campaign's batch, one resent message
SMS_BATCH = "sms.batch"
SMS_ONE = "sms.one"
SMS_STATUS = "sms.status"  # a campaign's delivery-status poll (docs/sms.md, "Delivery reports")
STATUS_BATCH = 100  # ids per `sms/status` request
STATUS_PAGE = 1000  # sent messages one poll reads at a time
# Every query on the messages is served by an index of crm_core/platform/indexes.py
# (`_sms_messages`). Filters name `batch` or `claim` first: the embedded database tests conditions
# in order.

# metrics label of states no provider is involved in yet (queued, invalid, cancelled)
NO_PROVIDER = "-"

SENDS_IN_FLIGHT = 100  # requests at once per process: the HTTP client's connection pool
MAX_CLAIM = 500  # messages one claim marks (one update, one outcome update)
CLAIM_MARGIN_SECONDS = 2.0  # database latency and clock differences between workers


# ---- what the domain needs from the outside ----------------------------------------------


class StatusSource(Protocol):
    """A provider that answers delivery status by id (`SmsRuProvider.status`)."""

    async def status(self, provider_ids: list[str]) -> dict[str, int]: ...


class RateSlots(Protocol):
    """The tenant's sending rate (crm_core/sms/ratelimit.py `SlotLimiter`)."""

    async def wait(self, tenant_id: str, count: int = 1) -> list[float]: ...


class SmsQueue(Protocol):
    """Where campaign work goes (the taskiq broker in the service, a list in some tests)."""

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None: ...

    async def send_one(self, tenant_id: str, message_id: str) -> None: ...


class CampaignEvents(Protocol):
    """Who hears that a campaign finished (crm_core.webhooks.service.WebhookService)."""

    async def campaign_finished(
        self, db: Database, tenant_id: str, campaign: dict[str, Any]
    ) -> None: ...


@runtime_checkable
class CampaignProgress(Protocol):
    """Who hears that a batch of a campaign was sent (live events, crm_core/live/events.py)."""

    async def campaign_progress(
        self, db: Database, tenant_id: str, campaign_id: ObjectId
    ) -> None: ...


def placeholders(text: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def render(text: str, values: dict[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: _text(values.get(m.group(1))), text)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def recipient_phone(raw: object, region: str) -> str | None:
    """A recipient's number as E.164, or None when it is not a valid phone number."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    try:
        return normalise_phone(str(raw), region)
    except InvalidPhone:
        return None


async def _table_recipients(
    ctx: TenantContext, rows: RowService, data: CampaignIn, limit: int
) -> list[tuple[Any, dict[str, Any]]]:
    table = await load_table(ctx, rows.types, data.table or "")
    await require(ctx, table, Level.READ)
    column = table.column(data.phone_column or "")
    if column is None:
        raise ValidationFailed.field("phone_column", "no such column in the table")
    if not table.column_type(column).sms_recipient:
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
            c.key: table.column_type(c).export_value(c, doc[c.key])
            for c in table.columns
            if c.key in doc
        }
        recipients.append((doc.get(column.key), values))
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


@dataclass(frozen=True)
class Stored:
    """A campaign about to be stored, as `create` built it."""

    campaign_id: ObjectId
    messages: list[dict[str, Any]]
    duplicates: int
    batches: list[int]
    now: datetime
    send_at: datetime | None
    cap_day: str | None = None  # the day its daily cap reservation counts on
    cap_count: int = 0  # the messages it reserved


# ---- the campaign counters ---------------------------------------------------------------


async def _count_messages(db: Database, campaign_id: ObjectId) -> dict[str, int]:
    """Count a campaign's messages by status: one aggregation over the campaign, run only on a
    cold path (a campaign stored before the counters existed, or a counter repair)."""
    result = dict.fromkeys(MESSAGE_STATUSES, 0)
    pipeline: list[dict[str, Any]] = [
        {"$match": {"campaign_id": campaign_id}},
        {"$group": {"_id": "$status", "n": {"$sum": 1}}},
    ]
    async for row in db[MESSAGES].aggregate(pipeline):
        result[row["_id"]] = row["n"]
    return result


async def _with_counters(db: Database, doc: dict[str, Any]) -> CampaignRecord:
    """The campaign as stored; one stored before the counters existed gets them now (counted
    once and kept, so every later read is the document alone)."""
    if doc.get("counts") is None:
        doc = {**doc, "counts": await _count_messages(db, doc["_id"])}
        await db[CAMPAIGNS].update_one(
            {"_id": doc["_id"], "counts": {"$exists": False}}, {"$set": {"counts": doc["counts"]}}
        )
    return CampaignRecord.model_validate(doc)


async def counts(db: Database, campaign: dict[str, Any]) -> dict[str, int]:
    """A stored campaign's counters by status, with `total` (for the operator's panel and the
    `campaign.finished` webhook, which read campaign documents themselves)."""
    return (await _with_counters(db, campaign)).totals().model_dump()


async def _bump(db: Database, campaign_id: ObjectId, moves: dict[str, int]) -> None:
    """Apply status changes to the campaign's counters in one `$inc` (a campaign without
    counters gets them, counted, on its next read instead)."""
    inc = {f"counts.{status}": n for status, n in moves.items() if n}
    if inc:
        await db[CAMPAIGNS].update_one(
            {"_id": campaign_id, "counts": {"$exists": True}}, {"$inc": inc}
        )


def _open(counters: dict[str, int] | None) -> int:
    """Messages pending or sending by the counters."""
    return sum(int((counters or {}).get(s, 0)) for s in OPEN)


def _drifted(counters: dict[str, int] | None) -> bool:
    """Counters a stopped worker left behind (a message write without its `$inc`): once nothing
    is pending or sending, an open counter or a negative one cannot be right."""
    if counters is None:
        return True
    return any(counters.get(s, 0) for s in OPEN) or any(v < 0 for v in counters.values())


# ---- campaigns: the API's side -------------------------------------------------------------


class CampaignService:
    """Campaigns and their messages as the API sees them (handlers/sms.py)."""

    def __init__(
        self,
        settings: Settings,
        rows: RowService,
        outbox: Outbox,
        queue: SmsQueue,
        events: CampaignEvents | None = None,
        audit: AuditSink | None = None,  # the company's audit trail (docs/history.md)
        providers: Callable[[], SmsProvider] | None = None,
    ) -> None:
        self.settings = settings
        self.cursors = PageCursors(settings.secret_key)
        self.audit = audit
        self.rows = rows
        self.outbox = outbox
        self.queue = queue  # refuses work until the broker runs (crm_core/services.py)
        self.events = events
        self.providers = providers  # a provider for the preview's price (`make_provider`)

    def _work(self, kind: str, tenant_id: str, *args: object) -> Work:
        return Work(kind, tenant_id, args, self.settings.sms_redelivery_seconds)

    async def _send(self, work: Work) -> None:
        """Hand one recorded unit of campaign work to the queue (the outbox's dispatch)."""
        if work.kind == SMS_BATCH:
            await self.queue.send_batch(work.tenant_id, str(work.args[0]), int(work.args[1]))
        else:
            await self.queue.send_one(work.tenant_id, str(work.args[0]))

    async def create(self, ctx: TenantContext, data: CampaignIn) -> CampaignRecord:
        """Store the campaign and its messages and queue its batches. The batches are recorded
        in the outbox first: with the broker down the campaign is still accepted, and a
        sweeper queues it when the broker is back (docs/sms.md). A scheduled campaign's
        batches are only recorded, due at `send_at`: the sweeper hands them then."""
        now = utcnow()
        send_at = _send_at(data.send_at, now)
        recipients = await self._recipients(ctx, data)
        campaign_id = ObjectId()
        messages, duplicates = self._messages(ctx, data, recipients, campaign_id, now)
        await _block_stopped(ctx.db, messages)
        batches = sorted({int(m["batch"]) for m in messages if m["status"] == "pending"})
        # the daily cap's reservation: one atomic `$inc` before anything is stored
        cap, day = ctx.tenant.sms_daily_cap, dailycap.cap_day(ctx.tenant.timezone, send_at or now)
        to_send = sum(1 for m in messages if m["status"] == "pending")
        if cap is not None:
            await dailycap.reserve(ctx.db, cap, day, to_send)
        stored = Stored(campaign_id, messages, duplicates, batches, now, send_at)
        if cap is not None:
            stored = replace(stored, cap_day=day, cap_count=to_send)
        return await self._store(ctx, data, stored)

    async def _store(self, ctx: TenantContext, data: CampaignIn, new: Stored) -> CampaignRecord:
        """Record the campaign's batches in the outbox, store it and its messages, and queue
        it. A failure before the campaign is stored gives its daily cap reservation back."""
        campaign_id, messages, batches = new.campaign_id, new.messages, new.batches
        now, send_at = new.now, new.send_at
        # batch n cannot start before the tenant's rate has sent the batches before it
        per_batch = self.settings.sms_batch_size / self.settings.sms_rate_per_second
        # a scheduled campaign's first hand-off is the sweeper's, at `send_at` (an entry is
        # first due `lease + start_after` from now)
        wait = (
            (send_at - now).total_seconds() - self.settings.sms_redelivery_seconds
            if send_at
            else 0.0
        )
        works = [
            replace(
                self._work(SMS_BATCH, ctx.tenant_id, str(campaign_id), batch),
                start_after=wait + index * per_batch,
            )
            for index, batch in enumerate(batches)
        ]
        initial = dict.fromkeys(MESSAGE_STATUSES, 0)
        for message in messages:
            initial[message["status"]] += 1
        doc = {
            "_id": campaign_id,
            "name": data.name,
            "text": data.text,
            "status": ("scheduled" if send_at else "queued") if batches else "completed",
            "send_at": send_at,
            "cap_day": new.cap_day,
            "table": data.table,
            "phone_column": data.phone_column,
            "filters": data.filters,
            "duplicates": new.duplicates,
            "counts": initial,
            "created_by": ctx.user_id,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self.outbox.record(works)
            await ctx.db[CAMPAIGNS].insert_one(doc)
        except Exception:
            if new.cap_day is not None:  # not stored: the reservation goes back
                await dailycap.release(ctx.db, new.cap_day, new.cap_count)
            raise
        if messages:
            await ctx.db[MESSAGES].insert_many(messages)
            invalid, blocked = initial["invalid"], initial["blocked"]
            queued = len(messages) - invalid - blocked
            metrics.SMS_MESSAGES.labels("queued", NO_PROVIDER).inc(queued)
            metrics.SMS_MESSAGES.labels("invalid", NO_PROVIDER).inc(invalid)
            metrics.SMS_MESSAGES.labels("blocked", NO_PROVIDER).inc(blocked)
        if send_at is None:
            await self.outbox.hand_off(works, self._send)
        campaign = CampaignRecord.model_validate(doc)
        if not batches:
            await self._finished(ctx, campaign)
        if self.audit is not None:
            target = {"type": "sms_campaign", "id": str(campaign_id), "name": data.name}
            await self.audit.record(ctx, "sms_campaign.created", target, {"messages": initial})
        return campaign

    async def preview(self, ctx: TenantContext, data: CampaignIn) -> CampaignPreview:
        """The campaign as `create` would store it, nothing stored: counts, parts per message
        (crm_core/sms/parts.py), the provider's price where it gives one (`cost`: a provider
        made for the call and closed after it) and what the daily cap leaves."""
        now = utcnow()
        send_at = _send_at(data.send_at, now)
        recipients = await self._recipients(ctx, data)
        messages, duplicates = self._messages(ctx, data, recipients, ObjectId(), now)
        await _block_stopped(ctx.db, messages)
        sending = [m for m in messages if m["status"] == "pending"]
        encodings: dict[str, int] = {}
        per_message: dict[str, int] = {}
        total = 0
        for message in sending:
            n = sms_parts.parts(message["text"])
            total += n
            per_message[str(n)] = per_message.get(str(n), 0) + 1
            kind = sms_parts.encoding(message["text"])
            encodings[kind] = encodings.get(kind, 0) + 1
        cap, left = ctx.tenant.sms_daily_cap, None
        if cap is not None:
            day = dailycap.cap_day(ctx.tenant.timezone, send_at or now)
            left = max(0, cap - await dailycap.reserved(ctx.db, day))
        return CampaignPreview(
            recipients=len(messages),
            duplicates=duplicates,
            invalid=sum(1 for m in messages if m["status"] == "invalid"),
            stop_listed=sum(1 for m in messages if m["status"] == "blocked"),
            to_send=len(sending),
            encodings=encodings,
            parts_per_message=per_message,
            total_parts=total,
            price=await self._price([(m["phone"], m["text"]) for m in sending]),
            daily_cap=cap,
            daily_cap_left=left,
        )

    async def _price(self, messages: list[tuple[str, str]]) -> float | None:
        if self.providers is None:
            return None
        provider = self.providers()
        try:
            return await _price(provider, messages)
        finally:
            await provider.close()

    async def _recipients(
        self, ctx: TenantContext, data: CampaignIn
    ) -> list[tuple[Any, dict[str, Any]]]:
        from_table = data.table is not None or data.phone_column is not None
        if from_table == (data.recipients is not None):
            raise ValidationFailed.field(
                "recipients", "give either table with phone_column, or recipients"
            )
        if from_table and (data.table is None or data.phone_column is None):
            raise ValidationFailed.field("phone_column", "table and phone_column go together")
        if data.filters is not None and not from_table:
            raise ValidationFailed.field("filters", "filters select rows of a table")
        limit = self.settings.sms_max_recipients
        if from_table:
            recipients = await _table_recipients(ctx, self.rows, data, limit)
        else:
            recipients = _list_recipients(data)
        if len(recipients) > limit:
            raise ValidationFailed.field("recipients", f"a campaign has at most {limit} recipients")
        return recipients

    def _messages(
        self,
        ctx: TenantContext,
        data: CampaignIn,
        recipients: list[tuple[Any, dict[str, Any]]],
        campaign_id: ObjectId,
        now: datetime,
    ) -> tuple[list[dict[str, Any]], int]:
        """One document per distinct recipient, in order; and how many repeats were dropped."""
        batch_size = self.settings.sms_batch_size
        seen: set[str] = set()
        messages: list[dict[str, Any]] = []
        duplicates = 0
        for raw_phone, values in recipients:
            phone = recipient_phone(raw_phone, ctx.tenant.phone_region)
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
                    "seq": index,
                    "attempts": 0,
                    "provider_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return messages, duplicates

    async def _finished(self, ctx: TenantContext, campaign: CampaignRecord) -> None:
        if self.events is not None:
            doc = campaign.model_dump(by_alias=True)
            await self.events.campaign_finished(ctx.db, ctx.tenant_id, doc)

    async def get(self, ctx: TenantContext, campaign_id: str) -> CampaignRecord:
        doc = await ctx.db[CAMPAIGNS].find_one({"_id": object_id(campaign_id, "Campaign")})
        if doc is None:
            raise NotFound("Campaign not found")
        return await _with_counters(ctx.db, doc)

    async def list_campaigns(
        self, ctx: TenantContext, limit: int = 1000, cursor: str | None = None
    ) -> tuple[list[CampaignRecord], str | None]:
        """Newest first, `limit` at a time after `cursor`, and the next page's cursor."""
        scope = PageScope("campaigns", (("_id", -1),))
        docs, following = await read_page(
            self.cursors, ctx, scope, ctx.db[CAMPAIGNS], {}, limit, cursor=cursor
        )
        return [await _with_counters(ctx.db, doc) for doc in docs], following

    async def messages(
        self, ctx: TenantContext, campaign_id: str, query: MessageQuery
    ) -> tuple[list[MessageRecord], int, str | None]:
        """A page of the campaign's messages in creation order (from `offset` or after
        `cursor`), their total, which the campaign's counters give (by status: it may lag a
        claim being recorded at that moment by the claim's size), and the next page's cursor."""
        campaign = await self.get(ctx, campaign_id)
        where: dict[str, Any] = {"campaign_id": campaign.id}
        if query.status is not None:
            where["status"] = query.status
        scope = PageScope(f"messages:{campaign.id}", (("_id", 1),), query.status)
        docs, following = await read_page(
            self.cursors,
            ctx,
            scope,
            ctx.db[MESSAGES],
            where,
            query.limit,
            query.offset,
            query.cursor,
        )
        totals = campaign.totals()
        total = totals.total if query.status is None else getattr(totals, query.status)
        return [MessageRecord.model_validate(d) for d in docs], total, following

    async def stop_list(
        self, ctx: TenantContext, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await stoplist.page(ctx, limit, offset)

    async def stop(self, ctx: TenantContext, phones: list[str]) -> tuple[int, int, list[str]]:
        """Add numbers to the stop list: (added, already listed, the numbers normalised)."""
        return await stoplist.add(ctx, phones)

    async def unstop(self, ctx: TenantContext, phones: list[str]) -> tuple[int, int, list[str]]:
        """Remove numbers from the stop list: (removed, not listed, the numbers normalised)."""
        return await stoplist.remove(ctx, phones)

    async def smsru_callback(self, data: list[str], given_hash: str) -> dict[str, int]:
        """SMS.ru's delivery callback (docs/sms.md, "Delivery reports"): verified by its hash,
        then each final report moves its `sent` message; unknown ids are ignored. A wrong
        hash is a 403, a body that is not SMS.ru's a 400; neither changes anything."""
        if not data:
            raise ValidationFailed.field("data[]", "is required: the delivery reports")
        api_id = self.settings.smsru_api_id if self.settings.sms_provider == "smsru" else ""
        if not given_hash or not verify_smsru(api_id, data, given_hash):
            raise Forbidden("The callback's hash does not match")
        try:
            reports = parse_smsru(data)
        except MalformedReport as exc:
            raise ValidationFailed.field("data[]", str(exc)) from None
        return await apply_reports(self.outbox.storage, "smsru", reports)

    async def cancel(self, ctx: TenantContext, campaign_id: str) -> CampaignRecord:
        """Pending messages are cancelled; a claim being sent right now finishes."""
        campaign = await _cancel(ctx, campaign_id)
        await self._finished(ctx, campaign)
        if self.audit is not None:
            target = {"type": "sms_campaign", "id": campaign_id, "name": campaign.name}
            await self.audit.record(ctx, "sms_campaign.cancelled", target)
        return campaign

    async def resolve(
        self, ctx: TenantContext, message_id: str, outcome: ResolveOutcome
    ) -> MessageRecord:
        """The documented rule for `unknown` messages: an operator who checked with the
        provider (its delivery report, the recipient) records `sent` or `failed`, or accepts the
        risk of a second SMS and asks to `resend`."""
        found = await ctx.db[MESSAGES].find_one({"_id": object_id(message_id, "Message")})
        if found is None:
            raise NotFound("Message not found")
        message = MessageRecord.model_validate(found)
        if message.status != "unknown":
            raise Conflict(
                f"Only messages whose fate is unknown are resolved; this one is {message.status}"
            )
        status = "pending" if outcome == "resend" else outcome
        work = self._work(SMS_ONE, ctx.tenant_id, str(message.id))
        if outcome == "resend":
            await self.outbox.record([work])
        resolved = await ctx.db[MESSAGES].find_one_and_update(
            {"_id": message.id, "status": "unknown"},
            {"$set": {"status": status, "updated_at": utcnow(), "resolved_by": ctx.user_id}},
            return_document=True,
        )
        if resolved is None:
            raise Conflict("The message was resolved by someone else")
        await _bump(ctx.db, message.campaign_id, {"unknown": -1, status: 1})
        if outcome == "resend":
            await ctx.db[CAMPAIGNS].update_one(
                {"_id": message.campaign_id, "status": "completed"},
                {"$set": {"status": "sending"}},
            )
            await self.outbox.hand_off([work], self._send)
        return MessageRecord.model_validate(resolved)

    # ---- a company's SMS as the operator's panel reads it (crm_core/admin/service.py) ----

    @staticmethod
    async def sent_since(db: Database, since: datetime) -> int:
        """Messages the company sent since `since`."""
        return await db[MESSAGES].count_documents({"sent_at": {"$gte": since}})

    @staticmethod
    async def sent_per_day(db: Database, since: datetime) -> dict[str, int]:
        """Messages the company sent since `since`, by UTC day (`YYYY-MM-DD`); days without
        any are missing."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"sent_at": {"$gte": since}}},
            {
                "$group": {
                    "_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$sent_at"}},
                    "n": {"$sum": 1},
                }
            },
        ]
        return {row["_id"]: row["n"] async for row in db[MESSAGES].aggregate(pipeline)}

    @staticmethod
    async def count_campaigns(db: Database, status: str) -> int:
        """The company's campaigns in `status` (every one for "")."""
        return await db[CAMPAIGNS].count_documents({"status": status} if status else {})

    @staticmethod
    async def newest_campaigns(db: Database, status: str, limit: int) -> list[dict[str, Any]]:
        """The company's newest `limit` campaigns in `status` (any for ""), as stored."""
        query = {"status": status} if status else {}
        cursor = db[CAMPAIGNS].find(query).sort("_id", -1).limit(limit)
        docs: list[dict[str, Any]] = await cursor.to_list(None)
        return docs

    @staticmethod
    async def counts(db: Database, campaign: dict[str, Any]) -> dict[str, int]:
        """A stored campaign's counters by status, with `total`."""
        return await counts(db, campaign)

    @staticmethod
    async def cancel_for_company(ctx: TenantContext, campaign_id: str) -> dict[str, Any]:
        """The cancel as the operator runs it for a company, returning the stored document
        (the tenant's own cancel is `cancel`)."""
        return (await _cancel(ctx, campaign_id)).model_dump(by_alias=True)


def quiet_wait(quiet: Any, zone_name: str, now: datetime) -> float:
    """Seconds until the company's quiet hours end, 0 outside them (or without any). `quiet`
    has `start` and `end` ("HH:MM", the company's time zone); a window may cross midnight."""
    if quiet is None:
        return 0.0
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = as_utc(now).astimezone(zone)
    start_h, start_m = (int(x) for x in str(quiet.start).split(":"))
    end_h, end_m = (int(x) for x in str(quiet.end).split(":"))
    minute = local.hour * 60 + local.minute
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return 0.0
    ends = local.replace(hour=end_h, minute=end_m, second=0, microsecond=0)
    if ends <= local:
        ends = (local + timedelta(days=1)).replace(
            hour=end_h, minute=end_m, second=0, microsecond=0
        )
    return max(1.0, (ends.astimezone(UTC) - as_utc(now)).total_seconds())


def _not_before(send_at: datetime | None) -> float:
    """Seconds until a scheduled campaign may send (0 when it may now)."""
    if send_at is None:
        return 0.0
    return max(0.0, (as_utc(send_at) - utcnow()).total_seconds())


def _due_for_poll(
    docs: list[dict[str, Any]], young: datetime, old: datetime
) -> tuple[list[dict[str, Any]], bool]:
    """The `sent` messages a status poll asks about now (sent between `old` and `young`), and
    whether some are too young (asked next time). Older ones are given up: they stay `sent`."""
    due = []
    waiting = False
    for doc in docs:
        sent_at = doc.get("sent_at")
        if not doc.get("provider_id") or sent_at is None or as_utc(sent_at) < old:
            continue
        if as_utc(sent_at) > young:
            waiting = True
            continue
        due.append(doc)
    return due, waiting


async def _price(provider: object, messages: list[tuple[str, str]]) -> float | None:
    """The provider's `sms/cost` for these messages; None when it gives no price."""
    cost = getattr(provider, "cost", None)
    if cost is None:
        return None
    if not messages:
        return 0.0
    try:
        price = await cost(messages)
    except SendError as exc:
        log.warning("no price from the SMS provider: %s", exc.reason)
        return None
    return float(price) if isinstance(price, int | float) and price == price else None


def _send_at(raw: str | None, now: datetime) -> datetime | None:
    """A campaign's `send_at`: an ISO 8601 moment with an offset, in the future; 400 naming
    `send_at` otherwise."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed.field(
            "send_at", "must be an ISO 8601 moment such as 2026-12-31T10:00:00+03:00"
        ) from None
    if moment.tzinfo is None:
        raise ValidationFailed.field("send_at", "must include its offset (+03:00, Z)")
    moment = moment.astimezone(UTC)
    if moment <= now:
        raise ValidationFailed.field("send_at", "is in the past: give a moment still to come")
    return moment


async def _block_stopped(db: Database, messages: list[dict[str, Any]]) -> None:
    """Mark `blocked` the pending messages whose number is on the company's stop list."""
    pending = [m for m in messages if m["status"] == "pending"]
    listed = await stoplist.stopped(db, (m["phone"] for m in pending))
    for message in pending:
        if message["phone"] in listed:
            message["status"] = "blocked"
            message["error"] = stoplist.BLOCKED_ERROR


async def _cancel(ctx: TenantContext, campaign_id: str) -> CampaignRecord:
    doc = await ctx.db[CAMPAIGNS].find_one({"_id": object_id(campaign_id, "Campaign")})
    if doc is None:
        raise NotFound("Campaign not found")
    if doc["status"] == "completed":
        raise Conflict("The campaign has already completed")
    now = utcnow()
    await ctx.db[CAMPAIGNS].update_one(
        {"_id": doc["_id"]}, {"$set": {"status": "cancelled", "updated_at": now}}
    )
    cancelled = await ctx.db[MESSAGES].update_many(
        {"campaign_id": doc["_id"], "status": "pending"},
        {"$set": {"status": "cancelled", "updated_at": now}},
    )
    n = cancelled.modified_count
    await _bump(ctx.db, doc["_id"], {"pending": -n, "cancelled": n})
    if doc.get("cap_day"):  # never sent: given back to the day's cap
        await dailycap.release(ctx.db, doc["cap_day"], n)
    metrics.SMS_MESSAGES.labels("cancelled", NO_PROVIDER).inc(n)
    found = await ctx.db[CAMPAIGNS].find_one({"_id": doc["_id"]})
    if found is None:  # deleted while it was being cancelled
        raise NotFound("Campaign not found")
    return await _with_counters(ctx.db, found)


# ---- sending: the message state machine (the workers' side) --------------------------------


def claim_size(settings: Settings) -> int:
    """About one second of sending at the tenant's rate (at least 10, at most the batch and
    `MAX_CLAIM`): what a worker that stops mid-claim can leave in `sending`."""
    rate = max(10, math.ceil(settings.sms_rate_per_second))
    return min(settings.sms_batch_size, MAX_CLAIM, rate)


@dataclass
class SendCapacity:
    """What one process sends at once: claims in flight (so that no claim takes its rate slots
    while it could not use them: as many as the requests they make fit in the pool) and
    requests in flight (the HTTP client's connection pool: more would wait for a connection
    inside their send timeout). A claim takes its slots and waits for the first before it
    marks its messages, so claims in flight beyond the one sending wait on the rate unclaimed
    and each starts the moment the claim before it has its last slot."""

    claim_size: int
    request_size: int = 1  # messages per provider request (`request_size`)
    claims: asyncio.Semaphore = field(init=False)
    requests: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        per_claim = -(-self.claim_size // max(1, self.request_size))
        self.claims = asyncio.Semaphore(max(1, SENDS_IN_FLIGHT // per_claim))
        self.requests = asyncio.Semaphore(SENDS_IN_FLIGHT)


def request_size(settings: Settings, provider: SmsProvider) -> int:
    """Messages one provider request carries: a tenth of a second at the tenant's rate (so a
    one-second window at the gateway sees at most a tenth more than the rate), at least 1 and
    at most what the provider takes (SMS.ru: 100)."""
    return max(1, min(provider.batch_limit, math.floor(settings.sms_rate_per_second / 10)))


@dataclass(frozen=True)
class Answered:
    """A claim whose requests were answered, not yet recorded: its id, its messages and their
    outcomes, in order."""

    claim: ObjectId
    claimed: list[Outgoing]
    results: list[SendOutcome]


FIELDS = {"phone": 1, "text": 1, "attempts": 1, "seq": 1, "status": 1, "claimed_by": 1}
OUTCOME_FIELDS = ("status", "error", "provider_id", "sent_at", "provider_code")


class SmsSender:
    """The message state machine: `pending` → `sending` (claimed) → an outcome. Each message
    is claimed atomically (stamped with the task id and a claim id) before its request leaves,
    so two workers never send it. A redelivered task marks `unknown` what its earlier delivery
    left in `sending`, never sends it blindly a second time (`CampaignService.resolve`).
    Transient provider errors are retried with exponential backoff up to `SMS_MAX_ATTEMPTS`;
    permanent ones fail the message; an ambiguous answer makes it `unknown`. Every send first
    takes the tenant's next rate slot. Built per task from the worker's runtime."""

    def __init__(
        self,
        settings: Settings,
        provider: SmsProvider,
        limiter: RateSlots,
        capacity: SendCapacity,
        events: CampaignEvents | None = None,
        outbox: Outbox | None = None,
        reports: Database | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.limiter = limiter
        self.capacity = capacity
        self.events = events
        self.outbox = outbox
        self.reports = reports  # the system database: provider ids for delivery reports

    def _lease(self, kind: str, tenant_id: str, *args: object) -> Lease:
        """The hold on this work's outbox entry while it is sent."""
        key = work_key(kind, tenant_id, *args)
        return Lease(self.outbox, key, self.settings.sms_redelivery_seconds)

    async def send_batch(
        self, db: Database, tenant_id: str, campaign_id: str, batch: int, task_id: str
    ) -> BatchResult:
        cid = ObjectId(campaign_id)
        lease = self._lease(SMS_BATCH, tenant_id, campaign_id, batch)
        await lease.keep()
        campaign = await db[CAMPAIGNS].find_one({"_id": cid}, {"status": 1, "send_at": 1})
        if campaign is None or campaign["status"] == "cancelled":
            await lease.done()
            return BatchResult()
        early = _not_before(campaign.get("send_at")) or await self._quiet(tenant_id)
        if early > 0:  # before `send_at`, or in quiet hours: the sweeper hands it again then
            if self.outbox is not None:
                await self.outbox.extend(lease.key, early)
            return BatchResult()
        # one read of the batch: its pending messages, and what an earlier delivery of this
        # task left in `sending` (bounded by the batch size; no `$in`, slow on the embedded db)
        unfinished = await self._read(db, {"batch": batch, "campaign_id": cid})
        # a delivery after another (this task's again, or the outbox's new task once Redis
        # forgot the first), which may have stopped before an `$inc`:
        # docs/sms.md "How a worker sends: claims, outcomes, counters"
        if any(m.claimed_by is not None for m in unfinished):
            await self._needs_repair(db, cid)
        if any(m.status == "sending" and m.claimed_by == task_id for m in unfinished):
            await self._abandoned(db, cid, batch, task_id, unfinished)
        if any(m.status == "sending" and m.claimed_by != task_id for m in unfinished):
            await self._expire_claims(db, cid, {"batch": batch, "campaign_id": cid})
        if campaign["status"] in ("queued", "scheduled"):
            await db[CAMPAIGNS].update_one(
                {"_id": cid, "status": {"$in": ["queued", "scheduled"]}},
                {"$set": {"status": "sending", "updated_at": utcnow()}},
            )
        query = {"batch": batch, "campaign_id": cid, "status": "pending"}
        pending = [m for m in unfinished if m.status == "pending"]
        sent = await self._send_all(db, tenant_id, cid, query, task_id, pending, lease)
        await self._watch_delivery(tenant_id, campaign_id, sent)
        await self._finish(db, tenant_id, cid)
        if sent and isinstance(self.events, CampaignProgress):
            await self.events.campaign_progress(db, tenant_id, cid)
        if not await self._still_open(db, {"_id": {"$in": [m.id for m in unfinished]}}):
            await lease.done()  # else another delivery holds a claim: the outbox keeps it
        return BatchResult(sent=sent)

    async def _watch_delivery(self, tenant_id: str, campaign_id: str, sent: int) -> None:
        """After messages were sent: record the campaign's status poll in the outbox, due after
        `SMS_STATUS_POLL_AFTER_SECONDS` (so it survives restarts; the sweeper runs it). A later
        batch renews the same entry."""
        if not sent or self.outbox is None or not hasattr(self.provider, "status"):
            return
        every = self.settings.sms_status_poll_after_seconds
        await self.outbox.record([Work(SMS_STATUS, tenant_id, (campaign_id,), every)])

    async def poll_status(self, db: Database, tenant_id: str, campaign_id: str) -> dict[str, int]:
        """The polling fallback of delivery reports: ask the provider about the campaign's
        messages still `sent` (sent at least `SMS_STATUS_POLL_AFTER_SECONDS` ago, at most
        `SMS_STATUS_GIVE_UP_HOURS`), 100 ids a request, and settle the final ones. The outbox
        entry stays (polled again one interval later) while some may still be reported;
        returns the moves made."""
        key = work_key(SMS_STATUS, tenant_id, campaign_id)
        status = getattr(self.provider, "status", None)  # `StatusSource`, when it has one
        if status is None:
            if self.outbox is not None:
                await self.outbox.done(key)
            return {}
        now = utcnow()
        young = now - timedelta(seconds=self.settings.sms_status_poll_after_seconds)
        old = now - timedelta(hours=self.settings.sms_status_give_up_hours)
        cid = ObjectId(campaign_id)
        moves: dict[str, int] = {}
        waiting = False
        after: ObjectId | None = None
        while True:
            query: dict[str, Any] = {"campaign_id": cid, "status": "sent"}
            if after is not None:
                query["_id"] = {"$gt": after}
            docs = (
                await db[MESSAGES]
                .find(query, {"provider_id": 1, "sent_at": 1})
                .sort("_id", 1)
                .limit(STATUS_PAGE)
                .to_list(None)
            )
            if not docs:
                break
            after = docs[-1]["_id"]
            due, later = _due_for_poll(docs, young, old)
            waiting = waiting or later
            for start in range(0, len(due), STATUS_BATCH):
                try:
                    chunk_moves, later = await self._poll_chunk(
                        db, cid, due[start : start + STATUS_BATCH], status
                    )
                except SendError as exc:
                    log.warning("campaign %s: status poll failed: %s", campaign_id, exc.reason)
                    return moves  # the entry stays: the sweeper polls again later
                waiting = waiting or later
                for state, n in chunk_moves.items():
                    moves[state] = moves.get(state, 0) + n
        if not waiting and self.outbox is not None:
            await self.outbox.done(key)
        return moves

    async def send_one(self, db: Database, tenant_id: str, message_id: str, task_id: str) -> int:
        message = await db[MESSAGES].find_one(
            {"_id": ObjectId(message_id)}, {"campaign_id": 1, "claimed_by": 1}
        )
        lease = self._lease(SMS_ONE, tenant_id, message_id)
        if message is None:
            await lease.done()
            return 0
        await lease.keep()
        cid = message["campaign_id"]
        if message.get("claimed_by") is not None:  # a delivery after another (as a batch's)
            await self._needs_repair(db, cid)
        await self._expire_claims(db, cid, {"_id": message["_id"]})
        query = {"_id": message["_id"], "status": "pending"}
        sent = await self._send_all(db, tenant_id, cid, query, task_id, None, lease)
        await self._finish(db, tenant_id, cid)
        if not await self._still_open(db, {"_id": message["_id"]}):
            await lease.done()
        return sent

    async def _quiet(self, tenant_id: str) -> float:
        """Seconds until the company's quiet hours end (0 outside them): one tenant read."""
        tenant = await Tenant.get(PydanticObjectId(tenant_id))
        if tenant is None:
            return 0.0
        return quiet_wait(tenant.sms_quiet_hours, tenant.timezone, utcnow())

    async def _poll_chunk(
        self, db: Database, cid: ObjectId, chunk: list[dict[str, Any]], status: Any
    ) -> tuple[dict[str, int], bool]:
        """One `sms/status` request of up to 100 ids; the final ones settled. Returns the moves
        and whether some are still in transit."""
        codes = await status([str(d["provider_id"]) for d in chunk])
        moves: dict[str, int] = {}
        waiting = False
        settled = []
        for doc in chunk:
            provider_id = str(doc["provider_id"])
            code = codes.get(provider_id) if isinstance(codes, dict) else None
            state = None
            if isinstance(code, int):
                state = await settle(db, doc["_id"], cid, Report(provider_id, code, None))
            if state is None:
                waiting = True
                continue
            moves[state] = moves.get(state, 0) + 1
            metrics.sms_message(state, self.provider.name)
            settled.append(report_key(self.provider.name, provider_id))
        if settled and self.reports is not None:
            await self.reports[REPORTS].delete_many({"_id": {"$in": settled}})
        return moves, waiting

    def claim_bound(self) -> timedelta:
        """The longest a live worker takes from a claim to its record: the claim's rate slots,
        its requests (at most `SENDS_IN_FLIGHT` at once, each within the send timeout) and a
        margin."""
        settings = self.settings
        size = self.capacity.claim_size
        return timedelta(
            seconds=size / settings.sms_rate_per_second
            + math.ceil(size / SENDS_IN_FLIGHT) * settings.sms_send_timeout_seconds
            + CLAIM_MARGIN_SECONDS
        )

    async def _still_open(self, db: Database, where: dict[str, Any]) -> bool:
        """Whether messages of `where` are still pending or sending (two limited counts)."""
        for status in OPEN:
            if await db[MESSAGES].count_documents({**where, "status": status}, limit=1):
                return True
        return False

    async def _expire_claims(
        self, db: Database, campaign_id: ObjectId, where: dict[str, Any]
    ) -> None:
        """Mark `unknown` the messages of `where` that any delivery claimed longer ago than
        `claim_bound`: no live worker holds a claim that long, so its worker died (and Redis
        may have forgotten its task). Never resent blindly (`CampaignService.resolve`)."""
        cutoff = utcnow() - self.claim_bound()
        stale = await db[MESSAGES].update_many(
            {**where, "status": "sending", "claimed_at": {"$lte": cutoff}},
            {
                "$set": {
                    "status": "unknown",
                    "updated_at": utcnow(),
                    "error": "the worker stopped while sending; check before resending",
                }
            },
        )
        n = stale.modified_count
        if n:
            metrics.SMS_MESSAGES.labels("unknown", self.provider.name).inc(n)
            log.warning(
                "campaign %s: %d messages claimed by a worker that stopped; marked unknown",
                campaign_id,
                n,
            )
            await _bump(db, campaign_id, {"sending": -n, "unknown": n})

    async def _abandoned(
        self,
        db: Database,
        campaign_id: ObjectId,
        batch: int,
        task_id: str,
        unfinished: list[Outgoing],
    ) -> None:
        """Mark `unknown` what an earlier delivery of this task left in `sending`. That
        delivery may still be alive (taken over because the batch ran longer than the
        redelivery timeout): a claim is presumed abandoned only once it is older than
        `claim_bound`, so this waits for younger claims first."""
        bound = self.claim_bound()
        ours = [m for m in unfinished if m.status == "sending" and m.claimed_by == task_id]
        young = [as_utc(m.claimed_at) for m in ours if m.claimed_at is not None]
        young = [moment for moment in young if moment > utcnow() - bound]
        if young:
            await asyncio.sleep(max(0.0, (max(young) + bound - utcnow()).total_seconds()))
        ours_query = {"batch": batch, "campaign_id": campaign_id, "status": "sending"}
        stale = await db[MESSAGES].update_many(
            {**ours_query, "claimed_by": task_id},
            {
                "$set": {
                    "status": "unknown",
                    "updated_at": utcnow(),
                    "error": "the worker stopped while sending; check before resending",
                }
            },
        )
        n = stale.modified_count
        if n:
            metrics.SMS_MESSAGES.labels("unknown", self.provider.name).inc(n)
            log.warning(
                "campaign %s batch %s: %d messages were being sent by a worker that "
                "stopped; marked unknown",
                campaign_id,
                batch,
                n,
            )
            await _bump(db, campaign_id, {"sending": -n, "unknown": n})

    async def _read(self, db: Database, query: dict[str, Any]) -> list[Outgoing]:
        """The messages of `query` (at most a batch) in `_id` order, sorted here: the batch's
        index bounds the read (its status key sits between the batch and `_id`, and a server
        sorting by `_id` might prefer the campaign's index and read the whole campaign)."""
        docs = await db[MESSAGES].find(query, {**FIELDS, "claimed_at": 1}).to_list(None)
        docs.sort(key=lambda d: d["_id"])
        return [Outgoing.model_validate(d) for d in docs]

    async def _send_all(
        self,
        db: Database,
        tenant_id: str,
        campaign_id: ObjectId,
        query: dict[str, Any],
        task_id: str,
        first: list[Outgoing] | None,
        lease: Lease,
    ) -> int:
        """Send every pending message matching `query`: one read per round (the first round's
        may be given), then claims sent concurrently, each message on its own rate slot.
        Messages a transient error put back to `pending` are tried again in the next round,
        after the backoff; the others are never touched again by this delivery."""
        settings = self.settings
        size = self.capacity.claim_size
        sent = 0
        for round_ in range(1, settings.sms_max_attempts + 1):
            pending = first if round_ == 1 and first is not None else await self._read(db, query)
            retried = 0
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                await lease.keep()
                # the claim's place is held while it takes rate slots and sends; its outcomes
                # are recorded after, while the next claim already sends
                async with self.capacity.claims:
                    answered = await self._send_claim(
                        db, tenant_id, campaign_id, query, chunk, task_id
                    )
                moves = await self._record_answers(db, tenant_id, campaign_id, answered)
                sent += moves.get("sent", 0)
                retried += moves.get("pending", 0)
            if not retried:
                break
            await asyncio.sleep(settings.sms_retry_base_seconds * 2 ** (round_ - 1))
        return sent

    async def _send_claim(
        self,
        db: Database,
        tenant_id: str,
        campaign_id: ObjectId,
        query: dict[str, Any],
        chunk: list[Outgoing],
        task_id: str,
    ) -> Answered | None:
        """One claim: its rate slots, the claim, and its requests of up to `request_size`
        messages (concurrent, each at its last message's slot). Returns what they answered
        (`_record_answers` records it), None when nothing was claimed."""
        chunk = await self._drop_stopped(db, campaign_id, chunk)
        if not chunk:
            return None
        slots = await self.limiter.wait(tenant_id, len(chunk))
        claim, claimed = await self._claim(db, campaign_id, query, chunk, task_id)
        if not claimed:
            return None
        size = request_size(self.settings, self.provider)
        requests = [
            self._request(claimed[i : i + size], slots[min(i + size, len(slots)) - 1])
            for i in range(0, len(claimed), size)
        ]
        results = [r for answers in await asyncio.gather(*requests) for r in answers]
        return Answered(claim, claimed, results)

    async def _record_answers(
        self, db: Database, tenant_id: str, campaign_id: ObjectId, answered: Answered | None
    ) -> dict[str, int]:
        """A claim's answers: the provider ids kept for delivery reports, then the outcomes
        recorded. Returns the status moves."""
        if answered is None:
            return {}
        claimed, results = answered.claimed, answered.results
        if self.reports is not None:  # before the outcome: a report may come at once
            sent = [
                (m.id, r.provider_id)
                for m, r in zip(claimed, results, strict=True)
                if r.status == "sent" and r.provider_id
            ]
            await remember_sent(self.reports, self.provider.name, tenant_id, campaign_id, sent)
        return await self._record(db, campaign_id, answered.claim, claimed, results)

    async def _drop_stopped(
        self, db: Database, campaign_id: ObjectId, chunk: list[Outgoing]
    ) -> list[Outgoing]:
        """Numbers put on the stop list since the campaign was created: their pending messages
        become `blocked` (one lookup per claim; one update when any is listed)."""
        listed = await stoplist.stopped(db, (m.phone for m in chunk))
        if not listed:
            return chunk
        ids = [m.id for m in chunk if m.phone in listed]
        result = await db[MESSAGES].update_many(
            {"_id": {"$in": ids}, "status": "pending"},
            {
                "$set": {
                    "status": "blocked",
                    "error": stoplist.BLOCKED_ERROR,
                    "updated_at": utcnow(),
                }
            },
        )
        n = result.modified_count
        if n:
            metrics.SMS_MESSAGES.labels("blocked", NO_PROVIDER).inc(n)
            await _bump(db, campaign_id, {"pending": -n, "blocked": n})
        return [m for m in chunk if m.phone not in listed]

    async def _claim(
        self,
        db: Database,
        campaign_id: ObjectId,
        query: dict[str, Any],
        chunk: list[Outgoing],
        task_id: str,
    ) -> tuple[ObjectId, list[Outgoing]]:
        """Mark the chunk's still-pending messages as ours in one update (`pending` →
        `sending`, stamped with the task id and a claim id), named by their `_id`s. What
        another delivery or a cancel took first is left out; the claim is read back only when
        it is not exactly the chunk."""
        claim = ObjectId()
        now = utcnow()
        result = await db[MESSAGES].update_many(
            {**query, "_id": {"$in": [m.id for m in chunk]}},
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
        claimed: list[Outgoing] = []
        if result.modified_count == len(chunk):
            claimed = [m.model_copy(update={"attempts": m.attempts + 1}) for m in chunk]
        elif result.modified_count:
            docs = (
                await db[MESSAGES]
                .find({"_id": {"$in": [m.id for m in chunk]}, "claim": claim}, FIELDS)
                .to_list(None)
            )
            docs.sort(key=lambda d: d["_id"])
            claimed = [Outgoing.model_validate(d) for d in docs]
        await _bump(db, campaign_id, {"pending": -len(claimed), "sending": len(claimed)})
        return claim, claimed

    async def _request(self, messages: list[Outgoing], slot: float) -> list[SendOutcome]:
        """One provider request carrying `messages`, sent at the slot of its last message (none
        leaves before its own slot): each message's outcome."""
        delay = slot - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        outbound = [Outbound(m.phone, m.text, str(m.id)) for m in messages]
        answers: list[str | SendError]
        async with self.capacity.requests:
            try:
                answers = await self.provider.send(outbound)
            except SendError as exc:  # about the whole request: every message shares it
                answers = [exc] * len(messages)
            except Exception as exc:  # a provider bug: the request may have left, never resend
                log.exception("unexpected error sending messages %s...", outbound[0].message_id)
                answers = [AmbiguousSendError(f"unexpected error: {exc!r}")] * len(messages)
        if len(answers) != len(messages):  # a provider bug, as above
            answers = [AmbiguousSendError("the provider's answer does not match")] * len(messages)
        outcomes = [self._outcome(m, a) for m, a in zip(messages, answers, strict=True)]
        states: dict[str, int] = {}
        for outcome in outcomes:
            # metrics: a transient failure put back to pending is counted as a retry
            state: str = "retry" if outcome.status == "pending" else outcome.status
            states[state] = states.get(state, 0) + 1
        for state, n in states.items():  # one count per state and request
            metrics.SMS_MESSAGES.labels(state, self.provider.name).inc(n)
        return outcomes

    def _outcome(self, message: Outgoing, answer: str | SendError) -> SendOutcome:
        """What the provider's answer about one message makes of it (docs/sms.md)."""
        if isinstance(answer, str):
            return SendOutcome(status="sent", provider_id=answer, sent_at=utcnow())
        code = answer.code
        if isinstance(answer, TransientSendError):
            if message.attempts >= self.settings.sms_max_attempts:
                reason = f"gave up after {message.attempts} attempts: {answer.reason}"
                return SendOutcome(status="failed", error=reason, provider_code=code)
            # definitely not sent: tried again later
            return SendOutcome(status="pending", error=answer.reason, provider_code=code)
        if isinstance(answer, LimitSendError):
            return SendOutcome(status="limited", error=answer.reason, provider_code=code)
        if isinstance(answer, PermanentSendError):
            return SendOutcome(status="failed", error=answer.reason, provider_code=code)
        return SendOutcome(status="unknown", error=answer.reason, provider_code=code)

    async def _record(
        self,
        db: Database,
        campaign_id: ObjectId,
        claim: ObjectId,
        claimed: list[Outgoing],
        results: list[SendOutcome],
    ) -> dict[str, int]:
        """Record a claim's outcomes in one update: each message takes its own status, error
        and provider id from arrays indexed by its `seq` (its position in the campaign). Only
        messages still `sending` under this claim change; if some were not (a redelivery
        marked them `unknown`), the campaign's counters are repaired. Returns the moves."""
        moves: dict[str, int] = {}
        for result in results:
            moves["sending"] = moves.get("sending", 0) - 1
            moves[result.status] = moves.get(result.status, 0) + 1
        if all(m.seq is not None for m in claimed):
            modified = await self._record_by_seq(db, claim, claimed, results)
        else:  # messages stored before `seq` existed: one update each (a one-off)
            modified = 0
            now = utcnow()
            for message, result in zip(claimed, results, strict=True):
                done = await db[MESSAGES].update_one(
                    {"_id": message.id, "claim": claim, "status": "sending"},
                    {"$set": {**result.model_dump(), "updated_at": now}},
                )
                modified += done.modified_count
        if modified == len(claimed):
            await _bump(db, campaign_id, moves)
        else:  # a redelivery marked some `unknown` (and moved their counters) meanwhile
            await self._needs_repair(db, campaign_id)
        return moves

    async def _record_by_seq(
        self, db: Database, claim: ObjectId, claimed: list[Outgoing], results: list[SendOutcome]
    ) -> int:
        seqs = [int(m.seq or 0) for m in claimed]
        low = min(seqs)
        span = max(seqs) - low + 1
        rows = [r.model_dump() for r in results]
        values: dict[str, Any] = {"updated_at": {"$literal": utcnow()}}
        for name in OUTCOME_FIELDS:
            column = [row[name] for row in rows]
            first = column[0]
            if all(v == first and type(v) is type(first) for v in column):
                values[name] = {"$literal": first}
                continue
            by_seq: list[Any] = [None] * span
            for seq, value in zip(seqs, column, strict=True):
                by_seq[seq - low] = value
            index = {"$subtract": ["$seq", low]}
            values[name] = {"$arrayElemAt": [{"$literal": by_seq}, index]}
        ids = [m.id for m in claimed]
        result = await db[MESSAGES].update_many(
            {"_id": {"$in": ids}, "claim": claim, "status": "sending"}, [{"$set": values}]
        )
        return int(result.modified_count)

    async def _needs_repair(self, db: Database, campaign_id: ObjectId) -> None:
        """A delivery that may have lost a counter move (a delivery after another, which
        stopped between a message write and its `$inc`: the same task redelivered, or the
        outbox's new task after Redis forgot it; a claim taken over) flags the campaign: its
        counters are recounted when it completes."""
        await db[CAMPAIGNS].update_one({"_id": campaign_id}, {"$set": {"repair": True}})

    async def _finish(self, db: Database, tenant_id: str, campaign_id: ObjectId) -> None:
        """Complete the campaign when nothing is left to send. While its counters show
        messages pending or sending it is not done (every delivery moves them with its own
        writes, and the one that moves the last calls this too); once they show none, two
        limited reads confirm it. Counters that cannot be right then (`_drifted`), or a campaign
        flagged for repair, are recounted once, after waiting for late moves of live workers."""
        campaign = await db[CAMPAIGNS].find_one(
            {"_id": campaign_id}, {"status": 1, "counts": 1, "repair": 1}
        )
        if campaign is None or campaign["status"] not in ("queued", "sending"):
            return
        counters: dict[str, int] | None = campaign.get("counts")
        repair = bool(campaign.get("repair")) or counters is None
        if not repair and _open(counters) > 0:
            return
        for status in OPEN:  # two limited counts: `$in` is slow on the embedded database
            if await db[MESSAGES].count_documents(
                {"status": status, "campaign_id": campaign_id}, limit=1
            ):
                return
        update: dict[str, Any] = {"$set": {"status": "completed", "updated_at": utcnow()}}
        if repair or _drifted(counters):
            update["$set"]["counts"] = await self._recount(db, campaign_id)
            update["$unset"] = {"repair": ""}
        finished = await db[CAMPAIGNS].find_one_and_update(
            {"_id": campaign_id, "status": {"$in": ["queued", "sending"]}},
            update,
            return_document=True,
        )
        if finished is not None and self.events is not None:
            await self.events.campaign_finished(db, tenant_id, finished)

    async def _recount(self, db: Database, campaign_id: ObjectId) -> dict[str, int]:
        """The campaign's messages counted, once nothing is open. A live worker's last move
        (an outcome's `$inc` right after its write) may still be on its way: it shows as an
        open counter, so this waits up to `CLAIM_MARGIN_SECONDS` for the counters to settle;
        an open counter that stays is one a stopped worker lost."""
        deadline = time.monotonic() + CLAIM_MARGIN_SECONDS
        while time.monotonic() < deadline:
            doc = await db[CAMPAIGNS].find_one({"_id": campaign_id}, {"counts": 1})
            if doc is None or _open(doc.get("counts")) <= 0:
                break
            await asyncio.sleep(0.05)
        return await _count_messages(db, campaign_id)
