"""Repeats in what a client sends (docs/api.md "Lists and keys given twice"): a trash item
named twice in one restore is restored once, as a bulk delete's repeated ids are deleted
once; a one-value parameter given twice is a 400 that says so and names it (not a type error
about a list the client did not mean to send)."""

from __future__ import annotations

import pytest

from tests.support.api import Factories


async def test_a_trash_item_named_twice_in_one_restore_is_restored_once(api, owner):
    await Factories(api).table(owner, "t", [{"key": "n", "type": "integer"}])
    rows = [await api.call("POST", "/api/data/t", owner, expect=201, json={"n": n}) for n in (1, 2)]
    for row in rows:
        await api.call("DELETE", f"/api/data/t/{row['id']}", owner, expect=204)
    items = {i["row_id"]: i["id"] for i in (await api.call("GET", "/api/trash", owner))["items"]}
    first, second = items[rows[0]["id"]], items[rows[1]["id"]]

    body = await api.call(
        "POST", "/api/trash/restore", owner, expect=200, json={"ids": [first, second, first]}
    )

    assert [r["n"] for r in body["items"]] == [1, 2]
    listed = await api.call("GET", "/api/data/t?sort=n", owner, expect=200)
    assert [r["n"] for r in listed["items"]] == [1, 2]
    assert (await api.call("GET", "/api/trash", owner, expect=200))["items"] == []


async def test_a_missing_item_is_named_by_its_place_in_the_request(api, owner):
    await Factories(api).table(owner, "t", [{"key": "n", "type": "integer"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"n": 1})
    await api.call("DELETE", f"/api/data/t/{row['id']}", owner, expect=204)
    item = (await api.call("GET", "/api/trash", owner, expect=200))["items"][0]["id"]
    gone = "0" * 24

    body = await api.call(
        "POST", "/api/trash/restore", owner, expect=404, json={"ids": [item, item, gone]}
    )

    assert body["error"]["details"] == [{"field": "ids.2", "message": "not in the trash"}]
    assert len((await api.call("GET", "/api/trash", owner, expect=200))["items"]) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/data/t/aggregate?metrics=count&metrics=sum:n",
        "/api/data/t?sort=n&sort=n",
        "/api/audit?action=a&action=b",
    ],
)
async def test_a_one_value_parameter_given_twice_is_named(api, owner, path):
    await Factories(api).table(owner, "t", [{"key": "n", "type": "integer"}])
    name = path.rsplit("&", 1)[1].split("=")[0]

    body = await api.call("GET", path, owner, expect=400)

    assert body["error"]["details"] == [
        {"field": name, "message": "given more than once; give it once"}
    ]


async def test_a_key_named_twice_in_a_body_is_a_400_naming_it_and_changes_nothing(api, owner):
    await Factories(api).table(owner, "t", [{"key": "n", "type": "integer"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"n": 1})

    resp = await api.client.patch(
        f"/api/data/t/{row['id']}",
        data=b'{"n": 2, "n": 3}',
        headers={**owner.headers, "Content-Type": "application/json"},
    )

    assert resp.status == 400
    assert (await resp.json())["error"]["details"] == [
        {"field": "n", "message": "given twice in one object"}
    ]
    assert (await api.call("GET", f"/api/data/t/{row['id']}", owner, expect=200))["n"] == 1


async def test_a_key_named_twice_in_a_bodys_filter_is_an_invalid_filter(api, owner):
    await Factories(api).table(owner, "t", [{"key": "n", "type": "integer"}])
    await api.call("POST", "/api/data/t", owner, expect=201, json={"n": 1})
    body = b'{"filters": [{"field": "n", "op": "eq", "value": 1, "value": 5}]}'

    resp = await api.client.post(
        "/api/data/t/bulk-delete",
        data=body,
        headers={**owner.headers, "Content-Type": "application/json"},
    )

    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_filter"
    assert error["details"] == [
        {"field": "filters.0", "message": "the key 'value' appears twice in one object"}
    ]
    assert len((await api.call("GET", "/api/data/t", owner, expect=200))["items"]) == 1
