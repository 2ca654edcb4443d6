"""Filter translation, filtered listing and row moves.

    .venv/bin/python -m benchmarks.bench_filters

Prints: translation time of a 20-condition filter; list time with filters on 10,000 rows;
a move on a 1,000-row and on a 100,000-row table with the reads and writes each took.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from bson import ObjectId

from benchmarks.common import TEN_COLUMNS, random_rows, running_service
from crm_core.tables.columns import Column, ValueContext, default_column_types
from crm_core.tables.filters import FilterBuilder, FilterEnv, default_filter_operators, table_fields

TWENTY = [
    {"field": "total_sum", "op": "between", "value": [100, 900_000]},
    {"field": "quantity", "op": "gte", "value": -500},
    {"field": "doc_date", "op": "is_within", "value": {"past_days": 3650}},
    {"field": "company_name", "op": "not_contains", "value": "zzz"},
    {"or": [{"field": "status", "op": "in", "value": [1, 2]}, {"field": "status", "op": "blank"}]},
    {"field": "email", "op": "ends_with", "value": "example.com"},
    {"field": "phone", "op": "starts_with", "value": "+7"},
    {"field": "site", "op": "contains", "value": "example"},
    {"field": "is_archived", "op": "neq", "value": True},
    {"field": "call_at", "op": "lte", "value": "23:59"},
    {"field": "quantity", "op": "not_in", "value": [0, 1, 2]},
    {"field": "doc_date", "op": "gte", "value": "2024-01-01"},
    {"field": "total_sum", "op": "not_blank"},
    {
        "and": [
            {"field": "quantity", "op": "lt", "value": 2_000_000},
            {"field": "total_sum", "op": "gt", "value": 0},
        ]
    },
    {"field": "company_name", "op": "neq", "value": "nobody"},
    {"field": "_created_at", "op": "is_within", "value": "this_year"},
    {"field": "email", "op": "not_blank"},
    {"field": "doc_date", "op": "lt", "value": "2100-01-01"},
]


def bench_translation() -> None:
    builder = FilterBuilder(default_filter_operators())
    fields = table_fields([Column.from_doc(c) for c in TEN_COLUMNS], default_column_types())
    env = FilterEnv(ValueContext(ZoneInfo("UTC"), "RU", 10_000), datetime.now(UTC))
    count = sum(len(c.get("or", c.get("and", [c]))) for c in TWENTY)
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        builder.translate(TWENTY, fields, env)
    elapsed = time.perf_counter() - started
    print(f"translate a {count}-condition filter: {elapsed / rounds * 1e6:.0f} µs")


async def bench_list_and_moves() -> None:
    async with running_service() as api:
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
        )
        data = random_rows(10_000)
        for start in range(0, len(data), 1000):
            await api.call(
                "POST", "/api/data/bench/bulk", 201, json={"items": data[start : start + 1000]}
            )
        flt = quote(
            json.dumps(
                [
                    {"field": "total_sum", "op": "gt", "value": 500_000},
                    {"field": "company_name", "op": "contains", "value": "acme"},
                ]
            )
        )
        rounds = 5
        started = time.perf_counter()
        for _ in range(rounds):
            page = await api.call("GET", f"/api/data/bench?filters={flt}&limit=50")
        elapsed = time.perf_counter() - started
        print(
            f"list with 2 filters on 10,000 rows ({page['total']} match): "
            f"{elapsed / rounds * 1000:.0f} ms per request"
        )

        for size in (1_000, 100_000):
            key = f"moves{size}"
            await api.call(
                "POST",
                "/api/meta/tables",
                201,
                json={"key": key, "columns": [{"key": "n", "type": "integer"}]},
            )
            # rows are written straight to the database: the API import is not what is measured
            rows = await api.rows_collection(key)
            ids = [ObjectId() for _ in range(size)]
            await rows.insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])
            started = time.perf_counter()
            costs = await api.call(
                "POST", f"/api/data/{key}/{ids[-1]}/move", json={"before_id": str(ids[size // 2])}
            )
            elapsed = time.perf_counter() - started
            print(
                f"move on a {size:,}-row table: {costs['writes']} write(s), "
                f"{costs['reads']} read(s), {elapsed * 1000:.0f} ms"
            )


if __name__ == "__main__":
    bench_translation()
    asyncio.run(bench_list_and_moves())
