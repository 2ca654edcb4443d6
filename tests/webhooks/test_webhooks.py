"""Webhooks: registration, row and campaign events, signatures, retries, the delivery log,
auto-disable, the test ping, access rules and the SSRF guard (docs/integrations.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crm_core.accounts.cache import roles_changed
from crm_core.tables.builtin import migrate_all
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, add_user, make_settings
from tests.support.webhook_receiver import (
    ROW_EVENTS,
    deliveries,
    make_hook,
    make_table,
    settled,
    verify,
    wait_for,
)

# ---- registration --------------------------------------------------------------------------


async def test_crud_shows_the_secret_once(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook")
    assert hook["secret"].startswith("whsec_")
    assert hook["secret_hint"] == "…" + hook["secret"][-4:]
    assert hook["is_active"] and hook["events"] == ROW_EVENTS and hook["tables"] == ["deals"]
    got = await api.call("GET", f"/api/webhooks/{hook['id']}", owner, expect=200)
    assert "secret" not in got and got["secret_hint"] == hook["secret_hint"]
    listed = await api.call("GET", "/api/webhooks", owner, expect=200)
    assert [h["id"] for h in listed["items"]] == [hook["id"]]
    changed = await api.call(
        "PATCH",
        f"/api/webhooks/{hook['id']}",
        owner,
        expect=200,
        json={"name": "renamed", "events": ["row.created", "row.created"]},
    )
    assert changed["name"] == "renamed" and changed["events"] == ["row.created"]
    rotated = await api.call("POST", f"/api/webhooks/{hook['id']}/rotate-secret", owner, expect=200)
    assert rotated["secret"] != hook["secret"]
    await api.call("DELETE", f"/api/webhooks/{hook['id']}", owner, expect=204)
    await api.call("GET", f"/api/webhooks/{hook['id']}", owner, expect=404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
        ({"url": "http://[::1"}, "url"),
        ({"url": "http://127.0.0.1:99999/"}, "url"),
        ({"url": "http://host:abc/"}, "url"),
        ({"url": "http://" + "a" * 70 + ".example/"}, "url"),
        ({"url": "http://no such host/"}, "url"),
        ({"events": []}, "events"),
        ({"events": ["row.exploded"]}, "events.0"),
        ({"tables": []}, "tables"),
        ({"tables": ["nope"]}, "tables.0"),
        ({"events": ["campaign.finished"], "tables": ["deals"]}, "tables"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_registrations_are_400_and_store_nothing(api, owner, client, body, field):
    await make_table(api, owner)
    payload = {
        "name": "x",
        "url": "http://127.0.0.1:9/hook",
        "events": ROW_EVENTS,
        "tables": ["deals"],
        **body,
    }
    answer = await api.call("POST", "/api/webhooks", owner, expect=400, json=payload)
    assert answer["error"]["code"] == "validation_error"
    assert answer["error"]["details"][0]["field"] == field
    assert (await api.call("GET", "/api/webhooks", owner, expect=200))["items"] == []


# ---- delivery --------------------------------------------------------------------------------


async def test_row_events_arrive_signed_from_every_write_path(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook")
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"amount": 5})
    await api.call(
        "PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"amount": 5}
    )  # nothing changes: no event
    bulk = await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"items": [{"title": "B"}, {"title": "C"}]},
    )
    await api.call(
        "PATCH",
        "/api/data/deals/bulk",
        owner,
        expect=200,
        json={"items": [{"id": bulk["items"][0]["id"], "title": "B2"}]},
    )
    await api.call(
        "PATCH",
        "/api/data/deals/bulk",
        owner,
        expect=200,
        json={"filters": [{"field": "title", "op": "eq", "value": "C"}], "values": {"amount": 7}},
    )
    await api.call(
        "POST",
        "/api/data/deals/bulk-delete",
        owner,
        expect=200,
        json={"filters": [{"field": "title", "op": "eq", "value": "C"}]},
    )
    await api.call(
        "POST", "/api/data/deals/bulk-delete", owner, expect=200, json={"ids": [row["id"]]}
    )
    await api.call("DELETE", f"/api/data/deals/{bulk['items'][0]['id']}", owner, expect=204)

    await wait_for(lambda: _count(receiver, 8), "8 deliveries")
    await asyncio.sleep(0.05)
    assert len(receiver.received) == 8
    for request in receiver.received:
        assert verify(hook["secret"], request.headers, request.body)
        assert request.headers["X-CRM-Event"] == request.json["event"]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events():
        by_event.setdefault(event["event"], []).append(event)
        assert event["table"] == "deals" and event["actor_id"] == owner.user_id
    created = [
        item["row"] if "row" in item else item
        for e in by_event["row.created"]
        for item in e["items"]
    ]
    assert sorted(r["title"] for r in created) == ["A", "B", "C"]
    updates = [item for e in by_event["row.updated"] for item in e["items"]]
    assert {(u["row"]["title"], tuple(u["changed"])) for u in updates} == {
        ("A", ("amount",)),
        ("B2", ("title",)),
        ("C", ("amount",)),
    }
    assert next(u for u in updates if u["row"]["title"] == "B2")["previous"] == {"title": "B"}
    deleted = [item for e in by_event["row.deleted"] for item in e["items"]]
    assert sorted(d["row"]["title"] for d in deleted) == ["A", "B2", "C"]
    log = await settled(api, owner, hook["id"], 8)
    assert all(d["status"] == "succeeded" and d["response_code"] == 200 for d in log)
    assert all(d["attempts"] == 1 and d["latency_ms"] is not None for d in log)


async def _count(receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def test_built_in_tables_send_events_too(api, owner, receiver):
    hook = await make_hook(api, owner, f"{receiver.url}/hook", tables=["leads"])
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "Deal"})
    await wait_for(lambda: _count(receiver, 1))
    event = receiver.events()[0]
    assert event["event"] == "row.created" and event["table"] == "leads"
    assert verify(hook["secret"], receiver.received[0].headers, receiver.received[0].body)


async def test_failures_are_retried_with_backoff_then_succeed(api, owner, receiver):
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    receiver.answer_next(500, 503)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
    [delivery] = await settled(api, owner, hook["id"], 1)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert len(receiver.received) == 3
    # the same message id on every attempt: receivers can drop repeats
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert all(verify(hook["secret"], r.headers, r.body) for r in receiver.received)


async def test_repeated_failures_disable_the_webhook(aiohttp_client, receiver):
    client = await aiohttp_client(
        create_app(make_settings(webhook_max_attempts=2, webhook_disable_after_failures=2))
    )
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    receiver.always = 500
    for title in ("A", "B"):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": title})
    log = await settled(api, owner, hook["id"], 2)
    assert [d["status"] for d in log] == ["failed", "failed"]
    assert all(d["response_code"] == 500 and d["error"] == "HTTP 500" for d in log)
    state = await api.call("GET", f"/api/webhooks/{hook['id']}", owner, expect=200)
    assert state["is_active"] is False and state["consecutive_failures"] == 2
    assert "2 deliveries in a row failed" in state["disabled_reason"]
    attempts = len(receiver.received)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "C"})
    kept = await settled(api, owner, hook["id"], 3)  # disabled: kept for a replay, not sent
    assert [d["status"] for d in kept] == ["skipped", "failed", "failed"]
    assert kept[0]["error"] == "the webhook is disabled"
    assert len(receiver.received) == attempts
    again = await api.call(
        "PATCH", f"/api/webhooks/{hook['id']}", owner, expect=200, json={"is_active": True}
    )
    assert again["is_active"] and again["consecutive_failures"] == 0
    assert again["disabled_reason"] is None


async def test_redirects_are_not_followed(api, owner, receiver):
    hook = await make_hook(
        api, owner, f"{receiver.url}/hook", events=["row.created"], tables=["leads"]
    )
    receiver.always = 302
    delivery = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert delivery["status"] == "failed" and delivery["response_code"] == 302
    assert "redirects are not followed" in delivery["error"]
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_ping_is_signed_and_logged(api, owner, receiver):
    hook = await make_hook(api, owner, f"{receiver.url}/hook", tables=["leads"])
    delivery = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert delivery["status"] == "succeeded" and delivery["response_code"] == 200
    assert delivery["event"] == "ping" and delivery["latency_ms"] is not None
    [request] = receiver.received
    assert verify(hook["secret"], request.headers, request.body)
    assert request.json["event"] == "ping" and request.json["webhook_id"] == hook["id"]
    tampered = request.body.replace(b"ping", b"pong")
    assert not verify(hook["secret"], request.headers, tampered)
    assert not verify("whsec_" + "A" * 44, request.headers, request.body)
    receiver.always = 404
    failed = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert failed["status"] == "failed" and failed["response_code"] == 404
    log = await deliveries(api, owner, hook["id"])
    assert [d["id"] for d in log] == [failed["id"], delivery["id"]]
    only_failed = await deliveries(api, owner, hook["id"], status="failed")
    assert [d["id"] for d in only_failed] == [failed["id"]]
    state = await api.call("GET", f"/api/webhooks/{hook['id']}", owner, expect=200)
    assert state["consecutive_failures"] == 0  # pings do not count


async def test_campaign_finished_event(api, owner, receiver):
    hook = await make_hook(
        api, owner, f"{receiver.url}/hook", events=["campaign.finished"], tables=[]
    )
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    await wait_for(lambda: _count(receiver, 1), "campaign.finished")
    event = receiver.events()[0]
    assert event["event"] == "campaign.finished"
    [item] = event["items"]
    assert item["id"] == campaign["id"] and item["status"] == "completed"
    assert item["counts"]["sent"] == 1
    assert verify(hook["secret"], receiver.received[0].headers, receiver.received[0].body)


# ---- access ----------------------------------------------------------------------------------


async def _role_user(api, client, owner, permissions: list[str]):
    role = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Integrator", "permissions": permissions},
    )
    users = await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": f"integrator-{role['id']}@example.com",
            "full_name": "I",
            "password": "user-password",
            "role_ids": [role["id"]],
        },
    )
    return role, users, await api.login(f"integrator-{role['id']}@example.com", "user-password")


async def test_a_webhook_reaches_only_what_its_creator_can_read(api, client, owner, receiver):
    await make_table(api, owner)  # the owner's table, shared with nobody
    _role, _user, member = await _role_user(api, client, owner, ["webhooks.manage", "leads.read"])
    body = await api.call(
        "POST",
        "/api/webhooks",
        member,
        expect=400,
        json={
            "name": "x",
            "url": f"{receiver.url}/hook",
            "events": ROW_EVENTS,
            "tables": ["deals"],
        },
    )
    assert body["error"]["details"][0] == {"field": "tables.0", "message": "no such table"}
    await api.call(
        "POST",
        "/api/webhooks",
        member,
        expect=403,
        json={"name": "x", "url": f"{receiver.url}/hook", "events": ["campaign.finished"]},
    )
    # the owner's webhook on a table the member cannot read stays invisible to the member
    owners = await make_hook(api, owner, f"{receiver.url}/hook")
    assert (await api.call("GET", "/api/webhooks", member, expect=200))["items"] == []
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test")):
        await api.call(method, f"/api/webhooks/{owners['id']}{suffix}", member, expect=404, json={})
    assert receiver.received == []


async def test_deliveries_stop_when_the_creator_loses_access(api, client, owner, receiver):
    role, user, member = await _role_user(api, client, owner, ["webhooks.manage", "leads.read"])
    hook = await make_hook(api, member, f"{receiver.url}/hook", tables=["leads"])
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "one"})
    await settled(api, owner, hook["id"], 1)
    assert len(receiver.received) == 1
    await api.call(
        "PATCH",
        f"/api/roles/{role['id']}",
        owner,
        expect=200,
        json={"permissions": ["webhooks.manage"]},
    )
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "two"})
    log = await settled(api, owner, hook["id"], 2)
    assert log[0]["status"] == "skipped"
    assert "can no longer read table 'leads'" in log[0]["error"]
    await api.call(
        "PATCH",
        f"/api/roles/{role['id']}",
        owner,
        expect=200,
        json={"permissions": ["webhooks.manage", "leads.read"]},
    )
    await api.call(
        "PATCH", f"/api/users/{user['id']}", owner, expect=200, json={"is_active": False}
    )
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "three"})
    log = await settled(api, owner, hook["id"], 3)
    assert log[0]["status"] == "skipped" and "no longer active" in log[0]["error"]
    assert len(receiver.received) == 1


async def test_manager_cannot_manage_webhooks(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    body = await api.call("GET", "/api/webhooks", manager, expect=403)
    assert body["error"]["code"] == "forbidden"


async def test_other_tenants_see_no_webhooks(api, owner, receiver):
    hook = await make_hook(api, owner, f"{receiver.url}/hook", tables=["leads"])
    other = await api.register(company="Other")
    assert (await api.call("GET", "/api/webhooks", other, expect=200))["items"] == []
    await api.call("GET", f"/api/webhooks/{hook['id']}/deliveries", other, expect=404)
    # the other tenant's leads do not reach this tenant's webhook
    await api.call("POST", "/api/leads", other, expect=201, json={"title": "theirs"})
    await asyncio.sleep(0.1)
    assert receiver.received == []


async def test_a_company_has_a_bounded_number_of_webhooks(api, owner, monkeypatch):
    monkeypatch.setattr("crm_core.webhooks.service.MAX_WEBHOOKS", 2)
    url = "http://127.0.0.1:9/hook"
    for _ in range(2):
        await make_hook(api, owner, url, tables=["leads"])
    body = {"name": "x", "url": url, "events": ["row.created"], "tables": ["leads"]}
    answer = await api.call("POST", "/api/webhooks", owner, expect=409, json=body)
    assert answer["error"]["code"] == "conflict"
    assert len((await api.call("GET", "/api/webhooks", owner, expect=200))["items"]) == 2


async def test_migration_gives_webhooks_manage_to_older_companies(api, client, owner):
    storage = client.app[SERVICES].storage
    roles = storage.tenant_db(owner.tenant_id)["_roles"]
    await roles.update_many({}, {"$pull": {"permissions": "webhooks.manage"}})
    await roles_changed(owner.tenant_id)  # as a company from before the permission existed
    await api.call("GET", "/api/webhooks", owner, expect=403)
    assert await migrate_all(storage) >= 1
    granted = {r["key"] async for r in roles.find({"permissions": "webhooks.manage"})}
    assert granted == {"owner", "admin"}
    await api.call("GET", "/api/webhooks", owner, expect=200)
    assert await migrate_all(storage) == 0  # nothing left to do
