"""Aggregate over 100,000 rows grouped by a select and a month (issue #23 §1).

    .venv/bin/python -m benchmarks.bench_aggregate [--rows 100000] [--rounds 3]

Prints, on the embedded database, for `group_by=status,doc_date:month` with
`metrics=count,sum:total_sum,avg:total_sum` in the company's time zone (UTC, then
Europe/Berlin, whose summer time makes the offset a 9-level `$cond` tree): the wall and CPU
time of one request and the peak of resident memory above its start; the pipeline's stages
as the query recorder saw them; and, to compare, one list request (`limit=50`, its count over
every row) on the same table. Rows are written straight to the database: their import is not
what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from bson import ObjectId

from benchmarks.bench_files import Phase
from benchmarks.common import TEN_COLUMNS, running_service
from crm_core.platform.storage import recording

GROUP = (
    "group_by="
    + quote("status,doc_date:month")
    + "&metrics="
    + quote("count,sum:total_sum,avg:total_sum")
)


def stored_rows(count: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    return [
        {
            "_id": ObjectId(),
            "company_name": f"Company {rng.randint(1, 5000)}",
            "total_sum": round(rng.uniform(0, 1_000_000), 2),
            "status": rng.choice([1, 2, 3, None]),
            "doc_date": start + timedelta(minutes=rng.randint(0, 2 * 365 * 24 * 60)),
        }
        for _ in range(count)
    ]


async def main(rows: int, rounds: int) -> None:
    async with running_service() as api:
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
        )
        db = api.app_services.storage.tenant_db(api.tenant_id)
        table = await db["_tables"].find_one({"key": "bench"})
        collection = db[str(table.get("collection") or "bench")]
        data = stored_rows(rows)
        for begin in range(0, rows, 10_000):
            await collection.insert_many(data[begin : begin + 10_000])
        del data
        print(f"{rows:,} rows, group_by=status,doc_date:month, metrics=count,sum,avg")
        for zone in ("UTC", "Europe/Berlin"):
            await api.call("PATCH", "/api/tenant", json={"timezone": zone})
            walls, cpus, peaks = [], [], []
            for _ in range(rounds):
                with recording() as log, Phase() as phase:
                    got = await api.call("GET", f"/api/data/bench/aggregate?{GROUP}")
                walls.append(phase.wall)
                cpus.append(phase.cpu)
                peaks.append(phase.peak_above)
            (pipeline,) = [r for r in log.records if r.kind == "aggregate"]
            print(
                f"  {zone}: {len(got['groups'])} groups, count {got['totals']['count']:,}; "
                f"median {statistics.median(walls) * 1000:,.0f} ms "
                f"(min {min(walls) * 1000:,.0f}, max {max(walls) * 1000:,.0f}) per request, "
                f"CPU {statistics.median(cpus) * 1000:,.0f} ms; "
                f"resident memory peak +{max(peaks):.0f} MiB"
            )
        print(f"  pipeline stages: {' -> '.join(pipeline.stages)}; $match {pipeline.filter}")
        with Phase() as phase:
            page = await api.call("GET", "/api/data/bench?limit=50&sort_by=id")
        print(
            f"  compare: one list page (limit=50, total {page['total']:,}) "
            f"{phase.wall * 1000:,.0f} ms, peak +{phase.peak_above:.0f} MiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.rounds))
