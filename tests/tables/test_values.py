"""Values stored exactly or refused (issue #10 §4): the 64-bit integer range on every path,
`blank`/`not_blank` without a value, and unique columns over rows without a value."""

from __future__ import annotations

import json

import pytest

from tests.support.api import rows_of

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
OUT_OF_RANGE = [INT64_MIN - 1, INT64_MAX + 1, -(2**64), 2**64, 10**30, -(10**30)]


@pytest.fixture
async def numbers(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "nums",
            "columns": [{"key": "n", "type": "integer"}, {"key": "s", "type": "string"}],
        },
    )
    return "/api/data/nums"


async def _stored(client, owner):
    docs = await (await rows_of(client, owner, "nums")).find({}, {"n": 1}).to_list(None)
    return sorted(doc.get("n") for doc in docs if "n" in doc)


def _raw(value) -> bytes:
    """JSON with the integer written out in full, as a client would send it."""
    return json.dumps(value).encode()


async def _post_raw(client, owner, path, body, method="POST"):
    return await client.request(
        method,
        path,
        data=_raw(body),
        headers={**owner.headers, "Content-Type": "application/json"},
    )


async def test_integers_at_the_ends_of_the_range_are_stored_exactly(api, client, owner, numbers):
    for value in (INT64_MIN, INT64_MAX, 2**53 + 1, -(2**53) - 1):
        row = await api.call("POST", numbers, owner, json={"n": value}, expect=201)
        assert row["n"] == value
    assert await _stored(client, owner) == sorted([INT64_MIN, INT64_MAX, 2**53 + 1, -(2**53) - 1])


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, 1e300, -9.3e18, 2.0**60])
async def test_integers_outside_int64_are_refused_on_create(api, client, owner, numbers, value):
    resp = await _post_raw(client, owner, numbers, {"n": value})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error" and error["details"][0]["field"] == "n"
    assert await _stored(client, owner) == []


async def test_integers_outside_int64_are_refused_on_every_write_path(api, client, owner, numbers):
    row = await api.call("POST", numbers, owner, json={"n": 1}, expect=201)
    for value in (INT64_MIN - 1, INT64_MAX + 1):
        resp = await _post_raw(client, owner, f"{numbers}/{row['id']}", {"n": value}, "PATCH")
        assert resp.status == 400, "patch"
        resp = await _post_raw(
            client, owner, f"{numbers}/bulk", {"items": [{"n": 2}, {"n": value}]}
        )
        assert resp.status == 400, "bulk create"
        assert (await resp.json())["error"]["details"][0]["field"] == "items.1.n"
        resp = await _post_raw(
            client, owner, f"{numbers}/bulk", {"items": [{"id": row["id"], "n": value}]}, "PATCH"
        )
        assert resp.status == 400, "bulk update"
        resp = await _post_raw(
            client, owner, f"{numbers}/bulk", {"filters": [], "values": {"n": value}}, "PATCH"
        )
        assert resp.status == 400, "update by filter"
    assert await _stored(client, owner) == [1]


async def test_integer_defaults_outside_int64_are_refused(api, client, owner, numbers):
    for value in (INT64_MIN - 1, INT64_MAX + 1):
        resp = await _post_raw(
            client,
            owner,
            "/api/meta/tables/nums/columns",
            {"key": "d", "type": "integer", "default": value},
        )
        assert resp.status == 400
    table = await api.call("GET", "/api/meta/tables/nums", owner, expect=200)
    assert [c["key"] for c in table["columns"]] == ["n", "s"]


@pytest.mark.parametrize("op", ["eq", "gt", "lte", "in", "between"])
async def test_integer_filter_operands_outside_int64_are_refused(api, client, owner, numbers, op):
    value = INT64_MIN - 1
    operand = [value] if op == "in" else [value, 0] if op == "between" else value
    filters = json.dumps([{"field": "n", "op": op, "value": operand}])
    resp = await client.get(numbers, params={"filters": filters}, headers=owner.headers)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_filter"


async def test_conversion_to_integer_is_exact_or_refused(api, client, owner, numbers):
    await api.call("POST", numbers, owner, json={"s": "9007199254740993.0"}, expect=201)
    await api.call(
        "PATCH", "/api/meta/tables/nums/columns/s", owner, json={"type": "integer"}, expect=200
    )
    docs = await (await rows_of(client, owner, "nums")).find({"s": {"$exists": True}}).to_list(None)
    assert [d["s"] for d in docs] == [9007199254740993]
    for text in ("-9223372036854775809", "1e999999999", "12345678901234567891.0"):
        await api.call(
            "PATCH", "/api/meta/tables/nums/columns/s", owner, json={"type": "string"}, expect=200
        )
        await api.call("POST", numbers, owner, json={"s": text}, expect=201)
        body = await api.call(
            "PATCH", "/api/meta/tables/nums/columns/s", owner, json={"type": "integer"}, expect=409
        )
        assert body["error"]["details"][0]["failed_rows"] == 1
        docs = await (await rows_of(client, owner, "nums")).find({"s": text}).to_list(None)
        assert len(docs) == 1  # nothing changed
        await (await rows_of(client, owner, "nums")).delete_many({"s": text})


# ---- blank / not_blank ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["blank", "not_blank"])
@pytest.mark.parametrize("value", [True, False, 1, 0, "x", "", [], {}])
async def test_blank_with_a_value_is_refused(api, client, owner, numbers, op, value):
    filters = json.dumps([{"field": "s", "op": op, "value": value}])
    resp = await client.get(numbers, params={"filters": filters}, headers=owner.headers)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_filter" and "takes no value" in error["message"]


@pytest.mark.parametrize("op", ["blank", "not_blank"])
async def test_blank_without_a_value_works(api, client, owner, numbers, op):
    await api.call("POST", numbers, owner, json={"s": "x"}, expect=201)
    await api.call("POST", numbers, owner, json={"n": 1}, expect=201)
    for condition in ({"field": "s", "op": op}, {"field": "s", "op": op, "value": None}):
        page = await api.call(
            "GET", numbers, owner, params={"filters": json.dumps([condition])}, expect=200
        )
        assert page["total"] == 1


# ---- unique over empty rows ----------------------------------------------------------------


async def test_making_a_column_unique_over_rows_without_values(api, client, owner, numbers):
    for _ in range(3):
        await api.call("POST", numbers, owner, json={"s": "no number"}, expect=201)
    await api.call("POST", numbers, owner, json={"n": 5}, expect=201)
    table = await api.call(
        "PATCH", "/api/meta/tables/nums/columns/n", owner, json={"unique": True}, expect=200
    )
    assert table["columns"][0]["unique"] is True
    # empty rows keep not colliding, values do
    await api.call("POST", numbers, owner, json={"s": "still none"}, expect=201)
    body = await api.call("POST", numbers, owner, json={"n": 5}, expect=409)
    assert body["error"]["details"][0]["field"] == "n"
    # a value cleared with null is empty again
    row = await api.call("POST", numbers, owner, json={"n": 6}, expect=201)
    await api.call("PATCH", f"{numbers}/{row['id']}", owner, json={"n": None}, expect=200)
    await api.call("POST", numbers, owner, json={"n": 6}, expect=201)


async def test_both_paths_agree_on_empty_rows(api, client, owner):
    for key, unique_at_start in (("born_unique", True), ("made_unique", False)):
        await api.call(
            "POST",
            "/api/meta/tables",
            owner,
            expect=201,
            json={
                "key": key,
                "columns": [
                    {"key": "code", "type": "string", "unique": unique_at_start},
                    {"key": "note", "type": "string"},
                ],
            },
        )
        for _ in range(2):
            await api.call("POST", f"/api/data/{key}", owner, json={"note": "x"}, expect=201)
        await api.call("POST", f"/api/data/{key}", owner, json={"code": "A"}, expect=201)
        if not unique_at_start:
            await api.call(
                "PATCH",
                f"/api/meta/tables/{key}/columns/code",
                owner,
                json={"unique": True},
                expect=200,
            )
        await api.call("POST", f"/api/data/{key}", owner, json={"note": "y"}, expect=201)
        await api.call("POST", f"/api/data/{key}", owner, json={"code": "A"}, expect=409)
