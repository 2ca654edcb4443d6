"""Waiting for the outbox (crm_core/platform/outbox.py) to drain: a unit of work removes its entry
just after it has recorded its outcome, so a client may see the campaign or the import finished a
moment before its entry is gone."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_core.platform.outbox import OUTBOX
from tests.support.waits import DEADLINE


async def outbox_drained(storage: Any, timeout: float = DEADLINE) -> int:
    """The number of outbox entries once it reaches 0 (or what is left after `timeout`, which
    only bounds a hang: tests/support/waits.py)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # a campaign's delivery-status poll (crm_core/sms/service.py `SMS_STATUS`) outlives the
        # sending by design: it is not work left
        query = {"kind": {"$ne": "sms.status"}}
        left = int(await storage.system_db[OUTBOX].count_documents(query))
        if left == 0 or loop.time() > deadline:
            return left
        await asyncio.sleep(0.02)
