"""Round 3 probes of live events (docs/api.md "Live events"): a table named twice in the SSE
`tables` list is one subscription, each replayed event once; a token renewed on a connection
bounds it at once."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.api import make_settings
from tests.support.live import ready, sse_connect, ws_connect
from tests.support.tokens import make_token


async def test_a_table_named_twice_is_subscribed_and_replayed_once(client, api, owner, factories):
    await factories.table(owner, "deals")
    first = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    second = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 2})
    history = await api.call("GET", f"/api/data/deals/{first['id']}/history", owner, expect=200)
    since = history["items"][0]["id"]
    stream = await sse_connect(
        client, f"/api/events?tables=deals,deals,%20deals&since={since}", owner.access_token
    )
    seen = []
    # the stream's frames up to a marker written after the replay (a third row's event)
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    await stream.expect("subscribed")
    third = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 3})
    await live.expect("row.created")
    while True:
        event = await stream.next()
        seen.append(event)
        if event["event"] == "row.created" and event["data"]["row_id"] == third["id"]:
            break
    kinds = [(e["event"], e["data"].get("row_id")) for e in seen]
    assert kinds.count(("row.created", second["id"])) == 1, kinds
    assert [e for e in seen if e["event"] == "subscribed"] == [], kinds  # only the first one
    stream.response.close()
    await live.ws.close()


# ---- a renewed token narrows the connection at once -----------------------------------------


CAP = 3


@pytest.fixture
def settings():
    # no periodic re-check during the test: only what the renewal itself does counts
    return make_settings(events_recheck_seconds=3600.0, events_max_connections_per_user=CAP)


async def test_a_renewal_with_a_narrower_token_stops_what_it_does_not_cover(
    client, api, owner, factories
):
    await factories.table(owner, "deals")
    live = await ready(await ws_connect(client, owner.access_token))
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await live.send(type="subscribe", campaigns=True)
    await live.expect("subscribed")
    narrow = await make_token(api, owner, table_access="none")
    await live.send(type="auth", token=narrow["token"])
    renewed = await live.expect("ready")
    assert renewed["renewed"] is True
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    frames = await live.barrier()
    assert not [f for f in frames if f["type"].startswith("row.")], frames
    gone = {(f.get("table"), f.get("campaigns")) for f in frames if f["type"] == "unsubscribed"}
    assert gone == {("deals", None), (None, True)}, frames
    await live.ws.close()


async def test_twenty_streams_opened_at_once_take_at_most_the_users_cap(client, owner):
    async def open_stream():
        return await client.get(
            "/api/events",
            headers={
                "Authorization": f"Bearer {owner.access_token}",
                "Accept": "text/event-stream",
            },
        )

    responses = await asyncio.gather(*(open_stream() for _ in range(20)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * CAP + [429] * (20 - CAP), statuses
    refused = next(r for r in responses if r.status == 429)
    assert (await refused.json())["error"]["code"] == "too_many_connections"
    for response in responses:
        response.close()
