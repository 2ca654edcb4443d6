"""Barriers for the schema-change races (tests/concurrency): a row write held after its
validation, before it is stored."""

from __future__ import annotations

import asyncio

from crm_core.tables.rows import RowService


class HeldWriter:
    """Holds row writes after validation (before the write) until released."""

    def __init__(self, monkeypatch) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        original = RowService.check_rules

        async def held(service, ctx, table, docs, whole_rows=True):
            await original(service, ctx, table, docs, whole_rows)
            self.reached.set()
            await self.release.wait()

        monkeypatch.setattr(RowService, "check_rules", held)
