"""Quiet hours (docs/sms.md, "Quiet hours"): set in /api/tenant, in the company's time zone;
batches that come due inside the window wait for its end. Malformed → 400 naming the field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from crm_core.platform.outbox import OUTBOX
from crm_core.sms.service import SMS_BATCH, quiet_wait
from handlers.routing import SERVICES
from models.accounts import QuietHours
from tests.support.sms_gateway import phone
from tests.support.waits import DEADLINE

NIGHT = QuietHours(start="21:00", end="09:00")


@pytest.mark.parametrize(
    ("quiet", "zone", "now", "wait"),
    [
        (None, "UTC", datetime(2026, 1, 1, 23, 0, tzinfo=UTC), 0),
        (NIGHT, "UTC", datetime(2026, 1, 1, 12, 0, tzinfo=UTC), 0),
        (NIGHT, "UTC", datetime(2026, 1, 1, 23, 0, tzinfo=UTC), 10 * 3600),
        (NIGHT, "UTC", datetime(2026, 1, 1, 8, 30, tzinfo=UTC), 30 * 60),
        (NIGHT, "UTC", datetime(2026, 1, 1, 9, 0, tzinfo=UTC), 0),
        # 19:00 UTC is 22:00 in Moscow: quiet until 09:00 Moscow, 06:00 UTC
        (NIGHT, "Europe/Moscow", datetime(2026, 1, 1, 19, 0, tzinfo=UTC), 11 * 3600),
        (NIGHT, "Europe/Moscow", datetime(2026, 1, 1, 17, 0, tzinfo=UTC), 0),
        (
            QuietHours(start="13:00", end="14:00"),
            "UTC",
            datetime(2026, 1, 1, 13, 15, tzinfo=UTC),
            45 * 60,
        ),
    ],
)
def test_quiet_wait(quiet, zone, now, wait):
    assert quiet_wait(quiet, zone, now) == wait


async def test_quiet_hours_are_a_tenant_setting(sms_api):
    owner = await sms_api.register()
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_quiet_hours"] is None
    quiet = {"start": "21:00", "end": "09:00"}
    set_ = await sms_api.call(
        "PATCH", "/api/tenant", owner, expect=200, json={"sms_quiet_hours": quiet}
    )
    assert set_["sms_quiet_hours"] == quiet
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_quiet_hours"] == quiet
    renamed = await sms_api.call("PATCH", "/api/tenant", owner, expect=200, json={"name": "X"})
    assert renamed["sms_quiet_hours"] == quiet  # other changes keep them
    off = await sms_api.call(
        "PATCH", "/api/tenant", owner, expect=200, json={"sms_quiet_hours": None}
    )
    assert off["sms_quiet_hours"] is None
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_quiet_hours"] is None


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"start": "25:00", "end": "09:00"}, "sms_quiet_hours.start"),
        ({"start": "21:00", "end": "9"}, "sms_quiet_hours.end"),
        ({"start": "21:00"}, "sms_quiet_hours.end"),
        ({"start": "21:00", "end": "21:00"}, "sms_quiet_hours"),
        ({"start": "21:00", "end": "09:00", "tz": "UTC"}, "sms_quiet_hours.tz"),
        ("21:00-09:00", "sms_quiet_hours"),
        ({"start": 21, "end": 9}, "sms_quiet_hours.start"),
    ],
)
async def test_malformed_quiet_hours_are_400_naming_the_field(sms_api, value, field):
    owner = await sms_api.register()
    resp = await sms_api.client.patch(
        "/api/tenant", headers=owner.headers, json={"sms_quiet_hours": value}
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error" and error["message"].startswith(field)
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_quiet_hours"] is None


async def test_a_campaign_due_in_quiet_hours_waits_for_their_end(sms_api, sms_client, gateway):
    owner = await sms_api.register()
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(hours=1)).strftime("%H:%M"),
        (now + timedelta(hours=2)).strftime("%H:%M"),
    )
    await sms_api.call(
        "PATCH",
        "/api/tenant",
        owner,
        expect=200,
        json={"sms_quiet_hours": {"start": start, "end": end}},
    )
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "q", "text": "t", "recipients": [{"phone": phone(i)} for i in range(3)]},
    )
    storage = sms_client.app[SERVICES].storage
    entries = storage.system_db[OUTBOX]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:  # the batch ran, found the company quiet, and put its entry back to the end
        entry = await entries.find_one({"kind": SMS_BATCH, "tenant_id": owner.tenant_id})
        due = entry["due_at"].replace(tzinfo=UTC)
        if due > now + timedelta(hours=1):
            break
        assert loop.time() < deadline, entry
        await asyncio.sleep(0.05)
    ends = (now + timedelta(hours=2)).replace(second=0, microsecond=0)
    assert abs((due - ends).total_seconds()) < 120
    assert gateway.received == []
    seen = await sms_api.call("GET", f"/api/sms/campaigns/{created['id']}", owner, expect=200)
    assert seen["counts"]["pending"] == 3
