"""Every kind of error answers in the shape of docs/api.md "Errors"."""

from __future__ import annotations

import logging

from aiohttp import web

from handlers.app import create_app
from tests.support.api import make_settings


async def _error(resp, status, code):
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    # every error names its request, as the X-Request-ID header of the answer does
    assert body["error"]["request_id"] == resp.headers["X-Request-ID"]
    return body["error"]


async def test_unknown_route_is_404(client):
    await _error(await client.get("/api/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405(client):
    resp = await client.delete("/api/auth/login")
    await _error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


JSON = {"Content-Type": "application/json"}


async def test_malformed_json_is_invalid_json(client):
    resp = await client.post("/api/auth/login", data=b"{nope", headers=JSON)
    await _error(resp, 400, "invalid_json")


async def test_non_object_body(client):
    error = await _error(await client.post("/api/auth/login", json=[1, 2]), 400, "validation_error")
    assert error["details"][0]["field"] == "body"


async def test_pydantic_errors_name_the_field(client):
    error = await _error(
        await client.post("/api/auth/login", json={"email": 5, "password": "x"}),
        400,
        "validation_error",
    )
    assert error["details"] == [{"field": "email", "message": "Input should be a valid string"}]
    error = await _error(await client.post("/api/auth/login", data=b""), 400, "validation_error")
    assert {d["field"] for d in error["details"]} == {"email", "password"}


async def test_body_over_limit_is_413(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=2048)))
    await _error(await client.post("/api/auth/login", data=b"x" * 5000), 413, "payload_too_large")


async def test_unhandled_exception_is_500_without_trace(aiohttp_client, caplog):
    app = create_app(make_settings())

    async def boom(request):
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR):
        error = await _error(await client.get("/boom"), 500, "internal_error")
    assert "secret" not in str(error) and "Traceback" not in str(error)
    assert "secret internals" in caplog.text


async def test_plain_aiohttp_http_errors_are_rendered(aiohttp_client):
    app = create_app(make_settings())

    async def teapot(request):
        raise web.HTTPConflict(text="plain text")

    app.router.add_get("/conflict", teapot)
    client = await aiohttp_client(app)
    await _error(await client.get("/conflict"), 409, "conflict")


async def test_access_log_line(client, owner, caplog):
    with caplog.at_level(logging.INFO, logger="crm.access"):
        await client.get("/api/auth/me", headers=owner.headers)
    line = [r.getMessage() for r in caplog.records if r.name == "crm.access"][-1]
    assert line.startswith("GET /api/auth/me 200 ")
    assert f"tenant={owner.tenant_id}" in line and f"user={owner.user_id}" in line


async def test_a_405_on_a_literal_path_allows_only_its_own_methods(client, owner):
    # /api/trash/restore also matches the template /api/trash/{item_id} (DELETE): the literal
    # path is served first, so its Allow names POST only (found by the fuzzer)
    resp = await client.get("/api/trash/restore", headers=owner.headers)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"


async def test_a_405_names_every_method_of_a_path(client, owner):
    resp = await client.put("/api/sms/campaigns", headers=owner.headers)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
