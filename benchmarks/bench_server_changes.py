"""The cost of the changes the server makes to rows by itself (issue 28 §4, docs/history.md
"Changes the server makes"): a column's type change converting every row, and a deleted row
whose links the server clears, each now a new version and a system revision per row.

    .venv/bin/python -m benchmarks.bench_server_changes [--rows 20000] [--links 2000]

and, for a figure before the change, the same script against another checkout's code (its
path in place of OTHER_CHECKOUT):

    PYTHONPATH=OTHER_CHECKOUT:. .venv/bin/python benchmarks/bench_server_changes.py

Prints the wall time of the type change and of the delete (embedded database, one process,
loopback HTTP) and, where the code has it, the database calls the server-made changes made
as a real server would count them (one per bulk write; the embedded engine applies a bulk
write's updates one by one).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.common import running_service


def spy_on_changes() -> list[Any]:
    """Every `SystemChange` made (none on code before it)."""
    made: list[Any] = []
    try:
        from crm_core.tables import history, meta
    except ImportError:  # pragma: no cover - other checkouts
        return made
    original = getattr(history, "SystemChange", None)
    if original is None:
        return made

    class Spied(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    history.SystemChange = Spied  # type: ignore[misc]
    meta.SystemChange = Spied  # type: ignore[attr-defined]
    return made


async def _bulk(api: Any, table: str, items: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(items), 1000):
        created = await api.call(
            "POST", f"/api/data/{table}/bulk", 201, json={"items": items[start : start + 1000]}
        )
        ids += [r["id"] for r in created["items"]]
    return ids


async def main(rows: int, links: int) -> None:
    made = spy_on_changes()
    async with running_service() as api:
        columns = [{"key": "v", "type": "integer"}, {"key": "w", "type": "string"}]
        await api.call("POST", "/api/meta/tables", 201, json={"key": "t", "columns": columns})
        await _bulk(api, "t", [{"v": i, "w": "x"} for i in range(rows)])
        started = time.perf_counter()
        await api.call("PATCH", "/api/meta/tables/t/columns/v", 200, json={"type": "string"})
        elapsed = time.perf_counter() - started
        calls = sum(c.round_trips for c in made)
        print(
            f"type change of {rows} rows: {elapsed * 1000:.0f} ms "
            f"({elapsed / rows * 1e6:.1f} us/row); server-made calls: {calls}"
        )
        made.clear()
        firm_columns = [{"key": "name", "type": "string"}]
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "firms", "columns": firm_columns}
        )
        deal_columns = [{"key": "firm", "type": "link", "table": "firms"}]
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "deals", "columns": deal_columns}
        )
        firm = await api.call("POST", "/api/data/firms", 201, json={"name": "F"})
        await _bulk(api, "deals", [{"firm": firm["id"]} for _ in range(links)])
        started = time.perf_counter()
        await api.call("DELETE", f"/api/data/firms/{firm['id']}", 204)
        elapsed = time.perf_counter() - started
        calls = sum(c.round_trips for c in made)
        print(
            f"delete of a row linked from {links} rows: {elapsed * 1000:.0f} ms; "
            f"server-made calls: {calls}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--links", type=int, default=2000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.links))
