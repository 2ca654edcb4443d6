"""One-time tickets for a browser's EventSource (docs/api.md "Live events", "Signing in"):
`POST /api/events/ticket` → `{ticket}`; `GET /api/events?ticket=...` opens the stream as the
ticket's user, once, within 30 s; a reused, expired, altered or another company's ticket is a
401; the record never holds the access token in the clear."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm_core.live.tickets import TICKETS, _digest
from crm_core.platform.clock import utcnow
from handlers.routing import SERVICES
from tests.support.api import Account, Api
from tests.support.live import LiveSocket, SseReader, ready

pytestmark = pytest.mark.asyncio

SSE = {"Accept": "text/event-stream"}


async def ticket_of(api: Api, account: Account) -> str:
    body = await api.call("POST", "/api/events/ticket", account, expect=201)
    assert body["expires_in"] == 30
    return str(body["ticket"])


async def open_sse(client, ticket: str, tables: str = "deals"):
    return await client.get(f"/api/events?tables={tables}&ticket={ticket}", headers=SSE)


async def refused(client, ticket: str) -> dict:
    response = await open_sse(client, ticket)
    assert response.status == 401, await response.text()
    return (await response.json())["error"]


async def test_a_ticket_opens_the_sse_stream_as_its_user(client, api: Api, owner, factories):
    await factories.table(owner, key="deals", columns=[{"key": "title", "type": "string"}])
    ticket = await ticket_of(api, owner)
    response = await open_sse(client, ticket)
    assert response.status == 200, await response.text()
    stream = SseReader(response)
    assert (await stream.expect("ready"))["data"]["user_id"] == owner.user_id
    await stream.expect("subscribed")
    made = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "t"})
    assert (await stream.expect("row.created"))["data"]["row_id"] == made["id"]
    response.close()


async def test_a_used_ticket_is_401(client, api: Api, owner, factories):
    await factories.table(owner, key="deals", columns=[{"key": "title", "type": "string"}])
    ticket = await ticket_of(api, owner)
    first = await open_sse(client, ticket)
    assert first.status == 200
    await SseReader(first).expect("ready")
    first.close()
    error = await refused(client, ticket)
    assert error["code"] == "unauthorized" and "used" in error["message"]


async def test_an_expired_ticket_is_401(client, api: Api, owner, monkeypatch):
    ticket = await ticket_of(api, owner)
    db = client.app[SERVICES].storage.system_db
    later = utcnow() + timedelta(seconds=30)  # the redeeming clock only (not the TTL sweep's)
    monkeypatch.setattr("crm_core.live.tickets.utcnow", lambda: later)
    error = await refused(client, ticket)
    assert error["code"] == "unauthorized" and "expired" in error["message"]
    assert await db[TICKETS].find_one({"_id": _digest(ticket)}) is None  # gone all the same


async def test_another_companys_ticket_is_401(client, api: Api, owner):
    other = await api.register()
    theirs = await ticket_of(api, other)
    _, _, secret = theirs.partition(".")
    assert (await refused(client, f"{owner.tenant_id}.{secret}"))["code"] == "unauthorized"
    response = await open_sse(client, theirs, tables="")  # theirs still opens theirs, once
    assert response.status == 200
    assert (await SseReader(response).expect("ready"))["data"]["user_id"] == other.user_id
    response.close()


async def test_an_unknown_or_malformed_ticket_is_401(client, owner):
    for ticket in ("nothing", f"{owner.tenant_id}.{'x' * 43}", "."):
        assert (await refused(client, ticket))["code"] == "unauthorized"
    long = await client.get(f"/api/events?ticket={'x' * 129}", headers=SSE)
    assert long.status == 400
    assert (await long.json())["error"]["details"][0]["field"] == "ticket"


async def test_the_record_does_not_hold_the_token(client, api: Api, owner):
    ticket = await ticket_of(api, owner)
    db = client.app[SERVICES].storage.system_db
    record = await db[TICKETS].find_one({"_id": _digest(ticket)})
    assert record is not None and record["user_id"] == owner.user_id
    assert owner.access_token.encode() not in bytes(record["sealed"])
    assert ticket not in str(record) and owner.access_token not in str(record)


async def test_a_ticket_needs_a_signed_in_caller(client):
    response = await client.post("/api/events/ticket")
    assert response.status == 401


async def test_an_api_token_makes_no_ticket(api: Api, owner):
    made = await api.call("POST", "/api/tokens", owner, expect=201, json={"name": "t"})
    response = await api.client.post(
        "/api/events/ticket", headers={"Authorization": f"Bearer {made['token']}"}
    )
    assert response.status == 403
    assert "signed-in session" in (await response.json())["error"]["message"]


async def test_a_ticket_of_a_deactivated_user_is_401(client, api: Api, owner, factories):
    member = await factories.user(owner, "viewer")
    ticket = await ticket_of(api, member)
    await api.call(
        "PATCH", f"/api/users/{member.user_id}", owner, expect=200, json={"is_active": False}
    )
    assert (await refused(client, ticket))["code"] == "unauthorized"


async def test_a_websocket_opens_with_a_ticket_too(client, api: Api, owner):
    ticket = await ticket_of(api, owner)
    ws = await client.ws_connect(f"/api/events?ticket={ticket}", protocols=["crm.events"])
    live = await ready(LiveSocket(ws))
    assert live.seen[-1]["user_id"] == owner.user_id
    await ws.close()
