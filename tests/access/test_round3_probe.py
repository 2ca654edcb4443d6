"""Round 3's new routes probed from outside (docs/history.md, docs/api.md "Live events"): what
one user of a company must not reach of another's tables through history, revert, the trash
and live events."""

from __future__ import annotations

from tests.support.api import Account, Api
from tests.support.live import ready, sse_connect, ws_connect
from tests.support.tokens import bearer, make_token

SECRET = [{"key": "who", "type": "string"}, {"key": "salary", "type": "integer"}]


async def _secret_table_reused(api: Api, owner: Account, create_table, create_user):
    """The owner's `secret` table (one row, changed once) deleted; a manager (who could never
    read it) makes a table with the same key. Answers (manager, old row, first event id)."""
    await create_table(owner, "secret", SECRET)
    row = await api.call(
        "POST", "/api/data/secret", owner, expect=201, json={"who": "CEO", "salary": 900}
    )
    await api.call(
        "PATCH", f"/api/data/secret/{row['id']}", owner, expect=200, json={"salary": 1000}
    )
    page = await api.call("GET", f"/api/data/secret/{row['id']}/history", owner, expect=200)
    first_event = page["items"][-1]["id"]
    cfo = await api.call(
        "POST", "/api/data/secret", owner, expect=201, json={"who": "CFO", "salary": 800}
    )
    await api.call("DELETE", f"/api/data/secret/{cfo['id']}", owner, expect=204)
    await api.call("DELETE", "/api/meta/tables/secret", owner, expect=204)
    manager = await create_user(owner, "manager")
    await create_table(manager, "secret", SECRET)
    return manager, row, first_event


async def test_a_reused_table_key_shows_no_history_of_the_deleted_table(
    api, owner, create_table, create_user
):
    manager, row, _ = await _secret_table_reused(api, owner, create_table, create_user)
    path = f"/api/data/secret/{row['id']}/history"
    await api.call("GET", path, manager, expect=404)
    # nor can a revision of the old row be reverted into the new table
    await api.call(
        "POST", f"/api/data/secret/{row['id']}/history/{'0' * 24}/revert", manager, expect=404
    )


async def test_a_reused_table_key_replays_no_event_of_the_deleted_table(
    client, api, owner, create_table, create_user
):
    manager, _, first_event = await _secret_table_reused(api, owner, create_table, create_user)
    mine = await api.call("POST", "/api/data/secret", manager, expect=201, json={"who": "me"})
    live = await ready(await ws_connect(client, manager.access_token))
    subscribed = await live.subscribe("secret", since=first_event)
    assert subscribed["type"] == "subscribed"
    frames = await live.barrier()
    row_ids = {f.get("row_id") for f in frames if f["type"].startswith("row.")}
    # the deletion in the gap is a schema change: the client is told to reload (docs/api.md
    # "Resume") and is sent no row of the deleted table either way
    reloads = [f for f in frames if f["type"] == "reload"]
    assert reloads == [{"type": "reload", "table": "secret", "reason": "schema_changed"}], frames
    assert row_ids <= {mine["id"]}, frames
    await live.ws.close()


async def test_a_reused_table_key_lists_no_trash_of_the_deleted_table(
    api, owner, create_table, create_user
):
    manager, _, _ = await _secret_table_reused(api, owner, create_table, create_user)
    page = await api.call("GET", "/api/trash?table=secret", manager, expect=200)
    assert (page["items"], page["total"]) == ([], 0)
    page = await api.call("GET", "/api/trash", manager, expect=200)
    assert [i["name"] for i in page["items"]] == []
    # the owner still sees their table
    owners = await api.call("GET", "/api/trash", owner, expect=200)
    assert [i["kind"] for i in owners["items"]] == ["table"]


# ---- a deactivated user's session and API token on round 3's routes -----------------------

ROUND3_READS = [
    "/api/audit",
    "/api/trash",
    "/api/data/deals/aggregate?metrics=count",
    "/api/sms/stop-list",
    "/api/sms/campaigns",
]


async def test_a_deactivated_users_session_and_token_answer_401_and_streams_close(
    client, api, owner, create_table, create_user
):
    await create_table(owner, "deals")
    admin = await create_user(owner, "admin")
    token = (
        await make_token(
            api, admin, table_access="manage", permissions=["audit.read", "sms.read", "tables.all"]
        )
    )["token"]
    for path in ROUND3_READS:  # both work before
        await api.call("GET", path, admin, expect=200)
        await api.call("GET", path, bearer(token), expect=200)
    live = await ready(await ws_connect(client, token))
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    sse = await sse_connect(client, "/api/events?tables=deals", admin.access_token)
    await sse.expect("subscribed")

    await api.call(
        "PATCH", f"/api/users/{admin.user_id}", owner, expect=200, json={"is_active": False}
    )

    for path in ROUND3_READS:
        for who in (admin, bearer(token)):
            body = await api.call("GET", path, who, expect=401)
            assert body["error"]["code"] == "unauthorized", (path, body)
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "user_deactivated"
    close = await sse.expect("close")
    assert close["data"]["code"] == 4401 and close["data"]["reason"] == "user_deactivated"
    resp = await client.get(
        "/api/events?tables=deals",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    assert resp.status == 401
