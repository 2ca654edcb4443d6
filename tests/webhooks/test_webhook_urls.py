"""Webhook URLs whose host cannot be used (issue #19 §6): a 400 naming `url`, never a 500.

yarl parses `https://xn--zz.com/` but raises UnicodeError when its host is read; a name with an
empty or over-long label cannot be IDNA-encoded. Both are refused when the URL is saved, and a
stored one (saved before this check) fails its delivery instead of breaking the sender."""

from __future__ import annotations

import pytest
from bson import ObjectId
from yarl import URL

from crm_core.platform.netguard import url_host
from crm_core.platform.settings import SettingsError
from handlers.routing import SERVICES
from tests.support.api import make_settings
from tests.support.resolver import FakeResolver
from tests.support.webhook_receiver import make_hook

BROKEN_HOSTS = [
    "https://xn--zz.com/",
    "https://xn--.com/hook",
    "http://xn--zz.com:8080/x",
    "https://ok.xn--zz/x",
    f"https://{'a' * 64}.example/x",
    "https://a..example/x",
]


def _body(url: str) -> dict[str, object]:
    return {"name": "x", "url": url, "events": ["row.created"], "tables": ["leads"]}


def _public_names(api) -> FakeResolver:
    """Names resolve to a public address without leaving the machine."""
    fake = FakeResolver(
        {"hooks.example": [["93.184.216.34"]], "xn--bcher-kva.example": [["93.184.216.34"]]}
    )
    api.client.app[SERVICES].webhooks.resolver.inner = fake
    return fake


@pytest.mark.parametrize("url", BROKEN_HOSTS)
async def test_a_host_that_cannot_be_encoded_is_a_400_naming_url(api, owner, url):
    body = await api.call("POST", "/api/webhooks", owner, expect=400, json=_body(url))
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "url"
    assert "not a valid" in body["error"]["details"][0]["message"]
    assert await api.call("GET", "/api/webhooks", owner, expect=200) == {"items": []}


@pytest.mark.parametrize("url", BROKEN_HOSTS)
async def test_patching_to_such_a_url_is_a_400_and_changes_nothing(api, owner, url):
    _public_names(api)
    hook = await make_hook(api, owner, "https://hooks.example/in", tables=["leads"])
    body = await api.call(
        "PATCH", f"/api/webhooks/{hook['id']}", owner, expect=400, json={"url": url}
    )
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "url"
    stored = await api.call("GET", f"/api/webhooks/{hook['id']}", owner, expect=200)
    assert stored["url"] == "https://hooks.example/in"


async def test_an_international_name_is_kept_in_its_ascii_form(api, owner):
    _public_names(api)
    hook = await api.call(
        "POST", "/api/webhooks", owner, expect=201, json=_body("https://bücher.example/in")
    )
    assert hook["url"] == "https://xn--bcher-kva.example/in"


async def test_a_stored_broken_url_fails_its_delivery_instead_of_the_sender(api, owner, client):
    _public_names(api)
    hook = await make_hook(api, owner, "https://hooks.example/in", tables=["leads"])
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    await db["_webhooks"].update_one(
        {"_id": ObjectId(hook["id"])}, {"$set": {"url": "https://xn--zz.com/in"}}
    )
    delivery = await api.call("POST", f"/api/webhooks/{hook['id']}/test", owner, expect=200)
    assert delivery["status"] == "failed" and delivery["response_code"] is None
    assert "not a valid host name" in delivery["error"]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://example.com/", "example.com"),
        ("https://bücher.example/", "xn--bcher-kva.example"),
        ("http://[::1]:80/", "::1"),
        ("http://127.0.0.1/", "127.0.0.1"),
    ],
)
def test_url_host_gives_the_wire_form(url, host):
    assert url_host(URL(url)) == host


@pytest.mark.parametrize("url", [*BROKEN_HOSTS, "mailto:x@example.com", "/relative"])
def test_url_host_refuses_what_no_request_could_use(url):
    with pytest.raises(ValueError, match="host"):
        url_host(URL(url))


# ---- the sibling: the SMS gateway's base URL (an operator's setting) ----------------------


@pytest.mark.parametrize(
    "url", ["https://xn--zz.com", f"https://{'a' * 64}.ru", "ftp://sms.ru", "sms.ru"]
)
def test_an_unusable_sms_gateway_url_stops_the_start_with_a_clear_message(url):
    with pytest.raises(SettingsError, match="SMSRU_BASE_URL"):
        make_settings(sms_provider="smsru", smsru_api_id="key", smsru_base_url=url)


def test_a_usable_sms_gateway_url_is_accepted():
    settings = make_settings(
        sms_provider="smsru", smsru_api_id="key", smsru_base_url="https://смс.example"
    )
    assert settings.smsru_base_url == "https://смс.example"
