"""Live events follow access as it changes (issue #25 §2): a revoked share or role stops the
table's events; deactivation, a password change, a revoked or expired token close the
connection with 4401 and a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handlers.routing import SERVICES
from tests.support.api import Account, Api
from tests.support.live import ready, ws_connect
from tests.support.tokens import make_token

pytestmark = pytest.mark.asyncio


async def deals(factories, owner: Account) -> None:
    await factories.table(owner, key="deals", columns=[{"key": "title", "type": "string"}])


async def test_a_revoked_share_stops_the_tables_events(client, api: Api, owner, factories):
    await deals(factories, owner)
    viewer = await factories.user(owner, "viewer")
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "read"},
    )
    live = await ready(await ws_connect(client, viewer.access_token))
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "seen"})
    assert (await live.expect("row.created"))["row"]["title"] == "seen"

    await api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    gone = await live.expect("unsubscribed")
    assert gone == {"type": "unsubscribed", "table": "deals", "reason": "access_revoked"}
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "hidden"})
    assert await live.barrier() == []
    await live.ws.close()


async def test_a_role_losing_its_permission_stops_the_tables_events(
    client, api: Api, owner, factories
):
    await deals(factories, owner)
    role = await factories.role(owner, ["tables.all"])
    member = await factories.user(owner, "viewer")
    await api.call(
        "PATCH",
        f"/api/users/{member.user_id}",
        owner,
        expect=200,
        json={"role_ids": [role["id"]]},
    )
    live = await ready(await ws_connect(client, member.access_token))
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await api.call(
        "PATCH", f"/api/roles/{role['id']}", owner, expect=200, json={"permissions": ["leads.read"]}
    )
    gone = await live.expect("unsubscribed")  # at the next re-check (EVENTS_RECHECK_SECONDS)
    assert gone["reason"] == "access_revoked"
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "hidden"})
    assert await live.barrier() == []
    await live.ws.close()


async def test_deactivation_closes_with_4401(client, api: Api, owner, factories):
    member = await factories.user(owner, "viewer")
    live = await ready(await ws_connect(client, member.access_token))
    await api.call(
        "PATCH", f"/api/users/{member.user_id}", owner, expect=200, json={"is_active": False}
    )
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "user_deactivated"


async def test_a_password_change_closes_the_other_sessions(client, api: Api, owner, factories):
    member = await factories.user(owner, "viewer")
    live = await ready(await ws_connect(client, member.access_token))
    await api.call(
        "POST",
        "/api/auth/password",
        member,
        expect=200,
        json={"current_password": member.password, "new_password": "another-password-1"},
    )
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "session_ended"


async def test_a_revoked_api_token_closes_its_connections(client, api: Api, owner, factories):
    await deals(factories, owner)
    token = await make_token(api, owner, table_access="read")
    live = await ready(await ws_connect(client, token["token"]))
    assert (await live.subscribe("deals"))["type"] == "subscribed"
    await api.call("DELETE", f"/api/tokens/{token['id']}", owner, expect=204)
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "token_revoked"


async def test_an_api_token_without_table_access_sees_no_table(client, api: Api, owner, factories):
    await deals(factories, owner)
    token = await make_token(api, owner, table_access="none")
    live = await ready(await ws_connect(client, token["token"]))
    refused = await live.subscribe("deals")
    assert refused["type"] == "error" and refused["code"] == "not_found"
    await live.ws.close()


async def test_an_expiring_token_closes_with_token_expired(client, owner):
    auth = client.app[SERVICES].auth
    ttl = auth.codec.ttl_seconds
    almost = datetime.now(UTC) - timedelta(seconds=ttl - 1)  # expires in a second
    token = auth.codec.issue(owner.user_id, owner.tenant_id, now=almost)
    live = await ready(await ws_connect(client, token))
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "token_expired"


async def test_an_expired_token_in_the_first_frame_closes_with_token_expired(client, owner):
    auth = client.app[SERVICES].auth
    past = datetime.now(UTC) - timedelta(seconds=auth.codec.ttl_seconds + 60)
    token = auth.codec.issue(owner.user_id, owner.tenant_id, now=past)
    live = await ws_connect(client, token, first_frame=True)
    closed = await live.closed()
    assert closed["ws_code"] == 4401 and closed["reason"] == "token_expired"
