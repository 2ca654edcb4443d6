"""Rows through HTTP (docs/api.md "Rows"), and what is stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from tests.support.api import CONTRACTS, rows_of

SEED_ROW = {
    "company_name": "ООО Ромашка",
    "total_sum": 150000.50,
    "doc_date": "2025-08-15T10:00:00",
    "is_archived": False,
    "status": 11,
}


async def test_seed_example_as_written(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    row = await api.call("POST", "/api/data/contracts", owner, json=SEED_ROW, expect=201)
    assert row["company_name"] == "ООО Ромашка"
    assert row["total_sum"] == 150000.5
    assert row["doc_date"] == "2025-08-15T10:00:00Z"
    assert row["is_archived"] is False and row["status"] == 11
    assert row["_created_by"] == owner.user_id and row["_created_at"].endswith("Z")
    assert ObjectId.is_valid(row["id"])
    assert await api.call("GET", f"/api/data/contracts/{row['id']}", owner, expect=200) == row


async def test_stored_documents_use_native_bson_types(api, owner, client, create_table):
    await create_table(
        owner,
        "all_types",
        [
            {"key": "s", "type": "string"},
            {"key": "i", "type": "integer"},
            {"key": "f", "type": "float"},
            {"key": "d", "type": "date"},
            {"key": "t", "type": "time"},
            {"key": "b", "type": "boolean"},
            {"key": "sel", "type": "select", "options": [{"id": 3, "label": "x"}]},
            {"key": "e", "type": "email"},
            {"key": "p", "type": "phone"},
            {"key": "u", "type": "url"},
        ],
    )
    await api.call(
        "POST",
        "/api/data/all_types",
        owner,
        expect=201,
        json={
            "s": "text",
            "i": 7,
            "f": 2.5,
            "d": "2025-08-15",
            "t": "9:05",
            "b": True,
            "sel": 3,
            "e": "A@Example.com",
            "p": "8 916 123-45-67",
            "u": "https://example.com",
        },
    )
    doc = await (await rows_of(client, owner, "all_types")).find_one({})
    assert isinstance(doc["_id"], ObjectId)
    assert type(doc["i"]) is int and doc["i"] == 7
    assert type(doc["f"]) is float
    assert isinstance(doc["d"], datetime) and doc["d"].astimezone(UTC) == datetime(
        2025, 8, 15, tzinfo=UTC
    )
    assert doc["t"] == "09:05:00" and doc["b"] is True and doc["sel"] == 3
    assert doc["e"] == "A@example.com" and doc["p"] == "+79161234567"
    assert isinstance(doc["_created_at"], datetime) and doc["_created_by"] == owner.user_id
    # an analyst's query works on the stored values
    count = await (await rows_of(client, owner, "all_types")).count_documents({"i": {"$gt": 5}})
    assert count == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"company_name": "A", "unknown": 1}, "unknown"),
        ({"company_name": 5}, "company_name"),
        ({"company_name": "A", "total_sum": "100"}, "total_sum"),
        ({"company_name": "A", "doc_date": "2025-02-30"}, "doc_date"),
        ({"company_name": "A", "status": 99}, "status"),
        ({"company_name": {"$gt": ""}}, "company_name"),
        ({"company_name": "A", "total_sum": {"$where": "1"}}, "total_sum"),
        ({"total_sum": 1}, "company_name"),
        ({"company_name": None}, "company_name"),
        ({"company_name": "A", "id": "x"}, "id"),
        ({"company_name": "A", "_created_at": "2020-01-01"}, "_created_at"),
        ({"company_name": "x" * 10_001}, "company_name"),
    ],
)
async def test_bad_rows_are_400_and_store_nothing(api, owner, client, body, field, create_table):
    await create_table(owner, **CONTRACTS)
    error = (await api.call("POST", "/api/data/contracts", owner, json=body, expect=400))["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert await (await rows_of(client, owner, "contracts")).count_documents({}) == 0


async def test_bad_bodies(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    body = await api.call("POST", "/api/data/contracts", owner, json=[1], expect=400)
    assert body["error"]["details"][0]["field"] == "body"
    body = await api.call(
        "POST",
        "/api/data/contracts",
        owner,
        data=b"{oops",
        headers={"Content-Type": "application/json"},
        expect=400,
    )
    assert body["error"]["code"] == "invalid_json"


async def test_integer_column_rejects_fractions(api, owner, create_table):
    await create_table(owner, "t")
    body = await api.call("POST", "/api/data/t", owner, json={"n": 1.5}, expect=400)
    assert body["error"]["details"] == [{"field": "n", "message": "must be a whole number"}]
    await api.call("POST", "/api/data/t", owner, json={"n": 2.0}, expect=201)


@pytest.mark.parametrize("row_id", ["nope", "0" * 23, "g" * 24, "0" * 25, "%24where"])
async def test_malformed_row_ids_are_404(api, owner, row_id, create_table):
    await create_table(owner, **CONTRACTS)
    for method in ("GET", "PATCH", "DELETE"):
        body = await api.call(
            method, f"/api/data/contracts/{row_id}", owner, json={} if method == "PATCH" else None
        )
        assert body["error"]["code"] == "not_found", (method, row_id)


async def test_patch_and_delete(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    row = await api.call("POST", "/api/data/contracts", owner, json=SEED_ROW, expect=201)
    patched = await api.call(
        "PATCH",
        f"/api/data/contracts/{row['id']}",
        owner,
        json={"total_sum": 1, "status": None},
        expect=200,
    )
    assert patched["total_sum"] == 1.0 and "status" not in patched
    assert patched["company_name"] == "ООО Ромашка"
    # as instants: the text of a time on a whole second has no fraction ('...38Z' < '...38.009Z')
    assert _instant(patched["_updated_at"]) >= _instant(row["_updated_at"])
    stored = await (await rows_of(client, owner, "contracts")).find_one({})
    assert "status" not in stored
    bad = await api.call(
        "PATCH", f"/api/data/contracts/{row['id']}", owner, json={"company_name": None}, expect=400
    )
    assert bad["error"]["details"][0]["field"] == "company_name"
    await api.call("DELETE", f"/api/data/contracts/{row['id']}", owner, expect=204)
    await api.call("GET", f"/api/data/contracts/{row['id']}", owner, expect=404)
    await api.call("DELETE", f"/api/data/contracts/{row['id']}", owner, expect=404)


async def test_unique_conflict_names_the_column(api, owner, client, create_table):
    await create_table(
        owner,
        "people",
        [
            {"key": "email", "type": "email", "unique": True},
            {"key": "name", "type": "string"},
        ],
    )
    await api.call("POST", "/api/data/people", owner, json={"email": "a@x.com"}, expect=201)
    # rows without a value do not collide
    await api.call("POST", "/api/data/people", owner, json={"name": "n1"}, expect=201)
    await api.call("POST", "/api/data/people", owner, json={"name": "n2"}, expect=201)
    body = await api.call("POST", "/api/data/people", owner, json={"email": "a@X.com"}, expect=409)
    assert body["error"]["details"][0]["field"] == "email"
    assert await (await rows_of(client, owner, "people")).count_documents({}) == 3


async def test_bulk_create_all_or_nothing(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    items = [{"company_name": f"C{i}", "total_sum": i} for i in range(5)]
    items[3] = {"company_name": "bad", "total_sum": "x"}
    items[4] = {"nope": 1}
    body = await api.call(
        "POST", "/api/data/contracts/bulk", owner, json={"items": items}, expect=400
    )
    fields = [d["field"] for d in body["error"]["details"]]
    assert fields == ["items.3.total_sum", "items.4.nope", "items.4.company_name"]
    assert await (await rows_of(client, owner, "contracts")).count_documents({}) == 0
    good = [{"company_name": f"C{i}", "total_sum": i} for i in range(5)]
    created = await api.call(
        "POST", "/api/data/contracts/bulk?return=rows", owner, json={"items": good}, expect=201
    )
    assert [r["company_name"] for r in created["items"]] == [f"C{i}" for i in range(5)]
    assert await (await rows_of(client, owner, "contracts")).count_documents({}) == 5


PEOPLE = {
    "key": "people",
    "columns": [
        {"key": "name", "type": "string"},
        {"key": "email", "type": "email"},
        {"key": "phone", "type": "phone"},
    ],
}


async def test_bulk_create_answers_ids_in_input_order_unless_rows_are_asked(api, owner, client):
    await api.call("POST", "/api/meta/tables", owner, json=PEOPLE, expect=201)
    items = [
        {"name": f"R{i}", "email": "Ann@Example.COM", "phone": "8 916 123-45-67"} for i in range(3)
    ]
    created = await api.call(
        "POST", "/api/data/people/bulk", owner, json={"items": items}, expect=201
    )
    assert all(set(item) == {"id"} for item in created["items"])
    for index, item in enumerate(created["items"]):
        row = await api.call("GET", f"/api/data/people/{item['id']}", owner, expect=200)
        assert (row["name"], row["email"], row["phone"]) == (
            f"R{index}",
            "Ann@example.com",
            "+79161234567",
        )
    rows = await api.call(
        "POST", "/api/data/people/bulk?return=rows", owner, json={"items": items[:1]}, expect=201
    )
    assert rows["items"][0]["email"] == "Ann@example.com" and "id" in rows["items"][0]
    bad = await api.call(
        "POST", "/api/data/people/bulk?return=all", owner, json={"items": items}, expect=400
    )
    assert bad["error"]["code"] == "validation_error"
    assert bad["error"]["details"][0]["field"] == "return"
    assert await (await rows_of(client, owner, "people")).count_documents({}) == 4


async def test_bulk_create_reports_a_repeated_bad_value_at_every_item(api, owner, client):
    await api.call("POST", "/api/meta/tables", owner, json=PEOPLE, expect=201)
    items = [{"name": "A", "email": "not-an-email", "phone": "12"} for _ in range(3)]
    body = await api.call("POST", "/api/data/people/bulk", owner, json={"items": items}, expect=400)
    fields = [d["field"] for d in body["error"]["details"]]
    assert fields == [f"items.{i}.{key}" for i in range(3) for key in ("email", "phone")]
    assert len({d["message"] for d in body["error"]["details"] if "email" in d["field"]}) == 1
    assert await (await rows_of(client, owner, "people")).count_documents({}) == 0


async def test_bulk_create_unique_conflicts_store_nothing(api, owner, client, create_table):
    await create_table(owner, "t", [{"key": "code", "type": "string", "unique": True}])
    await api.call("POST", "/api/data/t", owner, json={"code": "taken"}, expect=201)
    within = await api.call(
        "POST",
        "/api/data/t/bulk",
        owner,
        expect=409,
        json={"items": [{"code": "a"}, {"code": "a"}]},
    )
    assert within["error"]["details"][0]["field"] == "items.1.code"
    existing = await api.call(
        "POST",
        "/api/data/t/bulk",
        owner,
        expect=409,
        json={"items": [{"code": "b"}, {"code": "taken"}]},
    )
    assert existing["error"]["details"][0]["field"] == "items.1.code"
    assert await (await rows_of(client, owner, "t")).count_documents({}) == 1


async def test_bulk_update_and_delete(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    created = await api.call(
        "POST",
        "/api/data/contracts/bulk",
        owner,
        expect=201,
        json={"items": [{"company_name": f"C{i}"} for i in range(3)]},
    )
    ids = [r["id"] for r in created["items"]]
    bad = await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=400,
        json={"items": [{"id": ids[0], "total_sum": 1}, {"id": ids[1], "total_sum": "x"}]},
    )
    assert bad["error"]["details"][0]["field"] == "items.1.total_sum"
    missing = await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=404,
        json={"items": [{"id": ids[0], "total_sum": 1}, {"id": str(ObjectId()), "total_sum": 2}]},
    )
    assert missing["error"]["details"][0]["field"] == "items.1.id"
    db = await rows_of(client, owner, "contracts")
    assert await db.count_documents({"total_sum": {"$exists": True}}) == 0
    updated = await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=200,
        json={"items": [{"id": ids[0], "total_sum": 1}, {"id": ids[2], "total_sum": 3}]},
    )
    assert [r["total_sum"] for r in updated["items"]] == [1.0, 3.0]
    deleted = await api.call(
        "POST", "/api/data/contracts/bulk-delete", owner, expect=200, json={"ids": ids[:2]}
    )
    assert deleted == {"deleted": 2}
    assert await db.count_documents({}) == 1
    bad_ids = await api.call(
        "POST", "/api/data/contracts/bulk-delete", owner, expect=400, json={"ids": ["x"]}
    )
    assert bad_ids["error"]["details"][0]["field"] == "ids.0"


async def test_pagination_over_ties_has_no_repeats_or_gaps(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    items = [{"company_name": f"C{i}", "total_sum": i % 3} for i in range(23)]
    await api.call("POST", "/api/data/contracts/bulk", owner, json={"items": items}, expect=201)
    for order in ("asc", "desc"):
        seen = []
        offset = 0
        while True:
            page = await api.call(
                "GET",
                f"/api/data/contracts?sort_by=total_sum&sort_order={order}&limit=4&offset={offset}",
                owner,
                expect=200,
            )
            assert page["total"] == 23 and page["limit"] == 4
            seen.extend(page["items"])
            if len(page["items"]) < 4:
                break
            offset += 4
        assert len(seen) == 23 and len({r["id"] for r in seen}) == 23
        sums = [r["total_sum"] for r in seen]
        assert sums == sorted(sums, reverse=order == "desc")


async def test_list_parameters(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    for name in ("b", "a", "c"):
        await api.call(
            "POST", "/api/data/contracts", owner, json={"company_name": name}, expect=201
        )
    page = await api.call("GET", "/api/data/contracts?sort_by=company_name", owner, expect=200)
    assert [r["company_name"] for r in page["items"]] == ["a", "b", "c"]
    assert page["limit"] == 50 and page["offset"] == 0
    page = await api.call(
        "GET", "/api/data/contracts?sort_by=_created_at&sort_order=desc", owner, expect=200
    )
    assert [r["company_name"] for r in page["items"]] == ["c", "a", "b"]
    for bad in (
        "sort_by=nope",
        "limit=0",
        "limit=1001",
        "offset=-1",
        "sort_order=up",
        "limit=x",
        "unknown=1",
    ):
        body = await api.call("GET", f"/api/data/contracts?{bad}", owner, expect=400)
        assert body["error"]["code"] == "validation_error", bad


async def test_bulk_create_parses_each_distinct_phone_and_email_once(api, owner, monkeypatch):
    import email_validator
    import phonenumbers

    await api.call("POST", "/api/meta/tables", owner, json=PEOPLE, expect=201)
    calls = {"phone": 0, "email": 0}
    parse, validate = phonenumbers.parse, email_validator.validate_email

    def counting_parse(*args, **kwargs):
        calls["phone"] += 1
        return parse(*args, **kwargs)

    def counting_validate(*args, **kwargs):
        calls["email"] += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(phonenumbers, "parse", counting_parse)
    monkeypatch.setattr(email_validator, "validate_email", counting_validate)
    items = [
        {"name": str(i), "email": f"a{i % 2}@example.com", "phone": f"+7916123456{i % 3}"}
        for i in range(30)
    ]
    await api.call("POST", "/api/data/people/bulk", owner, json={"items": items}, expect=201)
    assert calls == {"phone": 3, "email": 2}
    calls.update(phone=0, email=0)  # the next request parses again
    await api.call("POST", "/api/data/people/bulk", owner, json={"items": items[:1]}, expect=201)
    assert calls == {"phone": 1, "email": 1}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
