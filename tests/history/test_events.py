"""One path for change events: webhooks hear `row.restored` and a revert as `row.updated`,
from the same place the history is recorded (crm_core/tables/history.py)."""

from __future__ import annotations

from tests.support.webhook_receiver import make_hook, make_table, wait_for


async def test_restore_and_revert_reach_webhooks(api, owner, receiver):
    await make_table(api, owner)
    await make_hook(
        api,
        owner,
        f"{receiver.url}/hook",
        events=["row.created", "row.updated", "row.deleted", "row.restored"],
    )
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"title": "B"})
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"title": "B"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    history = await api.call("GET", f"/api/data/deals/{row['id']}/history", owner, expect=200)
    created = history["items"][-1]
    await api.call(
        "POST", f"/api/data/deals/{row['id']}/history/{created['id']}/revert", owner, expect=200
    )

    async def all_arrived() -> bool:
        return len(receiver.received) >= 5

    await wait_for(all_arrived, "five events")
    events = receiver.events()
    # the no-op PATCH told nobody: created, updated, deleted, restored, updated (the revert)
    assert sorted(e["event"] for e in events) == [
        "row.created",
        "row.deleted",
        "row.restored",
        "row.updated",
        "row.updated",
    ]
    restored = next(e for e in events if e["event"] == "row.restored")
    assert restored["items"] == [{"id": row["id"], "row": restored["items"][0]["row"]}]
    assert restored["items"][0]["row"]["title"] == "B"
    updates = [e["items"][0] for e in events if e["event"] == "row.updated"]
    assert sorted((u["row"]["title"], u["previous"]["title"]) for u in updates) == [
        ("A", "B"),
        ("B", "A"),
    ]
