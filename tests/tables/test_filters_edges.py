"""The filter language's last edges (issue #31 §6): whole days on DST switches, anchored text
ends, duplicate JSON keys, and the `filters` parameter given twice or too long."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from crm_core.platform.errors import InvalidFilter
from crm_core.tables.bodies import RowListQuery
from crm_core.tables.columns import Column, ValueContext, default_column_types
from crm_core.tables.filters import (
    MAX_FILTER_CHARS,
    FilterBuilder,
    FilterEnv,
    default_filter_operators,
    table_fields,
)

BUILDER = FilterBuilder(default_filter_operators())
FIELDS = table_fields(
    [
        Column.from_doc({"key": "s", "type": "string"}),
        Column.from_doc({"key": "d", "type": "date"}),
    ],
    default_column_types(),
)
NOW = datetime(2025, 8, 15, 12, 30, tzinfo=UTC)
ENV = FilterEnv(ValueContext(ZoneInfo("UTC"), "RU", 10_000), NOW)


def translate(filters: object, env: FilterEnv = ENV) -> dict[str, object]:
    return BUILDER.translate(filters, FIELDS, env)


# (zone, a spring switch, an autumn switch): the day is 23 hours, then 25
DST_DAYS = [
    ("Europe/Berlin", "2025-03-30", "2025-10-26"),
    ("America/New_York", "2025-03-09", "2025-11-02"),
]


def env_in(zone: str) -> FilterEnv:
    return FilterEnv(ValueContext(ZoneInfo(zone), "RU", 10_000), NOW)


def local_midnight(zone: str, text: str, plus_days: int = 0) -> datetime:
    day = datetime.strptime(text, "%Y-%m-%d").date() + timedelta(days=plus_days)
    return datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def spans() -> list[tuple[str, str, int]]:
    return [(z, d, h) for z, spring, autumn in DST_DAYS for d, h in ((spring, 23), (autumn, 25))]


@pytest.mark.parametrize(("zone", "text", "hours"), spans())
def test_a_whole_day_runs_midnight_to_midnight_on_dst_days(zone, text, hours):
    env = env_in(zone)
    start, end = local_midnight(zone, text), local_midnight(zone, text, 1)
    assert end - start == timedelta(hours=hours)
    assert translate([{"field": "d", "value": text}], env) == {"d": {"$gte": start, "$lt": end}}
    assert translate([{"field": "d", "op": "neq", "value": text}], env) == {
        "$nor": [{"d": {"$gte": start, "$lt": end}}]
    }
    assert translate([{"field": "d", "op": "in", "value": [text]}], env) == {
        "$or": [{"d": {"$gte": start, "$lt": end}}]
    }
    assert translate([{"field": "d", "op": "not_in", "value": [text]}], env) == {
        "$nor": [{"$or": [{"d": {"$gte": start, "$lt": end}}]}]
    }
    assert translate([{"field": "d", "op": "gt", "value": text}], env) == {"d": {"$gte": end}}
    assert translate([{"field": "d", "op": "lte", "value": text}], env) == {"d": {"$lt": end}}
    assert translate([{"field": "d", "op": "gte", "value": text}], env) == {"d": {"$gte": start}}
    assert translate([{"field": "d", "op": "lt", "value": text}], env) == {"d": {"$lt": start}}
    assert translate([{"field": "d", "op": "between", "value": [text, text]}], env) == {
        "d": {"$gte": start, "$lt": end}
    }
    # `is_within` computes the same day the same way
    today = FilterEnv(env.values, start + timedelta(hours=12))
    assert translate([{"field": "d", "op": "is_within", "value": "today"}], today) == {
        "d": {"$gte": start, "$lt": end}
    }


def test_ends_with_is_anchored_at_the_true_end():
    def matcher(op: str) -> re.Pattern[str]:
        return re.compile(translate([{"field": "s", "op": op, "value": "abc"}])["s"]["$regex"])

    ends, starts = matcher("ends_with"), matcher("starts_with")
    assert ends.search("xabc") and not ends.search("abc\n") and not ends.search("abcx")
    assert starts.search("abcx") and not starts.search("\nabc") and not starts.search("xabc")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[{"field":"i","field":"s","value":"x"}]', "field"),
        ('{"or":[{"field":"s","value":"x","value":"y"}]}', "value"),
        ('{"or":[{"field":"s","value":"x"}],"or":[]}', "or"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(text, key):
    with pytest.raises(InvalidFilter, match=f"the key '{key}' appears twice"):
        BUILDER.parse_param(text)


async def test_dst_day_ends_with_repeated_and_long_filters_over_http(api, owner, create_table):
    await api.call("PATCH", "/api/tenant", owner, expect=200, json={"timezone": "Europe/Berlin"})
    await create_table(
        owner,
        key="events",
        columns=[{"key": "s", "type": "string"}, {"key": "d", "type": "date"}],
    )
    items = [
        # 23:30 local on the spring switch day (21:30 UTC): inside the day
        {"s": "late", "d": "2025-03-30T21:30:00Z"},
        # 00:30 local on the next day (22:30 UTC): outside it
        {"s": "next", "d": "2025-03-30T22:30:00Z"},
        {"s": "abc\n", "d": "2025-01-01"},
        {"s": "xabc", "d": "2025-01-01"},
    ]
    await api.call("POST", "/api/data/events/bulk", owner, json={"items": items}, expect=201)

    async def names(filters: object) -> list[str]:
        page = await api.call(
            "GET",
            f"/api/data/events?sort=s&filters={quote(json.dumps(filters))}",
            owner,
            expect=200,
        )
        return [r["s"] for r in page["items"]]

    assert await names([{"field": "d", "value": "2025-03-30"}]) == ["late"]
    assert await names([{"field": "d", "op": "gt", "value": "2025-03-30"}]) == ["next"]
    assert await names([{"field": "d", "op": "lte", "value": "2025-03-30"}]) == [
        "abc\n",
        "late",
        "xabc",
    ]
    assert await names([{"field": "s", "op": "ends_with", "value": "abc"}]) == ["xabc"]

    one = quote('[{"field":"s","value":"xabc"}]')
    twice = quote('[{"field":"d","field":"s","value":"xabc"}]')
    for path, field, message in [
        (f"/api/data/events?filters={one}&filters={one}", "filters", "given more than once"),
        (f"/api/data/events?filters={twice}", "filters.0", "the key 'field' appears twice"),
    ]:
        body = await api.call("GET", path, owner, expect=400)
        assert body["error"]["code"] == "invalid_filter", body
        assert body["error"]["details"][0]["field"] == field  # the object that repeats it
        assert message in body["error"]["message"]


def test_an_over_long_filters_parameter_is_an_invalid_filter():
    # `crm serve` reads request lines up to 1 MiB (crm_app/cli.py); the test client's server
    # stops at 8 KiB, so the query model that the route parses with is asked directly
    with pytest.raises(InvalidFilter, match="over the limit of 20000") as info:
        RowListQuery.model_validate({"filters": "x" * (MAX_FILTER_CHARS + 1)})
    assert info.value.details == [{"field": "filters", "message": info.value.details[0]["message"]}]
