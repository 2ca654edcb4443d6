"""`/api/sms`: SMS campaigns (docs/sms.md)."""

from __future__ import annotations

from aiohttp import web

from crm_core.platform.errors import ValidationFailed
from handlers.routing import Call, Permission, Public, RouteTable
from models.sms import (
    CampaignIn,
    CampaignList,
    CampaignListQuery,
    CampaignOut,
    CampaignPreview,
    MessageOut,
    MessagePage,
    MessageQuery,
    ResolveIn,
    StopListChange,
    StopListEntry,
    StopListIn,
    StopListPage,
    StopListQuery,
    campaign_out,
    message_out,
)

routes = RouteTable("sms")
CAMPAIGN = "/api/sms/campaigns/{campaign_id}"
READ, SEND = Permission(code="sms.read"), Permission(code="sms.send")


@routes.post(
    "/api/sms/campaigns",
    access=SEND,
    summary="Create and queue a campaign",
    body=CampaignIn,
    response=CampaignOut,
    status=202,
    errors=(404, 409),
)
async def create_campaign(call: Call, body: CampaignIn) -> CampaignOut:
    """From a table (`table`, `phone_column`, optional `filters` in the filter language) or
    from `recipients`. `{{key}}` placeholders are filled per recipient; an unknown one is a 400.
    Phones are normalised to E.164; repeated numbers are dropped and counted, invalid ones are
    recorded as `invalid` and not sent. A campaign that would go past the company's daily cap
    (`sms_daily_cap`) is refused: 409 `sms_daily_cap`, nothing stored. Answers 202: workers
    send it."""
    return campaign_out(await call.services.sms.create(call.ctx, body))


@routes.post(
    "/api/sms/campaigns/preview",
    access=SEND,
    summary="What a campaign would send, and its price; nothing stored",
    body=CampaignIn,
    response=CampaignPreview,
    errors=(404,),
)
async def preview_campaign(call: Call, body: CampaignIn) -> CampaignPreview:
    """The same body as creating a campaign, checked the same way (400s alike): distinct
    recipients, duplicates, invalid and stop-listed numbers, parts per message (GSM-7 160/153,
    UCS-2 70/67; Cyrillic is UCS-2), total parts, and the provider's price where it gives one."""
    return await call.services.sms.preview(call.ctx, body)


@routes.get(
    "/api/sms/campaigns",
    access=READ,
    summary="Campaigns, newest first",
    query=CampaignListQuery,
    response=CampaignList,
)
async def list_campaigns(call: Call, query: CampaignListQuery) -> CampaignList:
    """`limit` at a time (1000); the next page by `cursor` (`next_cursor`)."""
    campaigns, following = await call.services.sms.list_campaigns(
        call.ctx, query.limit, query.cursor
    )
    return CampaignList(items=[campaign_out(c) for c in campaigns], next_cursor=following)


@routes.get(
    CAMPAIGN,
    access=READ,
    summary="A campaign with its status and counts",
    response=CampaignOut,
    errors=(404,),
)
async def get_campaign(call: Call, campaign_id: str) -> CampaignOut:
    return campaign_out(await call.services.sms.get(call.ctx, campaign_id))


@routes.get(
    f"{CAMPAIGN}/messages",
    access=READ,
    summary="A campaign's messages",
    query=MessageQuery,
    response=MessagePage,
    errors=(404,),
)
async def list_messages(call: Call, query: MessageQuery, campaign_id: str) -> MessagePage:
    messages, total, following = await call.services.sms.messages(call.ctx, campaign_id, query)
    return MessagePage(
        items=[message_out(m) for m in messages],
        total=total,
        limit=query.limit,
        offset=query.offset,
        next_cursor=following,
    )


@routes.post(
    f"{CAMPAIGN}/cancel",
    access=SEND,
    summary="Cancel a campaign",
    response=CampaignOut,
    errors=(404, 409),
)
async def cancel_campaign(call: Call, campaign_id: str) -> CampaignOut:
    """Messages not yet sent are cancelled; one being sent at this moment finishes."""
    return campaign_out(await call.services.sms.cancel(call.ctx, campaign_id))


@routes.post(
    "/api/sms/messages/{message_id}/resolve",
    access=SEND,
    summary="Decide about a message whose fate is unknown",
    body=ResolveIn,
    response=MessageOut,
    errors=(404, 409),
)
async def resolve_message(call: Call, body: ResolveIn, message_id: str) -> MessageOut:
    """For `unknown` messages only (a worker stopped mid-send, or the provider gave no answer):
    record `sent` or `failed` after checking with the provider, or `resend`, accepting that the
    recipient may get it twice."""
    message = await call.services.sms.resolve(call.ctx, message_id, body.outcome)
    return message_out(message)


CALLBACK_FORM = {
    "application/x-www-form-urlencoded": {
        "schema": {
            "type": "object",
            "required": ["data[]", "hash"],
            "properties": {
                "data[]": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Entries of lines: sms_status, sms_id, code, unix time",
                },
                "hash": {"type": "string", "description": "sha256(api_id + data entries)"},
            },
        }
    }
}


@routes.post(
    "/api/sms/callbacks/smsru",
    access=Public(),
    summary="SMS.ru delivery reports",
    request_content=CALLBACK_FORM,
    response_content={"text/plain": {"schema": {"type": "string", "example": "100"}}},
    errors=(400, 403),
)
async def smsru_callback(call: Call) -> web.StreamResponse:
    """SMS.ru posts delivery reports here (register this URL in the SMS.ru account). The hash
    is checked (403 when wrong); reports on unknown ids are ignored; a valid call is answered
    `100`, as SMS.ru requires. Moves `sent` messages to `delivered`, `undelivered` or
    `expired` (docs/sms.md)."""
    request = call.request
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ValidationFailed.field("data[]", "the callback body must be a form (data[], hash)")
    try:
        form = await request.post()
    except (ValueError, AssertionError, UnicodeError):  # e.g. multipart without a boundary
        raise ValidationFailed.field("data[]", "the callback body is not a readable form") from None
    data = [v for v in form.getall("data[]", []) if isinstance(v, str)]
    given = form.get("hash")
    await call.services.sms.smsru_callback(data, given if isinstance(given, str) else "")
    return web.Response(text="100", content_type="text/plain")


STOP_LIST = "/api/sms/stop-list"


@routes.get(
    STOP_LIST,
    access=READ,
    summary="The company's SMS stop list",
    query=StopListQuery,
    response=StopListPage,
)
async def stop_list(call: Call, query: StopListQuery) -> StopListPage:
    """Numbers never sent to (E.164), in number order."""
    docs, total = await call.services.sms.stop_list(call.ctx, query.limit, query.offset)
    items = [
        StopListEntry(phone=d["_id"], added_by=d.get("added_by"), added_at=d["added_at"])
        for d in docs
    ]
    return StopListPage(items=items, total=total, limit=query.limit, offset=query.offset)


@routes.post(
    STOP_LIST,
    access=SEND,
    summary="Add numbers to the stop list",
    body=StopListIn,
    response=StopListChange,
)
async def add_to_stop_list(call: Call, body: StopListIn) -> StopListChange:
    """Up to 10,000 numbers at once, normalised to E.164 with the company's region; an
    invalid one is a 400 naming it (`phones.N`), nothing added. Messages to a listed number
    are never sent: state `blocked`."""
    added, already, phones = await call.services.sms.stop(call.ctx, body.phones)
    return StopListChange(changed=added, unchanged=already, phones=phones)


@routes.delete(
    STOP_LIST,
    access=SEND,
    summary="Remove numbers from the stop list",
    body=StopListIn,
    response=StopListChange,
)
async def remove_from_stop_list(call: Call, body: StopListIn) -> StopListChange:
    removed, missing, phones = await call.services.sms.unstop(call.ctx, body.phones)
    return StopListChange(changed=removed, unchanged=missing, phones=phones)
