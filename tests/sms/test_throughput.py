"""What keeps a campaign's sending busy (docs/operations.md, "SMS throughput"): a claim gives
its place up once its requests are answered, so the next claim sends while its outcomes are
recorded; the send's form is encoded as `urlencode` would encode it."""

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
    # one claim of 250 in flight per process (100 requests / 250 messages): two batches
    return sms_test_settings(gateway, sms_rate_per_second=1000, sms_batch_size=250)


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
