"""Delivery reports (docs/sms.md, "Delivery reports"): SMS.ru's callback moves `sent` messages
to `delivered`, `undelivered` or `expired`; bad callbacks change nothing and never answer 500."""

from __future__ import annotations

import asyncio

import pytest

from crm_core.platform.outbox import OUTBOX
from crm_core.sms.service import SMS_STATUS
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, wait_done
from tests.support.sms_gateway import callback_hash, gateway_settings, phone, status_entry
from tests.support.waits import DEADLINE

CALLBACK = "/api/sms/callbacks/smsru"


async def sent_campaign(api, n=3):
    owner = await api.register()
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "Reports",
            "text": "Hi",
            "recipients": [{"phone": phone(i)} for i in range(n)],
        },
    )
    done = await wait_done(api, owner, created["id"])
    assert done["counts"]["sent"] == n
    return owner, done["id"]


async def messages(api, owner, campaign_id):
    page = await api.call(
        "GET", f"/api/sms/campaigns/{campaign_id}/messages?limit=100", owner, expect=200
    )
    return page["items"]


async def campaign(api, owner, campaign_id):
    return await api.call("GET", f"/api/sms/campaigns/{campaign_id}", owner, expect=200)


async def test_callback_settles_sent_messages(sms_api, sms_client, gateway):
    owner, cid = await sent_campaign(sms_api)
    ids = [m["provider_id"] for m in await messages(sms_api, owner, cid)]
    url = str(sms_client.make_url(CALLBACK))
    entries = [
        status_entry(ids[0], 103, 1_700_000_123),
        status_entry(ids[1], 106),
        status_entry(ids[2], 102),  # in transit: not final, no change
    ]
    assert await gateway.fire_callback(url, entries) == (200, "100")
    by_id = {m["provider_id"]: m for m in await messages(sms_api, owner, cid)}
    assert by_id[ids[0]]["status"] == "delivered"
    assert by_id[ids[0]]["delivered_at"].startswith("2023-11-14T22:15:23")
    assert by_id[ids[0]]["provider_code"] == 103
    assert by_id[ids[1]]["status"] == "undelivered"
    assert by_id[ids[1]]["provider_code"] == 106
    assert by_id[ids[1]]["provider_text"] == "failure at the phone"
    assert by_id[ids[2]]["status"] == "sent"
    counts = (await campaign(sms_api, owner, cid))["counts"]
    assert counts["sent"] == 1 and counts["delivered"] == 1 and counts["undelivered"] == 1
    assert counts["delivery_rate"] == pytest.approx(1 / 3, abs=1e-4)
    # the same report again, and a later one on a settled message: counted once
    assert await gateway.fire_callback(url, [*entries[:1], status_entry(ids[0], 104)]) == (
        200,
        "100",
    )
    assert await gateway.fire_callback(url, [status_entry(ids[2], 104)]) == (200, "100")
    counts = (await campaign(sms_api, owner, cid))["counts"]
    assert counts["delivered"] == 1 and counts["expired"] == 1 and counts["sent"] == 0
    listed = await sms_api.call(
        "GET", f"/api/sms/campaigns/{cid}/messages?status=expired", owner, expect=200
    )
    assert [m["provider_id"] for m in listed["items"]] == [ids[2]] and listed["total"] == 1


async def test_callback_unknown_ids_are_ignored(sms_api, sms_client, gateway):
    owner, cid = await sent_campaign(sms_api, 1)
    url = str(sms_client.make_url(CALLBACK))
    assert await gateway.fire_callback(url, [status_entry("999999-1", 103)]) == (200, "100")
    assert [m["status"] for m in await messages(sms_api, owner, cid)] == ["sent"]


async def test_callback_wrong_hash_is_403_and_changes_nothing(sms_api, sms_client, gateway):
    owner, cid = await sent_campaign(sms_api, 1)
    (sms_id,) = [m["provider_id"] for m in await messages(sms_api, owner, cid)]
    url = str(sms_client.make_url(CALLBACK))
    entries = [status_entry(sms_id, 103)]
    status, _ = await gateway.fire_callback(url, entries, signed_with="someone-else")
    assert status == 403
    status, _ = await gateway.fire_callback(url, entries, given_hash="0" * 64)
    assert status == 403
    resp = await sms_client.post(CALLBACK, data=[("data[]", entries[0])])  # no hash
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "forbidden"
    assert [m["status"] for m in await messages(sms_api, owner, cid)] == ["sent"]


@pytest.mark.parametrize(
    "entries",
    [
        ["sms_status\n000000-1"],  # no code
        ["sms_status\n000000-1\nOK\n1700000000"],  # the code is not a number
        ["sms_status\n000000-1\n103\nyesterday"],  # the time is not a unix time
        ["sms_status\n\n103\n1700000000"],  # no id
    ],
)
async def test_callback_malformed_entries_are_400(sms_api, sms_client, entries):
    owner, cid = await sent_campaign(sms_api, 1)
    form = [("data[]", e) for e in entries] + [("hash", callback_hash(entries))]
    resp = await sms_client.post(CALLBACK, data=form)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == "validation_error"
    assert "data[]" in body["error"]["message"]
    assert [m["status"] for m in await messages(sms_api, owner, cid)] == ["sent"]


async def test_callback_without_data_or_as_json_is_400(sms_client):
    resp = await sms_client.post(CALLBACK, data={"hash": "x"})
    assert resp.status == 400
    assert "data[]" in (await resp.json())["error"]["message"]
    resp = await sms_client.post(CALLBACK, json={"data": ["x"], "hash": "x"})
    assert resp.status == 400
    resp = await sms_client.post(CALLBACK, data=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert resp.status == 400


async def test_callback_is_refused_without_smsru(aiohttp_client):
    """With the log provider there is no api_id: every callback is a 403."""
    from tests.support.api import make_settings

    client = await aiohttp_client(create_app(make_settings()))
    entries = [status_entry("1", 103)]
    resp = await client.post(
        CALLBACK, data=[("data[]", entries[0]), ("hash", callback_hash(entries, ""))]
    )
    assert resp.status == 403


async def wait_counts(api, owner, cid, timeout=DEADLINE, **expected):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        counts = (await campaign(api, owner, cid))["counts"]
        if all(counts[k] == v for k, v in expected.items()):
            return counts
        assert loop.time() < deadline, counts
        await asyncio.sleep(0.05)


async def status_polls(storage):
    return await storage.system_db[OUTBOX].count_documents({"kind": SMS_STATUS})


async def test_without_callbacks_the_sweeper_polls_status_until_final(aiohttp_client, gateway):
    """The polling fallback runs from the outbox (so a restart keeps it): `sent` messages are
    polled in batches of ids; final codes settle them; the entry goes once none is left."""
    settings = gateway_settings(
        gateway,
        sms_rate_per_second=200,
        sms_batch_size=4,
        sms_status_poll_after_seconds=0.2,
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    storage = client.app[SERVICES].storage
    owner, cid = await sent_campaign(api, 3)
    ids = [m["provider_id"] for m in await messages(api, owner, cid)]
    gateway.statuses.update({ids[0]: 103, ids[1]: 104})  # ids[2] stays 102: in transit
    await wait_counts(api, owner, cid, delivered=1, expired=1, sent=1)
    assert await status_polls(storage) == 1  # one still in transit: polled again later
    assert all(len(r) <= 100 for r in gateway.status_requests)
    gateway.statuses[ids[2]] = 108
    counts = await wait_counts(api, owner, cid, undelivered=1, sent=0)
    assert counts["delivery_rate"] == pytest.approx(1 / 3, abs=1e-4)
    by_id = {m["provider_id"]: m for m in await messages(api, owner, cid)}
    assert by_id[ids[2]]["provider_code"] == 108 and by_id[ids[2]]["provider_text"] == "rejected"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while await status_polls(storage):
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    requests = len(gateway.status_requests)
    await asyncio.sleep(0.5)  # nothing is polled once every message is final
    assert len(gateway.status_requests) == requests


async def test_status_polls_give_up(aiohttp_client, gateway):
    settings = gateway_settings(
        gateway,
        sms_rate_per_second=200,
        sms_status_poll_after_seconds=0.1,
        sms_status_give_up_hours=0.0001,  # 0.36 s
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    storage = client.app[SERVICES].storage
    owner, cid = await sent_campaign(api, 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while await status_polls(storage):  # never final: given up, the poll ends
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    assert (await campaign(api, owner, cid))["counts"]["sent"] == 1


async def test_callback_odd_bodies_are_refused_never_500(sms_client):
    # found by the fuzzer: a multipart body without a boundary, and a hash that is not ASCII
    # (hmac.compare_digest refuses such str) both answered 500
    resp = await sms_client.post(
        CALLBACK, data=b"hash=", headers={"Content-Type": "multipart/form-data"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["details"][0]["field"] == "data[]"
    resp = await sms_client.post(CALLBACK, data={"data[]": "sms_status\n1\n103\n1", "hash": "é"})
    assert resp.status == 403, await resp.text()
