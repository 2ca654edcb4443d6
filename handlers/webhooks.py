"""`/api/webhooks`: webhooks and their delivery log (docs/integrations.md)."""

from __future__ import annotations

from crm_core.webhooks.service import WebhookService
from handlers.routing import Call, Permission, RouteTable
from models.webhooks import (
    DeliveryOut,
    DeliveryPage,
    DeliveryQuery,
    ReplayIn,
    ReplayOut,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
    delivery_out,
    webhook_out,
    webhook_with_secret,
)

routes = RouteTable("webhooks")
WEBHOOK = "/api/webhooks/{webhook_id}"
MANAGE = Permission(code="webhooks.manage")


def _service(call: Call) -> WebhookService:
    return call.services.webhooks


@routes.get("/api/webhooks", access=MANAGE, summary="The company's webhooks", response=WebhookList)
async def list_webhooks(call: Call) -> WebhookList:
    """Only webhooks whose tables (and events) the caller could subscribe to itself."""
    return WebhookList(items=[webhook_out(h) for h in await _service(call).list_webhooks(call.ctx)])


@routes.post(
    "/api/webhooks",
    access=MANAGE,
    summary="Register a webhook",
    body=WebhookIn,
    response=WebhookWithSecret,
    status=201,
    errors=(409,),
)
async def create_webhook(call: Call, body: WebhookIn) -> WebhookWithSecret:
    """The answer carries the signing `secret`, shown only here and on rotation. The URL must
    resolve to public addresses (400 names `url`); row events need `tables` the caller can read
    (400 names the item); `campaign.finished` needs `sms.read` (403); at most 100 per company
    (409)."""
    return webhook_with_secret(await _service(call).create(call.ctx, body))


@routes.get(WEBHOOK, access=MANAGE, summary="A webhook", response=WebhookOut, errors=(404,))
async def get_webhook(call: Call, webhook_id: str) -> WebhookOut:
    return webhook_out(await _service(call).get(call.ctx, webhook_id))


@routes.patch(
    WEBHOOK,
    access=MANAGE,
    summary="Change or re-enable a webhook",
    body=WebhookPatch,
    response=WebhookOut,
    errors=(404,),
)
async def update_webhook(call: Call, body: WebhookPatch, webhook_id: str) -> WebhookOut:
    """Changing `url`, `events` or `tables` makes the caller the webhook's owner: deliveries
    are checked against the owner's access. `is_active: true` re-enables a webhook that was
    disabled after failures and clears its failure count."""
    hook = await _service(call).update(call.ctx, webhook_id, body)
    return webhook_out(hook)


@routes.delete(WEBHOOK, access=MANAGE, summary="Delete a webhook", status=204, errors=(404,))
async def delete_webhook(call: Call, webhook_id: str) -> None:
    """Its delivery log goes with it; deliveries not yet sent are dropped."""
    await _service(call).delete(call.ctx, webhook_id)


@routes.post(
    f"{WEBHOOK}/rotate-secret",
    access=MANAGE,
    summary="Replace a webhook's secret",
    response=WebhookWithSecret,
    errors=(404,),
)
async def rotate_secret(call: Call, webhook_id: str) -> WebhookWithSecret:
    """The new secret is shown only in this answer. The previous one keeps signing beside it
    until `previous_secret_until` (`WEBHOOK_ROTATION_OVERLAP`, 24 h by default): every
    delivery carries both signatures in `webhook-signature` until then, or until
    `end-rotation`."""
    return webhook_with_secret(await _service(call).rotate_secret(call.ctx, webhook_id))


@routes.post(
    f"{WEBHOOK}/end-rotation",
    access=MANAGE,
    summary="Stop signing with the previous secret",
    response=WebhookOut,
    errors=(404,),
)
async def end_rotation(call: Call, webhook_id: str) -> WebhookOut:
    """Ends a rotation's overlap now: deliveries carry the new secret's signature only."""
    return webhook_out(await _service(call).end_rotation(call.ctx, webhook_id))


@routes.post(
    f"{WEBHOOK}/test",
    access=MANAGE,
    summary="Send a signed ping now",
    response=DeliveryOut,
    errors=(404,),
)
async def ping_webhook(call: Call, webhook_id: str) -> DeliveryOut:
    """Sends one `ping` event at once and answers its delivery record (status, response code,
    latency, error). Works on disabled webhooks; no retries, and it does not count towards
    disabling."""
    return delivery_out(await _service(call).ping(call.ctx, webhook_id))


@routes.get(
    f"{WEBHOOK}/deliveries",
    access=MANAGE,
    summary="A webhook's delivery log, newest first",
    query=DeliveryQuery,
    response=DeliveryPage,
    errors=(404,),
)
async def list_deliveries(call: Call, query: DeliveryQuery, webhook_id: str) -> DeliveryPage:
    """`event_id` finds the deliveries of one event (the payload's `id`)."""
    docs, total = await _service(call).deliveries(
        call.ctx, webhook_id, query.status, query.limit, query.offset, query.event_id
    )
    return DeliveryPage(
        items=[delivery_out(d) for d in docs], total=total, limit=query.limit, offset=query.offset
    )


DELIVERY = f"{WEBHOOK}/deliveries/{{delivery_id}}"


@routes.get(DELIVERY, access=MANAGE, summary="One delivery", response=DeliveryOut, errors=(404,))
async def get_delivery(call: Call, webhook_id: str, delivery_id: str) -> DeliveryOut:
    """Its attempts: when, the response status, latency, error, and the first 512 bytes of
    the receiver's answer."""
    return delivery_out(await _service(call).delivery(call.ctx, webhook_id, delivery_id))


@routes.post(
    f"{DELIVERY}/redeliver",
    access=MANAGE,
    summary="Send a finished delivery again",
    response=DeliveryOut,
    status=202,
    errors=(404, 409),
)
async def redeliver(call: Call, webhook_id: str, delivery_id: str) -> DeliveryOut:
    """A new delivery of the same event (same payload and event `id`: a receiver that had it
    can drop it), queued now with fresh attempts; 409 while the original is still being
    tried, for a ping, or when the webhook is disabled."""
    return delivery_out(await _service(call).redeliver(call.ctx, webhook_id, delivery_id))


@routes.post(
    f"{WEBHOOK}/replay",
    access=MANAGE,
    summary="Send again what did not arrive since a moment",
    body=ReplayIn,
    response=ReplayOut,
    status=202,
    errors=(404, 409),
)
async def replay(call: Call, body: ReplayIn, webhook_id: str) -> ReplayOut:
    """Every event delivery recorded since `since` that failed or was skipped (and was not
    replayed before) is sent again, oldest first; 409 while the webhook is disabled."""
    return ReplayOut(queued=await _service(call).replay(call.ctx, webhook_id, body.since))
