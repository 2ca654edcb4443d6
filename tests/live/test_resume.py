"""Resuming across a schema change (issue #25 §4, docs/api.md "Live events", "Resuming"): a
column added, changed or deleted while the client was away is a `reload` frame
(`schema_changed`) instead of the row replay, on the WebSocket and on SSE; no schema change of
the table (another table's does not count) is the plain replay."""

from __future__ import annotations

import pytest

from tests.support.api import Account, Api
from tests.support.live import ready, sse_connect, ws_connect

pytestmark = pytest.mark.asyncio

RELOAD = {"type": "reload", "table": "deals", "reason": "schema_changed"}


async def tables(factories, owner) -> None:
    await factories.table(owner, key="deals", columns=[{"key": "title", "type": "string"}])
    await factories.table(owner, key="notes", columns=[{"key": "text", "type": "string"}])


async def add_column(api: Api, owner: Account, table: str, key: str) -> None:
    await api.call(
        "POST",
        f"/api/meta/tables/{table}/columns",
        owner,
        expect=201,
        json={"key": key, "type": "integer"},
    )


async def seen_event(client, api: Api, owner: Account) -> str:
    """A client that saw one row event of `deals` and went away: the id it resumes from."""
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "seen"})
    seen = await live.expect("row.created")
    await live.ws.close()
    return str(seen["id"])


async def test_a_column_added_meanwhile_is_a_reload_not_a_replay(client, api, owner, factories):
    await tables(factories, owner)
    since = await seen_event(client, api, owner)
    await add_column(api, owner, "deals", "amount")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "missed"})

    again = await ready(await ws_connect(client, owner.access_token))
    assert (await again.subscribe("deals", since=since))["type"] == "subscribed"
    assert await again.expect("reload") == RELOAD
    queued = await again.barrier()
    assert [f["type"] for f in queued] == [], again.seen  # the missed row is not replayed
    # then live, under the new schema
    made = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"title": "live", "amount": 5}
    )
    created = await again.expect("row.created")
    assert created["row_id"] == made["id"] and created["row"]["amount"] == 5
    assert "replayed" not in created
    await again.ws.close()


async def test_no_schema_change_of_the_table_is_the_plain_replay(client, api, owner, factories):
    await tables(factories, owner)
    since = await seen_event(client, api, owner)
    await add_column(api, owner, "notes", "size")  # another table's schema: not a reload
    missed = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "m"})

    again = await ready(await ws_connect(client, owner.access_token))
    await again.subscribe("deals", since=since)
    replayed = await again.expect("row.created")
    assert replayed["row_id"] == missed["id"] and replayed["replayed"] is True
    assert "reload" not in {f["type"] for f in [*again.seen, *await again.barrier()]}
    await again.ws.close()


async def test_sse_resume_after_a_column_change_is_a_reload(client, api, owner, factories):
    await tables(factories, owner)
    since = await seen_event(client, api, owner)
    await api.call(
        "PATCH",
        "/api/meta/tables/deals/columns/title",
        owner,
        expect=200,
        json={"name": "Deal title"},
    )
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "missed"})

    stream = await sse_connect(
        client, "/api/events?tables=deals", owner.access_token, **{"Last-Event-ID": since}
    )
    await stream.expect("subscribed")
    event = await stream.next()
    assert event["event"] == "reload" and event["data"] == RELOAD
    assert "id" not in event  # a control frame: the client keeps its Last-Event-ID
    stream.response.close()


async def test_sse_resume_without_a_schema_change_replays(client, api, owner, factories):
    await tables(factories, owner)
    since = await seen_event(client, api, owner)
    missed = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "m"})

    stream = await sse_connect(
        client, "/api/events?tables=deals", owner.access_token, **{"Last-Event-ID": since}
    )
    await stream.expect("subscribed")
    event = await stream.next()
    assert event["event"] == "row.created", event
    assert event["data"]["row_id"] == missed["id"] and event["data"]["replayed"] is True
    stream.response.close()
