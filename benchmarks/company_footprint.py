"""Collections and indexes per company, counted on a company created through the API, and the
data files that makes on a MongoDB server with WiredTiger at 1k / 10k / 100k companies
(docs/scaling.md).

The counts are read from the database (`listCollections`, `listIndexes`) after each step:
a new company (registration), then one custom table of ten columns with a row, an SMS campaign
and a webhook with one delivery (the tenant collections a company makes once it uses them).
The file figures are COMPUTED, not measured: WiredTiger keeps one file per collection and one
per index (the `_id` index included), so files = companies x (collections + indexes), plus the
system database's own, which does not grow with companies.

    .venv/bin/python -m benchmarks.company_footprint              # the embedded database
    MONGODB_URL=mongodb://... .venv/bin/python -m benchmarks.company_footprint   # a real server
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from benchmarks.common import TEN_COLUMNS, Client, running_service

COMPANIES = (1_000, 10_000, 100_000)
WEBHOOK_URL = "http://127.0.0.1:9/hook"  # nothing listens: the delivery fails, is logged


async def census(database: Any) -> dict[str, int]:
    """{collection: number of indexes, `_id` included}."""
    counts = {}
    for name in sorted(await database.list_collection_names()):
        counts[name] = len(await database[name].index_information())
    return counts


def totals(counts: dict[str, int]) -> tuple[int, int]:
    return len(counts), sum(counts.values())


async def use_every_feature(client: Client) -> None:
    await client.call(
        "POST", "/api/meta/tables", 201, json={"key": "deals", "columns": TEN_COLUMNS}
    )
    await client.call("POST", "/api/data/deals", 201, json={"company_name": "Acme"})
    await client.call(
        "POST",
        "/api/sms/campaigns",
        202,
        json={"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    await client.call(
        "POST",
        "/api/webhooks",
        201,
        json={"name": "w", "url": WEBHOOK_URL, "events": ["row.created"], "tables": ["deals"]},
    )
    await client.call("POST", "/api/data/deals", 201, json={"company_name": "Beta"})
    await asyncio.sleep(0.5)  # let the in-process tasks write what they write


def report(title: str, counts: dict[str, int]) -> None:
    collections, indexes = totals(counts)
    print(f"\n{title}: {collections} collections, {indexes} indexes")
    for name, n in counts.items():
        print(f"  {name:32} {n} index{'es' if n != 1 else ''}")


async def main(extra_tables: int) -> None:
    overrides: dict[str, Any] = {"webhook_allow_private_addresses": True}
    if os.environ.get("MONGODB_URL"):
        overrides["mongodb_url"] = os.environ["MONGODB_URL"]
    async with running_service(**overrides) as client:
        storage = client.app_services.storage
        tenant_db = storage.tenant_db(client.tenant_id)
        print(f"database: {'embedded' if storage.embedded else 'MongoDB at MONGODB_URL'}")
        fresh = await census(tenant_db)
        report("a new company (POST /api/auth/register)", fresh)
        before_table = totals(fresh)
        await use_every_feature(client)
        used = await census(tenant_db)
        report("after a custom table with a row, an SMS campaign and a webhook", used)
        system = await census(storage.system_db)
        report(f"the system database ({storage.settings.crm_db_prefix}), shared", system)
        for n in range(extra_tables):
            await client.call(
                "POST", "/api/meta/tables", 201, json={"key": f"extra{n}", "columns": TEN_COLUMNS}
            )
        per_table = (0, 0)
        if extra_tables:
            grown = totals(await census(tenant_db))
            base = totals(used)
            per_table = (
                (grown[0] - base[0]) / extra_tables,
                (grown[1] - base[1]) / extra_tables,
            )
            print(
                f"\neach further custom table (ten columns, one indexed): "
                f"{per_table[0]:g} collection(s), {per_table[1]:g} index(es)"
            )

    system_files = sum(totals(system))
    print("\nWiredTiger data files (computed: one per collection + one per index):")
    print(f"{'companies':>10} {'new companies':>16} {'using every feature':>22}")
    for companies in COMPANIES:
        fresh_files = companies * sum(before_table) + system_files
        used_files = companies * sum(totals(used)) + system_files
        print(f"{companies:>10,} {fresh_files:>16,} {used_files:>22,}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--extra-tables", type=int, default=3, help="custom tables added to measure one's cost"
    )
    asyncio.run(main(parser.parse_args().extra_tables))
