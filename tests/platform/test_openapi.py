from __future__ import annotations

import re

from openapi_spec_validator import validate

from handlers.app import all_routes


async def test_document_is_valid_openapi(client):
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "ErrorResponse" in doc["components"]["schemas"]


async def test_every_declared_route_is_documented(client):
    doc = await (await client.get("/api/openapi.json")).json()
    for route in all_routes():
        if not route.in_schema:
            continue
        operation = doc["paths"][route.openapi_path][route.method.lower()]
        assert str(route.status) in operation["responses"], route.path
        for status in route.error_statuses:
            assert str(status) in operation["responses"], (route.path, status)
        if route.access.needs_auth:
            assert operation["security"] == [{"bearerAuth": []}], route.path
            assert "401" in operation["responses"]
        if route.body is not None:
            assert "requestBody" in operation, route.path


async def test_request_and_response_schemas_come_from_the_models(client):
    doc = await (await client.get("/api/openapi.json")).json()
    login = doc["paths"]["/api/auth/login"]["post"]
    body_ref = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref.endswith("/LoginIn")
    schema = doc["components"]["schemas"]["LoginIn"]
    assert set(schema["required"]) == {"email", "password"}
    assert schema["additionalProperties"] is False
    ok = login["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/TokenPair")


async def test_every_app_route_is_declared(client):
    """A route added without a declaration (access, models, errors) fails here."""
    declared = {(r.method, r.openapi_path) for r in all_routes()}
    for resource in client.app.router.resources():
        info = resource.get_info()
        if "prefix" in info:  # Swagger UI's files, the docs' script, the panel's stylesheet
            assert info["prefix"] in ("/docs/static", "/docs/assets", "/admin/static")
            continue
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method == "HEAD":
                continue
            assert (route.method, path) in declared, (route.method, path)


async def test_docs_page_loads_only_local_files(client):
    """What a browser would fetch: every script and stylesheet is a local file that answers,
    the CSP forbids any other host, and Swagger UI is 5.x (4.x cannot read OpenAPI 3.1).
    tests/admin/test_browser.py checks that the page really renders."""
    page = await client.get("/docs")
    assert page.status == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    html = await page.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets)
    for asset in assets:
        assert (await client.get(asset)).status == 200, asset
    bundle = await (await client.get("/docs/static/swagger-ui-bundle.js")).text()
    assert re.search(r'"5\.\d+\.\d+"', bundle)
    script = await (await client.get("/docs/assets/docs.js")).text()
    assert "validatorUrl: null" in script


async def test_health_and_ready(client):
    assert await (await client.get("/health")).json() == {"status": "ok"}
    assert await (await client.get("/ready")).json() == {"status": "ready"}
