"""The audit trail fed by every domain (docs/history.md "Audit trail"): sign-ins and failed
ones, users, roles, API tokens, webhooks (their automatic disable too, also shown in /admin),
imports, exports, SMS campaigns and the company's settings; each entry with its actor,
action, target and the request's client address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from handlers.app import create_app
from tests.support.admin_panel import ROOT_EMAIL, ROOT_PASSWORD, Panel
from tests.support.api import Api, make_settings
from tests.support.files import confirm, finished, make_table, upload
from tests.support.webhook_receiver import make_hook, settled
from tests.support.webhook_receiver import make_table as make_deals

ADDRESS = "127.0.0.1"  # the test client's address, as the login throttle sees it


async def trail(api, account, **query) -> list[dict]:
    """The caller's company's entries, oldest first."""
    params = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **query}.items())
    page = await api.call("GET", f"/api/audit?{params}", account, expect=200)
    return list(reversed(page["items"]))


def one(entries: list[dict], action: str) -> dict:
    found = [e for e in entries if e["action"] == action]
    assert len(found) == 1, (action, [e["action"] for e in entries])
    return found[0]


async def test_sign_ins_and_failed_sign_ins_without_passwords(api, owner, client):
    await api.login(owner.email, owner.password)
    await api.call(
        "POST",
        "/api/auth/login",
        expect=401,
        json={"email": owner.email, "password": "wrong-secret-guess"},
    )
    await api.call(
        "POST",
        "/api/auth/password",
        owner,
        expect=200,
        json={"current_password": owner.password, "new_password": "another-horse-9"},
    )
    entries = await trail(api, (await api.login(owner.email, "another-horse-9")))
    signed_in = [e for e in entries if e["action"] == "auth.signed_in"]
    assert len(signed_in) == 2
    assert signed_in[0]["actor"] == {"type": "user", "id": owner.user_id, "name": "Owner"}
    assert signed_in[0]["target"] == {"type": "user", "id": owner.user_id, "email": owner.email}
    assert signed_in[0]["address"] == ADDRESS
    failed = one(entries, "auth.sign_in_failed")
    assert failed["actor"]["type"] == "anonymous" and failed["actor"]["id"] is None
    assert failed["target"]["id"] == owner.user_id
    assert failed["changes"] == {"reason": "wrong password"}
    assert failed["address"] == ADDRESS
    changed = one(entries, "auth.password_changed")
    assert changed["actor"]["id"] == owner.user_id and changed["address"] == ADDRESS
    text = orjson.dumps(entries).decode()
    for secret in (owner.password, "wrong-secret-guess", "another-horse-9"):
        assert secret not in text


async def test_users_roles_and_tokens(api, owner, create_user):
    viewer = await create_user(owner, "viewer")
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"full_name": "Vic"}
    )
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"full_name": "Vic"}
    )  # a no-op: no entry
    await api.call("POST", f"/api/users/{viewer.user_id}/password", owner, expect=200)
    await api.call("DELETE", f"/api/users/{viewer.user_id}", owner, expect=200)
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"is_active": True}
    )
    role = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Readers", "permissions": ["leads.read"]},
    )
    await api.call(
        "PATCH",
        f"/api/roles/{role['id']}",
        owner,
        expect=200,
        json={"permissions": ["leads.read", "leads.write"]},
    )
    await api.call("DELETE", f"/api/roles/{role['id']}", owner, expect=204)
    token = await api.call(
        "POST",
        "/api/tokens",
        owner,
        expect=201,
        json={"name": "zapier", "permissions": ["leads.read"]},
    )
    await api.call("DELETE", f"/api/tokens/{token['id']}", owner, expect=204)

    entries = await trail(api, owner)
    actions = [e["action"] for e in entries if not e["action"].startswith("auth.")]
    assert actions == [
        "user.created",
        "user.changed",
        "user.password_reset",
        "user.deactivated",
        "user.reactivated",
        "role.created",
        "role.changed",
        "role.deleted",
        "token.created",
        "token.revoked",
    ]
    for entry in entries:
        assert entry["actor"]["id"] == owner.user_id or entry["action"].startswith("auth.")
        assert entry["address"] == ADDRESS
    user_target = {"type": "user", "id": viewer.user_id, "email": viewer.email}
    assert one(entries, "user.created")["target"] == user_target
    assert one(entries, "user.changed")["changes"] == {
        "full_name": {"before": "Viewer", "after": "Vic"}
    }
    assert one(entries, "user.deactivated")["changes"] == {
        "is_active": {"before": True, "after": False}
    }
    role_changed = one(entries, "role.changed")
    assert role_changed["target"] == {"type": "role", "id": role["id"], "name": "Readers"}
    assert role_changed["changes"]["permissions"]["after"] == ["leads.read", "leads.write"]
    created = one(entries, "token.created")
    assert created["target"]["id"] == token["id"] and created["target"]["name"] == "zapier"
    assert created["changes"]["permissions"] == ["leads.read"]
    assert token["token"] not in orjson.dumps(entries).decode()
    assert one(entries, "token.revoked")["target"]["id"] == token["id"]


async def test_webhooks_and_the_company_settings(api, owner, receiver):
    await make_deals(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    await api.call("PATCH", f"/api/webhooks/{hook['id']}", owner, expect=200, json={"name": "n"})
    await api.call("POST", f"/api/webhooks/{hook['id']}/rotate-secret", owner, expect=200)
    await api.call("POST", f"/api/webhooks/{hook['id']}/end-rotation", owner, expect=200)
    await api.call("DELETE", f"/api/webhooks/{hook['id']}", owner, expect=204)
    await api.call("PATCH", "/api/tenant", owner, expect=200, json={"timezone": "Europe/Berlin"})

    entries = [e for e in await trail(api, owner) if e["target"].get("type") != "table"]
    assert [e["action"] for e in entries] == [
        "webhook.created",
        "webhook.changed",
        "webhook.secret_rotated",
        "webhook.rotation_ended",
        "webhook.deleted",
        "tenant.changed",
    ]
    assert all(e["address"] == ADDRESS and e["actor"]["id"] == owner.user_id for e in entries)
    assert entries[0]["target"]["id"] == hook["id"]
    assert entries[0]["changes"]["url"] == f"{receiver.url}/hook"
    assert entries[1]["changes"] == {"name": {"before": hook["name"], "after": "n"}}
    assert hook["secret"] not in orjson.dumps(entries).decode()
    assert entries[-1]["target"] == {"type": "company", "id": owner.tenant_id}
    assert entries[-1]["changes"]["timezone"]["after"] == "Europe/Berlin"


async def test_an_automatic_disable_is_in_the_trail_and_on_the_admin_page(aiohttp_client, receiver):
    settings = make_settings(
        webhook_max_attempts=1,
        webhook_disable_after_failures=2,
        crm_superuser_email=ROOT_EMAIL,
        crm_superuser_password=ROOT_PASSWORD,
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    owner = await api.register(company="Hooked")
    await make_deals(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    panel = Panel(client)
    await panel.sign_in()
    page = await panel.get(f"/admin/companies/{owner.tenant_id}")
    assert "No webhook of this company was disabled" in page
    receiver.always = 500
    for title in ("A", "B"):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": title})
    await settled(api, owner, hook["id"], 2)

    disabled = one(await trail(api, owner), "webhook.disabled")
    assert disabled["actor"] == {"type": "system", "id": None, "name": "webhook delivery"}
    assert disabled["target"]["id"] == hook["id"]
    assert disabled["changes"]["reason"] == "2 deliveries in a row failed"
    page = await panel.get(f"/admin/companies/{owner.tenant_id}")
    assert "Webhooks disabled automatically" in page
    assert hook["id"] in page and "2 deliveries in a row failed" in page
    # a webhook its owner switches off is not the system's doing
    await api.call(
        "PATCH", f"/api/webhooks/{hook['id']}", owner, expect=200, json={"is_active": True}
    )
    await api.call(
        "PATCH", f"/api/webhooks/{hook['id']}", owner, expect=200, json={"is_active": False}
    )
    page = await panel.get(f"/admin/companies/{owner.tenant_id}")
    assert "2 deliveries in a row failed" not in page


async def test_imports_exports_and_sms_campaigns(api, client, owner):
    await make_table(api, owner)
    status, job = await upload(client, owner, b"name\nAda\n")
    assert status == 201, job
    await confirm(api, owner, job)
    await finished(api, owner, job)
    resp = await client.get("/api/data/people/export?format=csv", headers=owner.headers)
    assert resp.status == 200
    await resp.read()
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "spring",
            "text": "t",
            "recipients": [{"phone": "+79161234567"}],
            "send_at": send_at,
        },
    )
    await api.call("POST", f"/api/sms/campaigns/{campaign['id']}/cancel", owner, expect=200)

    entries = await trail(api, owner)
    started = one(entries, "import.started")
    assert started["target"] == {"type": "import", "id": job["id"], "table": "people"}
    exported = one(entries, "export.created")
    assert exported["target"] == {"type": "export", "table": "people"}
    assert exported["changes"]["format"] == "csv"
    created = one(entries, "sms_campaign.created")
    assert created["target"] == {"type": "sms_campaign", "id": campaign["id"], "name": "spring"}
    assert one(entries, "sms_campaign.cancelled")["target"]["id"] == campaign["id"]
    for action in ("import.started", "export.created", "sms_campaign.cancelled"):
        entry = one(entries, action)
        assert entry["actor"]["id"] == owner.user_id and entry["address"] == ADDRESS


async def test_another_company_never_sees_the_entries_and_audit_read_is_needed(
    api, owner, create_user
):
    await create_user(owner, "viewer")
    other = await api.register()
    theirs = await trail(api, other)
    assert [e["action"] for e in theirs] == []  # registering signs in without a sign-in entry
    assert owner.user_id not in orjson.dumps(theirs).decode()
    mine = await trail(api, owner)
    assert {e["action"] for e in mine} >= {"user.created", "auth.signed_in"}
    viewer = await create_user(owner, "viewer")
    await api.call("GET", "/api/audit", viewer, expect=403)
    manager = await create_user(owner, "manager")
    await api.call("GET", "/api/audit", manager, expect=403)
    admin = await create_user(owner, "admin")
    assert (await api.call("GET", "/api/audit", admin, expect=200))["total"] >= len(mine)
    # an API token needs audit.read in its scope
    bare = await api.call(
        "POST", "/api/tokens", owner, expect=201, json={"name": "t", "permissions": []}
    )
    await api.call(
        "GET", "/api/audit", headers={"Authorization": f"Bearer {bare['token']}"}, expect=403
    )
    scoped = await api.call(
        "POST", "/api/tokens", owner, expect=201, json={"name": "a", "permissions": ["audit.read"]}
    )
    page = await api.call(
        "GET", "/api/audit", headers={"Authorization": f"Bearer {scoped['token']}"}, expect=200
    )
    assert page["total"] >= len(mine)
