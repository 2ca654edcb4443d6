"""What the outbox's sweep costs (crm_core/platform/outbox.py), on the embedded database by default
or on `--mongodb-url`:

    .venv/bin/python -m benchmarks.bench_outbox [--leased 10000] [--due 100] [--mongodb-url URI]

1. one sweep round when nothing is due, with `--leased` entries in progress (not yet due): the
   price every worker pays every `WEBHOOK_SWEEP_SECONDS`;
2. one round handing `--due` due entries to a broker that takes them at once (after an outage).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from crm_core.platform.indexes import SYSTEM_INDEXES, ensure_system_indexes
from crm_core.platform.outbox import OUTBOX, Outbox, Work
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Storage
from models.accounts import SYSTEM_DOCUMENTS


async def _taken(work: Work) -> None:
    """A broker that takes the work at once."""


async def main(leased: int, due: int, mongodb_url: str | None) -> None:
    settings = Settings(_env_file=None, crm_env="test", mongodb_url=mongodb_url)  # type: ignore[call-arg]
    storage = Storage(settings)
    await storage.start(SYSTEM_DOCUMENTS)
    await ensure_system_indexes(storage.system_db)
    await storage.system_db[OUTBOX].delete_many({})
    outbox = Outbox(storage)
    dispatch = {"bench": _taken}
    await outbox.record([Work("bench", "t", ("leased", i), 600) for i in range(leased)])
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        assert await outbox.sweep(dispatch) == 0
    idle_ms = (time.perf_counter() - started) / rounds * 1000
    await outbox.record([Work("bench", "t", ("due", i), 0) for i in range(due)])
    started = time.perf_counter()
    handed = await outbox.sweep(dispatch, limit=due)
    busy_ms = (time.perf_counter() - started) * 1000
    where = "embedded" if storage.embedded else mongodb_url
    print(f"database: {where}; {leased} entries in progress ({len(SYSTEM_INDEXES)} system indexes)")
    print(f"sweep round, nothing due: {idle_ms:.2f} ms ({rounds} rounds)")
    print(f"sweep round handing {handed} due entries: {busy_ms:.0f} ms")
    await storage.system_db[OUTBOX].delete_many({})
    storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--leased", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--mongodb-url", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.leased, args.due, args.mongodb_url))
