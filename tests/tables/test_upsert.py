"""`POST /api/data/{table}/bulk` with `upsert_on`: insert or update per item, all or nothing."""

from __future__ import annotations

from tests.support.api import add_user

COLUMNS = [
    {"key": "email", "type": "email", "unique": True},
    {"key": "name", "type": "string", "required": True},
    {"key": "code", "type": "string", "unique": True},
    {"key": "n", "type": "integer"},
]


async def make_table(api, owner, key="people"):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": COLUMNS}
    )
    await api.call(
        "POST",
        f"/api/data/{key}",
        owner,
        expect=201,
        json={"email": "ann@example.com", "name": "Ann", "code": "A", "n": 1},
    )


async def rows_of(api, owner, key="people"):
    page = await api.call("GET", f"/api/data/{key}?sort_by=email", owner, expect=200)
    return [{k: r.get(k) for k in ("email", "name", "code", "n")} for r in page["items"]]


async def test_upsert_creates_and_updates(api, owner):
    await make_table(api, owner)
    before = await rows_of(api, owner)
    body = await api.call(
        "POST",
        "/api/data/people/bulk?return=rows",
        owner,
        expect=201,
        json={
            "upsert_on": "email",
            "items": [
                {"email": "bob@example.com", "name": "Bob"},
                {"email": "ann@EXAMPLE.com", "n": 5, "code": None},
            ],
        },
    )
    assert body["created"] == [0]
    assert body["updated"] == [1]
    assert [r["email"] for r in body["items"]] == ["bob@example.com", "ann@example.com"]
    assert before[0]["n"] == 1
    assert await rows_of(api, owner) == [
        # only the given columns change; null clears
        {"email": "ann@example.com", "name": "Ann", "code": None, "n": 5},
        {"email": "bob@example.com", "name": "Bob", "code": None, "n": None},
    ]


async def test_upsert_needs_a_unique_known_column(api, owner):
    await make_table(api, owner)
    for column, message in (("name", "must be unique"), ("nope", "is not a column")):
        body = await api.call(
            "POST",
            "/api/data/people/bulk",
            owner,
            expect=400,
            json={"upsert_on": column, "items": [{"email": "x@example.com", "name": "X"}]},
        )
        assert body["error"]["details"][0]["field"] == "upsert_on"
        assert message in body["error"]["details"][0]["message"]


async def test_upsert_is_all_or_nothing(api, owner):
    await make_table(api, owner)
    before = await rows_of(api, owner)
    body = await api.call(
        "POST",
        "/api/data/people/bulk",
        owner,
        expect=400,
        json={
            "upsert_on": "email",
            "items": [
                {"email": "ann@example.com", "n": 7},
                {"name": "no email"},
                {"email": "new@example.com", "name": "New", "n": "many"},
                {"email": "ann@example.com", "n": 8},
            ],
        },
    )
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"items.1.email", "items.2.n", "items.3.email"}
    assert await rows_of(api, owner) == before


async def test_upsert_unique_conflict_is_409_and_stores_nothing(api, owner):
    await make_table(api, owner)
    before = await rows_of(api, owner)
    body = await api.call(
        "POST",
        "/api/data/people/bulk",
        owner,
        expect=409,
        json={
            "upsert_on": "email",
            "items": [
                {"email": "c@example.com", "name": "C", "code": "C"},
                {"email": "d@example.com", "name": "D", "code": "A"},  # Ann's code
            ],
        },
    )
    assert body["error"]["code"] == "conflict"
    assert body["error"]["details"] == [
        {"field": "items.1.code", "message": "already used by another row"}
    ]
    assert await rows_of(api, owner) == before


async def test_upsert_may_move_a_unique_value_between_updated_rows(api, owner):
    await make_table(api, owner)
    await api.call(
        "POST",
        "/api/data/people/bulk",
        owner,
        expect=201,
        json={
            "upsert_on": "email",
            "items": [{"email": "b@example.com", "name": "B", "code": "B"}],
        },
    )
    body = await api.call(
        "POST",
        "/api/data/people/bulk",
        owner,
        expect=409,
        json={"upsert_on": "email", "items": [{"email": "b@example.com", "code": "A"}]},
    )
    assert body["error"]["details"][0]["field"] == "items.0.code"


async def test_upsert_needs_write_access(api, client, owner):
    await make_table(api, owner)
    viewer = await add_user(api, client, owner, "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "people", "user_id": viewer.user_id, "access": "read"},
    )
    await api.call(
        "POST",
        "/api/data/people/bulk",
        viewer,
        expect=403,
        json={"upsert_on": "email", "items": [{"email": "x@example.com", "name": "X"}]},
    )


async def test_upsert_on_a_builtin_table(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables/leads/columns",
        owner,
        expect=201,
        json={"key": "external_id", "type": "string", "unique": True},
    )
    first = await api.call(
        "POST",
        "/api/leads/bulk",
        owner,
        expect=201,
        json={"upsert_on": "external_id", "items": [{"external_id": "x1", "title": "Deal"}]},
    )
    assert first["created"] == [0]
    assert list(first["items"][0]) == ["id"]  # ids unless ?return=rows, as bulk create
    again = await api.call(
        "POST",
        "/api/leads/bulk?return=rows",
        owner,
        expect=201,
        json={"upsert_on": "external_id", "items": [{"external_id": "x1", "amount": 10}]},
    )
    assert again["updated"] == [0]
    assert again["items"][0]["title"] == "Deal"
    assert again["items"][0]["amount"] == 10
    page = await api.call("GET", "/api/leads", owner, expect=200)
    assert page["total"] == 1
