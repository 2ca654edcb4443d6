"""Totals and groups of a table's rows (issue #23 §1, docs/api.md "Aggregates").

`group_by` (up to two columns; dates bucketed by day, week, month, quarter or year in the
company's time zone) and `metrics` (`count`, `sum:col`, `avg:col`, `min:col`, `max:col`,
`count_distinct:col`) are checked against the table's columns, then answered by ONE aggregation
pipeline whose `$match` is the list's own query for the same caller and filters
(`RowService.query`), so both see the same rows.

The pipeline uses only what mongomock (the embedded engine) and MongoDB 7 evaluate the same way:
`$match`, `$project`, `$facet`, `$group` (`$sum`, `$avg`, `$min`, `$max`, `$addToSet`),
`$limit`, and the expressions `$cond`, `$ifNull`, `$eq`, `$lt`, `$in`, `$let`, `$add`,
`$subtract`, `$multiply`, `$divide`, `$floor`, `$size`, `$year`, `$month`. mongomock has no
`$dateTrunc`, `$dateToParts`, `$isoWeek` and no `timezone` argument, so a date is moved to the
company's wall clock by adding its UTC offset, chosen by a balanced tree of `$cond` over the
zone's transitions (DST switches included), and the buckets are counted on the wall-clock date
in UTC arithmetic. Groups are sorted and cut to `limit` here (at most AGGREGATE_MAX_GROUPS of
them), so the order never depends on how an engine sorts mixed types.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from bson import ObjectId
from bson.decimal128 import Decimal128

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import CrmError, ValidationFailed
from crm_core.platform.storage import query_purpose, system_collection
from crm_core.tables.access import Level, access_level
from crm_core.tables.columns import (
    DECIMAL_TEXT,
    NUMERIC,
    ORDERED,
    PERIOD,
    TEXT,
    Column,
    ColumnType,
    render_datetime,
)
from crm_core.tables.computed.pipeline import value_type, with_computed_stages
from crm_core.tables.definitions import Table, load_table
from crm_core.tables.rows import CLIENT_QUERY, RowService
from models.accounts import User

# a pipeline expression: an operator document, a constant number, or null
Expression = dict[str, object] | int | None
AGGREGATE_MAX_GROUPS = 1000  # more groups than this: 400 (add filters or a coarser bucket)
MAX_GROUP_BY = 2
MAX_METRICS = 10
BUCKETS = ("day", "week", "month", "quarter", "year")
METRIC_NAMES = ("count", "sum", "avg", "min", "max", "count_distinct")
DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# a zone's offsets are followed from here to there; before and after, the edge's offset holds
ZONE_RANGE = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
SYSTEM_DATES = ("_created_at", "_updated_at")
SYSTEM_USERS = ("_created_by", "_updated_by")


# ---- what a group or a metric is about ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A column (or a system field) as aggregation sees it."""

    key: str
    column: Column | None  # None for a system field
    column_type: ColumnType | None
    is_date: bool
    numeric: bool
    ordered: bool
    user: bool  # values are user ids (labelled with the user's name)
    options: dict[int, str] | None  # a select's option labels
    link_table: str | None  # a link's target table (labelled with the row's first text)

    def render(self, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, datetime):
            return render_datetime(value)
        if isinstance(value, ObjectId):
            return str(value)
        if self.column is not None and self.column_type is not None:
            return self.column_type.render(self.column, value)
        return value


def _target(table: Table, key: str) -> Target | None:
    if key in SYSTEM_DATES:
        return Target(key, None, None, True, False, True, False, None, None)
    if key in SYSTEM_USERS:
        return Target(key, None, None, False, False, False, True, None, None)
    column = table.column(key)
    if column is None:
        return None
    column_type = value_type(table, column)  # a computed column's: its result kind's
    caps = column_type.capabilities
    is_date = PERIOD in caps
    numeric = NUMERIC in caps or (
        ORDERED in caps
        and not is_date
        and column_type.value_annotation in (int, float)
        and column.options is None
    )
    link_table = column_type.target_table(column)
    options = None
    if column.options is not None or "options" in column_type.settings_fields():
        options = {o.id: o.label for o in column.options or ()}
    return Target(
        key=key,
        column=column,
        column_type=column_type,
        is_date=is_date,
        numeric=numeric,
        ordered=ORDERED in caps,
        user=column_type.references and link_table is None,
        options=options,
        link_table=link_table,
    )


@dataclass(frozen=True)
class Group:
    target: Target
    bucket: str | None  # day, week, month, quarter, year

    @property
    def key(self) -> str:
        return self.target.key


@dataclass(frozen=True)
class Metric:
    name: str  # as the client wrote it and as the answer names it: `sum:total_sum`
    op: str
    target: Target | None  # None for `count`


@dataclass(frozen=True)
class AggregateRequest:
    group_by: str | None = None
    metrics: str | None = None
    filters: str | None = None
    sort: str | None = None
    limit: int = AGGREGATE_MAX_GROUPS


@dataclass
class AggregateResult:
    groups: list[dict[str, Any]]
    totals: dict[str, Any]


def _items(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_group_by(table: Table, text: str | None) -> list[Group]:
    """`status,doc_date:month`: 400 `group_by` for an unknown column, a bucket on something
    that is not a date, an unknown bucket, a column named twice or more than two columns."""
    items = _items(text)
    if len(items) > MAX_GROUP_BY:
        raise ValidationFailed.field("group_by", f"group by at most {MAX_GROUP_BY} columns")
    groups: list[Group] = []
    for item in items:
        key, _, bucket = item.partition(":")
        target = _target(table, key)
        if target is None:
            raise ValidationFailed.field("group_by", f"unknown column '{key[:64]}'")
        if target.column_type is not None and target.column_type.holds_files:
            raise ValidationFailed.field(
                "group_by", f"'{key[:64]}' holds files: rows are not grouped by their files"
            )
        if bucket and not target.is_date:
            raise ValidationFailed.field(
                "group_by", f"'{key[:64]}' is not a date: a bucket (:{bucket[:16]}) needs a date"
            )
        if bucket and bucket not in BUCKETS:
            raise ValidationFailed.field(
                "group_by", f"unknown bucket '{bucket[:16]}' (use {'|'.join(BUCKETS)})"
            )
        if any(g.key == key for g in groups):
            raise ValidationFailed.field("group_by", f"'{key[:64]}' is named twice")
        if target.column_type is not None and not target.column_type.sortable:
            raise ValidationFailed.field(
                "group_by", f"rows cannot be grouped by '{key[:64]}' (a list of values)"
            )
        groups.append(Group(target, bucket or None))
    return groups


def parse_metrics(table: Table, text: str | None) -> list[Metric]:
    """`count,sum:total_sum`: 400 `metrics` naming the metric that is unknown, names an
    unknown column, or is numeric on a column that is not (`sum`, `avg`: numbers; `min`,
    `max`: numbers, dates, times; `count_distinct`: any column)."""
    items = list(dict.fromkeys(_items(text))) or ["count"]
    if len(items) > MAX_METRICS:
        raise ValidationFailed.field("metrics", f"give at most {MAX_METRICS} metrics")
    metrics: list[Metric] = []
    for name in items:
        op, _, key = name.partition(":")
        shown = name[:80]
        if op not in METRIC_NAMES:
            raise ValidationFailed.field(
                "metrics",
                f"unknown metric '{shown}' (count, sum:col, avg:col, min:col, max:col, "
                "count_distinct:col)",
            )
        if op == "count":
            if key:
                raise ValidationFailed.field("metrics", f"'{shown}': count takes no column")
            metrics.append(Metric(name, op, None))
            continue
        target = _target(table, key) if key else None
        if target is None:
            raise ValidationFailed.field("metrics", f"'{shown}' names an unknown column")
        if op in ("sum", "avg") and not target.numeric:
            raise ValidationFailed.field(
                "metrics", f"'{shown}' needs a numeric column; '{key[:64]}' is not a number"
            )
        if op in ("min", "max") and not (target.numeric or target.is_date or target.ordered):
            raise ValidationFailed.field(
                "metrics", f"'{shown}' needs a number, date or time column"
            )
        metrics.append(Metric(name, op, target))
    return metrics


def parse_sort(
    text: str | None, groups: list[Group], metrics: list[Metric]
) -> list[tuple[str, bool]]:
    """`-count,status`: (group key or metric name, descending); 400 `sort` for another name."""
    known = {*(g.key for g in groups), *(m.name for m in metrics)}
    keys: list[tuple[str, bool]] = []
    for part in _items(text):
        name = part.lstrip("-")
        if name not in known:
            raise ValidationFailed.field(
                "sort", f"'{name[:80]}' is neither a group_by column nor a requested metric"
            )
        keys.append((name, part.startswith("-")))
    return keys


# ---- the company's wall clock ---------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def zone_offsets(zone: ZoneInfo) -> tuple[tuple[datetime, int], ...]:
    """The zone's UTC offset in milliseconds from each transition on (the first entry holds
    from the start of `ZONE_RANGE`), found day by day and then to the second."""

    def offset(seconds: int) -> int:
        moment = datetime.fromtimestamp(seconds, UTC).astimezone(zone)
        return int((moment.utcoffset() or timedelta()).total_seconds() * 1000)

    start, end = (int(moment.timestamp()) for moment in ZONE_RANGE)
    previous = offset(start)
    found: list[tuple[datetime, int]] = [(datetime.fromtimestamp(start, UTC), previous)]
    for day in range(start, end, 86_400):
        after = offset(day + 86_400)
        if after == previous:
            continue
        low, high = day, day + 86_400
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == previous else (low, middle)
        found.append((datetime.fromtimestamp(high, UTC), after))
        previous = after
    return tuple(found)


def _behind_utc(field: str, offsets: tuple[tuple[datetime, int], ...]) -> Expression:
    """An expression worth minus the offset in force at `field`'s moment, in milliseconds (a
    number for a zone that never changed, else a balanced `$cond` tree over the transitions:
    about 9 levels for a zone with summer time)."""
    if len(offsets) == 1:
        return -offsets[0][1]
    middle = len(offsets) // 2
    return {
        "$cond": [
            {"$lt": [field, offsets[middle][0]]},
            _behind_utc(field, offsets[:middle]),
            _behind_utc(field, offsets[middle:]),
        ]
    }


def _bucket_expression(field: str, bucket: str, zone: ZoneInfo) -> Expression:
    """A number naming the bucket of `field`'s moment on the company's wall clock: days since
    1970-01-01, weeks since the Monday before it, `year*12+month-1`, `year*4+quarter-1`, or the
    year; null for a missing date."""
    wall = {"$subtract": [field, _behind_utc(field, zone_offsets(zone))]}
    days = {"$divide": [{"$subtract": ["$$wall", EPOCH]}, DAY_MS]}
    numbers = {
        "day": {"$floor": days},
        "week": {"$floor": {"$divide": [{"$add": [days, 3]}, 7]}},
        "month": {"$add": [{"$multiply": [{"$year": "$$wall"}, 12]}, {"$month": "$$wall"}, -1]},
        "quarter": {
            "$add": [
                {"$multiply": [{"$year": "$$wall"}, 4]},
                {"$floor": {"$divide": [{"$subtract": [{"$month": "$$wall"}, 1]}, 3]}},
            ]
        },
        "year": {"$year": "$$wall"},
    }
    return {
        "$cond": [
            {"$eq": [{"$ifNull": [field, None]}, None]},
            None,
            {"$let": {"vars": {"wall": wall}, "in": numbers[bucket]}},
        ]
    }


def bucket_key(bucket: str, number: float) -> tuple[str, str]:
    """(key, label) of a bucket number: the key is the bucket's first day, `YYYY-MM-DD`; the
    label `2024-03-31`, `2024-W13`, `2024-03`, `2024-Q1` or `2024`."""
    n = int(number)
    if bucket == "day":
        first = date(1970, 1, 1) + timedelta(days=n)
        return first.isoformat(), first.isoformat()
    if bucket == "week":
        first = date(1970, 1, 1) + timedelta(days=n * 7 - 3)
        year, week, _ = first.isocalendar()
        return first.isoformat(), f"{year}-W{week:02d}"
    if bucket == "month":
        year, month = divmod(n, 12)
        return date(year, month + 1, 1).isoformat(), f"{year}-{month + 1:02d}"
    if bucket == "quarter":
        year, quarter = divmod(n, 4)
        return date(year, quarter * 3 + 1, 1).isoformat(), f"{year}-Q{quarter + 1}"
    return date(n, 1, 1).isoformat(), str(n)


# ---- the pipeline ---------------------------------------------------------------------------


def _blank_as_null(field: str) -> Expression:
    """The value, with a blank (missing, null or "", as the `blank` filter says) as null."""
    return {"$cond": [{"$eq": [{"$ifNull": [field, ""]}, ""]}, None, field]}


def _accumulators(metrics: list[Metric]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, metric in enumerate(metrics):
        name = f"m{index}"
        if metric.op == "count":
            out[name] = {"$sum": 1}
        elif metric.op == "count_distinct":
            out[name] = {"$addToSet": f"$v{index}"}
        else:
            out[name] = {f"${metric.op}": f"$v{index}"}
    return out


def _sizes(metrics: list[Metric]) -> dict[str, Any]:
    """Keeps every metric, with a distinct-value set as its size less the blank."""
    out: dict[str, Any] = {}
    for index, metric in enumerate(metrics):
        name = f"m{index}"
        if metric.op == "count_distinct":
            out[name] = {
                "$subtract": [{"$size": f"${name}"}, {"$cond": [{"$in": [None, f"${name}"]}, 1, 0]}]
            }
        else:
            out[name] = 1
    return out


def build_pipeline(
    match: dict[str, Any],
    groups: list[Group],
    metrics: list[Metric],
    zone: ZoneInfo,
    max_groups: int,
) -> list[dict[str, Any]]:
    """`$match` (the list's query), `$project` (group keys and metric inputs, once per row),
    then `$group` (at most `max_groups + 1` kept, to tell that there are too many). The totals
    are added up from the groups, except with a `count_distinct` (a value may be in two
    groups): then the groups and the totals are grouped side by side in one `$facet`. Without
    groups, one `$group` makes the totals."""
    project: dict[str, Any] = {"_id": 0}
    for index, group in enumerate(groups):
        field = f"${group.key}"
        project[f"k{index}"] = (
            _bucket_expression(field, group.bucket, zone) if group.bucket else _blank_as_null(field)
        )
    for index, metric in enumerate(metrics):
        if metric.target is not None:
            field = f"${metric.target.key}"
            project[f"v{index}"] = _blank_as_null(field) if metric.op == "count_distinct" else field
            if metric.op == "avg":  # how many rows have a value: the totals' average
                project[f"n{index}"] = {
                    "$cond": [{"$eq": [{"$ifNull": [field, None]}, None]}, 0, 1]
                }
    accumulators = _accumulators(metrics)
    totals: list[dict[str, Any]] = [
        {"$group": {"_id": None, **accumulators}},
        {"$project": _sizes(metrics)},
    ]
    head: list[dict[str, Any]] = [{"$match": match}, {"$project": project}]
    if not groups:
        return [*head, *totals]
    # one column: its value is the group's id (cheaper to compare than a document)
    by_group = "$k0" if len(groups) == 1 else {"k0": "$k0", "k1": "$k1"}
    counts = _value_counts(metrics)
    grouped: list[dict[str, Any]] = [
        {"$group": {"_id": by_group, **accumulators, **counts}},
        {"$limit": max_groups + 1},
        {"$project": {"_id": 1, **_sizes(metrics), **dict.fromkeys(counts, 1)}},
    ]
    if any(m.op == "count_distinct" for m in metrics):
        return [*head, {"$facet": {"groups": grouped, "totals": totals}}]
    return [*head, *grouped]


def _value_counts(metrics: list[Metric]) -> dict[str, Any]:
    return {f"n{i}": {"$sum": f"$n{i}"} for i, m in enumerate(metrics) if m.op == "avg"}


def totals_of(metrics: list[Metric], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals from the groups' raw metrics (no `count_distinct` among them)."""
    out: dict[str, Any] = {}
    groups = [{k: exact_number(v) for k, v in g.items()} for g in groups]
    with decimal.localcontext(DECIMAL128_DIGITS):
        _add_up(metrics, groups, out)
    return out


def _add_up(metrics: list[Metric], groups: list[dict[str, Any]], out: dict[str, Any]) -> None:
    for index, metric in enumerate(metrics):
        name, counted = f"m{index}", f"n{index}"
        values = [g[name] for g in groups if g.get(name) is not None]
        if metric.op in ("count", "sum"):
            out[name] = sum(values)
        elif metric.op == "min":
            out[name] = min(values, default=None)
        elif metric.op == "max":
            out[name] = max(values, default=None)
        elif metric.op == "avg":
            rows = sum(g.get(counted) or 0 for g in groups)
            weighted = sum(g[name] * g[counted] for g in groups if g.get(name) is not None)
            out[name] = weighted / rows if rows else None


def _as_number(value: object) -> object:
    """A decimal metric is answered as a string: sorted as the number it is."""
    if isinstance(value, str) and DECIMAL_TEXT.match(value):
        return decimal.Decimal(value)
    return value


DECIMAL128_DIGITS = decimal.Context(prec=34)  # what MongoDB's Decimal128 sums keep


def exact_number(value: object) -> object:
    """A Decimal128 from the pipeline as a Python Decimal (which adds up: totals of the
    groups' decimal sums stay exact)."""
    return value.to_decimal() if isinstance(value, Decimal128) else value


class Sortable(Protocol):
    """A group key or a metric: numbers, texts, booleans, ids, null."""

    def __lt__(self, other: Sortable, /) -> bool: ...


# ---- the service ----------------------------------------------------------------------------


class AggregateService:
    """Answers `GET /api/data/{table}/aggregate`; the caller's table access is checked."""

    def __init__(self, rows: RowService, max_groups: int = AGGREGATE_MAX_GROUPS) -> None:
        self.rows = rows
        self.max_groups = max_groups

    def pipeline(
        self, ctx: TenantContext, table: Table, request: AggregateRequest
    ) -> tuple[list[dict[str, Any]], list[Group], list[Metric]]:
        """The checked request as its pipeline (every 400 is raised here, before a query)."""
        groups = parse_group_by(table, request.group_by)
        metrics = parse_metrics(table, request.metrics)
        parse_sort(request.sort, groups, metrics)
        # the list's own query for this caller and these filters (access is per table today;
        # RowService.query is where row-level rules would join it, for both)
        match = self.rows.query(ctx, table, self.rows.filters.parse_param(request.filters))
        zone = ctx.values.timezone
        return build_pipeline(match, groups, metrics, zone, self.max_groups), groups, metrics

    async def aggregate(
        self, ctx: TenantContext, table: Table, request: AggregateRequest
    ) -> AggregateResult:
        pipeline, groups, metrics = self.pipeline(ctx, table, request)
        keys = [g.key for g in groups] + [m.target.key for m in metrics if m.target is not None]
        pipeline = await with_computed_stages(ctx, table, self.rows.types, pipeline, keys)
        sort = parse_sort(request.sort, groups, metrics)
        cursor = table.collection(ctx).aggregate(pipeline, maxTimeMS=ctx.max_time_ms)
        with query_purpose(CLIENT_QUERY):  # the client's filter, audited like the list's
            found = await cursor.to_list(None)
        raw_totals: dict[str, Any] | None = None
        if not groups:
            raw_groups, raw_totals = [], found[0] if found else {}
        elif found and "totals" in found[0]:  # the $facet of a count_distinct
            raw_groups = found[0]["groups"]
            raw_totals = found[0]["totals"][0] if found[0]["totals"] else {}
        else:
            raw_groups = found
        if len(raw_groups) > self.max_groups:
            raise ValidationFailed.field(
                "group_by",
                f"more than {self.max_groups} groups: add filters or use a coarser bucket",
            )
        if raw_totals is None:
            raw_totals = totals_of(metrics, raw_groups)
        totals = _metric_values(metrics, raw_totals)
        answer = [
            {**group_keys(groups, raw["_id"]), **_metric_values(metrics, raw)} for raw in raw_groups
        ]
        await self._label(ctx, groups, answer)
        answer = sort_groups(answer, groups, sort)[: request.limit]
        return AggregateResult(answer, totals)

    async def _label(
        self, ctx: TenantContext, groups: list[Group], answer: list[dict[str, Any]]
    ) -> None:
        for group in groups:
            key = group.key
            values = [g["key"][key] for g in answer if g["key"][key] is not None]
            if group.bucket is not None or not values:
                continue
            labels = await self._labels(ctx, group.target, values)
            for item in answer:
                if item["key"][key] in labels:
                    item["label"][key] = labels[item["key"][key]]

    async def _labels(
        self, ctx: TenantContext, target: Target, values: list[Any]
    ) -> dict[Any, Any]:
        if target.options is not None:
            return {v: target.options.get(v) for v in values}
        if target.user:
            return await _user_names(ctx, values)
        if target.link_table is not None:
            return await self._row_names(ctx, target.link_table, values)
        return {}

    async def _row_names(
        self, ctx: TenantContext, table_key: str, ids: list[str]
    ) -> dict[Any, Any]:
        """A linked row's label: its first text column, when the caller may read its table."""
        unknown: dict[Any, Any] = dict.fromkeys(ids)
        try:
            target = await load_table(ctx, self.rows.types, table_key)
        except CrmError:
            return unknown
        if await access_level(ctx, target) < Level.READ:
            return unknown
        shown = next(
            (c.key for c in target.columns if TEXT in target.column_type(c).capabilities), None
        )
        if shown is None:
            return unknown
        oids = [ObjectId(v) for v in ids if ObjectId.is_valid(v)]
        cursor = target.collection(ctx).find({"_id": {"$in": oids}}, {shown: 1})
        found = {str(d["_id"]): d.get(shown) async for d in cursor}
        return {v: found.get(v) for v in ids}


async def _user_names(ctx: TenantContext, ids: list[str]) -> dict[Any, Any]:
    oids = [ObjectId(v) for v in ids if isinstance(v, str) and ObjectId.is_valid(v)]
    cursor = system_collection(User).find(
        {"_id": {"$in": oids}, "tenant_id": ctx.tenant.id}, {"full_name": 1}
    )
    found = {str(d["_id"]): d.get("full_name") async for d in cursor}
    return {v: found.get(v) for v in ids}


def group_keys(groups: list[Group], raw: object) -> dict[str, Any]:
    """A group's `key` and `label` from the pipeline's `_id` (labels that need a query are
    filled in later)."""
    key: dict[str, Any] = {}
    label: dict[str, Any] = {}
    for index, group in enumerate(groups):
        value = raw.get(f"k{index}") if isinstance(raw, dict) else raw
        if value is None:
            key[group.key] = label[group.key] = None
        elif group.bucket is not None and isinstance(value, int | float):
            key[group.key], label[group.key] = bucket_key(group.bucket, value)
        else:
            key[group.key] = label[group.key] = group.target.render(value)
    return {"key": key, "label": label}


def _metric_values(metrics: list[Metric], raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, metric in enumerate(metrics):
        value = raw.get(f"m{index}")
        if metric.op in ("count", "count_distinct"):
            out[metric.name] = int(value or 0)
        elif metric.op in ("min", "max") and metric.target is not None:
            out[metric.name] = metric.target.render(value)
        elif metric.target is not None and metric.target.column is not None:
            column, column_type = metric.target.column, metric.target.column_type
            if column_type is not None:  # decimals answer strings
                value = column_type.metric_value(column, metric.op, value)
            out[metric.name] = 0 if metric.op == "sum" and value is None else value
        else:
            out[metric.name] = value
    return out


def sort_groups(
    answer: list[dict[str, Any]], groups: list[Group], sort: list[tuple[str, bool]]
) -> list[dict[str, Any]]:
    """By the requested keys, then by the group keys ascending; blanks last either way."""
    group_keys = {g.key for g in groups}
    order = [*sort, *((g.key, False) for g in groups if g.key not in dict(sort))]

    numeric_keys = {g.key for g in groups if g.target.numeric}

    def value(item: dict[str, Any], name: str) -> Sortable:
        if name in group_keys:  # a decimal group key is a string: compared as a number
            found = item["key"][name]
            return cast(Sortable, _as_number(found) if name in numeric_keys else found)
        return cast(Sortable, _as_number(item[name]))

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for name, descending in order:
            left, right = value(a, name), value(b, name)
            if left == right:
                continue
            if left is None or right is None:
                return 1 if left is None else -1
            try:
                less = left < right
            except TypeError:  # values of two kinds (a column that changed type): by text
                less = str(left) < str(right)
            return (1 if less else -1) if descending else (-1 if less else 1)
        return 0

    return sorted(answer, key=functools.cmp_to_key(compare))
