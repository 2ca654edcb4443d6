"""Preview (docs/sms.md, "Preview"): the same body as creating a campaign, nothing stored;
counts, parts per message (GSM-7 160/153, UCS-2 70/67) and the provider's price."""

from __future__ import annotations

import pytest

from crm_core.sms.parts import encoding, parts
from handlers.app import create_app
from tests.support.api import Api, make_settings
from tests.support.sms_gateway import phone

PREVIEW = "/api/sms/campaigns/preview"


@pytest.mark.parametrize(
    ("text", "kind", "n"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("{" * 80, "GSM-7", 1),  # extension characters count twice
        ("{" * 81, "GSM-7", 2),
        ("я" * 70, "UCS-2", 1),
        ("я" * 71, "UCS-2", 2),
        ("я" * 134, "UCS-2", 2),
        ("я" * 135, "UCS-2", 3),
        ("a" * 69 + "я", "UCS-2", 1),
        ("😀" * 35, "UCS-2", 1),  # two UTF-16 units each
        ("😀" * 36, "UCS-2", 2),
        ("", "GSM-7", 1),
    ],
)
def test_parts(text, kind, n):
    assert (encoding(text), parts(text)) == (kind, n)


async def test_preview_counts_parts_and_price_and_stores_nothing(sms_api, gateway):
    owner = await sms_api.register()
    await sms_api.call("POST", "/api/sms/stop-list", owner, expect=200, json={"phones": [phone(3)]})
    recipients = [
        {"phone": phone(1), "name": "Ann"},
        {"phone": phone(1), "name": "Ann again"},  # duplicate
        {"phone": "123", "name": "x"},  # invalid
        {"phone": phone(3), "name": "Stop"},  # stop-listed
        {"phone": phone(4), "name": "Борис"},  # Cyrillic: UCS-2
        {"phone": phone(5), "name": "B" * 160},  # GSM-7, two parts
    ]
    preview = await sms_api.call(
        "POST",
        PREVIEW,
        owner,
        expect=200,
        json={"name": "p", "text": "Hi {{name}}", "recipients": recipients},
    )
    assert preview == {
        "recipients": 5,
        "duplicates": 1,
        "invalid": 1,
        "stop_listed": 1,
        "to_send": 3,
        "encodings": {"GSM-7": 2, "UCS-2": 1},
        "parts_per_message": {"1": 2, "2": 1},
        "total_parts": 4,
        "price": 6.0,
        "daily_cap": None,
        "daily_cap_left": None,
    }
    assert gateway.received == [] and gateway.cost_requests == 1
    listed = await sms_api.call("GET", "/api/sms/campaigns", owner, expect=200)
    assert listed["items"] == []


async def test_preview_bad_input_is_400_like_create(sms_api):
    owner = await sms_api.register()
    bad = [
        (
            {"name": "p", "text": "Hi {{who}}", "recipients": [{"phone": phone(1)}]},
            "recipients.0.who",
        ),
        ({"name": "p", "text": "t"}, "recipients"),
        (
            {
                "name": "p",
                "text": "t",
                "recipients": [{"phone": phone(1)}],
                "send_at": "2020-01-01T00:00:00Z",
            },
            "send_at",
        ),
    ]
    for body, field in bad:
        resp = await sms_api.client.post(PREVIEW, headers=owner.headers, json=body)
        assert resp.status == 400, await resp.text()
        assert field in (await resp.json())["error"]["message"]


async def test_preview_without_a_priced_provider_has_no_price(aiohttp_client):
    api = Api(await aiohttp_client(create_app(make_settings())))
    owner = await api.register()
    preview = await api.call(
        "POST",
        PREVIEW,
        owner,
        expect=200,
        json={"name": "p", "text": "t", "recipients": [{"phone": phone(1)}]},
    )
    assert preview["price"] is None and preview["total_parts"] == 1


async def test_preview_price_is_null_when_the_provider_fails(sms_api, gateway):
    owner = await sms_api.register()
    gateway.price_per_part = float("nan")  # an unreadable answer
    preview = await sms_api.call(
        "POST",
        PREVIEW,
        owner,
        expect=200,
        json={"name": "p", "text": "t", "recipients": [{"phone": phone(1)}]},
    )
    assert preview["price"] is None
