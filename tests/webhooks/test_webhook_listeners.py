"""Who listens to a row write is answered from the process cache (crm_core/accounts/cache.py): a
warm row write asks the database nothing about webhooks, and a webhook created, changed or deleted
in one process takes effect in every other at its next request (`versions.webhooks`)."""

from __future__ import annotations

from crm_core.platform.storage import recording
from tests.support.api import Api
from tests.support.processes import second_process
from tests.support.webhook_receiver import deliveries, make_hook, make_table


async def test_a_warm_row_write_asks_nobody_who_listens(api, owner, receiver):
    await make_table(api, owner)
    await make_table(api, owner, "quiet")
    hook = await make_hook(api, owner, f"{receiver.url}/hook")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "warm"})
    with recording() as log:
        row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
        path = f"/api/data/deals/{row['id']}"
        await api.call("PATCH", path, owner, expect=200, json={"amount": 5})
        await api.call("DELETE", path, owner, expect=204)
        await api.call("POST", "/api/data/quiet", owner, expect=201, json={"title": "Q"})
        await api.call(
            "POST", "/api/data/deals/bulk", owner, expect=201, json={"items": [{"title": "B"}]}
        )
    # (the in-process delivery task reads its webhook by id: that is the task's, not a write's)
    listener_queries = [r for r in log.records if r.collection == "_webhooks"]
    assert [r for r in listener_queries if r.fields != ("_id",)] == []
    log_items = await deliveries(api, owner, hook["id"], limit=10)
    events = [d["event"] for d in reversed(log_items)]
    assert events == ["row.created", "row.created", "row.updated", "row.deleted", "row.created"]
    assert [d["payload"]["table"] for d in log_items] == ["deals"] * 5


async def _created(api: Api, owner, hook_id: str) -> list[str]:
    """Titles of the rows whose creation reached the webhook's log, oldest first."""
    items = await deliveries(api, owner, hook_id, limit=100)
    return [
        item["title"]
        for d in reversed(items)
        if d["event"] == "row.created"
        for item in d["payload"]["items"]
    ]


async def test_a_webhook_change_in_one_process_reaches_another(
    api, client, owner, receiver, aiohttp_client
):
    await make_table(api, owner)
    await make_table(api, owner, "other")
    async with second_process(aiohttp_client, client) as second_client:
        second = Api(second_client)

        async def write(title: str, table: str = "deals") -> None:
            await second.call(
                "POST", f"/api/data/{table}", owner, expect=201, json={"title": title}
            )

        await write("before")  # the second process caches: nobody listens
        hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
        await write("created")
        assert await _created(api, owner, hook["id"]) == ["created"]

        path = f"/api/webhooks/{hook['id']}"
        await api.call("PATCH", path, owner, expect=200, json={"tables": ["other"]})
        await write("on deals")
        await write("on other", "other")
        assert await _created(api, owner, hook["id"]) == ["created", "on other"]

        await api.call("PATCH", path, owner, expect=200, json={"is_active": False})
        await write("while disabled", "other")
        await api.call("PATCH", path, owner, expect=200, json={"is_active": True})
        await write("enabled again", "other")
        # while disabled its events are kept (`skipped`, for a replay), in both processes
        listened = ["created", "on other", "while disabled", "enabled again"]
        assert await _created(api, owner, hook["id"]) == listened

        # the second process changes it now; the first one follows
        await second.call("PATCH", path, owner, expect=200, json={"events": ["row.updated"]})
        await api.call("POST", "/api/data/other", owner, expect=201, json={"title": "first"})
        assert await _created(api, owner, hook["id"]) == listened

        await api.call("DELETE", path, owner, expect=204)
        other = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
        await write("after delete")
        assert await _created(api, owner, other["id"]) == ["after delete"]
