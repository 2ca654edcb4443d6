"""Replays and redeliveries asked many times at once (docs/integrations.md): each kept event
is sent again once, however many requests raced for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from crm_core.webhooks.service import WebhookService
from tests.support.api import tenant_db
from tests.support.webhook_receiver import make_hook, make_table, settled

N = 20
KEPT = 3


async def test_twenty_replays_at_once_send_each_kept_event_once(api, owner, receiver, monkeypatch):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    path = f"/api/webhooks/{hook['id']}"
    await api.call("PATCH", path, owner, expect=200, json={"is_active": False})
    since = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(KEPT):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": f"t{i}"})
    await settled(api, owner, hook["id"], KEPT)
    await api.call("PATCH", path, owner, expect=200, json={"is_active": True})
    # the first two replays have both read what they found before either sends it again
    arrived, everyone = [0], asyncio.Event()
    original = WebhookService._requeue

    async def after_all_read(self, ctx, originals):
        arrived[0] += 1
        if arrived[0] == 2:  # two that read before either sent again is the race
            everyone.set()
        async with asyncio.timeout(10):  # a bound on the wait, never the pass condition
            await everyone.wait()
        return await original(self, ctx, originals)

    monkeypatch.setattr(WebhookService, "_requeue", after_all_read)
    body = {"since": since.isoformat()}
    answers = await asyncio.gather(
        *(api.call("POST", f"{path}/replay", owner, expect=202, json=body) for _ in range(N))
    )
    assert sum(a["queued"] for a in answers) == KEPT, answers
    copies = tenant_db(api.client, owner)["_webhook_deliveries"]
    made = await copies.count_documents({"redelivery_of": {"$exists": True, "$ne": None}})
    assert made == KEPT
