"""`/api/webhooks`: webhooks and their delivery log (docs/integrations.md)."""

from __future__ import annotations

from crm_core.webhooks.service import WebhookService
from handlers.routing import Call, Permission, RouteTable
from models.webhooks import (
    DeliveryOut,
    DeliveryPage,
    DeliveryQuery,
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
    """Deliveries signed from now on use the new secret, shown only in this answer."""
    return webhook_with_secret(await _service(call).rotate_secret(call.ctx, webhook_id))


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
    docs, total = await _service(call).deliveries(
        call.ctx, webhook_id, query.status, query.limit, query.offset
    )
    return DeliveryPage(
        items=[delivery_out(d) for d in docs], total=total, limit=query.limit, offset=query.offset
    )
