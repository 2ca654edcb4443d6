"""Cursor pages of tables with computed columns (issue 28 §3, docs/computed.md "Cursor
pages"): sorted by a formula, a rollup, a lookup or a stored column, filtered by computed
values, in manual order; the plain list's cursor condition, applied where the sort's values
exist; no repeats or gaps while rows are inserted, deleted and changed between pages; a cursor
of another table, sort or filter refused (400 naming `cursor`)."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import pytest

from crm_core.platform.storage import recording
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tests.support.api import Factories, rows_of
from tests.support.query_audit import declared_indexes, index_keys_for, unserved

DECLARED = declared_indexes([*SYSTEM_DOCUMENTS, *ADMIN_DOCUMENTS])
COMPANIES = {
    "key": "companies",
    "columns": [
        {"key": "name", "type": "string"},
        {"key": "base", "type": "integer", "indexed": True},
        {"key": "city", "type": "string"},
        {"key": "start", "type": "date"},
    ],
}
DEALS = {
    "key": "deals",
    "columns": [
        {"key": "title", "type": "string"},
        {"key": "amount", "type": "float"},
        {"key": "company", "type": "link", "table": "companies"},
        {"key": "company_city", "type": "lookup", "link": "company", "column": "city"},
    ],
}
COMPUTED = [
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
    {"key": "score", "type": "formula", "formula": "{deal_sum} + {base}"},  # blank without base
    {"key": "due", "type": "formula", "formula": 'DATE_ADD({start}, {base}, "days")'},
    {"key": "shout", "type": "formula", "formula": "IF({base} > 1, UPPER({city}))"},
]
CITIES = ["Omsk", "Tver", "Kazan"]


def company(rng: random.Random) -> dict[str, Any]:
    """A company whose sort values repeat and are sometimes blank."""
    item: dict[str, Any] = {"name": rng.choice(["a", "b", "c"])}
    if rng.random() < 0.75:
        item["base"] = rng.choice([1, 2, 3])
    if rng.random() < 0.7:
        item["city"] = rng.choice(CITIES)
    if rng.random() < 0.6:
        item["start"] = rng.choice(["2025-01-01", "2025-01-03"])
    return item


async def world(api, owner, count: int = 30, seed: int = 28) -> tuple[list[str], list[str]]:
    """`count` companies, deals linking to two thirds of them, the computed columns."""
    make = Factories(api)
    rng = random.Random(seed)
    await make.table(owner, **COMPANIES)
    companies = await make.rows(owner, "companies", [company(rng) for _ in range(count)])
    company_ids = [c["id"] for c in companies]
    await make.table(owner, **DEALS)
    deals = [
        {"title": rng.choice("xyz"), "amount": rng.choice([10, 20]), "company": target}
        for target in company_ids[: count * 2 // 3]
        for _ in range(rng.choice([1, 2]))
    ]
    deals.append({"title": "z", "amount": 5})  # no company: a blank lookup
    created = await make.rows(owner, "deals", deals)
    for column in COMPUTED:
        await api.call("POST", "/api/meta/tables/companies/columns", owner, expect=201, json=column)
    return company_ids, [d["id"] for d in created]


def listing(table: str, params: str, limit: int, cursor: str | None = None) -> str:
    url = (
        f"/api/data/{table}?{params}&limit={limit}"
        if params
        else f"/api/data/{table}?limit={limit}"
    )
    return url + (f"&cursor={cursor}" if cursor else "")


async def walk(api, account, table: str, params: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a list, page by page through `next_cursor` (the total on every page)."""
    items: list[dict[str, Any]] = []
    cursor = None
    totals = set()
    for _ in range(1000):
        page = await api.call("GET", listing(table, params, limit, cursor), account, expect=200)
        assert len(page["items"]) <= limit
        items += page["items"]
        totals.add(page["total"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(totals) == 1, totals  # the total counts the filter, not what is left
            return items
        assert len(page["items"]) == limit
    raise AssertionError("the pages never ended")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def filters(*conditions: dict[str, Any]) -> str:
    return "filters=" + quote(json.dumps(list(conditions)))


COMPANY_SORTS = [
    "sort=score",
    "sort=-score",
    "sort=deal_sum",
    "sort=-deal_count,score",
    "sort=-due",
    "sort=shout,-name",
    "sort=base",
    "sort=-name,base",
    "sort=name,-score",
    "sort_by=manual",
    f"sort=-score&{filters({'field': 'deal_count', 'op': 'gte', 'value': 1})}",
    f"sort=name&{filters({'field': 'score', 'op': 'gt', 'value': 15})}",
    f"sort=-deal_sum&{filters({'field': 'base', 'op': 'lte', 'value': 2})}",
    f"sort=due&{filters({'field': 'shout', 'op': 'not_blank'})}",
]


@pytest.mark.parametrize("params", COMPANY_SORTS)
async def test_cursor_pages_give_the_whole_list_in_order(api, owner, params):
    await world(api, owner)
    whole = await api.call("GET", listing("companies", params, 1000), owner, expect=200)
    assert whole["next_cursor"] is None and 0 < len(whole["items"]) == whole["total"]
    for limit in (1, 4, 13):
        walked = await walk(api, owner, "companies", params, limit)
        assert ids(walked) == ids(whole["items"]), limit
        assert walked == whole["items"], limit  # the computed values answered as without pages


@pytest.mark.parametrize("params", ["sort=company_city", "sort=-company_city,-amount"])
async def test_cursor_pages_sorted_by_a_lookup(api, owner, params):
    await world(api, owner)
    whole = await api.call("GET", listing("deals", params, 1000), owner, expect=200)
    assert None in [i.get("company_city") for i in whole["items"]]
    for limit in (1, 5):
        assert ids(await walk(api, owner, "deals", params, limit)) == ids(whole["items"])


async def test_a_cursor_on_a_computed_table_answers_the_next_page(api, owner):
    """It was a 400 (`a table with computed columns pages by offset`) and no `next_cursor`."""
    await world(api, owner, 6)
    first = await api.call("GET", listing("companies", "sort=score", 4), owner, expect=200)
    assert first["next_cursor"] is not None
    rest = await api.call(
        "GET", listing("companies", "sort=score", 4, first["next_cursor"]), owner, expect=200
    )
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    assert not set(ids(first["items"])) & set(ids(rest["items"]))


def _order_key(item: dict[str, Any], key: str) -> tuple[Any, ...]:
    """How MongoDB orders `key` then the id ascending: blanks before every value."""
    value = item.get(key)
    return (value is not None, value if value is not None else 0, item["id"])


WITH_DEALS = filters({"field": "deal_count", "op": "gte", "value": 1})
BASE_UP_TO_2 = filters({"field": "base", "op": "lte", "value": 2})


@pytest.mark.parametrize(
    ("sort", "where"),
    [
        ("score", ""),
        ("-deal_sum", ""),
        ("base", ""),
        ("-due", ""),
        ("-score", WITH_DEALS),
        ("deal_count", BASE_UP_TO_2),
        ("base", WITH_DEALS),
    ],
)
async def test_writes_between_pages_neither_repeat_nor_lose_rows(api, owner, sort, where):
    """Between pages: companies created and deleted, deals added and deleted (a rollup and
    the formula over it change), a stored value the formula reads changed. Each page is
    exactly the rows that, when it is read, match the filter and sort after the cursor's keys:
    so a row in the list throughout whose sort value stayed is answered once, and a row is
    answered twice only when its own value moved it back past the cursor."""
    company_ids, deal_ids = await world(api, owner, 30)
    key, descending = sort.lstrip("-"), sort.startswith("-")
    params = f"sort={sort}" + (f"&{where}" if where else "")
    rng = random.Random(5)
    deleted: set[str] = set()
    moved: set[str] = set()  # rows whose sort value a write changed
    always: set[str] | None = None  # rows in the (filtered) list at every look
    seen: list[str] = []
    cursor, last = None, None
    for _ in range(100):
        now = await api.call("GET", listing("companies", params, 1000), owner, expect=200)
        page = await api.call("GET", listing("companies", params, 4, cursor), owner, expect=200)
        expected = now["items"]
        if last is not None:  # strictly after the cursor's keys, in today's values
            bound = _order_key(last, key)
            expected = [
                i
                for i in expected
                if (_order_key(i, key) < bound if descending else _order_key(i, key) > bound)
            ]
        assert ids(page["items"]) == ids(expected[:4])
        assert page["total"] == now["total"]
        always = set(ids(now["items"])) if always is None else always & set(ids(now["items"]))
        seen += ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        last = page["items"][-1]
        before = {i["id"]: i.get(key) for i in now["items"]}
        await _write_between_pages(api, owner, rng, company_ids, deal_ids, deleted)
        after = await api.call("GET", listing("companies", params, 1000), owner, expect=200)
        moved |= {i["id"] for i in after["items"] if before.get(i["id"], i.get(key)) != i.get(key)}
        always &= set(ids(after["items"]))
    else:
        raise AssertionError("the pages never ended")
    assert moved, "no write changed a sort value: the test would prove less than it says"
    assert always and deleted, "nothing stayed or nothing was deleted"
    repeated = {i for i in seen if seen.count(i) > 1}
    assert repeated <= moved, "a row whose value stayed was answered twice"
    assert (always - moved) - set(seen) == set(), "a row in the list throughout was missed"


async def _write_between_pages(
    api,
    owner,
    rng: random.Random,
    company_ids: list[str],
    deal_ids: list[str],
    deleted: set[str],
) -> None:
    live = [c for c in company_ids if c not in deleted]
    created = await Factories(api).rows(owner, "companies", [company(rng) for _ in range(2)])
    company_ids += [c["id"] for c in created]
    victim = rng.choice(live)
    await api.call("DELETE", f"/api/data/companies/{victim}", owner, expect=204)
    deleted.add(victim)
    live.remove(victim)
    target = rng.choice(live)  # a deal more: its company's rollups and score change
    deal = {"title": "w", "amount": rng.choice([10, 20]), "company": target}
    made = await api.call("POST", "/api/data/deals", owner, json=deal, expect=201)
    deal_ids.append(made["id"])
    gone = deal_ids.pop(rng.randrange(len(deal_ids)))  # a deal less: another company's too
    await api.call("DELETE", f"/api/data/deals/{gone}", owner, expect=204)
    changed = rng.choice(live)  # a stored value the formulas read
    body = {"base": rng.choice([1, 2, 3, None])}
    await api.call("PATCH", f"/api/data/companies/{changed}", owner, json=body, expect=200)


async def test_manual_order_of_a_computed_table_pages_by_rank(api, owner):
    company_ids, _ = await world(api, owner, 20)
    rng = random.Random(3)
    for _ in range(10):
        row, before = rng.sample(company_ids, 2)
        body = {"before_id": None if rng.random() < 0.2 else before}
        await api.call("POST", f"/api/data/companies/{row}/move", owner, json=body, expect=200)
    whole = await api.call("GET", listing("companies", "sort_by=manual", 1000), owner)
    assert ids(whole["items"]) != company_ids and "score" in whole["items"][0]
    for limit in (1, 3, 7):
        walked = await walk(api, owner, "companies", "sort_by=manual", limit)
        assert walked == whole["items"]
    stored = filters({"field": "base", "op": "gte", "value": 2})
    whole = await api.call("GET", listing("companies", f"sort_by=manual&{stored}", 1000), owner)
    walked = await walk(api, owner, "companies", f"sort_by=manual&{stored}", 2)
    assert walked == whole["items"] and len(walked) < 20
    on_computed = filters({"field": "score", "op": "gt", "value": 1})
    body = await api.call(
        "GET", listing("companies", f"sort_by=manual&{on_computed}", 5), owner, expect=400
    )
    assert [d["field"] for d in body["error"]["details"]] == ["sort"]


def _refused(body: dict[str, Any]) -> str:
    assert body["error"]["code"] == "invalid_cursor"
    assert [d["field"] for d in body["error"]["details"]] == ["cursor"]
    return str(body["error"]["details"][0]["message"])


async def test_a_cursor_is_refused_for_another_table_sort_or_filter(api, owner):
    await world(api, owner)
    on_rollup = filters({"field": "deal_count", "op": "gte", "value": 1})
    first = await api.call("GET", listing("companies", f"sort=score&{on_rollup}", 2), owner)
    cursor = first["next_cursor"]
    await api.call(
        "GET", listing("companies", f"sort=score&{on_rollup}", 2, cursor), owner, expect=200
    )
    other_rollup = filters({"field": "deal_count", "op": "gte", "value": 2})
    cases = {
        "another sort": ("companies", f"sort=-score&{on_rollup}"),
        "another computed sort": ("companies", f"sort=deal_sum&{on_rollup}"),
        "no filter": ("companies", "sort=score"),
        "another filter": ("companies", f"sort=score&{other_rollup}"),
        "manual order": ("companies", f"sort_by=manual&{on_rollup}"),
    }
    for case, (table, params) in cases.items():
        body = await api.call("GET", listing(table, params, 2, cursor), owner, expect=400)
        assert "another list, sort or filter" in _refused(body), case
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    for forged in (flipped, "abc", cursor[:-4]):
        body = await api.call(
            "GET", listing("companies", f"sort=score&{on_rollup}", 2, forged), owner, expect=400
        )
        assert _refused(body) == "is not a cursor this server made", forged
    by_id = await api.call("GET", listing("companies", "sort=-id", 2), owner)
    body = await api.call(
        "GET", listing("deals", "sort=-id", 2, by_id["next_cursor"]), owner, expect=400
    )
    assert "another list, sort or filter" in _refused(body)


def _page_pipeline(log: Any, collection: str) -> list[Any]:
    found = [r for r in log.records if r.collection == collection and r.kind == "aggregate"]
    assert len(found) == 1, found
    return list(found[0].stages)


async def test_where_the_cursor_condition_goes(api, owner, client):
    """Sorted by a stored column, the cursor's range is in the leading `$match`, before any
    computed stage, and the column's index serves it; sorted by a computed value, it follows
    the stages that compute it (no index can serve that sort); with a filter on a computed
    column, it is in the page's arm of the `$facet`, so the total still counts every row."""
    await world(api, owner, 24)
    stored = await rows_of(client, owner, "companies")
    collection = stored.name
    indexes = [  # the table's own: `(base, _id)` for the indexed column
        tuple((key, int(direction)) for key, direction in index["key"])
        for index in (await stored.index_information()).values()
    ]
    cursor = None
    for _ in range(3):
        with recording() as log:
            page = await api.call("GET", listing("companies", "sort=-base", 5, cursor), owner)
        record = next(
            r for r in log.records if r.collection == collection and r.kind == "aggregate"
        )
        if cursor is not None:
            assert record.stages[:3] == ("$match", "$sort", "$limit")
            assert ("base", "$or") in record.conditions  # the cursor's range
            assert unserved(record, [*index_keys_for(record, DECLARED), *indexes]) is None
            assert "$skip" not in record.stages
        cursor = page["next_cursor"]
    cursor = None
    for _ in range(2):
        with recording() as log:
            page = await api.call("GET", listing("companies", "sort=score", 5, cursor), owner)
        stages = _page_pipeline(log, collection)
        if cursor is not None:
            sort_at = stages.index("$sort")
            assert stages[sort_at - 1] == "$match" and "$addFields" in stages[: sort_at - 1]
            assert stages[0] == "$lookup" and "$skip" not in stages
        cursor = page["next_cursor"]
    cursor = None
    for _ in range(2):  # a stored first key: its range narrows the stored `$match` too
        with recording() as log:
            page = await api.call("GET", listing("companies", "sort=name,-score", 5, cursor), owner)
        record = next(r for r in log.records if r.collection == collection)
        if cursor is not None:
            assert record.stages[0] == "$match" and ("name", "$gte") in record.conditions
            assert "$addFields" in record.stages[: record.stages.index("$sort")]
        cursor = page["next_cursor"]
    on_rollup = filters({"field": "deal_count", "op": "gte", "value": 1})
    first = await api.call("GET", listing("companies", f"sort=base&{on_rollup}", 5), owner)
    with recording() as log:
        second = await api.call(
            "GET", listing("companies", f"sort=base&{on_rollup}", 5, first["next_cursor"]), owner
        )
    assert _page_pipeline(log, collection)[-1] == "$facet"
    assert second["total"] == first["total"] == 16
    assert not set(ids(first["items"])) & set(ids(second["items"]))


async def test_a_number_past_the_doubles_range_is_blank_and_pages_in_order(api, owner):
    """An overflow gives inf, and inf - inf NaN: NaN sorts and compares apart from every number
    (differently on each engine), so a cursor after it found nothing and the pages stopped;
    a computed number that is not finite is blank (docs/computed.md "Blanks")."""
    make = Factories(api)
    huge = "{n} * 1e300 * 1e300"
    columns = [
        {"key": "n", "type": "integer"},
        {"key": "amount", "type": "float"},
        {"key": "nan", "type": "formula", "formula": f"{huge} - {huge} + {{n}}"},
        {"key": "inf", "type": "formula", "formula": huge},
    ]
    await make.table(owner, key="t", columns=columns)
    values = [1, 0, 2, -1, 0, 1, 3, None]
    await make.rows(owner, "t", [{"n": v} for v in values])
    whole = await api.call("GET", listing("t", "sort=nan", 100), owner, expect=200)
    assert [r.get("nan") for r in whole["items"]] == [None] * 6 + [0, 0]
    assert [r.get("inf") for r in whole["items"]] == [None] * 6 + [0, 0]
    for params in ("sort=nan", "sort=-inf", "sort=-nan,n"):
        expected = await api.call("GET", listing("t", params, 100), owner, expect=200)
        assert ids(await walk(api, owner, "t", params, 2)) == ids(expected["items"])
    # a rollup's sum past the range: blank too
    await make.table(
        owner,
        key="parts",
        columns=[{"key": "of", "type": "link", "table": "t"}, {"key": "x", "type": "float"}],
    )
    first = whole["items"][0]["id"]
    await make.rows(owner, "parts", [{"of": first, "x": 1.7e308}, {"of": first, "x": 1.7e308}])
    rollup = {"key": "total", "type": "rollup", "table": "parts", "link": "of"}
    await api.call(
        "POST",
        "/api/meta/tables/t/columns",
        owner,
        json={**rollup, "column": "x", "function": "sum"},
        expect=201,
    )
    row = await api.call("GET", f"/api/data/t/{first}", owner, expect=200)
    assert row["total"] is None
