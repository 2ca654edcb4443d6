"""The SSRF guard of webhooks: internal targets are refused when a URL is saved, when it
resolves, and again at connect time (crm_core/platform/netguard.py). Private addresses are not
allowed in this module (the other tests allow them to reach their local receiver)."""

from __future__ import annotations

import ipaddress

import pytest
from bson import ObjectId

from crm_core.platform.netguard import address_refusal
from handlers.routing import SERVICES
from tests.support.api import Api, make_settings
from tests.support.resolver import FakeResolver
from tests.support.webhook_receiver import make_hook, settled

# ---- SSRF ------------------------------------------------------------------------------------


@pytest.fixture
def settings():
    return make_settings(webhook_allow_private_addresses=False, webhook_max_attempts=2)


def guarded(api: Api, answers: dict[str, list[list[str]]]) -> FakeResolver:
    fake = FakeResolver(answers)
    api.client.app[SERVICES].webhooks.resolver.inner = fake  # type: ignore[union-attr]
    return fake


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::1]",
        "[64:ff9b::a00:1]",
        "localhost",
    ],
)
async def test_internal_addresses_are_refused(api, owner, host):
    body = await api.call(
        "POST",
        "/api/webhooks",
        owner,
        expect=400,
        json={
            "name": "x",
            "url": f"http://{host}:8080/x",
            "events": ["row.created"],
            "tables": ["leads"],
        },
    )
    assert body["error"]["details"][0]["field"] == "url"
    assert "not allowed" in body["error"]["message"]


async def test_names_resolving_to_internal_addresses_are_refused(api, owner):
    guarded(
        api,
        {
            "intranet.example": [["10.0.0.7"]],
            "mixed.example": [["93.184.216.34", "127.0.0.1"]],
            "mapped.example": [["::ffff:169.254.169.254"]],
        },
    )
    for name in ("intranet.example", "mixed.example", "mapped.example"):
        body = await api.call(
            "POST",
            "/api/webhooks",
            owner,
            expect=400,
            json={
                "name": "x",
                "url": f"https://{name}/x",
                "events": ["row.created"],
                "tables": ["leads"],
            },
        )
        assert "resolves to" in body["error"]["message"], body


async def test_dns_rebinding_is_caught_at_connect_time(api, owner, receiver):
    port = receiver.url.rsplit(":", 1)[1]
    fake = guarded(api, {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    hook = await api.call(
        "POST",
        "/api/webhooks",
        owner,
        expect=201,
        json={
            "name": "x",
            "url": f"http://rebind.example:{port}/hook",
            "events": ["row.created"],
            "tables": ["leads"],
        },
    )
    delivery = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert delivery["status"] == "failed" and delivery["response_code"] is None
    assert "refused" in delivery["error"] and "127.0.0.1" in delivery["error"]
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "x"})
    [event] = [d for d in await settled(api, owner, hook["id"], 2) if d["event"] == "row.created"]
    assert event["status"] == "failed" and event["attempts"] == 2
    assert "refused" in event["error"]
    assert receiver.received == [] and fake.calls["rebind.example"] >= 3


async def test_a_stored_internal_literal_is_refused_at_send_time(api, owner, receiver, client):
    """A URL saved while private addresses were allowed is not sent once they are not."""
    hook = await make_hook(api, owner, "https://93.184.216.34/hook", tables=["leads"])
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    await db["_webhooks"].update_one(
        {"_id": ObjectId(hook["id"])}, {"$set": {"url": f"{receiver.url}/hook"}}
    )
    delivery = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert delivery["status"] == "failed" and "refused" in delivery["error"]
    assert receiver.received == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("::ffff:8.8.8.8", False),
        ("::ffff:192.168.0.1", False),
        ("2001::c000:201", False),
        ("64:ff9b::7f00:1", False),
    ],
)
def test_address_policy(address, allowed):
    assert (address_refusal(ipaddress.ip_address(address)) is None) is allowed


def test_the_app_is_built_outside_an_event_loop():
    """`crm serve` builds the app before its loop runs: the guarded resolver waits for one."""
    from handlers.app import create_app

    app = create_app(make_settings())
    assert app[SERVICES].webhooks.resolver.inner is None  # type: ignore[union-attr]
