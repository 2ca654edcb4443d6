"""Webhooks (docs/integrations.md): a company registers URLs for events on its tables and
campaigns; each event becomes a delivery that task workers send, signed, with retries.

Rules that keep webhooks from leaking what their owner may not see:
- creating or changing a webhook needs `webhooks.manage`, read access to every table it names
  and `sms.read` for `campaign.finished`; the one who last set its URL, events or tables owns
  it, and every delivery is checked against the owner's access at send time (deactivated
  owner, lost permission or lost table access: the delivery is `skipped`, nothing is sent);
- a webhook is visible only to holders of `webhooks.manage` who could create it themselves;
- the target must be public (crm_core/platform/netguard.py), checked when the URL is saved and again
  when each connection is made; redirects are never followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from beanie import PydanticObjectId
from bson import ObjectId
from yarl import URL

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.cache import ListenerCache, webhooks_changed
from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow
from crm_core.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crm_core.platform.ids import object_id, parse_object_id
from crm_core.platform.logs import REQUEST_ID
from crm_core.platform.netguard import (
    BlockedAddress,
    GuardedResolver,
    check_literal_host,
    check_target,
    describe,
    url_host,
)
from crm_core.platform.registry import Registry
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database, Storage
from crm_core.tables.access import Level, access_level
from crm_core.tables.columns import ColumnType
from crm_core.tables.definitions import load_table
from crm_core.webhooks.destinations import DestinationGate, destination
from models.accounts import Tenant, User
from models.webhooks import ROW_EVENTS, WebhookIn, WebhookPatch

log = logging.getLogger(__name__)

WEBHOOKS = "_webhooks"
DELIVERIES = "_webhook_deliveries"
DUE = "webhook_due"  # system database: deliveries waiting for their next attempt
ITEMS_PER_DELIVERY = 100
MAX_WEBHOOKS = 100  # per company
RESPONSE_EXCERPT_BYTES = 512
ATTEMPT_LOG = 20
FINAL = ("succeeded", "failed", "skipped")
MAX_REPLAY = 10_000  # deliveries one replay sends again
SECRET_PREFIX = "whsec_"


class WebhookQueue(Protocol):
    """Where delivery attempts go (the taskiq broker)."""

    async def deliver(self, tenant_id: str, delivery_id: str) -> None: ...


class OwnerRights(Protocol):
    """What the webhook's owner may do now, read afresh at send time (crm_core.accounts.auth
    `AuthService`, passed in by crm_core/services.py)."""

    async def context_of(self, user: User, tenant: Tenant) -> TenantContext:
        """The context of `user` in `tenant`: its roles' permissions as stored now."""
        ...


class CampaignCounts(Protocol):
    """A finished campaign's counters by status, with `total`, for the `campaign.finished`
    payload (crm_core.sms.service `counts`, passed in by crm_core/services.py)."""

    async def __call__(self, db: Database, campaign: dict[str, Any]) -> dict[str, int]: ...


# who disables a webhook after failed deliveries (docs/history.md "Audit trail")
DELIVERY_ACTOR = {"type": "system", "id": None, "name": "webhook delivery"}
AUDITED_FIELDS = ("name", "url", "events", "tables", "is_active")


def _target(hook: dict[str, Any]) -> dict[str, Any]:
    return {"type": "webhook", "id": str(hook["_id"]), "name": hook.get("name")}


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header (the Standard Webhooks scheme): base64 HMAC-SHA256 of
    `{webhook-id}.{webhook-timestamp}.{body}` keyed with the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def failure_reason(exc: BaseException, url: URL, seconds: float) -> str:
    """Why a request failed (docs/integrations.md "Delivery, retries, log, auto-disable"):
    the receiver was slow, or it could not be connected to (waiting for a connection is never
    a failure: see `WebhookService._defer`)."""
    where = f"{url.raw_host}:{url.port}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"could not connect: {where} did not accept a connection within {seconds / 2:g} s"
    if isinstance(exc, TimeoutError):
        return (
            f"receiver slow: no complete answer within {seconds:g} s of the request's start "
            f"(connected to {where})"
        )
    reason = describe(exc)
    if isinstance(exc, aiohttp.ClientConnectorError) and not reason.startswith("refused"):
        return f"could not connect: {reason}"[:500]
    return reason


class WebhookService:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        types: Registry[ColumnType],
        queue: WebhookQueue,
        owners: OwnerRights,
        campaign_counts: CampaignCounts,
        audit: AuditSink,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.storage = storage
        self.types = types
        self.owners = owners
        self.campaign_counts = campaign_counts
        self.resolver = GuardedResolver(settings.webhook_allow_private_addresses, resolver)
        self.queue = queue  # refuses work until the broker runs (crm_core/services.py)
        self._session: aiohttp.ClientSession | None = None
        self.gate = DestinationGate(settings.webhook_connections_per_destination)
        self.listeners = ListenerCache()  # who listens to row writes, per tenant version

    # ---- registrations ----------------------------------------------------------------------

    async def _check_url(self, url: str) -> str:
        try:
            parsed = URL(url)
            parsed.port  # noqa: B018 - yarl checks the port when it is read
        except ValueError as exc:
            raise ValidationFailed.field("url", f"is not a valid URL: {exc}") from None
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.raw_host
            or not parsed.is_absolute()
        ):
            raise ValidationFailed.field("url", "must be an absolute http or https URL")
        try:
            host = url_host(parsed)
        except ValueError as exc:  # a host no request could use (broken punycode...)
            raise ValidationFailed.field("url", f"is not a valid URL: {exc}") from None
        if parsed.user is not None or parsed.password is not None:
            raise ValidationFailed.field(
                "url", "must not carry credentials; receivers check the signature instead"
            )
        if parsed.fragment:
            raise ValidationFailed.field("url", "must not have a #fragment")
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                await check_target(self.resolver, host, parsed.port or 80)
        except BlockedAddress as exc:
            raise ValidationFailed.field("url", f"not allowed: {exc}") from None
        except TimeoutError:
            raise ValidationFailed.field("url", f"{host} did not resolve in time") from None
        return str(parsed)

    async def _check_scope(self, ctx: TenantContext, events: list[str], tables: list[str]) -> None:
        """The caller could read everything the webhook would send (the granter rule)."""
        wants_rows = any(e in ROW_EVENTS for e in events)
        if wants_rows and not tables:
            raise ValidationFailed.field("tables", "row events need at least one table")
        if tables and not wants_rows:
            raise ValidationFailed.field("tables", "tables apply to row events only")
        if "campaign.finished" in events and not ctx.has("sms.read"):
            raise Forbidden("campaign.finished needs the 'sms.read' permission")
        errors = []
        for index, key in enumerate(tables):
            if not await self._can_read(ctx, key):
                errors.append({"field": f"tables.{index}", "message": "no such table"})
        if errors:
            raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)

    async def _can_read(self, ctx: TenantContext, key: str) -> bool:
        try:
            table = await load_table(ctx, self.types, key)
        except NotFound:
            return False
        return await access_level(ctx, table) >= Level.READ

    async def _visible(self, ctx: TenantContext, hook: dict[str, Any]) -> bool:
        if "campaign.finished" in hook["events"] and not ctx.has("sms.read"):
            return False
        for key in hook.get("tables", []):
            if not await self._can_read(ctx, key):
                return False
        return True

    async def create(self, ctx: TenantContext, data: WebhookIn) -> dict[str, Any]:
        url = await self._check_url(data.url)
        await self._check_scope(ctx, list(data.events), data.tables)
        now = utcnow()
        hook = {
            "_id": ObjectId(),
            "name": data.name,
            "url": url,
            "events": list(data.events),
            "tables": data.tables,
            "secret": new_secret(),
            "is_active": data.is_active,
            "consecutive_failures": 0,
            "disabled_reason": None,
            "disabled_at": None,
            "created_by": ctx.user_id,
            "owner_id": ctx.user_id,
            "created_at": now,
            "updated_at": now,
        }
        await ctx.db[WEBHOOKS].insert_one(hook)
        # the slot is taken first, then counted: concurrent creations never pass the limit
        if await ctx.db[WEBHOOKS].count_documents({}) > MAX_WEBHOOKS:
            await ctx.db[WEBHOOKS].delete_one({"_id": hook["_id"]})
            await webhooks_changed(ctx.tenant)  # another process may have cached it meanwhile
            raise Conflict(f"A company has at most {MAX_WEBHOOKS} webhooks; delete some first")
        await webhooks_changed(ctx.tenant)
        given = {field: hook[field] for field in AUDITED_FIELDS}
        await self.audit.record(ctx, "webhook.created", _target(hook), given)
        return hook

    async def list_webhooks(self, ctx: TenantContext) -> list[dict[str, Any]]:
        hooks = await ctx.db[WEBHOOKS].find().sort("_id", 1).to_list(1000)
        return [h for h in hooks if await self._visible(ctx, h)]

    async def get(self, ctx: TenantContext, webhook_id: str) -> dict[str, Any]:
        hook: dict[str, Any] | None = await ctx.db[WEBHOOKS].find_one(
            {"_id": object_id(webhook_id, "Webhook")}
        )
        if hook is None or not await self._visible(ctx, hook):
            raise NotFound("Webhook not found")
        return hook

    async def update(
        self, ctx: TenantContext, webhook_id: str, data: WebhookPatch
    ) -> dict[str, Any]:
        hook = await self.get(ctx, webhook_id)
        changes: dict[str, Any] = {"updated_at": utcnow()}
        if data.name is not None:
            changes["name"] = data.name
        if data.url is not None:
            changes["url"] = await self._check_url(data.url)
        events = list(data.events) if data.events is not None else hook["events"]
        tables = data.tables if data.tables is not None else hook.get("tables", [])
        if data.events is not None or data.tables is not None:
            await self._check_scope(ctx, events, tables)
            changes.update(events=events, tables=tables)
        if data.url is not None or data.events is not None or data.tables is not None:
            changes["owner_id"] = ctx.user_id  # deliveries now run on this user's access
        if data.is_active is not None:
            changes["is_active"] = data.is_active
            if data.is_active:
                changes.update(consecutive_failures=0, disabled_reason=None, disabled_at=None)
        await ctx.db[WEBHOOKS].update_one({"_id": hook["_id"]}, {"$set": changes})
        await webhooks_changed(ctx.tenant)
        changed = {
            field: {"before": hook.get(field), "after": changes[field]}
            for field in AUDITED_FIELDS
            if field in changes and changes[field] != hook.get(field)
        }
        if changed:
            await self.audit.record(ctx, "webhook.changed", _target(hook), changed)
        return {**hook, **changes}

    async def rotate_secret(self, ctx: TenantContext, webhook_id: str) -> dict[str, Any]:
        """A new secret; the old one keeps signing beside it for `WEBHOOK_ROTATION_OVERLAP`
        seconds (both signatures in `webhook-signature`), so receivers switch at leisure."""
        hook = await self.get(ctx, webhook_id)
        now = utcnow()
        overlap = timedelta(seconds=self.settings.webhook_rotation_overlap)
        changes = {
            "secret": new_secret(),
            "previous_secret": hook["secret"] if overlap else None,
            "previous_secret_until": now + overlap if overlap else None,
            "updated_at": now,
        }
        await ctx.db[WEBHOOKS].update_one({"_id": hook["_id"]}, {"$set": changes})
        until = changes["previous_secret_until"]
        ends = until.isoformat() if isinstance(until, datetime) else None
        overlap_until = {"previous_secret_until": ends}
        await self.audit.record(ctx, "webhook.secret_rotated", _target(hook), overlap_until)
        return {**hook, **changes}

    async def end_rotation(self, ctx: TenantContext, webhook_id: str) -> dict[str, Any]:
        """The previous secret stops signing now (the owner's receivers all know the new one)."""
        hook = await self.get(ctx, webhook_id)
        changes = {"previous_secret": None, "previous_secret_until": None, "updated_at": utcnow()}
        await ctx.db[WEBHOOKS].update_one({"_id": hook["_id"]}, {"$set": changes})
        await self.audit.record(ctx, "webhook.rotation_ended", _target(hook))
        return {**hook, **changes}

    @staticmethod
    def signing_secrets(hook: dict[str, Any], now: datetime) -> list[str]:
        """The current secret, and the previous one while its overlap lasts."""
        secrets_ = [hook["secret"]]
        until = hook.get("previous_secret_until")
        if hook.get("previous_secret") and until is not None:
            if until.tzinfo is None:
                until = until.replace(tzinfo=now.tzinfo)
            if now < until:
                secrets_.append(hook["previous_secret"])
        return secrets_

    async def delete(self, ctx: TenantContext, webhook_id: str) -> None:
        hook = await self.get(ctx, webhook_id)
        await ctx.db[WEBHOOKS].delete_one({"_id": hook["_id"]})
        await webhooks_changed(ctx.tenant)
        await ctx.db[DELIVERIES].delete_many({"webhook_id": hook["_id"]})
        await self.audit.record(ctx, "webhook.deleted", _target(hook), {"url": hook["url"]})

    async def deliveries(
        self,
        ctx: TenantContext,
        webhook_id: str,
        status: str | None,
        limit: int,
        offset: int,
        event_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        hook = await self.get(ctx, webhook_id)
        query: dict[str, Any] = {"webhook_id": hook["_id"]}
        if status is not None:
            query["status"] = status
        if event_id is not None:
            query["payload.id"] = event_id
        collection = ctx.db[DELIVERIES]
        docs = (
            await collection.find(query, max_time_ms=ctx.max_time_ms)
            .sort("_id", -1)
            .skip(offset)
            .limit(limit)
            .to_list(limit)
        )
        return docs, await collection.count_documents(query, maxTimeMS=ctx.max_time_ms)

    async def delivery(
        self, ctx: TenantContext, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        hook = await self.get(ctx, webhook_id)
        found: dict[str, Any] | None = await ctx.db[DELIVERIES].find_one(
            {"_id": object_id(delivery_id, "Delivery"), "webhook_id": hook["_id"]}
        )
        if found is None:
            raise NotFound("Delivery not found")
        return found

    async def redeliver(
        self, ctx: TenantContext, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        """A finished delivery sent again: the same event (its id, so receivers drop it if they
        had it), as a new delivery with fresh attempts, signed with today's secret."""
        hook = await self.get(ctx, webhook_id)
        original = await self.delivery(ctx, webhook_id, delivery_id)
        if original["event"] == "ping":
            raise Conflict("A ping is not redelivered: send a new one")
        if original["status"] not in FINAL:
            raise Conflict(f"The delivery is still '{original['status']}': wait for it to end")
        if not hook["is_active"]:
            raise Conflict("The webhook is disabled: enable it first")
        return (await self._requeue(ctx, [original]))[0]

    async def replay(self, ctx: TenantContext, webhook_id: str, since: datetime) -> int:
        """Every event delivery of the webhook recorded since `since` that did not succeed
        (failed, or skipped while the webhook was disabled or its owner lacked access) sent
        again, oldest first; answers how many."""
        hook = await self.get(ctx, webhook_id)
        if not hook["is_active"]:
            raise Conflict("The webhook is disabled: enable it first")
        query = {
            "webhook_id": hook["_id"],
            "created_at": {"$gte": since},
            "status": {"$in": ["failed", "skipped"]},
            "event": {"$ne": "ping"},
            "replayed": {"$ne": True},
        }
        originals = (
            await ctx.db[DELIVERIES]
            .find(query, max_time_ms=ctx.max_time_ms)
            .sort("_id", 1)
            .to_list(MAX_REPLAY)
        )
        claimed = await self._claim_replay(ctx, originals)
        await self._requeue(ctx, claimed)
        return len(claimed)

    async def _claim_replay(
        self, ctx: TenantContext, originals: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The originals this replay sends again: each claimed by one conditional update, so
        replays asked at once send every event once; the claim lapses after a lease (a
        process that stopped before sending leaves it to the next replay)."""
        if not originals:
            return []
        now, token = utcnow(), ObjectId()
        ids = [o["_id"] for o in originals]
        free = {"$or": [{"replay_claim_until": None}, {"replay_claim_until": {"$lte": now}}]}
        await ctx.db[DELIVERIES].update_many(
            {"_id": {"$in": ids}, "replayed": {"$ne": True}, **free},
            {"$set": {"replay_claim": token, "replay_claim_until": now + self._lease()}},
        )
        mine = ctx.db[DELIVERIES].find({"_id": {"$in": ids}, "replay_claim": token}, {"_id": 1})
        won = {d["_id"] async for d in mine}
        return [o for o in originals if o["_id"] in won]

    async def _requeue(
        self, ctx: TenantContext, originals: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if not originals:
            return []
        now = utcnow()
        copies = []
        for original in originals:
            copy = self._delivery(original["webhook_id"], original["event"], {}, now, ctx.tenant_id)
            copy["payload"] = original["payload"]
            copy["redelivery_of"] = original["_id"]
            copies.append(copy)
        await ctx.db[DELIVERIES].insert_many(copies)
        await ctx.db[DELIVERIES].update_many(
            {"_id": {"$in": [o["_id"] for o in originals]}}, {"$set": {"replayed": True}}
        )
        lease_end = now + self._lease()
        await self.storage.system_db[DUE].insert_many(
            [{"_id": c["_id"], "tenant_id": ctx.tenant_id, "due_at": lease_end} for c in copies]
        )
        await self._hand_off(ctx.tenant_id, [c["_id"] for c in copies])
        return copies

    async def ping(self, ctx: TenantContext, webhook_id: str) -> dict[str, Any]:
        """One signed `ping` sent now (even to a disabled webhook), recorded in its log; it
        neither retries nor counts towards disabling."""
        hook = await self.get(ctx, webhook_id)
        now = utcnow()
        delivery = self._delivery(hook["_id"], "ping", {}, now, ctx.tenant_id)
        delivery["payload"]["actor_id"] = ctx.user_id
        delivery.update(status="delivering", attempts=1, claimed_at=now)
        await ctx.db[DELIVERIES].insert_one(delivery)
        code, latency, error, excerpt = await self._send(hook, delivery)
        ok = error is None
        status = "succeeded" if ok else "failed"
        changes = self._attempt_changes(status, code, latency, error, None, excerpt)
        recorded: dict[str, Any] = await ctx.db[DELIVERIES].find_one_and_update(
            {"_id": delivery["_id"]}, changes, return_document=True
        )
        return recorded

    # ---- events -----------------------------------------------------------------------------

    def _delivery(
        self,
        webhook_id: ObjectId,
        event: str,
        payload: dict[str, Any],
        now: datetime,
        company_id: str,
    ) -> dict[str, Any]:
        return {
            "_id": ObjectId(),
            "webhook_id": webhook_id,
            "event": event,
            "payload": {
                "id": uuid.uuid4().hex,
                "event": event,
                "occurred_at": now.isoformat().replace("+00:00", "Z"),
                "company_id": company_id,
                "webhook_id": str(webhook_id),
                **payload,
            },
            "status": "pending",
            "attempts": 0,
            "attempt_log": [],
            "response_code": None,
            "latency_ms": None,
            "error": None,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
            "expires_at": now + timedelta(days=self.settings.webhook_log_retention_days),
        }

    async def subscribed(
        self, db: Database, event: str, table_key: str | None, tenant: Tenant | None = None
    ) -> list[ObjectId]:
        """Ids of the webhooks that want `event` (on `table_key` for row events), disabled ones
        too: their deliveries are recorded and `skipped` when due, so a replay after enabling
        sends them.
        Given the request's tenant, from the process cache (no query on a warm process; a
        change made by any process is seen at the next request through `versions.webhooks`);
        without it (campaign completion, once per campaign), one indexed query."""
        if tenant is not None:
            listeners = await self.listeners.listeners(db, tenant, WEBHOOKS)
            return [h.id for h in listeners if h.wants(event, table_key)]
        query: dict[str, Any] = {"events": event}
        if table_key is not None:
            query["tables"] = table_key
        return [h["_id"] async for h in db[WEBHOOKS].find(query, {"_id": 1})]

    async def publish(
        self,
        db: Database,
        tenant_id: str,
        actor_id: str | None,
        event: str,
        table_key: str | None,
        items: list[dict[str, Any]],
        hooks: list[ObjectId] | None = None,
    ) -> int:
        """Record one delivery per subscribed webhook and per 100 items, and queue them.
        Returns how many deliveries were queued."""
        if not items:
            return 0
        if hooks is None:
            hooks = await self.subscribed(db, event, table_key)
        if not hooks:
            return 0
        now = utcnow()
        deliveries = []
        # every event of one write carries the write's batch id (and the API request's id)
        request_id = REQUEST_ID.get()
        batch = {
            "batch_id": uuid.uuid4().hex,
            "request_id": None if request_id == "-" else request_id,
        }
        for chunk in _chunks(items, ITEMS_PER_DELIVERY):
            payload: dict[str, Any] = {"actor_id": actor_id, **batch, "items": chunk}
            if table_key is not None:
                payload["table"] = table_key
            event_id = uuid.uuid4().hex  # the same event has the same id in every webhook
            for hook_id in hooks:
                delivery = self._delivery(hook_id, event, payload, now, tenant_id)
                delivery["payload"]["id"] = event_id
                deliveries.append(delivery)
        await db[DELIVERIES].insert_many(deliveries)
        lease_end = now + self._lease()
        await self.storage.system_db[DUE].insert_many(
            [{"_id": d["_id"], "tenant_id": tenant_id, "due_at": lease_end} for d in deliveries]
        )
        await self._hand_off(tenant_id, [d["_id"] for d in deliveries])
        return len(deliveries)

    async def _hand_off(self, tenant_id: str, ids: list[ObjectId]) -> bool:
        """Queue recorded deliveries; with the broker down the rest are made due at the next
        sweep instead (the write that published them never fails for it)."""
        for index, oid in enumerate(ids):
            try:
                await self.queue.deliver(tenant_id, str(oid))
            except Exception:  # Redis refused or is away: the sweeper queues them later
                log.warning(
                    "the task broker refused webhook delivery %s; %d wait for the sweeper",
                    oid,
                    len(ids) - index,
                    exc_info=True,
                )
                soon = utcnow() + timedelta(seconds=self.settings.webhook_sweep_seconds)
                await self.storage.system_db[DUE].update_many(
                    {"_id": {"$in": ids[index:]}}, {"$set": {"due_at": soon}}
                )
                return False
        return True

    async def campaign_finished(
        self, db: Database, tenant_id: str, campaign: dict[str, Any]
    ) -> None:
        """`campaign.finished` (completed or cancelled); never fails the caller's work."""
        try:
            hooks = await self.subscribed(db, "campaign.finished", None)
            if not hooks:
                return
            item = {
                "id": str(campaign["_id"]),
                "name": campaign["name"],
                "status": campaign["status"],
                "counts": await self.campaign_counts(db, campaign),
            }
            await self.publish(
                db, tenant_id, campaign.get("created_by"), "campaign.finished", None, [item], hooks
            )
        except Exception:
            log.exception("campaign.finished for %s could not be recorded", campaign.get("_id"))

    # ---- delivery (task workers) ------------------------------------------------------------

    def _lease(self) -> timedelta:
        """How long an attempt may take before another worker may take it over."""
        return timedelta(seconds=2 * self.settings.webhook_timeout_seconds + 30)

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: base, 4x base, 16x base..."""
        return float(self.settings.webhook_retry_base_seconds * 4 ** (attempt - 1))

    async def deliver(self, tenant_id: str, delivery_id: str) -> str:
        """One attempt of one delivery, if it is due; returns the delivery's new status."""
        db = self.storage.tenant_db(tenant_id)
        due = self.storage.system_db[DUE]
        oid = ObjectId(delivery_id)
        now = utcnow()
        delivery = await db[DELIVERIES].find_one_and_update(
            {
                "_id": oid,
                "$or": [
                    {"status": {"$in": ["pending", "retrying"]}, "next_attempt_at": {"$lte": now}},
                    {"status": "delivering", "claimed_at": {"$lte": now - self._lease()}},
                ],
            },
            {
                "$set": {"status": "delivering", "claimed_at": now, "updated_at": now},
                "$inc": {"attempts": 1},
            },
            return_document=True,
        )
        if delivery is None:
            current = await db[DELIVERIES].find_one({"_id": oid}, {"status": 1})
            if current is None or current["status"] in FINAL:
                await due.delete_one({"_id": oid})
            return current["status"] if current else "gone"
        hook = await db[WEBHOOKS].find_one({"_id": delivery["webhook_id"]})
        refusal = await self._refusal(tenant_id, hook, delivery)
        if refusal is not None or hook is None:
            await db[DELIVERIES].update_one(
                {"_id": oid}, self._attempt_changes("skipped", None, None, refusal, None)
            )
            await due.delete_one({"_id": oid})
            return "skipped"
        target = destination(hook["url"])
        if not self.gate.enter(target):
            return await self._defer(db, delivery, target)
        try:
            code, latency, error, excerpt = await self._send(hook, delivery)
        finally:
            self.gate.leave(target)
        if error is None:
            await db[DELIVERIES].update_one(
                {"_id": oid}, self._attempt_changes("succeeded", code, latency, None, None, excerpt)
            )
            await due.delete_one({"_id": oid})
            if hook.get("consecutive_failures"):
                await db[WEBHOOKS].update_one(
                    {"_id": hook["_id"]}, {"$set": {"consecutive_failures": 0}}
                )
            return "succeeded"
        if delivery["attempts"] < self.settings.webhook_max_attempts:
            retry_at = utcnow() + timedelta(seconds=self.backoff(delivery["attempts"]))
            await db[DELIVERIES].update_one(
                {"_id": oid},
                self._attempt_changes("retrying", code, latency, error, retry_at, excerpt),
            )
            await due.update_one({"_id": oid}, {"$set": {"due_at": retry_at}}, upsert=True)
            return "retrying"
        await db[DELIVERIES].update_one(
            {"_id": oid}, self._attempt_changes("failed", code, latency, error, None, excerpt)
        )
        await due.delete_one({"_id": oid})
        await self._count_failure(db, tenant_id, hook["_id"])
        return "failed"

    async def _defer(
        self, db: Database, delivery: dict[str, Any], target: tuple[str, str, int]
    ) -> str:
        """The destination is full in this process: back in line shortly, not an attempt."""
        status = "pending" if delivery["attempts"] <= 1 else "retrying"
        later = utcnow() + timedelta(seconds=self.settings.webhook_defer_seconds)
        scheme, host, port = target
        note = (
            f"waited for a connection: {self.gate.per_destination} requests already in flight "
            f"to {scheme}://{host}:{port}; put back, not counted as an attempt"
        )
        await db[DELIVERIES].update_one(
            {"_id": delivery["_id"], "status": "delivering"},
            {
                "$set": {"status": status, "next_attempt_at": later, "deferred_reason": note},
                "$inc": {"attempts": -1, "deferrals": 1},
            },
        )
        await self.storage.system_db[DUE].update_one(
            {"_id": delivery["_id"]}, {"$set": {"due_at": later}}, upsert=True
        )
        return status

    async def _count_failure(self, db: Database, tenant_id: str, hook_id: ObjectId) -> None:
        limit = self.settings.webhook_disable_after_failures
        hook = await db[WEBHOOKS].find_one_and_update(
            {"_id": hook_id}, {"$inc": {"consecutive_failures": 1}}, return_document=True
        )
        if hook is not None and hook["is_active"] and hook["consecutive_failures"] >= limit:
            now = utcnow()
            disabled = await db[WEBHOOKS].update_one(
                {"_id": hook_id, "is_active": True},
                {
                    "$set": {
                        "is_active": False,
                        "disabled_at": now,
                        "updated_at": now,
                        "disabled_reason": f"{limit} deliveries in a row failed",
                    }
                },
            )
            if disabled.modified_count:
                await webhooks_changed(tenant_id)  # row writes stop queueing for it
                # the owner learns of it from the audit trail and the operator from /admin
                reason = {"reason": f"{limit} deliveries in a row failed", "url": hook["url"]}
                await self.audit.record_in(
                    db, DELIVERY_ACTOR, "webhook.disabled", _target(hook), reason
                )
            log.warning("webhook %s disabled after %d failed deliveries", hook_id, limit)

    @staticmethod
    async def auto_disabled(db: Database) -> list[dict[str, Any]]:
        """The company's webhooks disabled after failed deliveries (not by a person), for
        /admin: at most MAX_WEBHOOKS, read in `_id` order."""
        hooks = await db[WEBHOOKS].find().sort("_id", 1).to_list(MAX_WEBHOOKS + 1)
        return [h for h in hooks if not h["is_active"] and h.get("disabled_reason")]

    @staticmethod
    def _attempt_changes(
        status: str,
        code: int | None,
        latency: float | None,
        error: str | None,
        next_attempt_at: datetime | None,
        excerpt: str | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        entry = {
            "at": now,
            "response_code": code,
            "latency_ms": latency,
            "error": error,
            "response_excerpt": excerpt,
        }
        return {
            "$set": {
                "status": status,
                "response_code": code,
                "latency_ms": latency,
                "error": error,
                "next_attempt_at": next_attempt_at,
                "updated_at": now,
            },
            "$push": {"attempt_log": {"$each": [entry], "$slice": -ATTEMPT_LOG}},
        }

    async def _refusal(
        self, tenant_id: str, hook: dict[str, Any] | None, delivery: dict[str, Any]
    ) -> str | None:
        """Why this delivery may not be sent now (its owner's current access), or None."""
        if hook is None:
            return "the webhook was deleted"
        if not hook["is_active"]:
            return "the webhook is disabled"
        owner_id = hook.get("owner_id", "")
        owner = parse_object_id(owner_id)
        user = None if owner is None else await User.get(owner)
        tenant = await Tenant.get(PydanticObjectId(tenant_id))
        if user is None or not user.is_active or tenant is None or not tenant.is_active:
            return "the webhook's owner is no longer active"
        ctx = await self.owners.context_of(user, tenant)
        if not ctx.has("webhooks.manage"):
            return "the webhook's owner no longer holds 'webhooks.manage'"
        event = delivery["event"]
        if event in ROW_EVENTS:
            key = delivery["payload"].get("table", "")
            if not await self._can_read(ctx, key):
                return f"the webhook's owner can no longer read table '{key}'"
        if event == "campaign.finished" and not ctx.has("sms.read"):
            return "the webhook's owner no longer holds 'sms.read'"
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no pool limits here: the destination gate bounds requests before the clock
            # starts, so a request never spends its timeout waiting for a free connection
            connector = aiohttp.TCPConnector(
                resolver=self.resolver, use_dns_cache=False, limit=0, limit_per_host=0
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def _send(
        self, hook: dict[str, Any], delivery: dict[str, Any]
    ) -> tuple[int | None, float | None, str | None, str | None]:
        """POST the payload once: (response code, latency in ms, error or None if 2xx, the
        start of the response body). The timeout counts from the request's start."""
        body = orjson.dumps(delivery["payload"])
        timestamp = int(time.time())
        message_id = str(delivery["_id"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "crm-webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                sign(secret, message_id, timestamp, body)
                for secret in self.signing_secrets(hook, utcnow())
            ),
            "X-CRM-Event": delivery["event"],
            "X-CRM-Webhook": str(hook["_id"]),
        }
        url = URL(hook["url"])
        seconds = self.settings.webhook_timeout_seconds
        started = time.perf_counter()
        try:
            check_literal_host(url_host(url), self.resolver.allow_private)
            # connecting gets half the time; the whole request (connect, send, answer) all of it
            timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=seconds / 2)
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                raw = await response.content.read(RESPONSE_EXCERPT_BYTES)
                code = response.status
        except Exception as exc:  # any failure of a request to a URL a user chose
            if not isinstance(exc, aiohttp.ClientError | OSError | TimeoutError | ValueError):
                log.warning("webhook %s: unexpected request failure", hook["_id"], exc_info=True)
            latency = round((time.perf_counter() - started) * 1000, 1)
            return None, latency, failure_reason(exc, url, seconds), None
        latency = round((time.perf_counter() - started) * 1000, 1)
        excerpt = raw.decode("utf-8", "replace")
        if 200 <= code < 300:
            return code, latency, None, excerpt
        if 300 <= code < 400:
            return code, latency, f"HTTP {code}: redirects are not followed", excerpt
        return code, latency, f"HTTP {code}", excerpt

    async def sweep(self, limit: int = 100) -> int:
        """Queue deliveries whose retry is due (or whose attempt was lost); returns how many."""
        due = self.storage.system_db[DUE]
        queued = 0
        while queued < limit:
            now = utcnow()
            entry = await due.find_one_and_update(
                {"due_at": {"$lte": now}},
                {"$set": {"due_at": now + self._lease()}},
                sort=[("due_at", 1)],
            )
            if entry is None:
                break
            if not await self._hand_off(entry["tenant_id"], [entry["_id"]]):
                break  # the broker is down: the next round tries again
            queued += 1
        return queued

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
