"""Batched sends (docs/sms.md, "Batched requests"): one SMS.ru request carries up to 100
messages with their own texts; a clear per-number answer settles each message, an unclear
answer about the whole request makes all of its messages `unknown`, never resent."""

from __future__ import annotations

import pytest

from crm_core.sms.contract import Outbound, PermanentSendError
from crm_core.sms.providers import SmsRuProvider
from crm_core.sms.service import request_size
from tests.support.api import wait_done
from tests.support.sms_gateway import phone, sms_test_settings


@pytest.fixture
def sms_settings(gateway):
    # 1,000 a second: requests of 100 numbers; one claim per batch of 250
    return sms_test_settings(gateway, sms_rate_per_second=1000, sms_batch_size=250)


async def create(api, owner, n, text="Hi {{n}}", first=0):
    recipients = [{"phone": phone(first + i), "n": first + i} for i in range(n)]
    return await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "batched", "text": text, "recipients": recipients},
    )


async def messages(api, owner, campaign_id):
    path = f"/api/sms/campaigns/{campaign_id}/messages?limit=1000"
    return (await api.call("GET", path, owner, expect=200))["items"]


async def test_one_request_carries_up_to_100_messages_with_their_own_texts(sms_api, gateway):
    owner = await sms_api.register()
    created = await create(sms_api, owner, 250)
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 250
    assert sorted(len(r) for r in gateway.requests) == [50, 100, 100]
    texts = {r.phone: r.text for r in gateway.received}
    assert texts == {phone(i).lstrip("+"): f"Hi {i}" for i in range(250)}
    stored = await messages(sms_api, owner, created["id"])
    ids = {m["provider_id"] for m in stored}
    assert len(ids) == 250 and all(i.startswith("000000-") for i in ids)


async def test_each_number_is_settled_by_its_own_answer(sms_api, gateway):
    owner = await sms_api.register()
    # one request of six numbers, each answered differently; 220 is "try later"
    gateway.fail_next("ok", "error207", "error230", "missing", "error220", "error231")
    created = await create(sms_api, owner, 6)
    done = await wait_done(sms_api, owner, created["id"])
    by_phone = {m["phone"]: m for m in await messages(sms_api, owner, created["id"])}
    assert {p: m["status"] for p, m in by_phone.items()} == {
        phone(0): "sent",
        phone(1): "failed",
        phone(2): "limited",
        phone(3): "unknown",
        phone(4): "sent",  # tried again in a next request
        phone(5): "limited",
    }
    assert by_phone[phone(1)]["provider_code"] == 207
    assert by_phone[phone(2)]["provider_code"] == 230
    assert "daily limit of messages to this number" in by_phone[phone(2)]["error"]
    assert "within a minute" in by_phone[phone(5)]["error"]
    assert "does not mention" in by_phone[phone(3)]["error"]
    assert by_phone[phone(4)]["attempts"] == 2
    assert gateway.requests[1] == [phone(4).lstrip("+")]  # only the one to try again
    counts = done["counts"]
    assert (counts["sent"], counts["failed"], counts["limited"], counts["unknown"]) == (2, 1, 2, 1)


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        ("500", "unknown", "HTTP 500"),
        ("504", "unknown", "HTTP 504"),
        ("unreadable", "unknown", "unreadable"),
        ("400", "failed", "HTTP 400"),
        ("top206", "limited", "daily sending limit"),
        ("top200", "failed", "SMS.ru error 200"),
    ],
)
async def test_an_answer_about_the_whole_request_settles_all_of_it(
    sms_api, gateway, answer, status, error
):
    owner = await sms_api.register()
    gateway.fail_next(answer)
    created = await create(sms_api, owner, 30)
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"][status] == 30 and done["counts"]["sent"] == 0
    assert len(gateway.requests) == 1  # never sent again blindly
    stored = await messages(sms_api, owner, created["id"])
    assert all(error in m["error"] for m in stored), stored[0]


async def test_a_request_refused_for_now_is_tried_again_as_a_whole(sms_api, gateway):
    owner = await sms_api.register()
    gateway.fail_next("429", "top220")
    created = await create(sms_api, owner, 30)
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 30
    assert [len(r) for r in gateway.requests] == [30, 30, 30]
    assert set(gateway.accepted_per_phone().values()) == {1}
    assert {m["attempts"] for m in await messages(sms_api, owner, created["id"])} == {3}


async def test_no_answer_to_a_request_makes_its_messages_unknown_and_others_go_on(sms_api, gateway):
    owner = await sms_api.register()
    gateway.hang_seconds = 1.0
    gateway.fail_next("hang")  # the first request of 100 hangs past the send timeout
    created = await create(sms_api, owner, 250)
    done = await wait_done(sms_api, owner, created["id"])
    hung = set(gateway.requests[0])
    assert len(hung) in (50, 100)
    assert done["counts"]["unknown"] == len(hung) and done["counts"]["sent"] == 250 - len(hung)
    stored = await messages(sms_api, owner, created["id"])
    assert {m["phone"].lstrip("+") for m in stored if m["status"] == "unknown"} == hung
    assert all(n not in hung for n in gateway.accepted_per_phone())


def test_request_size_follows_the_rate_and_the_provider(gateway):
    provider = SmsRuProvider("x", "http://127.0.0.1:1", "", 1.0)
    sizes = {
        rate: request_size(sms_test_settings(gateway, sms_rate_per_second=rate), provider)
        for rate in (1, 10, 55, 1000, 10_000)
    }
    assert sizes == {1: 1, 10: 1, 55: 5, 1000: 100, 10_000: 100}


async def test_the_smsru_provider_posts_per_number_texts(gateway):
    provider = SmsRuProvider("test-api-id", gateway.url, "Shop", 1.0)
    try:
        gateway.fail_next("ok", "error207")
        answers = await provider.send(
            [Outbound("+79160000001", "Привет", "m1"), Outbound("+79160000002", "Hi", "m2")]
        )
    finally:
        await provider.close()
    assert answers[0] == gateway.accepted[0].sms_id
    assert isinstance(answers[1], PermanentSendError) and answers[1].code == 207
    assert [(r.phone, r.text) for r in gateway.received] == [
        ("79160000001", "Привет"),
        ("79160000002", "Hi"),
    ]
