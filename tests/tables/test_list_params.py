"""No input produces a 500 (issue #10 §3): every list-valued parameter is de-duplicated or
refused with 400. One case per parameter."""

from __future__ import annotations

import json

import pytest

from models.accounts import User


@pytest.fixture
async def linked(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "co", "columns": [{"key": "name", "type": "string"}]},
    )
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "deals",
            "columns": [
                {"key": "co", "type": "link", "table": "co"},
                {"key": "co2", "type": "link", "table": "co"},
                {"key": "n", "type": "integer"},
            ],
        },
    )
    company = await api.call("POST", "/api/data/co", owner, json={"name": "Acme"}, expect=201)
    deal = await api.call(
        "POST", "/api/data/deals", owner, json={"co": company["id"], "n": 1}, expect=201
    )
    return company, deal


@pytest.mark.parametrize("expand", ["co,co", "co,co2,co", " co , co ", "co,,co"])
async def test_expand_naming_a_column_twice_expands_it_once(api, owner, linked, expand):
    company, deal = linked
    page = await api.call("GET", "/api/data/deals", owner, params={"expand": expand}, expect=200)
    assert page["items"][0]["co"]["name"] == "Acme"
    row = await api.call(
        "GET", f"/api/data/deals/{deal['id']}", owner, params={"expand": expand}, expect=200
    )
    assert row["co"]["id"] == company["id"] and row["co"]["name"] == "Acme"


@pytest.mark.parametrize("sort", ["n,n", "n,-n", "id,_id", "-_created_at,_created_at"])
async def test_sort_naming_a_key_twice_is_refused(api, owner, linked, sort):
    body = await api.call("GET", "/api/data/deals", owner, params={"sort": sort}, expect=400)
    assert body["error"]["details"][0]["field"] == "sort"
    assert "named twice" in body["error"]["message"]


async def test_bulk_delete_with_repeated_ids_deletes_once(api, owner, linked):
    _, deal = linked
    body = await api.call(
        "POST", "/api/data/deals/bulk-delete", owner, json={"ids": [deal["id"]] * 3}, expect=200
    )
    assert body == {"deleted": 1}


async def test_bulk_update_with_a_repeated_id_is_refused(api, owner, linked):
    _, deal = linked
    items = [{"id": deal["id"], "n": 5}, {"id": deal["id"], "n": 6}]
    body = await api.call("PATCH", "/api/data/deals/bulk", owner, json={"items": items}, expect=400)
    assert body["error"]["details"][0]["field"] == "items.1.id"
    row = await api.call("GET", f"/api/data/deals/{deal['id']}", owner, expect=200)
    assert row["n"] == 1


async def test_view_lists_with_repeats_are_refused(api, owner, linked):
    await api.call(
        "PUT",
        "/api/meta/tables/deals/view",
        owner,
        json={"column_order": ["n", "n"], "hidden": ["co", "co"]},
        expect=400,
    )


async def test_filter_lists_with_repeats_work(api, owner, linked):
    company, deal = linked
    for condition in (
        {"field": "n", "op": "in", "value": [1, 1]},
        {"field": "id", "op": "in", "value": [deal["id"], deal["id"]]},
        {"field": "co", "op": "in", "value": [company["id"], company["id"]]},
    ):
        page = await api.call(
            "GET", "/api/data/deals", owner, params={"filters": json.dumps([condition])}, expect=200
        )
        assert page["total"] == 1


async def test_select_options_with_repeated_labels_or_ids_are_refused(api, owner, linked):
    for options, field in (
        ([{"label": "a"}, {"label": "a"}], "options.1.label"),
        ([{"id": 1, "label": "a"}, {"id": 1, "label": "b"}], "options.1.id"),
    ):
        body = await api.call(
            "POST",
            "/api/meta/tables/deals/columns",
            owner,
            json={"key": "s", "type": "select", "options": options},
            expect=400,
        )
        assert body["error"]["details"][0]["field"] == field


async def test_select_option_ids_do_not_overflow(api, owner, linked):
    body = await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        json={
            "key": "s",
            "type": "select",
            "options": [{"id": 2**63 - 1, "label": "top"}, {"label": "next"}],
        },
        expect=400,
    )
    assert body["error"]["details"][0]["field"] == "options.1.id"


async def test_role_ids_and_permission_codes_with_repeats_are_stored_once(api, owner):
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    viewer = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    user = await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": "twice@example.com",
            "full_name": "T",
            "password": "password1",
            "role_ids": [viewer, viewer],
        },
    )
    assert user["role_ids"] == [viewer]
    patched = await api.call(
        "PATCH", f"/api/users/{user['id']}", owner, json={"role_ids": [viewer] * 3}, expect=200
    )
    assert patched["role_ids"] == [viewer]
    assert (await User.get(user["id"])).role_ids == [viewer]
    role = await api.call(
        "POST",
        "/api/roles",
        owner,
        json={"name": "R", "permissions": ["users.read", "users.read"]},
        expect=201,
    )
    assert role["permissions"] == ["users.read"]


async def test_sms_recipients_with_repeats_are_sent_once(api, owner):
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "c",
            "text": "t",
            "recipients": [{"phone": "+79161234567"}, {"phone": "8 916 123-45-67"}],
        },
    )
    assert campaign["duplicates"] == 1 and campaign["counts"]["total"] == 1
