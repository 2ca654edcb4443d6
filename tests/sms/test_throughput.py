"""What keeps a campaign's sending busy (docs/operations.md, "SMS throughput"): a claim gives
its place up once its requests are answered, so the next claim sends while its outcomes are
recorded; as many claims are in flight as their requests fit in the pool, so the next claim
sends while a claim's requests are still out; the send's form is encoded as `urlencode` would
encode it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest

from crm_core.sms import service
from crm_core.sms.providers import _form_body
from tests.support.api import wait_done
from tests.support.sms_gateway import phone, sms_test_settings


@pytest.fixture
def sms_settings(gateway):
    # claims of 250 in requests of 100 (a tenth of a second at 1,000/s): three requests a
    # claim, so 33 claims fit in the pool of 100 requests; two batches. A held request must
    # not reach its send timeout
    return sms_test_settings(
        gateway,
        sms_rate_per_second=1000,
        sms_batch_size=250,
        sms_send_timeout_seconds=30,
        sms_redelivery_seconds=300,
    )


async def test_the_next_claim_sends_while_a_claim_is_recorded(sms_api, gateway, monkeypatch):
    """The first claim's recording waits (a hook) until the second claim's answers are in:
    with the claim's place held until it is recorded, the second could not send and the hook
    would give up waiting."""
    owner = await sms_api.register()
    recorded: list[int] = []
    second_answered = asyncio.Event()
    overlapped: list[bool] = []
    remember_sent = service.remember_sent

    async def remember(*args: Any) -> None:
        recorded.append(len(args[4]))
        if len(recorded) == 1:
            try:  # a deadlock guard: never reached when the claims overlap
                await asyncio.wait_for(second_answered.wait(), 10)
                overlapped.append(True)
            except TimeoutError:
                overlapped.append(False)
        else:
            second_answered.set()
        await remember_sent(*args)

    monkeypatch.setattr(service, "remember_sent", remember)
    recipients = [{"phone": phone(i), "n": i} for i in range(500)]
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "two claims", "text": "Hi {{n}}", "recipients": recipients},
    )
    done = await wait_done(sms_api, owner, created["id"], timeout=30)
    assert overlapped == [True]
    assert recorded == [250, 250]
    assert done["counts"]["sent"] == 500
    assert len(gateway.received) == 500


async def test_the_next_claim_sends_while_a_claims_requests_are_out(sms_api, gateway, monkeypatch):
    """The first claim's requests wait (a hook) until a request of the second claim leaves:
    with one claim in flight per process (its place held until its requests are answered),
    the second could not send and the hook would give up waiting."""
    owner = await sms_api.register()
    halves: list[int] = []  # the half of the campaign (by seq) each request carries
    second_sent = asyncio.Event()
    overlapped: list[bool] = []
    request = service.SmsSender._request

    async def held(self: Any, messages: list[Any], slot: float) -> Any:
        half = messages[0].seq // 250
        halves.append(half)
        if half == halves[0]:
            try:  # a deadlock guard: never reached when claims overlap
                await asyncio.wait_for(second_sent.wait(), 10)
                overlapped.append(True)
            except TimeoutError:
                overlapped.append(False)
        else:
            second_sent.set()
        return await request(self, messages, slot)

    monkeypatch.setattr(service.SmsSender, "_request", held)
    recipients = [{"phone": phone(i), "n": i} for i in range(500)]
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "overlapping claims", "text": "Hi {{n}}", "recipients": recipients},
    )
    done = await wait_done(sms_api, owner, created["id"], timeout=60)
    assert overlapped == [True, True, True]  # the first claim's three requests
    assert sorted(halves) == [0, 0, 0, 1, 1, 1]
    assert done["counts"]["sent"] == 500
    assert len(gateway.accepted) == 500
    assert max(gateway.accepted_per_phone().values()) == 1


@pytest.mark.parametrize(
    "form",
    [
        [("api_id", "a b&c=d"), ("json", "1"), ("to[79161234567]", "Здравствуйте, 1! &+=%")],
        [("to[+7916]", "x"), ("to[]", "y"), ("to[12a]", "z"), ("to[١٢]", "w"), ("from", "Me")],
        [("sms_id", "000000-1,000000-2")],
    ],
)
def test_the_form_body_is_what_urlencode_makes(form):
    assert _form_body(form) == urlencode(form)
