"""What a receiver needs (issue #31 §2, §3, §5; docs/integrations.md): redelivery, replay and
search by event id; secret rotation with overlap; company, webhook and batch ids in the signed
body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.app import create_app
from tests.support.api import Api, make_settings
from tests.support.webhook_receiver import (
    deliveries,
    make_hook,
    make_table,
    settled,
    verify,
    wait_for,
)


async def test_a_failed_delivery_is_read_redelivered_and_found_by_event_id(
    aiohttp_client, receiver
):
    client = await aiohttp_client(create_app(make_settings(webhook_max_attempts=1)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    receiver.always = 503
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    [failed] = await settled(api, owner, hook["id"], 1)
    assert failed["status"] == "failed"
    base = f"/api/webhooks/{hook['id']}/deliveries"
    one = await api.call("GET", f"{base}/{failed['id']}", owner, expect=200)
    [attempt] = one["attempt_log"]
    assert attempt["response_code"] == 503 and attempt["response_excerpt"] == "ok"
    await api.call("GET", f"{base}/{'0' * 24}", owner, expect=404)

    receiver.always = 200
    again = await api.call("POST", f"{base}/{failed['id']}/redeliver", owner, expect=202)
    assert again["redelivery_of"] == failed["id"]
    assert again["payload"]["id"] == failed["payload"]["id"]  # the same event
    await wait_for(lambda: _count(receiver, 2), "the redelivery")
    first, second = receiver.received
    assert first.json == second.json and verify(hook["secret"], second.headers, second.body)

    found = await deliveries(api, owner, hook["id"], event_id=failed["payload"]["id"])
    assert sorted(d["id"] for d in found) == sorted([failed["id"], again["id"]])
    assert await deliveries(api, owner, hook["id"], event_id="nope") == []


async def test_events_of_a_disabled_webhook_are_replayed_after_enabling(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    since = datetime.now(UTC) - timedelta(seconds=1)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    [delivered] = await settled(api, owner, hook["id"], 1)
    path = f"/api/webhooks/{hook['id']}"
    await api.call("PATCH", path, owner, expect=200, json={"is_active": False})
    body = {"since": since.isoformat()}
    answer = await api.call("POST", f"{path}/replay", owner, expect=409, json=body)
    assert answer["error"]["code"] == "conflict"
    await api.call("PATCH", path, owner, expect=200, json={"is_active": True})
    assert (await api.call("POST", f"{path}/replay", owner, expect=202, json=body)) == {
        "queued": 0  # what succeeded is not sent again
    }
    answer = await api.call("POST", f"{path}/replay", owner, expect=400, json={"since": "x"})
    assert answer["error"]["details"][0]["field"] == "since"
    assert delivered["status"] == "succeeded"


async def test_events_while_disabled_are_kept_and_sent_by_a_replay_after_enabling(
    api, owner, receiver
):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    path = f"/api/webhooks/{hook['id']}"
    await api.call("PATCH", path, owner, expect=200, json={"is_active": False})
    since = datetime.now(UTC) - timedelta(seconds=1)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "While off"})
    [kept] = await settled(api, owner, hook["id"], 1)
    assert (kept["status"], kept["event"]) == ("skipped", "row.created")
    assert receiver.received == []  # nothing reaches a disabled webhook's receiver

    await api.call("PATCH", path, owner, expect=200, json={"is_active": True})
    assert receiver.received == []  # enabling alone sends nothing
    body = {"since": since.isoformat()}
    assert await api.call("POST", f"{path}/replay", owner, expect=202, json=body) == {"queued": 1}
    await wait_for(lambda: _count(receiver, 1), "the replayed event")
    [sent] = receiver.received
    assert sent.json["items"][0]["title"] == "While off"
    assert sent.json["id"] == kept["payload"]["id"]  # the same event id as the kept one
    assert verify(hook["secret"], sent.headers, sent.body)


async def test_rotation_keeps_the_old_secret_signing_until_the_overlap_ends(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    path = f"/api/webhooks/{hook['id']}"
    rotated = await api.call("POST", f"{path}/rotate-secret", owner, expect=200)
    assert rotated["previous_secret_until"] is not None
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    await wait_for(lambda: _count(receiver, 1), "a delivery during the overlap")
    during = receiver.received[0]
    assert len(during.headers["webhook-signature"].split()) == 2
    # a receiver that still knows only the old secret, and one that knows only the new one
    assert verify(hook["secret"], during.headers, during.body)
    assert verify(rotated["secret"], during.headers, during.body)

    ended = await api.call("POST", f"{path}/end-rotation", owner, expect=200)
    assert ended["previous_secret_until"] is None
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "B"})
    await wait_for(lambda: _count(receiver, 2), "a delivery after the overlap")
    after = receiver.received[1]
    assert len(after.headers["webhook-signature"].split()) == 1
    assert verify(rotated["secret"], after.headers, after.body)
    assert not verify(hook["secret"], after.headers, after.body)


async def test_no_overlap_when_it_is_set_to_zero(aiohttp_client, receiver):
    client = await aiohttp_client(create_app(make_settings(webhook_rotation_overlap=0)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    rotated = await api.call("POST", f"/api/webhooks/{hook['id']}/rotate-secret", owner, expect=200)
    assert rotated["previous_secret_until"] is None
    ping = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert ping["status"] == "succeeded"
    assert not verify(hook["secret"], receiver.received[0].headers, receiver.received[0].body)


async def test_the_body_names_company_webhook_and_batch(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    items = [{"title": f"t{n}"} for n in range(250)]
    await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"items": items},
        headers={"X-Request-ID": "bulk-250"},
    )
    await wait_for(lambda: _count(receiver, 3), "three events of one write")
    events = receiver.events()
    assert sorted(len(e["items"]) for e in events) == [50, 100, 100]
    assert {e["company_id"] for e in events} == {owner.tenant_id}
    assert {e["webhook_id"] for e in events} == {hook["id"]}
    assert len({e["batch_id"] for e in events}) == 1 and len({e["id"] for e in events}) == 3
    assert {e["request_id"] for e in events} == {"bulk-250"}
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "solo"})
    await wait_for(lambda: _count(receiver, 4), "a fourth event")
    assert receiver.events()[3]["batch_id"] != events[0]["batch_id"]


async def _count(receiver, n: int) -> bool:
    return len(receiver.received) >= n
