"""`GET /api/data/{table}/aggregate` (issue #23 §1): groups and totals of the rows the list
returns for the same caller and filters, in one pipeline that mongomock and MongoDB 7 evaluate
alike (docs/api.md "Aggregates")."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from crm_core.platform.storage import recording
from crm_core.tables.aggregate import zone_offsets
from handlers.routing import SERVICES
from tests.support.api import CONTRACTS, Factories, add_user, rows_of
from tests.support.query_audit import unserved

AGG = "/api/data/contracts/aggregate"


def q(**params: str) -> str:
    return "&".join(f"{k}={quote(v)}" for k, v in params.items())


async def contracts(api, owner, rows):
    await Factories(api).table(owner, **CONTRACTS)
    return await Factories(api).rows(owner, "contracts", rows)


ROWS = [
    {"company_name": "A", "total_sum": 100.5, "status": 11, "doc_date": "2024-01-15"},
    {"company_name": "B", "total_sum": 200, "status": 11, "doc_date": "2024-01-20"},
    {"company_name": "C", "total_sum": 50, "status": 12, "doc_date": "2024-02-01"},
    {"company_name": "D", "status": 12},
    {"company_name": "E", "total_sum": 7},
]


async def test_totals_without_group_by(api, owner):
    await contracts(api, owner, ROWS)
    got = await api.call(
        "GET",
        f"{AGG}?{q(metrics='count,sum:total_sum,avg:total_sum,min:total_sum,max:total_sum')}",
        owner,
        expect=200,
    )
    assert got == {
        "groups": [],
        "totals": {
            "count": 5,
            "sum:total_sum": 357.5,
            "avg:total_sum": 357.5 / 4,
            "min:total_sum": 7,
            "max:total_sum": 200,
        },
    }
    # no metrics: the count
    got = await api.call("GET", AGG, owner, expect=200)
    assert got == {"groups": [], "totals": {"count": 5}}


async def test_group_by_select_with_labels_and_blanks(api, owner):
    await contracts(api, owner, ROWS)
    got = await api.call(
        "GET", f"{AGG}?{q(group_by='status', metrics='count,sum:total_sum')}", owner, expect=200
    )
    assert got["groups"] == [
        {"key": {"status": 11}, "label": {"status": "Signed"}, "count": 2, "sum:total_sum": 300.5},
        {"key": {"status": 12}, "label": {"status": "Active"}, "count": 2, "sum:total_sum": 50},
        {"key": {"status": None}, "label": {"status": None}, "count": 1, "sum:total_sum": 7},
    ]
    assert got["totals"] == {"count": 5, "sum:total_sum": 357.5}


SUM_AVG = "sum:total_sum,avg:total_sum"


async def test_sort_and_limit(api, owner):
    await contracts(api, owner, ROWS)
    got = await api.call(
        "GET",
        AGG + "?" + q(group_by="status", metrics=SUM_AVG, sort="-sum:total_sum", limit="2"),
        owner,
        expect=200,
    )
    assert [g["key"]["status"] for g in got["groups"]] == [11, 12]
    # over every row, not the page of groups; the average over the rows with a value
    assert got["totals"] == {"sum:total_sum": 357.5, "avg:total_sum": 357.5 / 4}


async def test_two_columns_and_month_buckets(api, owner):
    await contracts(api, owner, ROWS)
    got = await api.call("GET", f"{AGG}?{q(group_by='doc_date:month,status')}", owner, expect=200)
    assert [(g["key"], g["label"], g["count"]) for g in got["groups"]] == [
        ({"doc_date": "2024-01-01", "status": 11}, {"doc_date": "2024-01", "status": "Signed"}, 2),
        ({"doc_date": "2024-02-01", "status": 12}, {"doc_date": "2024-02", "status": "Active"}, 1),
        ({"doc_date": None, "status": 12}, {"doc_date": None, "status": "Active"}, 1),
        ({"doc_date": None, "status": None}, {"doc_date": None, "status": None}, 1),
    ]


DISTINCT = "count_distinct:company_name,count_distinct:total_sum"


async def test_count_distinct_leaves_blanks_out(api, owner):
    await contracts(api, owner, [*ROWS, {"company_name": "A", "status": 11}])
    got = await api.call(
        "GET",
        AGG + "?" + q(group_by="status", metrics=DISTINCT),
        owner,
        expect=200,
    )
    by_status = {g["key"]["status"]: g for g in got["groups"]}
    assert by_status[11]["count_distinct:company_name"] == 2  # A twice, B
    assert by_status[12]["count_distinct:total_sum"] == 1  # 50 and a blank
    assert got["totals"] == {"count_distinct:company_name": 5, "count_distinct:total_sum": 4}


async def test_filters_select_the_same_rows_as_the_list(api, owner):
    await contracts(api, owner, ROWS)
    filters = json.dumps([{"field": "total_sum", "op": "gte", "value": 50}])
    got = await api.call("GET", f"{AGG}?{q(group_by='status', filters=filters)}", owner, expect=200)
    listed = await api.call("GET", f"/api/data/contracts?{q(filters=filters)}", owner, expect=200)
    assert got["totals"]["count"] == listed["total"] == 3
    assert {g["key"]["status"]: g["count"] for g in got["groups"]} == {12: 1, 11: 2}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"group_by": "nope"}, "group_by", "unknown column 'nope'"),
        ({"group_by": "company_name:month"}, "group_by", "'company_name' is not a date"),
        ({"group_by": "doc_date:decade"}, "group_by", "unknown bucket 'decade'"),
        ({"group_by": "status,doc_date:day,company_name"}, "group_by", "at most 2"),
        ({"group_by": "status,status"}, "group_by", "named twice"),
        ({"metrics": "sum:company_name"}, "metrics", "'sum:company_name' needs a numeric"),
        ({"metrics": "avg:status"}, "metrics", "'avg:status' needs a numeric"),
        ({"metrics": "min:status"}, "metrics", "'min:status' needs a number, date or time"),
        ({"metrics": "median:total_sum"}, "metrics", "unknown metric 'median:total_sum'"),
        ({"metrics": "sum:nope"}, "metrics", "'sum:nope' names an unknown column"),
        ({"metrics": "count:status"}, "metrics", "count takes no column"),
        ({"group_by": "status", "sort": "-total"}, "sort", "'total' is neither"),
        ({"filters": "[{"}, "filters", "not valid JSON"),
        ({"limit": "0"}, "limit", ""),
        ({"limit": "1001"}, "limit", ""),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(api, owner, params, field, words):
    await contracts(api, owner, ROWS[:1])
    got = await api.call("GET", f"{AGG}?{q(**params)}", owner, expect=400)
    details = got["error"]["details"]
    assert [d["field"] for d in details] == [field], got
    assert words in details[0]["message"], got


async def test_more_groups_than_the_limit_is_a_400(api, owner, client):
    await contracts(api, owner, ROWS)
    client.app[SERVICES].aggregates.max_groups = 2  # three status groups
    got = await api.call("GET", f"{AGG}?{q(group_by='status')}", owner, expect=400)
    assert got["error"]["details"][0]["field"] == "group_by"
    assert "more than 2 groups" in got["error"]["details"][0]["message"]
    client.app[SERVICES].aggregates.max_groups = 3
    got = await api.call("GET", f"{AGG}?{q(group_by='status')}", owner, expect=200)
    assert len(got["groups"]) == 3


async def test_a_thousand_and_one_groups_is_a_400(api, owner):
    items = [{"company_name": f"c{i}"} for i in range(1001)]
    await Factories(api).table(owner, **CONTRACTS)
    await Factories(api).rows(owner, "contracts", items[:1000])
    await Factories(api).rows(owner, "contracts", items[1000:])
    got = await api.call("GET", f"{AGG}?{q(group_by='company_name')}", owner, expect=400)
    assert "more than 1000 groups" in got["error"]["message"]
    await api.call(
        "DELETE", f"/api/data/contracts/{(await first_row(api, owner))}", owner, expect=204
    )
    got = await api.call("GET", f"{AGG}?{q(group_by='company_name', limit='3')}", owner, expect=200)
    assert [g["key"]["company_name"] for g in got["groups"]] == ["c1", "c10", "c100"]


async def first_row(api, owner) -> str:
    page = await api.call("GET", "/api/data/contracts?limit=1&sort_by=company_name", owner)
    return page["items"][0]["id"]


# ---- time zones -----------------------------------------------------------------------------


async def zoned(api, owner, zone: str, moments: list[str]):
    await api.call("PATCH", "/api/tenant", owner, expect=200, json={"timezone": zone})
    await contracts(api, owner, [{"company_name": m, "doc_date": m} for m in moments])


async def days(api, owner, bucket="day") -> dict[str, int]:
    got = await api.call("GET", f"{AGG}?{q(group_by=f'doc_date:{bucket}')}", owner, expect=200)
    return {g["label"]["doc_date"]: g["count"] for g in got["groups"]}


async def test_days_in_berlin_around_the_spring_switch(api, owner):
    # 2024-03-31: clocks go from 02:00 CET (+1) to 03:00 CEST (+2) at 01:00 UTC
    await zoned(
        api,
        owner,
        "Europe/Berlin",
        [
            "2024-03-30T22:59:59Z",  # 23:59:59 on the 30th (+1)
            "2024-03-30T23:00:00Z",  # 00:00 on the 31st (+1)
            "2024-03-31T00:59:59Z",  # 01:59:59, the last second of winter time
            "2024-03-31T01:00:00Z",  # 03:00 summer time
            "2024-03-31T21:59:59Z",  # 23:59:59 on the 31st (+2)
            "2024-03-31T22:00:00Z",  # 00:00 on April 1st (+2)
        ],
    )
    assert await days(api, owner) == {"2024-03-30": 1, "2024-03-31": 4, "2024-04-01": 1}
    assert await days(api, owner, "month") == {"2024-03": 5, "2024-04": 1}
    assert await days(api, owner, "week") == {"2024-W13": 5, "2024-W14": 1}
    assert await days(api, owner, "quarter") == {"2024-Q1": 5, "2024-Q2": 1}


async def test_days_in_berlin_around_the_autumn_switch(api, owner):
    # 2024-10-27: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:30 happens twice
    await zoned(
        api,
        owner,
        "Europe/Berlin",
        [
            "2024-10-26T21:59:59Z",  # 23:59:59 on the 26th (+2)
            "2024-10-26T22:00:00Z",  # 00:00 on the 27th (+2)
            "2024-10-27T00:30:00Z",  # 02:30 the first time
            "2024-10-27T01:30:00Z",  # 02:30 the second time
            "2024-10-27T22:59:59Z",  # 23:59:59 on the 27th (+1)
            "2024-10-27T23:00:00Z",  # 00:00 on the 28th (+1)
        ],
    )
    assert await days(api, owner) == {"2024-10-26": 1, "2024-10-27": 4, "2024-10-28": 1}


async def test_moscow_buckets_follow_its_history_of_offsets(api, owner):
    # Moscow: summer time until 2011-03-27 (+3 to +4 at 02:00 local, 23:00 UTC on the 26th),
    # then +4 all year, +3 again since 2014-10-26
    await zoned(
        api,
        owner,
        "Europe/Moscow",
        [
            "2011-03-26T20:59:59Z",  # 23:59:59 on the 26th (+3)
            "2011-03-26T21:00:00Z",  # 00:00 on the 27th (+3)
            "2011-03-26T23:00:00Z",  # 03:00 on the 27th (+4 from now)
            "2011-03-27T19:59:59Z",  # 23:59:59 on the 27th (+4)
            "2011-03-27T20:00:00Z",  # 00:00 on the 28th (+4)
            "2024-12-31T20:59:59Z",  # 23:59:59 on New Year's Eve (+3)
            "2024-12-31T21:00:00Z",  # 2025 in Moscow
        ],
    )
    assert await days(api, owner) == {
        "2011-03-26": 1,
        "2011-03-27": 3,
        "2011-03-28": 1,
        "2024-12-31": 1,
        "2025-01-01": 1,
    }
    assert await days(api, owner, "year") == {"2011": 5, "2024": 1, "2025": 1}


def test_zone_offsets_match_the_zone_database():
    from zoneinfo import ZoneInfo

    berlin = zone_offsets(ZoneInfo("Europe/Berlin"))
    switch = next(m for m, _ in berlin if m.year == 2024)
    assert switch == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    assert zone_offsets(ZoneInfo("UTC")) == ((datetime(1900, 1, 1, tzinfo=UTC), 0),)


# ---- labels for users and links -------------------------------------------------------------


async def test_user_and_link_groups_are_labelled_with_names(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    await Factories(api).table(
        owner,
        "deals",
        [
            {"key": "title", "type": "string"},
            {"key": "seller", "type": "user"},
            {"key": "client", "type": "link", "table": "legal_entities"},
        ],
    )
    firm = await api.call(
        "POST", "/api/legal-entities", owner, json={"name": "Ромашка"}, expect=201
    )
    for seller, firm_id in [
        (owner.user_id, firm["id"]),
        (manager.user_id, firm["id"]),
        (manager.user_id, None),
    ]:
        await api.call(
            "POST",
            "/api/data/deals",
            owner,
            expect=201,
            json={"title": "t", "seller": seller, "client": firm_id},
        )
    got = await api.call(
        "GET", "/api/data/deals/aggregate?group_by=seller&sort=-count", owner, expect=200
    )
    assert [(g["label"]["seller"], g["count"]) for g in got["groups"]] == [
        ("Manager", 2),
        ("Owner", 1),
    ]
    assert got["groups"][0]["key"] == {"seller": manager.user_id}
    got = await api.call("GET", "/api/data/deals/aggregate?group_by=client", owner, expect=200)
    assert got["groups"] == [
        {"key": {"client": firm["id"]}, "label": {"client": "Ромашка"}, "count": 2},
        {"key": {"client": None}, "label": {"client": None}, "count": 1},
    ]
    # system fields: who created the rows, and when (in the company's time zone)
    got = await api.call(
        "GET", "/api/data/deals/aggregate?group_by=_created_by,_created_at:year", owner, expect=200
    )
    (group,) = got["groups"]
    assert group["label"]["_created_by"] == "Owner" and group["count"] == 3
    assert group["key"]["_created_by"] == owner.user_id
    created = (await api.call("GET", "/api/data/deals?limit=1", owner))["items"][0]["_created_at"]
    assert group["label"]["_created_at"] == created[:4]  # the company's zone is UTC here


async def test_built_in_routes(api, owner):
    for title, status in [("a", 1), ("b", 3), ("c", 3)]:
        await api.call(
            "POST", "/api/leads", owner, json={"title": title, "status": status}, expect=201
        )
    got = await api.call(
        "GET", "/api/leads/aggregate?group_by=status&sort=-count", owner, expect=200
    )
    assert [(g["label"]["status"], g["count"]) for g in got["groups"]] == [("Won", 2), ("New", 1)]
    doc = await api.call("GET", "/api/openapi.json", expect=200)
    assert "/api/leads/aggregate" in doc["paths"] and "/api/data/{table}/aggregate" in doc["paths"]


# ---- the same rows as the list for the same caller --------------------------------------------


async def list_counts(api, account, path: str, column: str) -> dict:
    counts: dict = {}
    offset = 0
    while True:
        page = await api.call(
            "GET", f"{path}?limit=2&offset={offset}&sort_by=id", account, expect=200
        )
        for row in page["items"]:
            counts[row.get(column)] = counts.get(row.get(column), 0) + 1
        offset += 2
        if offset >= page["total"]:
            return counts


async def test_counts_match_paging_through_the_list_for_each_caller(api, client, owner):
    shared = await add_user(api, client, owner, "manager")
    other = await add_user(api, client, owner, "manager")
    await contracts(api, owner, ROWS)
    await api.call(
        "POST",
        "/api/shares",
        owner,
        json={"table": "contracts", "user_id": shared.user_id, "access": "read"},
        expect=201,
    )
    for account in (owner, shared):
        got = await api.call("GET", f"{AGG}?group_by=status", account, expect=200)
        assert {g["key"]["status"]: g["count"] for g in got["groups"]} == await list_counts(
            api, account, "/api/data/contracts", "status"
        )
    # without a share: neither the list nor the aggregate shows the table
    await api.call("GET", "/api/data/contracts", other, expect=404)
    await api.call("GET", f"{AGG}?group_by=status", other, expect=404)


# ---- the query: one pipeline, its $match the list's -------------------------------------------


async def test_one_pipeline_whose_match_is_the_lists_and_is_index_served(api, client, owner):
    await Factories(api).table(
        owner,
        "contracts",
        [
            {"key": "company_name", "type": "string"},
            {"key": "total_sum", "type": "float"},
            {"key": "region", "type": "string", "indexed": True},
        ],
    )
    await Factories(api).rows(
        owner, "contracts", [{"company_name": "a", "region": "north", "total_sum": 1}] * 3
    )
    filters = json.dumps([{"field": "region", "op": "eq", "value": "north"}])
    with recording() as log:
        await api.call("GET", f"/api/data/contracts?{q(filters=filters)}", owner, expect=200)
        got = await api.call(
            "GET", f"{AGG}?{q(filters=filters, group_by='company_name')}", owner, expect=200
        )
    assert got["totals"] == {"count": 3}
    rows = await rows_of(client, owner, "contracts")
    collection = rows.name
    # the collection's indexes as the database tells them (either engine)
    indexes = [
        tuple((f, int(d)) for f, d in i["key"]) for i in (await rows.index_information()).values()
    ]
    listed = next(r for r in log.records if r.collection == collection and r.kind == "find")
    pipelines = [r for r in log.records if r.collection == collection and r.kind == "aggregate"]
    assert len(pipelines) == 1
    pipeline = pipelines[0]
    assert pipeline.stages == ("$match", "$project", "$group", "$limit", "$project")
    assert pipeline.filter == listed.filter == {"region": "north"}
    # the $match alone, planned as a find: the `region` index serves it
    as_find = replace(pipeline, kind="find", stages=(), sort=())
    assert unserved(as_find, indexes) is None
    # on a column without an index it would scan, as the list's find would
    filters = json.dumps([{"field": "company_name", "op": "eq", "value": "a"}])
    with recording() as log:
        await api.call("GET", f"{AGG}?{q(filters=filters)}", owner, expect=200)
    (pipeline,) = [r for r in log.records if r.kind == "aggregate"]
    as_find = replace(pipeline, kind="find", stages=(), sort=())
    assert unserved(as_find, indexes) is not None


async def test_the_embedded_engine_reads_an_aggregates_rows_once(api, owner, monkeypatch):
    """mongomock's own cursor recomputes a slice of its results at every document it yields
    (quadratic: 100,000 rows took 54 s of CPU); the embedded client reads them in one pass."""
    from mongomock.collection import Cursor

    await contracts(api, owner, ROWS)
    computed = []
    original = Cursor._compute_results

    def counted(self, *args, **kwargs):
        if self.collection.name.startswith("rows."):
            computed.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Cursor, "_compute_results", counted)
    got = await api.call("GET", f"{AGG}?group_by=status", owner, expect=200)
    assert got["totals"] == {"count": 5}
    assert computed == []  # mongomock's cursor: once per row read
