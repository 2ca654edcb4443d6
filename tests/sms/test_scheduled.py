"""Scheduled sends (docs/sms.md, "Scheduled sends"): `send_at` keeps a campaign `scheduled`
(cancellable) until then; the outbox's sweeper starts it. A past or malformed moment is a 400."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.api import wait_done
from tests.support.sms_gateway import phone


def body(send_at, n=3):
    return {
        "name": "later",
        "text": "t",
        "recipients": [{"phone": phone(i)} for i in range(n)],
        "send_at": send_at,
    }


async def test_a_scheduled_campaign_waits_then_sends(sms_api, gateway):
    owner = await sms_api.register()
    at = datetime.now(UTC) + timedelta(seconds=0.6)
    created = await sms_api.call(
        "POST", "/api/sms/campaigns", owner, expect=202, json=body(at.isoformat())
    )
    assert created["status"] == "scheduled" and created["counts"]["pending"] == 3
    stored = datetime.fromisoformat(created["send_at"].replace("Z", "+00:00"))
    assert abs((stored - at).total_seconds()) < 0.001
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{created['id']}", owner, expect=200)
    assert seen["status"] == "scheduled" and gateway.received == []
    done = await wait_done(sms_api, owner, created["id"])
    assert done["status"] == "completed" and done["counts"]["sent"] == 3
    assert set(gateway.accepted_per_phone().values()) == {1}


async def test_a_scheduled_campaign_is_cancellable(sms_api, gateway):
    owner = await sms_api.register()
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await sms_api.call("POST", "/api/sms/campaigns", owner, expect=202, json=body(at))
    cancelled = await sms_api.call(
        "POST", f"/api/sms/campaigns/{created['id']}/cancel", owner, expect=200
    )
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 3
    await asyncio.sleep(0.1)
    assert gateway.received == []


@pytest.mark.parametrize(
    ("send_at", "says"),
    [
        ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "past"),
        ("2020-01-01T10:00:00+03:00", "past"),
        ("tomorrow at ten", "ISO 8601"),
        ("2030-01-01T10:00:00", "offset"),
        (12345, "string"),
    ],
)
async def test_a_bad_send_at_is_400_and_stores_nothing(sms_api, gateway, send_at, says):
    owner = await sms_api.register()
    resp = await sms_api.client.post(
        "/api/sms/campaigns", headers=owner.headers, json=body(send_at)
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert "send_at" in error["message"] and says.lower() in str(error).lower()
    listed = await sms_api.call("GET", "/api/sms/campaigns", owner, expect=200)
    assert listed["items"] == []
