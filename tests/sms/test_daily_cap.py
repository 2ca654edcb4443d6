"""The company's daily SMS cap (docs/sms.md, "Daily cap"): a setting of `/api/tenant`; a
campaign that would go past it is refused at creation (409 `sms_daily_cap`), the preview
shows what is left, a cancel gives back what was not sent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from handlers.routing import SERVICES
from tests.support.api import wait_done
from tests.support.sms_gateway import phone

CAMPAIGNS = "/api/sms/campaigns"


def body(n, first=0, **extra):
    recipients = [{"phone": phone(first + i)} for i in range(n)]
    return {"name": "capped", "text": "t", "recipients": recipients, **extra}


async def capped(api, cap):
    owner = await api.register()
    await api.call("PATCH", "/api/tenant", owner, expect=200, json={"sms_daily_cap": cap})
    return owner


async def test_the_cap_is_a_tenant_setting(sms_api):
    owner = await sms_api.register()
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_daily_cap"] is None
    got = await sms_api.call("PATCH", "/api/tenant", owner, expect=200, json={"sms_daily_cap": 5})
    assert got["sms_daily_cap"] == 5
    renamed = await sms_api.call("PATCH", "/api/tenant", owner, expect=200, json={"name": "N"})
    assert renamed["sms_daily_cap"] == 5
    off = await sms_api.call(
        "PATCH", "/api/tenant", owner, expect=200, json={"sms_daily_cap": None}
    )
    assert off["sms_daily_cap"] is None


@pytest.mark.parametrize("value", [0, -1, "100", True, 1.5, 10_000_001])
async def test_a_bad_cap_is_400_naming_the_field(sms_api, value):
    owner = await sms_api.register()
    answer = await sms_api.call(
        "PATCH", "/api/tenant", owner, expect=400, json={"sms_daily_cap": value}
    )
    assert [d["field"] for d in answer["error"]["details"]] == ["sms_daily_cap"]
    assert (await sms_api.call("GET", "/api/tenant", owner, expect=200))["sms_daily_cap"] is None


async def test_a_campaign_past_the_cap_is_refused_and_stores_nothing(sms_api, sms_client):
    owner = await capped(sms_api, 10)
    first = await sms_api.call("POST", CAMPAIGNS, owner, expect=202, json=body(7))
    answer = await sms_api.call("POST", CAMPAIGNS, owner, expect=409, json=body(4, first=100))
    error = answer["error"]
    assert error["code"] == "sms_daily_cap"
    assert "cap of 10 leaves 3" in error["message"] and "sends 4" in error["message"]
    assert error["details"][0]["field"] == "recipients" and error["details"][0]["left"] == 3
    db = sms_client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_sms_campaigns"].count_documents({}) == 1
    # invalid numbers, duplicates and stop-listed ones are not counted: 3 still fit
    await sms_api.call("POST", "/api/sms/stop-list", owner, expect=200, json={"phones": [phone(9)]})
    fits = body(3, first=200)
    fits["recipients"] += [{"phone": "123"}, {"phone": phone(200)}, {"phone": phone(9)}]
    await sms_api.call("POST", CAMPAIGNS, owner, expect=202, json=fits)
    await sms_api.call("POST", CAMPAIGNS, owner, expect=409, json=body(1, first=300))
    await wait_done(sms_api, owner, first["id"])


async def test_twenty_concurrent_campaigns_never_go_past_the_cap(sms_api, sms_client):
    owner = await capped(sms_api, 50)

    async def create(i):
        resp = await sms_client.post(CAMPAIGNS, headers=owner.headers, json=body(5, 100 * i))
        return resp.status, (await resp.json())

    answers = await asyncio.gather(*(create(i) for i in range(20)))
    assert sorted(status for status, _ in answers) == [202] * 10 + [409] * 10
    assert {a["error"]["code"] for status, a in answers if status == 409} == {"sms_daily_cap"}
    db = sms_client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_sms_messages"].count_documents({}) == 50
    assert (await db["_sms_daily"].find_one({}))["reserved"] == 50


async def test_the_preview_shows_what_the_cap_leaves(sms_api):
    owner = await capped(sms_api, 10)
    await sms_api.call("POST", CAMPAIGNS, owner, expect=202, json=body(4))
    seen = await sms_api.call("POST", f"{CAMPAIGNS}/preview", owner, expect=200, json=body(8, 50))
    assert (seen["to_send"], seen["daily_cap"], seen["daily_cap_left"]) == (8, 10, 6)
    uncapped = await sms_api.register()
    seen = await sms_api.call("POST", f"{CAMPAIGNS}/preview", uncapped, expect=200, json=body(2))
    assert (seen["daily_cap"], seen["daily_cap_left"]) == (None, None)


async def test_a_scheduled_campaign_counts_on_its_own_day_and_a_cancel_gives_back(sms_api):
    owner = await capped(sms_api, 5)
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    scheduled = await sms_api.call(
        "POST", CAMPAIGNS, owner, expect=202, json=body(5, send_at=later)
    )
    # today is untouched by it
    await sms_api.call("POST", CAMPAIGNS, owner, expect=202, json=body(5, first=100))
    await sms_api.call("POST", CAMPAIGNS, owner, expect=409, json=body(1, first=200, send_at=later))
    await sms_api.call("POST", f"{CAMPAIGNS}/{scheduled['id']}/cancel", owner, expect=200)
    await sms_api.call("POST", CAMPAIGNS, owner, expect=202, json=body(5, first=300, send_at=later))
