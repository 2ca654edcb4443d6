"""SMS campaigns on the in-memory broker, against a fake SMS.ru gateway."""

from __future__ import annotations

import asyncio
import json

import pytest
from bson import ObjectId

from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.sms import send_batch
from tests.support.api import Api, wait_done
from tests.support.sms_gateway import SlotRecorder, gateway_settings, max_in_window, phone


async def gateway_api(aiohttp_client, gateway, **overrides) -> Api:
    return Api(await aiohttp_client(create_app(gateway_settings(gateway, **overrides))))


async def messages(api, account, campaign_id, status=None):
    query = f"?limit=1000&status={status}" if status else "?limit=1000"
    page = await api.call(
        "GET", f"/api/sms/campaigns/{campaign_id}/messages{query}", account, expect=200
    )
    return page["items"]


async def test_campaign_from_recipients(sms_api, gateway):
    owner = await sms_api.register()
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "Hello",
            "text": "Здравствуйте, {{name}}! Скидка {{pct}}%",
            "recipients": [
                {"phone": "8 (916) 123-45-67", "name": "Анна", "pct": 10},
                {"phone": "+79161234567", "name": "Дубль", "pct": 5},
                {"phone": "12345", "name": "Нет", "pct": 1},
                {"phone": "+7 916 765-43-21", "name": "Борис", "pct": 15.0},
            ],
        },
    )
    assert created["duplicates"] == 1
    assert created["counts"]["total"] == 3 and created["counts"]["invalid"] == 1
    done = await wait_done(sms_api, owner, created["id"])
    assert done["status"] == "completed"
    assert done["counts"]["sent"] == 2 and done["counts"]["invalid"] == 1
    assert sorted((r.phone, r.text) for r in gateway.received) == [
        ("79161234567", "Здравствуйте, Анна! Скидка 10%"),
        ("79167654321", "Здравствуйте, Борис! Скидка 15%"),
    ]
    sent = await messages(sms_api, owner, created["id"], "sent")
    assert all(m["provider_id"].startswith("000000-") for m in sent)
    invalid = await messages(sms_api, owner, created["id"], "invalid")
    assert invalid[0]["phone"] == "12345" and "not a valid" in invalid[0]["error"]
    listed = await sms_api.call("GET", "/api/sms/campaigns", owner, expect=200)
    assert [c["id"] for c in listed["items"]] == [created["id"]]


async def test_campaign_from_a_table_with_filters(sms_api, gateway, sms_client, create_table):
    owner = await sms_api.register()
    await create_table(
        owner,
        "clients",
        [
            {"key": "name", "type": "string"},
            {"key": "mobile", "type": "phone"},
            {"key": "vip", "type": "boolean"},
            {"key": "tier", "type": "select", "options": [{"id": 1, "label": "Gold"}]},
        ],
    )
    await sms_api.call(
        "POST",
        "/api/data/clients/bulk",
        owner,
        expect=201,
        json={
            "items": [
                {"name": "Анна", "mobile": phone(1), "vip": True, "tier": 1},
                {"name": "Борис", "mobile": phone(2), "vip": False},
                {"name": "Вера", "mobile": phone(3), "vip": True},
                {"name": "Без номера", "vip": True},
            ]
        },
    )
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "VIP",
            "text": "{{name}}, {{tier}}",
            "table": "clients",
            "phone_column": "mobile",
            "filters": [{"field": "vip", "value": True}],
        },
    )
    done = await wait_done(sms_api, owner, created["id"])
    assert (done["counts"]["sent"], done["counts"]["invalid"]) == (2, 1)
    assert sorted(r.text for r in gateway.received) == ["Анна, Gold", "Вера, "]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "Hi {{nope}}", "table": "clients", "phone_column": "mobile"}, "text"),
        ({"text": "Hi", "table": "clients", "phone_column": "nope"}, "phone_column"),
        ({"text": "Hi", "table": "clients", "phone_column": "vip"}, "phone_column"),
        ({"text": "Hi", "table": "clients"}, "phone_column"),
        ({"text": "Hi"}, "recipients"),
        (
            {
                "text": "Hi",
                "recipients": [{"phone": phone(1)}],
                "table": "clients",
                "phone_column": "mobile",
            },
            "recipients",
        ),
        ({"text": "Hi {{name}}", "recipients": [{"phone": phone(1)}]}, "recipients.0.name"),
        ({"text": "Hi", "recipients": [{"name": "x"}]}, "recipients.0.phone"),
        ({"text": "Hi", "recipients": [{"phone": phone(1), "x": {"$gt": 1}}]}, "recipients.0.x"),
        (
            {
                "text": "Hi",
                "table": "clients",
                "phone_column": "mobile",
                "filters": [{"field": "nope", "value": 1}],
            },
            "filters.0",
        ),
        ({"text": "", "recipients": [{"phone": phone(1)}]}, "text"),
    ],
)
async def test_bad_campaigns_are_400_and_store_nothing(
    sms_api, sms_client, body, field, create_table
):
    owner = await sms_api.register()
    await create_table(
        owner, "clients", [{"key": "mobile", "type": "phone"}, {"key": "vip", "type": "boolean"}]
    )
    answer = await sms_api.call(
        "POST", "/api/sms/campaigns", owner, expect=400, json={"name": "x", **body}
    )
    assert field in [d["field"] for d in answer["error"]["details"]], answer
    db = sms_client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_sms_campaigns"].count_documents({}) == 0
    assert await db["_sms_messages"].count_documents({}) == 0


async def test_campaign_from_an_unreachable_table_is_404(sms_api, create_table):
    owner = await sms_api.register()
    other = await sms_api.register()
    await create_table(other, "secret", [{"key": "mobile", "type": "phone"}])
    await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=404,
        json={"name": "x", "text": "Hi", "table": "secret", "phone_column": "mobile"},
    )


async def test_transient_errors_are_retried_permanent_ones_are_not(sms_api, gateway):
    owner = await sms_api.register()
    # one message at a time (batch 4, but a single recipient per campaign) keeps order clear
    gateway.fail_next("429", "408")
    first = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "a", "text": "t", "recipients": [{"phone": phone(1)}]},
    )
    done = await wait_done(sms_api, owner, first["id"])
    assert done["counts"]["sent"] == 1 and len(gateway.received) == 3
    [message] = await messages(sms_api, owner, first["id"])
    assert message["attempts"] == 3

    gateway.received.clear()
    gateway.fail_next("429", "429", "429")
    second = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "b", "text": "t", "recipients": [{"phone": phone(2)}]},
    )
    done = await wait_done(sms_api, owner, second["id"])
    assert done["counts"]["failed"] == 1 and len(gateway.received) == 3, (done, gateway.received)
    [message] = await messages(sms_api, owner, second["id"])
    assert "gave up after 3 attempts" in message["error"]

    for behaviour, reason in (("400", "HTTP 400"), ("error207", "207")):
        gateway.received.clear()
        gateway.fail_next(behaviour)
        third = await sms_api.call(
            "POST",
            "/api/sms/campaigns",
            owner,
            expect=202,
            json={"name": "c", "text": "t", "recipients": [{"phone": phone(3)}]},
        )
        done = await wait_done(sms_api, owner, third["id"])
        assert done["counts"]["failed"] == 1 and len(gateway.received) == 1  # not retried
        [message] = await messages(sms_api, owner, third["id"])
        assert reason in message["error"]


async def test_no_answer_is_unknown_and_never_resent_blindly(sms_api, gateway):
    owner = await sms_api.register()
    gateway.hang_seconds = 1.0
    gateway.fail_next("hang")
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "a", "text": "t", "recipients": [{"phone": phone(1)}, {"phone": phone(2)}]},
    )
    done = await wait_done(sms_api, owner, created["id"])
    # both went in one request, which got no answer: both unknown, the request not repeated
    assert (done["counts"]["unknown"], done["counts"]["sent"]) == (2, 0)
    assert gateway.requests == [["79160000001", "79160000002"]]
    unknown = await messages(sms_api, owner, created["id"], "unknown")
    assert all("no answer" in m["error"] for m in unknown)
    # an operator decides: resend one (accepting a possible duplicate)
    await sms_api.call(
        "POST",
        f"/api/sms/messages/{unknown[0]['id']}/resolve",
        owner,
        expect=200,
        json={"outcome": "resend"},
    )
    done = await wait_done(sms_api, owner, created["id"])
    assert (done["counts"]["sent"], done["counts"]["unknown"]) == (1, 1)
    assert len(gateway.received) == 3
    await sms_api.call(
        "POST",
        f"/api/sms/messages/{unknown[0]['id']}/resolve",
        owner,
        expect=409,
        json={"outcome": "sent"},
    )
    await sms_api.call(
        "POST", f"/api/sms/messages/{'0' * 24}/resolve", owner, expect=404, json={"outcome": "sent"}
    )


async def test_a_redelivered_task_marks_its_half_sent_messages_unknown(
    sms_api, gateway, sms_client
):
    """A delivery of the task that died between claiming a message and recording the
    provider's answer left it in `sending`; the next delivery must not send it again."""
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    db = services.storage.tenant_db(owner.tenant_id)
    campaign_id, now = ObjectId(), __import__("datetime").datetime.now()
    await db["_sms_campaigns"].insert_one(
        {
            "_id": campaign_id,
            "name": "x",
            "text": "t",
            "status": "sending",
            "created_by": owner.user_id,
            "created_at": now,
            "updated_at": now,
        }
    )
    await db["_sms_messages"].insert_many(
        [
            {
                "campaign_id": campaign_id,
                "phone": phone(1),
                "text": "t",
                "status": "sending",
                "claimed_by": "task-1",
                "batch": 0,
                "attempts": 1,
                "updated_at": now,
            },
            {
                "campaign_id": campaign_id,
                "phone": phone(2),
                "text": "t",
                "status": "pending",
                "batch": 0,
                "attempts": 0,
                "updated_at": now,
            },
        ]
    )
    runtime = services.sms_queue.broker.state.sms
    result = await send_batch(runtime, "task-1", owner.tenant_id, str(campaign_id), 0)
    assert result == {"sent": 1}
    assert [r.phone for r in gateway.received] == ["79160000002"]
    statuses = {d["phone"]: d["status"] async for d in db["_sms_messages"].find()}
    assert statuses == {phone(1): "unknown", phone(2): "sent"}


async def test_cancel_stops_pending_messages(aiohttp_client, gateway):
    api = await gateway_api(
        aiohttp_client,
        gateway,
        sms_rate_per_second=20,
        sms_send_timeout_seconds=5,  # the gateway answers: a slow answer is not `unknown`
        sms_batch_size=100,
    )
    owner = await api.register()
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "big", "text": "t", "recipients": [{"phone": phone(i)} for i in range(40)]},
    )
    while len(gateway.received) < 3:
        await asyncio.sleep(0.01)
    cancelled = await api.call(
        "POST", f"/api/sms/campaigns/{created['id']}/cancel", owner, expect=200
    )
    assert cancelled["status"] == "cancelled"
    # the claim in flight (about a second of sending at the rate: 20 here) finishes
    assert cancelled["counts"]["cancelled"] == 40 - 20
    done = await wait_done(api, owner, created["id"])
    counts = done["counts"]
    assert counts["sent"] == len(gateway.received) == 20
    assert counts["cancelled"] == 40 - counts["sent"]
    await asyncio.sleep(0.3)
    assert len(gateway.received) == counts["sent"]  # nothing more went out
    await api.call("POST", f"/api/sms/campaigns/{created['id']}/cancel", owner, expect=200)


async def test_rate_limit_holds_at_the_gateway(aiohttp_client, gateway):
    api = await gateway_api(aiohttp_client, gateway, sms_rate_per_second=10, sms_batch_size=5)
    owner = await api.register()
    runtime = api.client.app[SERVICES].sms_queue.broker.state.sms
    slots: list[float] = []
    runtime.limiter = SlotRecorder(runtime.limiter, slots)
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "r", "text": "t", "recipients": [{"phone": phone(i)} for i in range(25)]},
    )
    await wait_done(api, owner, created["id"])
    assert len(gateway.received) == 25
    # five batches ran at once, yet the tenant's slots kept them to 10 per second (checked on
    # the slots granted: arrival times bunch up when a loaded machine delays the sends), and
    # the sends waited for their slots
    assert len(slots) >= 25
    assert max_in_window(slots) <= 10
    span = gateway.received[-1].at - gateway.received[0].at
    assert span >= 2.0


async def test_log_provider_is_the_default(api, client):
    owner = await api.register()
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "l", "text": "Hi {{n}}", "recipients": [{"phone": phone(1), "n": 1}]},
    )
    done = await wait_done(api, owner, created["id"])
    assert done["counts"]["sent"] == 1
    provider = client.app[SERVICES].sms_queue.broker.state.sms.provider
    assert provider.sent == [
        {
            "phone": phone(1),
            "text": "Hi 1",
            "message_id": provider.sent[0]["message_id"],
            "provider_id": "log-1",
        }
    ]
    assert json.dumps(done)  # the answer is plain JSON
    assert (await messages(api, owner, created["id"]))[0]["provider_id"] == "log-1"
