"""The SMS domain's counters and repairs: what a user sees when a worker stopped between two
writes, page totals from the counters, and campaigns stored before the counters existed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from handlers.routing import SERVICES
from models.sms import MESSAGE_STATUSES
from tasks.sms import send_batch
from tests.support.api import wait_done
from tests.support.sms_gateway import phone, sms_test_settings

ZERO = dict.fromkeys(MESSAGE_STATUSES, 0)


@pytest.fixture
def sms_settings(gateway):
    return sms_test_settings(gateway, sms_max_attempts=2)


def campaign_doc(owner, campaign_id, counts=None, status="sending"):
    now = datetime.now(UTC)
    doc = {
        "_id": campaign_id,
        "name": "x",
        "text": "t",
        "status": status,
        "duplicates": 0,
        "created_by": owner.user_id,
        "created_at": now,
        "updated_at": now,
    }
    if counts is not None:
        doc["counts"] = {**ZERO, **counts}
    return doc


def message_doc(campaign_id, seq, status, **extra):
    return {
        "_id": ObjectId(),
        "campaign_id": campaign_id,
        "seq": seq,
        "batch": 0,
        "phone": phone(seq),
        "text": "t",
        "status": status,
        "attempts": 0,
        "provider_id": None,
        "error": None,
        "updated_at": datetime.now(UTC),
        **extra,
    }


async def test_a_redelivery_repairs_counters_its_stopped_delivery_left_behind(
    sms_api, sms_client, gateway
):
    """The first delivery recorded a message as sent and stopped before moving the campaign's
    counters: the redelivered task sends what is left, and the completed campaign's counts are
    the messages' true states."""
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    db = services.storage.tenant_db(owner.tenant_id)
    cid = ObjectId()
    # counters as the stopped delivery left them: one message claimed (sending), never moved on
    await db["_sms_campaigns"].insert_one(campaign_doc(owner, cid, {"pending": 1, "sending": 1}))
    await db["_sms_messages"].insert_many(
        [
            message_doc(cid, 0, "sent", claimed_by="task-1", attempts=1, provider_id="p-1"),
            message_doc(cid, 1, "pending"),
        ]
    )
    runtime = services.sms_queue.broker.state.sms
    assert await send_batch(runtime, "task-1", owner.tenant_id, str(cid), 0) == {"sent": 1}
    assert [r.phone for r in gateway.received] == ["79160000001"]  # never the sent one again
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{cid}", owner, expect=200)
    assert seen["status"] == "completed"
    assert seen["counts"] == {**ZERO, "sent": 2, "total": 2, "delivery_rate": 0.0}
    stored = await db["_sms_campaigns"].find_one({"_id": cid})
    assert "repair" not in stored


async def test_the_outboxs_new_task_repairs_counters_a_killed_worker_left_behind(
    sms_api, sms_client, gateway
):
    """The first delivery recorded its claim as sent and was SIGKILLed before moving the
    counters, and Redis forgot its task: the outbox's sweeper queues the batch again as a NEW
    task. That delivery has nothing left to send, yet the campaign completes with the
    messages' true counts (it stayed `sending` for good; tests/faults/test_broker_faults.py)."""
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    db = services.storage.tenant_db(owner.tenant_id)
    cid = ObjectId()
    await db["_sms_campaigns"].insert_one(campaign_doc(owner, cid, {"sending": 2}))
    await db["_sms_messages"].insert_many(
        [
            message_doc(cid, n, "sent", claimed_by="killed", attempts=1, provider_id=f"p-{n}")
            for n in range(2)
        ]
    )
    runtime = services.sms_queue.broker.state.sms
    assert await send_batch(runtime, "outbox-again", owner.tenant_id, str(cid), 0) == {"sent": 0}
    assert gateway.received == []  # nothing sent twice
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{cid}", owner, expect=200)
    assert seen["status"] == "completed"
    assert seen["counts"] == {**ZERO, "sent": 2, "total": 2, "delivery_rate": 0.0}
    assert "repair" not in await db["_sms_campaigns"].find_one({"_id": cid})


async def test_a_first_delivery_does_not_complete_while_counters_show_work(
    sms_api, sms_client, gateway
):
    """Without a redelivery the counters decide: another batch still counted as sending means
    the campaign is not done (that batch's delivery completes it)."""
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    db = services.storage.tenant_db(owner.tenant_id)
    cid = ObjectId()
    await db["_sms_campaigns"].insert_one(campaign_doc(owner, cid, {"pending": 1, "sending": 1}))
    await db["_sms_messages"].insert_many(
        [
            message_doc(cid, 0, "pending"),
            message_doc(cid, 1, "sending", batch=1, claimed_by="other", claim=ObjectId()),
        ]
    )
    runtime = services.sms_queue.broker.state.sms
    assert await send_batch(runtime, "task-a", owner.tenant_id, str(cid), 0) == {"sent": 1}
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{cid}", owner, expect=200)
    assert seen["status"] == "sending"
    assert seen["counts"]["sent"] == 1 and seen["counts"]["sending"] == 1


async def test_a_campaign_stored_before_counters_is_counted_once_and_kept(sms_api, sms_client):
    owner = await sms_api.register()
    db = sms_client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    cid = ObjectId()
    await db["_sms_campaigns"].insert_one(campaign_doc(owner, cid, status="completed"))
    await db["_sms_messages"].insert_many(
        [message_doc(cid, 0, "sent"), message_doc(cid, 1, "failed"), message_doc(cid, 2, "sent")]
    )
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{cid}", owner, expect=200)
    assert seen["counts"] == {**ZERO, "sent": 2, "failed": 1, "total": 3, "delivery_rate": 0.0}
    stored = await db["_sms_campaigns"].find_one({"_id": cid})
    assert stored["counts"] == {**ZERO, "sent": 2, "failed": 1}
    page = await sms_api.call(
        "GET", f"/api/sms/campaigns/{cid}/messages?status=sent&limit=1", owner, expect=200
    )
    assert page["total"] == 2 and len(page["items"]) == 1


async def test_message_page_totals_follow_the_campaign(sms_api, gateway):
    owner = await sms_api.register()
    gateway.fail_next("error207")  # the first number is refused
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "p", "text": "t", "recipients": [{"phone": phone(i)} for i in range(6)]},
    )
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 5 and done["counts"]["failed"] == 1
    base = f"/api/sms/campaigns/{created['id']}/messages"
    every = await sms_api.call("GET", f"{base}?limit=2&offset=1", owner, expect=200)
    assert every["total"] == 6 and len(every["items"]) == 2
    failed = await sms_api.call("GET", f"{base}?status=failed", owner, expect=200)
    assert failed["total"] == 1 and failed["items"][0]["status"] == "failed"
    none = await sms_api.call("GET", f"{base}?status=unknown", owner, expect=200)
    assert none == {"items": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}
