"""A table named twice in the SSE `tables` list (docs/api.md "Live events"): one subscription,
each replayed event once."""

from __future__ import annotations

from tests.support.live import ready, sse_connect, ws_connect


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
