"""CORS (issue 28 §1, docs/api.md "CORS"): listed origins only, preflights answered and cached,
the headers a client reads exposed; odd origins get nothing and never a 500."""

from __future__ import annotations

import asyncio

import pytest

from crm_core.platform.settings import SettingsError, load_settings
from handlers.app import create_app
from tests.support.api import TEST_SECRET, Api, make_settings

APP = "http://127.0.0.1:5173"
OTHER = "http://127.0.0.1:9999"


@pytest.fixture
def settings():
    return make_settings(cors_origins=f"{APP}, https://crm.example.com")


async def test_a_listed_origin_reads_the_answer_and_its_headers(client, owner):
    resp = await client.get("/api/auth/me", headers={**owner.headers, "Origin": APP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-ID", "RateLimit-Policy", "RateLimit", "Retry-After", "ETag"} <= exposed
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_errors_carry_the_cors_headers_so_the_app_can_read_them(client):
    resp = await client.get("/api/auth/me", headers={"Origin": APP})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_a_preflight_from_a_listed_origin_is_answered_and_cached(client):
    resp = await client.options(
        "/api/meta/tables",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type"}
    assert resp.headers["Access-Control-Max-Age"] == "600"


async def test_another_origin_gets_no_cors_headers(client, owner):
    resp = await client.get("/api/auth/me", headers={**owner.headers, "Origin": OTHER})
    assert resp.status == 200  # the browser, not the server, withholds the answer
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    resp = await client.options(
        "/api/meta/tables", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_preflight_asking_for_an_unlisted_header_or_method_is_refused(client):
    for extra in (
        {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-evil"},
        {"Access-Control-Request-Method": "TRACE"},
        {},  # no method at all
    ):
        resp = await client.options("/api/meta/tables", headers={"Origin": APP, **extra})
        assert resp.status == 403, extra
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_the_admin_panel_and_the_probes_stay_same_origin(client):
    for path in ("/admin/login", "/health", "/docs"):
        resp = await client.get(path, headers={"Origin": APP})
        assert "Access-Control-Allow-Origin" not in resp.headers, path


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "*",
        f"{APP}/",
        APP.upper(),
        f"{APP}, {APP}",
        "http://127.0.0.1:5173\tx",
        "http://exämple.com",
        "http://" + "a" * 5000 + ".com",
        "javascript:alert(1)",
        "",
    ],
)
async def test_an_odd_origin_gets_no_cors_headers_and_no_500(client, owner, origin):
    for method, extra in (
        ("GET", owner.headers),
        ("OPTIONS", {"Access-Control-Request-Method": "GET"}),
    ):
        resp = await client.request(method, "/api/auth/me", headers={**extra, "Origin": origin})
        assert resp.status in (200, 403), (method, resp.status)
        assert "Access-Control-Allow-Origin" not in resp.headers
        if resp.status == 403:
            assert (await resp.json())["error"]["code"] == "forbidden"


async def test_raw_bytes_in_the_origin_header_get_no_500(client):
    """Bytes a client library would refuse to send (latin-1, control characters)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"OPTIONS /api/meta/tables HTTP/1.1\r\nHost: x\r\nOrigin: http://\xff\xfe.com\r\n"
        b"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"403"), status_line
    assert b"access-control-allow-origin" not in answer.lower()


async def test_without_cors_origins_no_cors_at_all(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings()))
    owner = await Api(client).register()
    resp = await client.get("/api/auth/me", headers={**owner.headers, "Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options(
        "/api/meta/tables", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    assert resp.status == 405 and "Access-Control-Allow-Origin" not in resp.headers


async def test_credentials_when_allowed(aiohttp_client):
    settings = make_settings(cors_origins=APP, cors_allow_credentials=True)
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/api/auth/me", headers={"Origin": APP})
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize(
    ("origins", "credentials", "message"),
    [
        ("*", True, "cannot go with CORS_ALLOW_CREDENTIALS"),
        ("http://app.example.com/path", False, "is not an origin"),
        ("HTTP://APP.EXAMPLE.COM", False, "is not an origin"),
        ("app.example.com", False, "is not an origin"),
    ],
)
def test_bad_cors_settings_are_refused_at_start(origins, credentials, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(
            _env_file=None,
            secret_key=TEST_SECRET,
            cors_origins=origins,
            cors_allow_credentials=credentials,
        )


async def test_a_star_without_credentials_allows_any_origin(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(cors_origins="*")))
    resp = await client.get("/api/auth/me", headers={"Origin": OTHER})
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", OTHER)
