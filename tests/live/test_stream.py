"""Resume, back-pressure, limits and the other events of the live stream (issue #25 §1, §4,
§5): `since` replays from the row history, too far back is a `reload`; a client that falls
behind is closed (4408); a user's connections are capped; schema changes are
`table.changed`; campaigns send `campaign.progress`; the metrics count it all."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft202012Validator

from handlers.routing import SERVICES
from tests.support.api import Api, make_settings
from tests.support.live import ready, sse_connect, ws_connect
from tests.support.waits import until

pytestmark = pytest.mark.asyncio

QUEUE = 3
CAP = 2


@pytest.fixture
def settings():
    return make_settings(events_queue_size=QUEUE, events_max_connections_per_user=CAP)


async def deals(factories, owner) -> None:
    await factories.table(owner, key="deals", columns=[{"key": "title", "type": "string"}])


async def test_since_replays_what_was_missed(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    first = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "1"})
    seen = await live.expect("row.created")
    await live.ws.close()
    second = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "2"})
    await api.call(
        "PATCH", f"/api/data/deals/{first['id']}", owner, expect=200, json={"title": "1b"}
    )

    again = await ready(await ws_connect(client, owner.access_token))
    assert (await again.subscribe("deals", since=seen["id"]))["type"] == "subscribed"
    created = await again.expect("row.created")
    updated = await again.expect("row.updated")
    assert created["row_id"] == second["id"] and created["replayed"] is True
    assert updated["row_id"] == first["id"] and updated["changed"] == ["title"]
    assert updated["row"]["title"] == "1b"
    assert seen["id"] not in {f.get("id") for f in again.seen}
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "3"})
    assert (await again.expect("row.created"))["row"]["title"] == "3"  # then live
    await again.ws.close()


async def test_since_too_far_back_is_a_reload_frame(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    old = "5f0000000000000000000000"  # 2020: beyond EVENTS_REPLAY_SECONDS
    await live.subscribe("deals", since=old)
    reload = await live.expect("reload")
    assert reload == {"type": "reload", "table": "deals", "reason": "beyond_replay"}
    await live.ws.close()


async def test_a_bad_since_is_an_error_frame_naming_it(client, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    error = await live.subscribe("deals", since="yesterday")
    assert error["type"] == "error" and error["details"][0]["field"] == "since"
    await live.ws.close()


async def test_sse_resumes_from_last_event_id(client, api: Api, owner, factories):
    await deals(factories, owner)
    first = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "1"})
    history = await api.call("GET", f"/api/data/deals/{first['id']}/history", owner, expect=200)
    second = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "2"})
    stream = await sse_connect(
        client,
        "/api/events?tables=deals",
        owner.access_token,
        **{"Last-Event-ID": history["items"][0]["id"]},
    )
    event = await stream.expect("row.created")
    assert event["data"]["row_id"] == second["id"]
    stream.response.close()


async def test_sse_events_fit_the_documented_schema(client, api: Api, owner, factories):
    """Each event of an SSE answer fits the schema the document gives `text/event-stream`
    (before OpenAPI 3.2 it describes one event; Schemathesis checks it so); ending the session
    ends the stream with its `close` event (what scripts/fuzz relies on)."""
    await deals(factories, owner)
    document = await (await client.get("/api/openapi.json")).json()
    answers = document["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    validator = Draft202012Validator(answers["text/event-stream"]["schema"])
    stream = await sse_connect(client, "/api/events?tables=deals", owner.access_token)
    await stream.expect("subscribed")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "1"})
    created = await stream.expect("row.created")
    await api.call("POST", "/api/auth/logout", owner, expect=204, json={})
    closed = await stream.expect("close")
    assert closed["data"]["reason"] == "session_ended"
    assert (await stream.next())["event"] == "_eof"
    for event in (created, closed):
        sent = {**event, "data": orjson.dumps(event["data"]).decode()}
        assert list(validator.iter_errors(sent)) == [], sent
        assert event["data"]["type"] == event["event"]


async def test_a_client_that_falls_behind_is_closed_4408(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    await live.barrier()
    # one request queues every row's event before the connection's writer runs again
    items = [{"title": str(n)} for n in range(QUEUE + 2)]
    await api.call("POST", "/api/data/deals/bulk", owner, expect=201, json={"items": items})
    closed = await live.closed()
    assert closed["ws_code"] == 4408 and closed["reason"] == "slow_client", live.seen


async def test_a_users_connections_are_capped(client, owner):
    sockets = [await ready(await ws_connect(client, owner.access_token)) for _ in range(CAP)]
    response = await client.get(
        "/api/events", headers={**owner.headers, "Accept": "text/event-stream"}
    )
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "too_many_connections"
    over = await ws_connect(client, owner.access_token, first_frame=True)
    closed = await over.closed()
    assert closed["ws_code"] == 4429 and closed["reason"] == "too_many_connections"
    assert client.app[SERVICES].live.hub.per_user[owner.user_id] == CAP
    for live in sockets:
        await live.ws.close()


async def test_schema_changes_are_table_changed(client, api: Api, owner, factories):
    await deals(factories, owner)
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        expect=201,
        json={"key": "amount", "type": "integer"},
    )
    changed = await live.expect("table.changed")
    assert changed["table"] == "deals" and changed["action"] == "column.added"
    assert changed["column"] == "amount"
    await live.ws.close()


async def test_campaign_progress(client, api: Api, owner, factories, gateway):
    live = await ready(await ws_connect(client, owner.access_token))
    await live.send(type="subscribe", campaigns=True)
    assert (await live.expect("subscribed"))["campaigns"] is True
    campaign = await factories.campaign(owner)
    progress = await live.expect("campaign.progress")
    assert progress["campaign_id"] == campaign["id"]
    assert progress["counts"]["total"] == 1
    await live.ws.close()


async def test_campaign_progress_needs_sms_read(client, owner, factories):
    viewer = await factories.user(owner, "viewer")
    live = await ready(await ws_connect(client, viewer.access_token))
    await live.send(type="subscribe", campaigns=True)
    refused = await live.expect("error")
    assert refused["code"] == "forbidden" and refused["campaigns"] is True
    await live.ws.close()


async def test_metrics_count_connections_and_events(client, api: Api, owner, factories):
    from crm_core.platform import metrics

    await deals(factories, owner)
    before = metrics.LIVE_DELIVERED._value.get()
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "m"})
    await live.expect("row.created")
    body = metrics.exposition([]).decode()
    assert 'crm_live_connections{transport="websocket"}' in body
    assert metrics.LIVE_DELIVERED._value.get() >= before + 3  # ready, subscribed, the row
    assert "crm_live_events_published_total" in body and "crm_live_drops_total" in body
    assert client.app[SERVICES].live.hub.per_user[owner.user_id] == 1
    await live.ws.close()


async def test_a_gone_sse_client_frees_its_slot(client, owner):
    hub = client.app[SERVICES].live.hub
    stream = await sse_connect(client, "/api/events", owner.access_token)
    await stream.expect("ready")
    assert hub.per_user[owner.user_id] == 1
    stream.response.close()

    async def freed() -> bool:  # noticed within SSE_CHECK_SECONDS (1 s) when not loaded
        return owner.user_id not in hub.per_user

    await until(freed, "the gone client's slot to be freed")
