"""The outbox of campaign work (docs/operations.md "Faults: the broker"): a campaign created
while the broker refuses work is accepted (202), recorded, and sent when the sweeper hands its
batches to a broker that takes them; a resend asked for meanwhile likewise. Nothing is sent
twice, nothing stays queued."""

from __future__ import annotations

from typing import Any

from handlers.routing import SERVICES
from tests.support.api import Api, wait_done
from tests.support.outbox import outbox_drained
from tests.support.sms_gateway import phone


class RefusingQueue:
    """The API's queue while Redis is down: every hand-off fails as taskiq-redis's does."""

    def __init__(self) -> None:
        self.refused = 0

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None:
        self.refused += 1
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def send_one(self, tenant_id: str, message_id: str) -> None:
        self.refused += 1
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_a_campaign_created_while_the_broker_refuses_is_accepted_and_sent_once(
    sms_client: Any, sms_api: Api, gateway: Any
) -> None:
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    refusing = RefusingQueue()
    services.sms_queue = refusing  # the API's hand-off fails; the sweeper's broker works
    recipients = [{"phone": phone(i)} for i in range(10)]
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "outage", "text": "t", "recipients": recipients},
    )
    assert refusing.refused == 1  # the first refusal stops the hand-off: the rest wait
    assert created["status"] == "queued" and created["counts"]["pending"] == 10
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 10
    assert set(gateway.accepted_per_phone().values()) == {1} and len(gateway.accepted) == 10
    assert await outbox_drained(services.storage) == 0
    listed = await sms_api.call("GET", "/api/sms/campaigns", owner, expect=200)
    assert len(listed["items"]) == 1  # one campaign: the client had no reason to retry


async def test_a_resend_asked_while_the_broker_refuses_is_sent_by_the_sweeper(
    sms_client: Any, sms_api: Api, gateway: Any
) -> None:
    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    gateway.fail_next("hang")
    gateway.hang_seconds = 1.0
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "r", "text": "t", "recipients": [{"phone": phone(1)}]},
    )
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["unknown"] == 1
    page = await sms_api.call(
        "GET", f"/api/sms/campaigns/{created['id']}/messages", owner, expect=200
    )
    services.sms_queue = RefusingQueue()
    message_id = page["items"][0]["id"]
    await sms_api.call(
        "POST",
        f"/api/sms/messages/{message_id}/resolve",
        owner,
        expect=200,
        json={"outcome": "resend"},
    )
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 1 and done["counts"]["unknown"] == 0
    assert await outbox_drained(services.storage) == 0
