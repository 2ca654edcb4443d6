"""Live events (issue #25, docs/api.md "Live events"): what a subscriber sees over the
WebSocket and SSE, who sees nothing, and how bad input is answered."""

from __future__ import annotations

import pytest

from tests.support.api import Account, Api
from tests.support.live import ready, sse_connect, ws_connect

pytestmark = pytest.mark.asyncio


async def deals(factories, owner: Account) -> None:
    await factories.table(
        owner,
        key="deals",
        columns=[
            {"key": "title", "type": "string"},
            {"key": "amount", "type": "integer"},
        ],
    )


async def test_row_events_reach_the_subscriber_with_the_row(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    assert (await live.subscribe("deals")) == {
        "type": "subscribed",
        "table": "deals",
        "filtered": False,
    }
    row = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"title": "A", "amount": 5}
    )
    created = await live.expect("row.created")
    assert created["table"] == "deals" and created["row_id"] == row["id"]
    assert created["row"]["title"] == "A" and created["row"]["amount"] == 5
    assert len(created["id"]) == 24

    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"amount": 7})
    updated = await live.expect("row.updated")
    assert updated["changed"] == ["amount"] and updated["row"]["amount"] == 7

    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    deleted = await live.expect("row.deleted")
    assert deleted["row_id"] == row["id"]
    await live.ws.close()


async def test_auth_in_the_first_frame(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token, first_frame=True))
    await live.subscribe("deals")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "B"})
    assert (await live.expect("row.created"))["row"]["title"] == "B"
    await live.ws.close()


async def test_a_user_without_access_sees_nothing(client, api: Api, owner, factories):
    await deals(factories, owner)
    viewer = await factories.user(owner, "viewer")
    live = await ready(await ws_connect(client, viewer.access_token))
    refused = await live.subscribe("deals")
    assert refused["type"] == "error" and refused["code"] == "not_found"
    assert refused["table"] == "deals"
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "secret"})
    assert [f["type"] for f in await live.barrier()] == []  # the connection stays, sees nothing
    await live.ws.close()


async def test_unknown_table_is_an_error_frame_and_the_connection_stays(client, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    error = await live.subscribe("nope")
    assert error["type"] == "error" and error["code"] == "not_found"
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await live.ws.close()


async def test_a_bad_filter_is_an_error_frame_naming_the_condition(client, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    error = await live.subscribe("deals", filters=[{"field": "nope", "op": "eq", "value": 1}])
    assert error["type"] == "error" and error["code"] == "invalid_filter"
    assert error["details"][0]["field"] == "filters.0"
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await live.ws.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("not json", 1008),
        ("[1, 2]", 1008),
        ('{"no": "type"}', 1008),
        ('{"type": "dance"}', 1008),
        ('{"type": "unsubscribe"}', 1008),
    ],
)
async def test_malformed_frames_close_with_1008(client, owner, payload, code):
    live = await ready(await ws_connect(client, owner.access_token))
    await live.ws.send_str(payload)
    closed = await live.closed()
    assert closed["ws_code"] == code and closed["reason"] == "malformed_frame"
    assert "Traceback" not in closed["message"]


async def test_a_binary_frame_closes_with_1003(client, owner):
    live = await ready(await ws_connect(client, owner.access_token))
    await live.ws.send_bytes(b"\x00\x01")
    closed = await live.closed()
    assert closed["ws_code"] == 1003 and closed["reason"] == "malformed_frame"


async def test_a_bad_token_in_the_first_frame_closes_with_4401(client):
    live = await ws_connect(client, "not-a-token", first_frame=True)
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "unauthorized"


async def test_a_bad_token_as_subprotocol_is_a_401_before_the_upgrade(client):
    response = await client.get(
        "/api/events",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "crm.events, bearer.nope",
        },
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_a_token_in_the_url_is_refused(client, owner):
    response = await client.get(
        f"/api/events?access_token={owner.access_token}",
        headers={"Accept": "text/event-stream"},
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["details"][0]["field"] == "access_token"


async def test_neither_websocket_nor_sse_is_a_400_naming_accept(client, owner):
    response = await client.get("/api/events", headers=owner.headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"][0]["field"] == "Accept"


async def test_sse_streams_row_events_with_ids(client, api: Api, owner, factories):
    await deals(factories, owner)
    stream = await sse_connect(client, "/api/events?tables=deals", owner.access_token)
    await stream.expect("subscribed")
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "S"})
    event = await stream.expect("row.created")
    assert event["id"] == event["data"]["id"] and event["data"]["row_id"] == row["id"]
    stream.response.close()


async def test_sse_without_a_token_is_401(client):
    response = await client.get("/api/events", headers={"Accept": "text/event-stream"})
    assert response.status == 401


async def test_another_company_with_the_same_table_key_sees_nothing(
    client, api: Api, owner, factories
):
    await deals(factories, owner)
    stranger = await api.register(company="Other")
    await deals(factories, stranger)
    theirs = await ready(await ws_connect(client, stranger.access_token))
    assert (await theirs.subscribe("deals"))["type"] == "subscribed"
    mine = await ready(await ws_connect(client, owner.access_token))
    await mine.subscribe("deals")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "ours"})
    await mine.expect("row.created")
    assert await theirs.barrier() == []
    for live in (mine, theirs):
        await live.ws.close()
