"""Computed columns (issue #24): a page of 50 rows sorted by a formula over 10,000 rows, and
filtered by a rollup, against the same on stored (indexed) columns holding the same values;
then (issue #28 §3, `--depths`) a deep page by `offset` and by `cursor`, sorted by the formula,
by the rollup and by the stored column of the same table.

    .venv/bin/python -m benchmarks.bench_computed [--rows 10000] [--deals 20000] [--rounds 3]
        [--depths 0,1000,5000]

Prints, on the database the settings name (the embedded engine unless MONGODB_URL is set),
the median wall time of each request over `rounds`, its CPU time in this process (server and
client run in it), and the pipeline's stages as the query recorder saw them. Rows are written
straight to the database: their import is not what is measured. `--depths ""` leaves the deep
pages out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bson import ObjectId

from benchmarks.bench_files import Phase
from benchmarks.common import running_service
from crm_core.platform.storage import recording
from crm_core.tables.computed.compiler import CompileEnv, compile_formula
from crm_core.tables.computed.pipeline import finite
from crm_core.tables.computed.syntax import parse

COMPANIES = {
    "key": "companies",
    "columns": [
        {"key": "name", "type": "string"},
        {"key": "revenue", "type": "float"},
        {"key": "cost", "type": "float"},
        {"key": "score_stored", "type": "float", "indexed": True},
        {"key": "deal_count_stored", "type": "integer", "indexed": True},
        {"key": "score", "type": "formula", "formula": "ROUND({revenue} * 1.2 - {cost}, 2)"},
    ],
}
DEALS = {
    "key": "deals",
    "columns": [
        {"key": "amount", "type": "float"},
        {"key": "company", "type": "link", "table": "companies"},
    ],
}
# the same stored columns in a table without computed ones: the list's find() path
PLAIN = {"key": "plain", "columns": [c for c in COMPANIES["columns"] if c["type"] != "formula"]}
ROLLUP = {
    "key": "deal_count",
    "type": "rollup",
    "table": "deals",
    "link": "company",
    "function": "count",
}


def requests() -> list[tuple[str, str]]:
    def listing(table: str = "companies", **params: Any) -> str:
        query = "&".join(
            f"{k}={quote(json.dumps(v) if k == 'filters' else str(v))}" for k, v in params.items()
        )
        return f"/api/data/{table}?{query}"

    many = [{"field": "deal_count", "op": "gte", "value": 3}]
    many_stored = [{"field": "deal_count_stored", "op": "gte", "value": 3}]
    return [
        ("sorted by a formula", listing(sort="-score", limit=50)),
        ("sorted by a stored column", listing(sort="-score_stored", limit=50)),
        ("filtered by a rollup", listing(filters=many, sort="name", limit=50)),
        ("filtered by a stored column", listing(filters=many_stored, sort="name", limit=50)),
        ("no computed columns: sorted", listing("plain", sort="-score_stored", limit=50)),
        (
            "no computed columns: filtered",
            listing("plain", filters=many_stored, sort="name", limit=50),
        ),
    ]


async def fill(api: Any, rows: int, deals: int) -> None:
    await api.call("POST", "/api/meta/tables", 201, json=COMPANIES)
    await api.call("POST", "/api/meta/tables", 201, json=DEALS)
    await api.call("POST", "/api/meta/tables", 201, json=PLAIN)
    await api.call("POST", "/api/meta/tables/companies/columns", 201, json=ROLLUP)
    rng = random.Random(24)
    companies = []
    for index in range(rows):
        revenue, cost = round(rng.uniform(0, 1e6), 2), round(rng.uniform(0, 1e6), 2)
        companies.append(
            {
                "_id": ObjectId(),
                "name": f"Company {index:05d}",
                "revenue": revenue,
                "cost": cost,
                "score_stored": round(revenue * 1.2 - cost, 2),
                "deal_count_stored": 0,
            }
        )
    links = [rng.randrange(rows) for _ in range(deals)]
    for target in links:
        companies[target]["deal_count_stored"] += 1
    deal_docs = [
        {"_id": ObjectId(), "amount": round(rng.uniform(0, 1e5), 2), "company": companies[t]["_id"]}
        for t in links
    ]
    for collection, docs in (
        (await api.rows_collection("companies"), companies),
        (await api.rows_collection("deals"), deal_docs),
        (await api.rows_collection("plain"), [{**c, "_id": ObjectId()} for c in companies]),
    ):
        for begin in range(0, len(docs), 10_000):
            await collection.insert_many(docs[begin : begin + 10_000])


DEEP_SORTS = ("-score", "deal_count", "-score_stored")
PAGE = 50


async def _cursor_at(api: Any, base: str, depth: int) -> str | None:
    """The cursor of the page that starts at `depth`, walked to in pages of 1000."""
    cursor, walked = None, 0
    while walked < depth:
        step = min(1000, depth - walked)
        after = f"&cursor={cursor}" if cursor else ""
        cursor = (await api.call("GET", f"{base}&limit={step}{after}"))["next_cursor"]
        walked += step
    return cursor


async def _timed(api: Any, path: str, rounds: int) -> tuple[float, float, list[str], str]:
    """Median wall and CPU ms of `path`, the page's names and its pipeline's stages."""
    walls, cpus = [], []
    for _ in range(rounds):
        with recording() as log, Phase() as phase:
            page = await api.call("GET", path)
        walls.append(phase.wall)
        cpus.append(phase.cpu)
    stages = next(
        (" -> ".join(r.stages) for r in log.records if r.kind == "aggregate"), "no pipeline"
    )
    names = [r["name"] for r in page["items"]]
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, names, stages


async def deep_pages(api: Any, depths: list[int], rounds: int) -> None:
    """A page of 50 at each depth, by `offset` and by the `cursor` a walk there answered."""
    print(f"  deep pages of {PAGE}, median of {rounds} (wall ms / CPU ms)")
    for sort in DEEP_SORTS:
        base = f"/api/data/companies?sort={sort}"
        for depth in depths:
            wall_o, cpu_o, by_offset, _ = await _timed(
                api, f"{base}&limit={PAGE}&offset={depth}", rounds
            )
            cursor = await _cursor_at(api, base, depth)
            after = f"&cursor={cursor}" if cursor else ""
            wall_c, cpu_c, by_cursor, stages = await _timed(
                api, f"{base}&limit={PAGE}{after}", rounds
            )
            print(
                f"  sort={sort:14} depth {depth:6}: offset {wall_o:7,.0f} / {cpu_o:7,.0f}, "
                f"cursor {wall_c:7,.0f} / {cpu_c:7,.0f}; same page {by_offset == by_cursor}; "
                f"{stages}"
            )


async def finite_check(api: Any, rounds: int) -> None:
    """What the check that a computed number is finite costs (docs/computed.md "Blanks"): the
    formula's page pipeline on the companies with and without it, CPU of this process."""
    collection = await api.rows_collection("companies")
    score = next(c for c in COMPANIES["columns"] if c["key"] == "score")
    env = CompileEnv(timezone="UTC", today=datetime.now(UTC))
    bare = compile_formula(parse(score["formula"]), env)
    figures = []
    for expr in (bare, finite(bare)):
        pipeline = [{"$addFields": {"score": expr}}, {"$sort": {"score": -1}}, {"$limit": 50}]
        cpus = []
        for _ in range(rounds):
            with Phase() as phase:
                await collection.aggregate(pipeline).to_list(None)
            cpus.append(phase.cpu)
        figures.append(statistics.median(cpus) * 1000)
    print(f"  the finite check: a formula sort {figures[0]:,.0f} ms CPU, with it {figures[1]:,.0f}")


async def main(rows: int, deals: int, rounds: int, depths: list[int]) -> None:
    async with running_service() as api:
        await fill(api, rows, deals)
        engine = "MongoDB" if os.environ.get("MONGODB_URL") else "the embedded engine"
        print(f"{rows:,} companies, {deals:,} deals linking to them, on {engine}")
        answers = {}
        for name, path in requests():
            walls, cpus = [], []
            for _ in range(rounds):
                with recording() as log, Phase() as phase:
                    page = await api.call("GET", path)
                walls.append(phase.wall)
                cpus.append(phase.cpu)
            answers[name] = [r["name"] for r in page["items"]]
            shapes = [
                " -> ".join(r.stages) or r.kind
                for r in log.records
                if r.collection.startswith("rows.") and r.kind in ("aggregate", "find", "count")
            ]
            median = statistics.median(walls) * 1000
            print(
                f"  {name}: total {page['total']:,}, median {median:,.0f} ms "
                f"(min {min(walls) * 1000:,.0f}, max {max(walls) * 1000:,.0f}), "
                f"CPU {statistics.median(cpus) * 1000:,.0f} ms; {'; '.join(shapes)}"
            )
        same_sort = answers["sorted by a formula"] == answers["sorted by a stored column"]
        same_filter = answers["filtered by a rollup"] == answers["filtered by a stored column"]
        print(f"  same pages computed and stored: sort {same_sort}, filter {same_filter}")
        await finite_check(api, rounds)
        if depths:
            await deep_pages(api, depths, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depths", default="0,1000,5000")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    asyncio.run(main(args.rows, args.deals, args.rounds, depths))
