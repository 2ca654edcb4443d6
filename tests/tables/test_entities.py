"""Leads, legal entities and individuals (docs/api.md "Standard entities") through HTTP."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from crm_core.tables.builtin import ensure_builtin_tables
from crm_core.tables.columns import ColumnValueError
from crm_core.tables.validators import default_validators
from handlers.routing import SERVICES
from tests.support.api import rows_of, tenant_db

VALIDATORS = default_validators()

# real, published registration numbers (Sberbank, Gazprom, Yandex; an individual's INN)
VALID = [
    ("inn", "7707083893"),
    ("inn", "7736050003"),
    ("inn", "7736207543"),
    ("inn", "500100732259"),
    ("kpp", "773601001"),
    ("kpp", "7736AB001"),
    ("ogrn", "1027700132195"),
    ("ogrn", "1027700070518"),
    ("ogrn", "304500116000157"),
]
INVALID = [
    ("inn", "7707083894", "check digit"),
    ("inn", "500100732258", "check digit"),
    ("inn", "770708389", "10 or 12 digits"),
    ("inn", "77070838931", "10 or 12 digits"),
    ("inn", "77070838٩3", "10 or 12 digits"),
    ("inn", "abcdefghij", "10 or 12 digits"),
    ("kpp", "77360100", "9 characters"),
    ("kpp", "7736ab001", "9 characters"),
    ("kpp", "773601001 ", "9 characters"),
    ("ogrn", "1027700132196", "check digit"),
    ("ogrn", "304500116000158", "check digit"),
    ("ogrn", "10277001321", "13 or 15 digits"),
]


@pytest.mark.parametrize(("name", "value"), VALID)
def test_validators_accept_real_numbers(name, value):
    VALIDATORS.get(name).check(value)


@pytest.mark.parametrize(("name", "value", "reason"), INVALID)
def test_validators_refuse(name, value, reason):
    with pytest.raises(ColumnValueError, match=reason):
        VALIDATORS.get(name).check(value)


ENTITIES = [
    (
        "legal-entities",
        "legal_entities",
        {"name": "ПАО Сбербанк", "inn": "7707083893", "kpp": "773601001", "ogrn": "1027700132195"},
        {"name": "ООО Ромашка"},
        "name",
    ),
    (
        "individuals",
        "individuals",
        {
            "last_name": "Иванов",
            "first_name": "Иван",
            "birth_date": "1990-05-01",
            "phone": "8 916 123-45-67",
        },
        {"last_name": "Петров"},
        "last_name",
    ),
    (
        "leads",
        "leads",
        {"title": "Поставка", "amount": 150000.5, "email": "Buyer@Example.com"},
        {"title": "Аренда", "amount": 50},
        "title",
    ),
]


@pytest.mark.parametrize(("slug", "key", "first", "second", "sort_key"), ENTITIES)
async def test_entity_crud_filters_sort_order_aliases(
    api, client, owner, slug, key, first, second, sort_key
):
    created = await api.call("POST", f"/api/{slug}", owner, json=first, expect=201)
    other = await api.call("POST", f"/api/{slug}", owner, json=second, expect=201)
    got = await api.call("GET", f"/api/{slug}/{created['id']}", owner, expect=200)
    assert got == created
    # the same rows through the generic data API: one engine
    assert await api.call("GET", f"/api/data/{key}/{created['id']}", owner, expect=200) == got
    patched = await api.call(
        "PATCH",
        f"/api/{slug}/{created['id']}",
        owner,
        expect=200,
        json={sort_key: "Яковлев" if key == "individuals" else "Я"},
    )
    assert patched[sort_key] in ("Я", "Яковлев")
    page = await api.call(
        "GET", f"/api/{slug}?sort_by={sort_key}&sort_order=desc", owner, expect=200
    )
    assert [r["id"] for r in page["items"]] == [created["id"], other["id"]]
    flt = quote(
        json.dumps([{"field": sort_key, "op": "starts_with", "value": other[sort_key][:2]}])
    )
    page = await api.call("GET", f"/api/{slug}?filters={flt}", owner, expect=200)
    assert [r["id"] for r in page["items"]] == [other["id"]]
    await api.call(
        "POST",
        f"/api/{slug}/{other['id']}/move",
        owner,
        expect=200,
        json={"before_id": created["id"]},
    )
    page = await api.call("GET", f"/api/{slug}?sort_by=manual", owner, expect=200)
    assert [r["id"] for r in page["items"]] == [other["id"], created["id"]]
    await api.call(
        "PUT",
        f"/api/aliases/{key}",
        owner,
        expect=200,
        json={"table": "Мои " + key, "columns": {sort_key: "Главное"}},
    )
    meta = await api.call("GET", f"/api/meta/tables/{key}", owner, expect=200)
    assert meta["builtin"] is True and meta["display_name"] == "Мои " + key
    column = next(c for c in meta["columns"] if c["key"] == sort_key)
    assert column["display_name"] == "Главное" and column["predefined"] is True
    bulk = await api.call(
        "POST", f"/api/{slug}/bulk", owner, expect=201, json={"items": [second, second]}
    )
    assert len(bulk["items"]) == 2
    await api.call("DELETE", f"/api/{slug}/{created['id']}", owner, expect=204)
    await api.call("GET", f"/api/{slug}/{created['id']}", owner, expect=404)


async def test_entity_validation(api, owner, client):
    for slug, body, field in [
        ("legal-entities", {"name": "X", "inn": "7707083894"}, "inn"),
        ("legal-entities", {"name": "X", "ogrn": "1027700132196"}, "ogrn"),
        ("legal-entities", {"name": "X", "kpp": "12345"}, "kpp"),
        ("legal-entities", {"inn": "7707083893"}, "name"),
        ("individuals", {"middle_name": "Иванович"}, "last_name"),
        ("individuals", {"last_name": "", "first_name": ""}, "last_name"),
        ("leads", {"amount": 5}, "title"),
        ("leads", {"title": "X", "status": 9}, "status"),
    ]:
        body_out = await api.call("POST", f"/api/{slug}", owner, json=body, expect=400)
        assert field in [d["field"] for d in body_out["error"]["details"]], (slug, body)
    for key in ("legal_entities", "individuals", "leads"):
        assert await (await rows_of(client, owner, key)).count_documents({}) == 0
    person = await api.call(
        "POST", "/api/individuals", owner, expect=201, json={"first_name": "Анна"}
    )
    # clearing the only name is refused: at least one of the two stays
    bad = await api.call(
        "PATCH", f"/api/individuals/{person['id']}", owner, expect=400, json={"first_name": None}
    )
    assert bad["error"]["details"][0]["field"] == "last_name"
    lead = await api.call("POST", "/api/leads", owner, json={"title": "T"}, expect=201)
    assert lead["status"] == 1  # "New" by default


async def test_references(api, client, owner, create_user):
    company = await api.call(
        "POST",
        "/api/legal-entities",
        owner,
        expect=201,
        json={"name": "ПАО Сбербанк", "inn": "7707083893"},
    )
    person = await api.call(
        "POST", "/api/individuals", owner, expect=201, json={"last_name": "Иванов"}
    )
    manager = await create_user(owner, "manager")
    lead = await api.call(
        "POST",
        "/api/leads",
        owner,
        expect=201,
        json={
            "title": "Кредитная линия",
            "legal_entity": company["id"],
            "individual": person["id"],
            "assigned_to": manager.user_id,
        },
    )
    assert lead["legal_entity"] == company["id"]
    stored = await (await rows_of(client, owner, "leads")).find_one({})
    assert (
        str(stored["legal_entity"]) == company["id"]
        and type(stored["legal_entity"]).__name__ == "ObjectId"
    )
    expanded = await api.call(
        "GET", f"/api/leads/{lead['id']}?expand=legal_entity,individual", owner, expect=200
    )
    assert expanded["legal_entity"]["name"] == "ПАО Сбербанк"
    assert expanded["individual"]["last_name"] == "Иванов"
    page = await api.call("GET", "/api/leads?expand=legal_entity", owner, expect=200)
    assert page["items"][0]["legal_entity"]["inn"] == "7707083893"
    await api.call("GET", "/api/leads?expand=title", owner, expect=400)
    flt = quote(json.dumps([{"field": "legal_entity", "value": company["id"]}]))
    page = await api.call("GET", f"/api/leads?filters={flt}", owner, expect=200)
    assert page["total"] == 1
    flt = quote(json.dumps([{"field": "assigned_to", "op": "in", "value": [manager.user_id]}]))
    assert (await api.call("GET", f"/api/leads?filters={flt}", owner, expect=200))["total"] == 1
    # missing rows, other tenants' rows and users are 400s naming the field
    other = await api.register()
    foreign_company = await api.call(
        "POST", "/api/legal-entities", other, expect=201, json={"name": "Чужая"}
    )
    for body, field in [
        ({"title": "X", "legal_entity": "0" * 24}, "legal_entity"),
        ({"title": "X", "legal_entity": foreign_company["id"]}, "legal_entity"),
        ({"title": "X", "legal_entity": "nope"}, "legal_entity"),
        ({"title": "X", "individual": company["id"]}, "individual"),
        ({"title": "X", "assigned_to": other.user_id}, "assigned_to"),
    ]:
        body_out = await api.call("POST", "/api/leads", owner, json=body, expect=400)
        assert body_out["error"]["details"][0]["field"] == field
    assert await (await rows_of(client, owner, "leads")).count_documents({}) == 1
    bulk = await api.call(
        "POST",
        "/api/leads/bulk",
        owner,
        expect=400,
        json={"items": [{"title": "ok"}, {"title": "bad", "legal_entity": "0" * 24}]},
    )
    assert bulk["error"]["details"][0]["field"] == "items.1.legal_entity"
    # deleting a referenced row clears the reference instead of leaving it dangling
    await api.call("DELETE", f"/api/legal-entities/{company['id']}", owner, expect=204)
    after = await api.call("GET", f"/api/leads/{lead['id']}", owner, expect=200)
    assert "legal_entity" not in after and after["individual"] == person["id"]


async def test_predefined_columns_are_protected(api, owner):
    await api.call("DELETE", "/api/meta/tables/leads/columns/title", owner, expect=409)
    await api.call(
        "PATCH", "/api/meta/tables/leads/columns/amount", owner, expect=409, json={"type": "string"}
    )
    await api.call("DELETE", "/api/meta/tables/leads", owner, expect=409)
    # tenants add their own columns, and may remove those
    await api.call(
        "POST",
        "/api/meta/tables/leads/columns",
        owner,
        expect=201,
        json={"key": "region", "type": "string"},
    )
    lead = await api.call(
        "POST", "/api/leads", owner, json={"title": "T", "region": "Юг"}, expect=201
    )
    assert lead["region"] == "Юг"
    await api.call("DELETE", "/api/meta/tables/leads/columns/region", owner, expect=200)


async def test_custom_tables_can_link_and_use_validators(api, owner, create_table):
    await create_table(
        owner,
        "contracts",
        [
            {"key": "client", "type": "link", "table": "legal_entities"},
            {"key": "tax_id", "type": "string", "validators": ["inn"]},
        ],
    )
    company = await api.call(
        "POST", "/api/legal-entities", owner, expect=201, json={"name": "ПАО Сбербанк"}
    )
    await api.call(
        "POST",
        "/api/data/contracts",
        owner,
        expect=201,
        json={"client": company["id"], "tax_id": "7707083893"},
    )
    bad = await api.call(
        "POST", "/api/data/contracts", owner, expect=400, json={"tax_id": "7707083894"}
    )
    assert bad["error"]["details"][0]["field"] == "tax_id"
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=400,
        json={"key": "t2", "columns": [{"key": "x", "type": "link", "table": "nowhere"}]},
    )
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=400,
        json={"key": "t3", "columns": [{"key": "x", "type": "string", "validators": ["snils"]}]},
    )
    # a table that links point at cannot be deleted from under them
    await create_table(owner, "parent")
    await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        expect=201,
        json={"key": "parent", "type": "link", "table": "parent"},
    )
    await api.call("DELETE", "/api/meta/tables/parent", owner, expect=409)


async def test_entity_permissions(api, client, owner, create_user):
    viewer = await create_user(owner, "viewer")
    manager = await create_user(owner, "manager")
    await api.call("POST", "/api/leads", manager, json={"title": "M"}, expect=201)
    assert (await api.call("GET", "/api/leads", viewer, expect=200))["total"] == 1
    await api.call("POST", "/api/leads", viewer, json={"title": "V"}, expect=403)
    # managers work with entities but do not restructure them
    await api.call(
        "POST",
        "/api/meta/tables/leads/columns",
        manager,
        expect=403,
        json={"key": "x", "type": "string"},
    )
    role = await api.call(
        "POST", "/api/roles", owner, expect=201, json={"name": "Nothing", "permissions": []}
    )
    nobody = await create_user(owner, "viewer")
    await api.call(
        "PATCH", f"/api/users/{nobody.user_id}", owner, expect=200, json={"role_ids": [role["id"]]}
    )
    body = await api.call("GET", "/api/leads", nobody, expect=403)
    assert "leads.read" in body["error"]["message"]


async def test_migration_adds_builtin_tables_to_existing_tenants_idempotently(api, client, owner):
    db = tenant_db(client, owner)
    await db["_tables"].delete_many({"key": {"$in": ["leads", "individuals"]}})
    await db["_tables"].update_one(
        {"key": "legal_entities"}, {"$pull": {"columns": {"key": "website"}}}
    )
    first = await ensure_builtin_tables(db)
    assert first == ["added website to legal_entities", "created individuals", "created leads"]
    assert await ensure_builtin_tables(db) == []
    await api.call("POST", "/api/leads", owner, json={"title": "after migration"}, expect=201)
    services = client.app[SERVICES]
    from crm_core.tables.builtin import migrate_all

    assert await migrate_all(services.storage) == 0
