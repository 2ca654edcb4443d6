"""`/api/sms`: SMS campaigns (SPEC §11)."""

from __future__ import annotations

from typing import Any

from crm_core import sms
from handlers.routing import Call, Permission, RouteTable
from models.sms import (
    CampaignCounts,
    CampaignIn,
    CampaignList,
    CampaignOut,
    MessageOut,
    MessagePage,
    MessageQuery,
    ResolveIn,
    message_out,
)

routes = RouteTable("sms")
CAMPAIGN = "/api/sms/campaigns/{campaign_id}"
READ, SEND = Permission(code="sms.read"), Permission(code="sms.send")


async def campaign_out(call: Call, campaign: dict[str, Any]) -> CampaignOut:
    counts = await sms.counts(call.ctx.db, campaign["_id"])
    return CampaignOut(
        id=str(campaign["_id"]),
        name=campaign["name"],
        text=campaign["text"],
        status=campaign["status"],
        table=campaign.get("table"),
        phone_column=campaign.get("phone_column"),
        duplicates=campaign.get("duplicates", 0),
        counts=CampaignCounts(**counts),
        created_by=campaign["created_by"],
        created_at=campaign["created_at"],
    )


@routes.post(
    "/api/sms/campaigns",
    access=SEND,
    summary="Create and queue a campaign",
    body=CampaignIn,
    response=CampaignOut,
    status=202,
    errors=(404,),
)
async def create_campaign(call: Call) -> CampaignOut:
    """From a table (`table`, `phone_column`, optional `filters` in the filter language) or
    from `recipients`. `{{key}}` placeholders are filled per recipient; an unknown one is a 400.
    Phones are normalised to E.164; repeated numbers are dropped and counted, invalid ones are
    recorded as `invalid` and not sent. Answers 202: workers send it."""
    settings = call.services.settings
    campaign = await sms.create_campaign(
        call.ctx,
        call.services.rows,
        call.services.sms_queue,
        call.body,
        settings.sms_batch_size,
        settings.sms_max_recipients,
    )
    if campaign["status"] == "completed" and call.services.webhooks is not None:
        await call.services.webhooks.campaign_finished(call.ctx.db, call.ctx.tenant_id, campaign)
    return await campaign_out(call, campaign)


@routes.get(
    "/api/sms/campaigns", access=READ, summary="Campaigns, newest first", response=CampaignList
)
async def list_campaigns(call: Call) -> CampaignList:
    return CampaignList(
        items=[await campaign_out(call, c) for c in await sms.list_campaigns(call.ctx)]
    )


@routes.get(
    CAMPAIGN,
    access=READ,
    summary="A campaign with its status and counts",
    response=CampaignOut,
    errors=(404,),
)
async def get_campaign(call: Call) -> CampaignOut:
    return await campaign_out(call, await sms.get_campaign(call.ctx, call.param("campaign_id")))


@routes.get(
    f"{CAMPAIGN}/messages",
    access=READ,
    summary="A campaign's messages",
    query=MessageQuery,
    response=MessagePage,
    errors=(404,),
)
async def list_messages(call: Call) -> MessagePage:
    query: MessageQuery = call.query
    docs, total = await sms.list_messages(
        call.ctx, call.param("campaign_id"), query.status, query.limit, query.offset
    )
    return MessagePage(
        items=[message_out(d) for d in docs], total=total, limit=query.limit, offset=query.offset
    )


@routes.post(
    f"{CAMPAIGN}/cancel",
    access=SEND,
    summary="Cancel a campaign",
    response=CampaignOut,
    errors=(404, 409),
)
async def cancel_campaign(call: Call) -> CampaignOut:
    """Messages not yet sent are cancelled; one being sent at this moment finishes."""
    campaign = await sms.cancel_campaign(call.ctx, call.param("campaign_id"))
    if call.services.webhooks is not None:
        await call.services.webhooks.campaign_finished(call.ctx.db, call.ctx.tenant_id, campaign)
    return await campaign_out(call, campaign)


@routes.post(
    "/api/sms/messages/{message_id}/resolve",
    access=SEND,
    summary="Decide about a message whose fate is unknown",
    body=ResolveIn,
    response=MessageOut,
    errors=(404, 409),
)
async def resolve_message(call: Call) -> MessageOut:
    """For `unknown` messages only (a worker stopped mid-send, or the provider gave no answer):
    record `sent` or `failed` after checking with the provider, or `resend`, accepting that the
    recipient may get it twice."""
    message = await sms.resolve_message(
        call.ctx, call.services.sms_queue, call.param("message_id"), call.body.outcome
    )
    return message_out(message)
