"""`/api/tenant`: the company's settings, who may change them, and what a change affects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bson import ObjectId

from models.accounts import Tenant
from tests.support.api import add_user, rows_of


async def test_owner_reads_the_company_settings(api, owner):
    got = await api.call("GET", "/api/tenant", owner, expect=200)
    assert got == {
        "id": owner.tenant_id,
        "name": "Acme",
        "timezone": "UTC",
        "phone_region": "RU",
        "sms_quiet_hours": None,
        "sms_daily_cap": None,
    }


async def test_patch_changes_only_the_fields_given(api, owner):
    got = await api.call(
        "PATCH", "/api/tenant", owner, expect=200, json={"timezone": "Europe/Moscow"}
    )
    assert got["timezone"] == "Europe/Moscow" and got["name"] == "Acme"
    got = await api.call(
        "PATCH", "/api/tenant", owner, expect=200, json={"name": " Acme Ltd ", "phone_region": "KZ"}
    )
    assert got == {
        "id": owner.tenant_id,
        "name": "Acme Ltd",
        "timezone": "Europe/Moscow",
        "phone_region": "KZ",
        "sms_quiet_hours": None,
        "sms_daily_cap": None,
    }
    stored = await Tenant.get(ObjectId(owner.tenant_id))
    assert (stored.name, stored.timezone, stored.phone_region) == (
        "Acme Ltd",
        "Europe/Moscow",
        "KZ",
    )
    assert await api.call("GET", "/api/tenant", owner, expect=200) == got
    me = await api.call("GET", "/api/auth/me", owner, expect=200)
    assert me["tenant"]["timezone"] == "Europe/Moscow"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 3}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"phone_region": "XX"}, "phone_region"),
        ({"phone_region": "ru"}, "phone_region"),
        ({"phone_region": "001"}, "phone_region"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"plan": "gold"}, "plan"),
    ],
)
async def test_bad_settings_answer_400_naming_the_field_and_change_nothing(api, owner, body, field):
    # a valid change together with the bad one: all-or-nothing
    payload = (
        {"name": "Changed", **body} if "name" not in body else {"timezone": "Asia/Tokyo", **body}
    )
    resp = await api.client.patch("/api/tenant", headers=owner.headers, json=payload)
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field], error
    stored = await Tenant.get(ObjectId(owner.tenant_id))
    assert (stored.name, stored.timezone, stored.phone_region) == ("Acme", "UTC", "RU")


async def test_patch_with_bad_json_is_400(api, owner):
    resp = await api.client.patch(
        "/api/tenant", headers={**owner.headers, "Content-Type": "application/json"}, data="{"
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("role", ["admin", "manager", "viewer"])
async def test_only_tenant_manage_reads_or_changes_settings(api, client, owner, role):
    user = await add_user(api, client, owner, role)
    for method, body in (("GET", None), ("PATCH", {"name": "Mine now"})):
        resp = await client.request(method, "/api/tenant", headers=user.headers, json=body)
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
    stored = await Tenant.get(ObjectId(owner.tenant_id))
    assert stored.name == "Acme"


async def test_a_custom_role_with_tenant_manage_may_change_them(api, client, owner):
    role = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Office", "permissions": ["tenant.manage"]},
    )
    user = await add_user(api, client, owner, "viewer")
    await api.call(
        "PATCH", f"/api/users/{user.user_id}", owner, expect=200, json={"role_ids": [role["id"]]}
    )
    got = await api.call("PATCH", "/api/tenant", user, expect=200, json={"name": "Renamed"})
    assert got["name"] == "Renamed"


async def test_each_company_sees_and_changes_only_its_own_settings(api):
    a = await api.register(company="A")
    b = await api.register(company="B")
    await api.call(
        "PATCH", "/api/tenant", b, expect=200, json={"name": "B2", "timezone": "Asia/Tokyo"}
    )
    assert (await api.call("GET", "/api/tenant", a, expect=200))["name"] == "A"
    got_b = await api.call("GET", "/api/tenant", b, expect=200)
    assert got_b["id"] == b.tenant_id and got_b["name"] == "B2"
    stored_a = await Tenant.get(ObjectId(a.tenant_id))
    assert (stored_a.name, stored_a.timezone) == ("A", "UTC")


async def test_timezone_change_rewrites_no_stored_value_and_new_input_follows_it(
    api, client, owner
):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "events",
            "columns": [{"key": "d", "type": "date"}, {"key": "p", "type": "phone"}],
        },
    )
    before = await api.call(
        "POST",
        "/api/data/events",
        owner,
        expect=201,
        json={"d": "2025-08-15T10:00:00", "p": "89161234567"},
    )
    events = await rows_of(client, owner, "events")
    stored_before = await events.find_one({"_id": ObjectId(before["id"])})
    assert stored_before["d"].replace(tzinfo=UTC) == datetime(2025, 8, 15, 10, tzinfo=UTC)

    await api.call(
        "PATCH",
        "/api/tenant",
        owner,
        expect=200,
        json={"timezone": "Europe/Moscow", "phone_region": "KZ"},
    )
    assert await events.find_one({"_id": ObjectId(before["id"])}) == stored_before
    after = await api.call(
        "POST",
        "/api/data/events",
        owner,
        expect=201,
        json={"d": "2025-08-15T10:00:00", "p": "87011234567"},
    )
    assert after["d"].startswith("2025-08-15T07:00:00")  # naive 10:00 in Moscow is 07:00 UTC
    assert after["p"] == "+77011234567"  # a national number now reads as Kazakh
    assert before["p"] == "+79161234567"


async def test_is_within_today_follows_the_company_timezone(api, owner):
    # pick a zone where "today" differs from UTC's today right now, if one exists
    now = datetime.now(UTC)
    zone = (
        "Pacific/Kiritimati"
        if now.astimezone(ZoneInfo("Pacific/Kiritimati")).date() != now.date()
        else "Pacific/Pago_Pago"
    )
    local_today = now.astimezone(ZoneInfo(zone)).date()
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "ev", "columns": [{"key": "d", "type": "date"}]},
    )
    await api.call("PATCH", "/api/tenant", owner, expect=200, json={"timezone": zone})
    # a moment inside the company's local today, and one a full day earlier in that zone
    inside = datetime.combine(local_today, datetime.min.time(), ZoneInfo(zone)) + timedelta(
        hours=12
    )
    outside = inside - timedelta(days=1)
    for moment in (inside, outside):
        await api.call("POST", "/api/data/ev", owner, expect=201, json={"d": moment.isoformat()})
    flt = json.dumps([{"field": "d", "op": "is_within", "value": "today"}])
    page = await api.call("GET", "/api/data/ev", owner, expect=200, params={"filters": flt})
    assert [item["d"][:13] for item in page["items"]] == [inside.astimezone(UTC).isoformat()[:13]]
