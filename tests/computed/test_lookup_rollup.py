"""Lookup and rollup columns (issue #24 §2, docs/computed.md): the linked row's value and the
values of the rows linking here, computed by `$lookup` in the database; usable in formulas,
filters and sorts; checked when defined; never reaching another company's rows."""

from __future__ import annotations

import json
from urllib.parse import quote

from crm_core.platform.storage import recording
from tests.support.api import Factories, tenant_db

COMPANIES = {
    "key": "companies",
    "columns": [{"key": "name", "type": "string"}, {"key": "city", "type": "string"}],
}
DEALS = {
    "key": "deals",
    "columns": [
        {"key": "title", "type": "string"},
        {"key": "amount", "type": "float"},
        {"key": "signed", "type": "date"},
        {"key": "company", "type": "link", "table": "companies"},
        {"key": "company_city", "type": "lookup", "link": "company", "column": "city"},
    ],
}
ROLLUPS = [
    {
        "key": "deal_count",
        "type": "rollup",
        "table": "deals",
        "link": "company",
        "function": "count",
    },
    {
        "key": "deal_sum",
        "type": "rollup",
        "table": "deals",
        "link": "company",
        "column": "amount",
        "function": "sum",
    },
    {
        "key": "deal_avg",
        "type": "rollup",
        "table": "deals",
        "link": "company",
        "column": "amount",
        "function": "avg",
    },
    {
        "key": "last_signed",
        "type": "rollup",
        "table": "deals",
        "link": "company",
        "column": "signed",
        "function": "max",
    },
    {
        "key": "titles",
        "type": "rollup",
        "table": "deals",
        "link": "company",
        "column": "title",
        "function": "concat",
    },
    {"key": "vip", "type": "formula", "formula": 'IF({deal_sum} >= 100, "VIP", "")'},
]


def path(table: str, **params: object) -> str:
    query = "&".join(
        f"{k}={quote(json.dumps(v) if k == 'filters' else str(v))}" for k, v in params.items()
    )
    return f"/api/data/{table}?{query}"


async def world(api, owner):
    make = Factories(api)
    await make.table(owner, **COMPANIES)
    acme, zeta, none = await make.rows(
        owner,
        "companies",
        [{"name": "Acme", "city": "Омск"}, {"name": "Zeta", "city": "Tver"}, {"name": "None"}],
    )
    await make.table(owner, **DEALS)
    deals = await make.rows(
        owner,
        "deals",
        [
            {"title": "b", "amount": 60, "signed": "2025-01-02", "company": acme["id"]},
            {"title": "a", "amount": 50, "signed": "2025-03-04", "company": acme["id"]},
            {"title": "c", "amount": 5, "company": zeta["id"]},
            {"title": "d", "amount": 1000},
        ],
    )
    for column in ROLLUPS:
        await api.call("POST", "/api/meta/tables/companies/columns", owner, expect=201, json=column)
    return acme, zeta, none, deals


async def test_lookup_shows_the_linked_rows_value(api, owner):
    await world(api, owner)
    page = await api.call("GET", path("deals", sort="title"), owner, expect=200)
    assert [r.get("company_city") for r in page["items"]] == ["Омск", "Омск", "Tver", None]
    page = await api.call(
        "GET",
        path("deals", filters=[{"field": "company_city", "op": "eq", "value": "Tver"}]),
        owner,
        expect=200,
    )
    assert [r["title"] for r in page["items"]] == ["c"]


async def test_rollups_over_the_rows_linking_here(api, owner):
    await world(api, owner)
    page = await api.call("GET", path("companies", sort="name"), owner, expect=200)
    by_name = {r["name"]: r for r in page["items"]}
    acme, zeta, none = by_name["Acme"], by_name["Zeta"], by_name["None"]
    assert (acme["deal_count"], acme["deal_sum"], acme["deal_avg"]) == (2, 110, 55)
    assert acme["last_signed"] == "2025-03-04T00:00:00Z"
    assert acme["titles"] == "a, b"
    assert acme["vip"] == "VIP" and zeta["vip"] == ""
    assert (zeta["deal_count"], zeta["deal_sum"], zeta["deal_avg"]) == (1, 5, 5)
    assert (none["deal_count"], none["deal_sum"], none.get("deal_avg")) == (0, 0, None)
    assert none.get("titles") is None and none.get("last_signed") is None
    # filtered and sorted by a rollup
    page = await api.call(
        "GET",
        path(
            "companies",
            filters=[{"field": "deal_count", "op": "gte", "value": 1}],
            sort="-deal_sum",
        ),
        owner,
        expect=200,
    )
    assert [r["name"] for r in page["items"]] == ["Acme", "Zeta"] and page["total"] == 2


async def test_rollup_follows_writes_of_the_other_table(api, owner):
    acme, _, _, deals = await world(api, owner)
    await api.call("DELETE", f"/api/data/deals/{deals[0]['id']}", owner, expect=204)
    row = await api.call("GET", f"/api/data/companies/{acme['id']}", owner, expect=200)
    assert row["deal_count"] == 1 and row["deal_sum"] == 50


async def test_lookup_and_rollup_definitions_are_checked(api, owner):
    await world(api, owner)
    cases = [
        (
            "deals",
            {"key": "x", "type": "lookup", "link": "title", "column": "city"},
            {"field": "link", "message": "'title' is not a link column"},
        ),
        (
            "deals",
            {"key": "x", "type": "lookup", "link": "company", "column": "nope"},
            {"field": "column", "message": "no column 'nope' in 'companies'"},
        ),
        (
            "deals",
            {"key": "x", "type": "lookup", "link": "company", "column": "deal_sum"},
            {
                "field": "column",
                "message": "'companies.deal_sum' is computed: lookups and rollups read stored "
                "columns",
            },
        ),
        (
            "companies",
            {"key": "x", "type": "rollup", "table": "nope", "link": "company", "function": "count"},
            {"field": "table", "message": "no table 'nope'"},
        ),
        (
            "companies",
            {"key": "x", "type": "rollup", "table": "deals", "link": "title", "function": "count"},
            {
                "field": "link",
                "message": "'title' is not a link column of 'deals' that points at 'companies'",
            },
        ),
        (
            "companies",
            {
                "key": "x",
                "type": "rollup",
                "table": "deals",
                "link": "company",
                "column": "title",
                "function": "sum",
            },
            {"field": "column", "message": "sum rolls up number columns; 'title' is text"},
        ),
    ]
    for table, body, detail in cases:
        got = await api.call(
            "POST", f"/api/meta/tables/{table}/columns", owner, expect=400, json=body
        )
        assert got["error"]["details"] == [detail], body


async def test_columns_read_from_another_table_are_guarded(api, owner):
    await world(api, owner)
    got = await api.call("DELETE", "/api/meta/tables/deals/columns/amount", owner, expect=400)
    assert got["error"]["details"][0]["dependents"] == [
        "companies.deal_avg",
        "companies.deal_sum",
    ]
    got = await api.call("DELETE", "/api/meta/tables/companies/columns/city", owner, expect=400)
    assert got["error"]["details"][0]["dependents"] == ["deals.company_city"]
    got = await api.call("DELETE", "/api/meta/tables/deals/columns/company", owner, expect=400)
    assert got["error"]["details"][0]["dependents"] == [
        "company_city",
        "companies.deal_avg",
        "companies.deal_count",
        "companies.deal_sum",
        "companies.last_signed",
        "companies.titles",
    ]
    got = await api.call("DELETE", "/api/meta/tables/deals", owner, expect=409)
    assert "companies.deal_count" in got["error"]["message"]


async def test_a_lookup_never_reaches_another_company(api, owner):
    """A rollup names tables of its own company only, and its pipeline runs in the company's
    own database: another company's rows never count, even with the same table keys."""
    other = await api.register()
    await world(api, other)
    await Factories(api).rows(other, "deals", [{"title": "z", "amount": 1}])
    make = Factories(api)
    await make.table(owner, **COMPANIES)
    (mine,) = await make.rows(owner, "companies", [{"name": "Mine"}])
    # `deals` exists only in the other company: refused as unknown here
    got = await api.call(
        "POST",
        "/api/meta/tables/companies/columns",
        owner,
        expect=400,
        json=ROLLUPS[0],
    )
    assert got["error"]["details"] == [{"field": "table", "message": "no table 'deals'"}]
    await make.table(owner, **DEALS)
    await make.rows(owner, "deals", [{"title": "m", "amount": 3, "company": mine["id"]}])
    await api.call("POST", "/api/meta/tables/companies/columns", owner, expect=201, json=ROLLUPS[1])
    with recording() as log:
        page = await api.call("GET", path("companies"), owner, expect=200)
    assert [r["deal_sum"] for r in page["items"]] == [3]
    my_db = tenant_db(api.client, owner).name
    aggregates = [r for r in log.records if r.kind == "aggregate"]
    assert aggregates and {r.database for r in aggregates} == {my_db}
    theirs = await api.call("GET", path("companies", sort="name"), other, expect=200)
    assert [r["deal_sum"] for r in theirs["items"]] == [110, 0, 5]


async def test_aggregate_and_export_read_computed_values(api, owner):
    await world(api, owner)
    await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        expect=201,
        json={"key": "double", "type": "formula", "formula": "{amount} * 2"},
    )
    got = await api.call(
        "GET",
        "/api/data/deals/aggregate?group_by=company_city&metrics=count,sum:double"
        "&filters=" + quote(json.dumps([{"field": "double", "op": "gt", "value": 10}])),
        owner,
        expect=200,
    )
    groups = {g["key"]["company_city"]: (g["count"], g["sum:double"]) for g in got["groups"]}
    assert groups == {"Омск": (2, 220), None: (1, 2000)}
    assert got["totals"] == {"count": 3, "sum:double": 2220}
    # export, sorted by a rollup and filtered by a formula
    resp = await api.client.get(
        "/api/data/companies/export?format=csv&sort=-deal_sum&columns=name,deal_sum,vip"
        "&filters=" + quote(json.dumps([{"field": "vip", "op": "eq", "value": "VIP"}])),
        headers=owner.headers,
    )
    text = (await resp.text()).lstrip("\ufeff")
    assert resp.status == 200, text
    assert text.splitlines() == ["name,deal_sum,vip", "Acme,110.0,VIP"]
