"""Typed handler arguments: a handler receives its body, query and path values typed, from the
route declaration; a handler whose annotations disagree with its route fails at import time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from bson import ObjectId
from pydantic import BaseModel, ConfigDict

from crm_core.platform.errors import CrmError
from handlers.routing import (
    SERVICES,
    Authenticated,
    Call,
    JsonObject,
    Public,
    RouteTable,
    build_view,
    error_response,
)


class Greeting(BaseModel):
    name: str


class Page(BaseModel):
    limit: int = 10


def demo_routes() -> RouteTable:
    routes = RouteTable("demo")

    @routes.post("/demo/{thing_id}/{label}", access=Public(), summary="typed", query=Page)
    async def typed(
        call: Call, body: Greeting, query: Page, thing_id: ObjectId, label: str
    ) -> dict[str, Any]:
        return {
            "body": type(body).__name__,
            "name": body.name,
            "limit": query.limit,
            "id_type": type(thing_id).__name__,
            "label": label,
        }

    @routes.post("/demo-free", access=Public(), summary="free", body=JsonObject)
    async def free(call: Call, body: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(body)}

    @routes.post("/demo-form", access=WITH_CONTROL, summary="form", query=Page)
    async def form(call: Call, form: Greeting, query: Page) -> dict[str, Any]:
        return {"form": type(form).__name__, "name": form.name, "limit": query.limit}

    return routes


@dataclass(frozen=True)
class WithControl(Public):
    """An access that consumes a field of its own (like the /admin pages' CSRF token)."""

    control_fields: frozenset[str] = frozenset({"csrf"})


WITH_CONTROL = WithControl()


class StrictPage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = 10


def test_annotations_declare_and_must_match_the_route():
    routes = demo_routes()
    typed = routes.routes[0]
    assert typed.body is Greeting and typed.query is Page  # the body came from the annotation
    assert [a.name for a in typed.arguments] == ["body", "query", "thing_id", "label"]

    with pytest.raises(TypeError, match="declares"):

        @routes.post("/x", access=Authenticated(), summary="x", body=Greeting)
        async def mismatched(call: Call, body: Page) -> None: ...

    with pytest.raises(TypeError, match="not body, query, form or in"):

        @routes.get("/y/{a}", access=Authenticated(), summary="y")
        async def unknown(call: Call, b: str) -> None: ...

    with pytest.raises(TypeError, match="not both"):

        @routes.post("/w", access=Authenticated(), summary="w")
        async def both(call: Call, body: Greeting, form: Page) -> None: ...

    with pytest.raises(TypeError, match="str or ObjectId"):

        @routes.get("/z/{a}", access=Authenticated(), summary="z")
        async def untyped_path(call: Call, a: int) -> None: ...


async def test_a_typed_handler_answers(aiohttp_client, settings):
    from handlers.app import create_app

    app = create_app(settings)

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except CrmError as exc:
            return error_response(exc)

    demo = web.Application(middlewares=[errors])
    demo[SERVICES] = app[SERVICES]
    for spec in demo_routes().routes:
        demo.router.add_route(spec.method, spec.path, build_view(spec))
    client = await aiohttp_client(demo)
    thing = str(ObjectId())

    resp = await client.post(f"/demo/{thing}/tag?limit=3", json={"name": "Ann"})
    assert resp.status == 200
    assert await resp.json() == {
        "body": "Greeting",
        "name": "Ann",
        "limit": 3,
        "id_type": "ObjectId",
        "label": "tag",
    }

    resp = await client.post("/demo/not-an-id/tag", json={"name": "Ann"})
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "Thing not found"

    resp = await client.post(f"/demo/{thing}/tag", json={})
    assert resp.status == 400
    assert (await resp.json())["error"]["details"][0]["field"] == "name"

    resp = await client.post("/demo-free", json={"b": 1, "a": 2})
    assert await resp.json() == {"keys": ["a", "b"]}

    resp = await client.post("/demo-form?limit=2&csrf=t", data={"name": "Bo", "csrf": "t"})
    assert resp.status == 200
    assert await resp.json() == {"form": "Greeting", "name": "Bo", "limit": 2}
    resp = await client.post("/demo-form", data={"csrf": "t"})
    assert resp.status == 400
    assert (await resp.json())["error"]["details"][0]["field"] == "name"


def test_form_routes_are_declared_by_annotation_and_documented():
    routes = demo_routes()
    form = next(spec for spec in routes.routes if spec.path == "/demo-form")
    assert form.form is Greeting and form.body is None
    assert [a.name for a in form.arguments] == ["form", "query"]
    assert 400 in form.error_statuses

    from handlers.docs import OpenApiBuilder

    document = OpenApiBuilder([form]).to_dict()
    body = document["paths"]["/demo-form"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/x-www-form-urlencoded"]["schema"] == {
        "$ref": "#/components/schemas/Greeting"
    }


def test_a_name_given_twice_is_a_list_and_control_fields_are_not_seen():
    from multidict import MultiDict

    from crm_core.platform.errors import ValidationFailed
    from handlers.routing import parse_fields

    fields = MultiDict([("limit", "3"), ("csrf", "x"), ("csrf", "y")])
    assert parse_fields(fields, StrictPage, frozenset({"csrf"})).limit == 3
    with pytest.raises(ValidationFailed) as unknown:  # not a control field of this access
        parse_fields(fields, StrictPage)
    assert unknown.value.details[0] == {"field": "csrf", "message": "unknown field"}
    with pytest.raises(ValidationFailed) as twice:
        parse_fields(MultiDict([("limit", "3"), ("limit", "4")]), StrictPage)
    assert twice.value.details[0]["field"] == "limit"


async def test_requests_do_not_read_annotations(client, owner, monkeypatch):
    """A handler's signature is read once, when its route is declared: a request runs only the
    readers built then (no reflection per request)."""
    import inspect
    import typing

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("reflection at request time")

    monkeypatch.setattr(typing, "get_type_hints", refuse)
    monkeypatch.setattr(inspect, "signature", refuse)
    resp = await client.post("/api/roles", json={"name": "Helpers"}, headers=owner.headers)
    assert resp.status == 201
    role_id = (await resp.json())["id"]
    resp = await client.patch(
        f"/api/roles/{role_id}", json={"name": "Aides"}, headers=owner.headers
    )
    assert (resp.status, (await resp.json())["name"]) == (200, "Aides")


@pytest.mark.parametrize(("slots", "expected"), [(2, 2), (0, 8)])
async def test_the_embedded_mode_lets_a_few_requests_work_at_once(aiohttp_client, slots, expected):
    # EMBEDDED_MAX_ACTIVE_REQUESTS: authenticated requests beyond it wait for a turn before any
    # work (the database thread serves one at a time anyway); public ones (/health) never wait
    from handlers.app import create_app
    from tests.support.api import Api, make_settings

    app = create_app(make_settings(embedded_max_active_requests=slots))
    client = await aiohttp_client(app)
    api = Api(client)
    owner = await api.register()
    auth = app[SERVICES].auth
    real = auth.authenticate
    at_work = peak = 0
    release = asyncio.Event()

    async def slow(bearer: str) -> Any:
        nonlocal at_work, peak
        at_work += 1
        peak = max(peak, at_work)
        try:
            await release.wait()
            return await real(bearer)
        finally:
            at_work -= 1

    auth.authenticate = slow  # type: ignore[method-assign]
    calls = [
        asyncio.create_task(client.get("/api/auth/me", headers=owner.headers)) for _ in range(8)
    ]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if peak >= expected:
            break
    health = await client.get("/health")  # answered while the others wait
    assert health.status == 200
    assert peak == expected
    release.set()
    answers = await asyncio.gather(*calls)
    assert [r.status for r in answers] == [200] * 8


def test_no_handler_reads_the_call_untyped():
    # handlers take typed `body`, `query`, `form` and path arguments (handler_arguments); only the
    # routing itself reads them off the call
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[2] / "handlers").glob("*.py")):
        if path.name == "routing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "call"
                and node.attr in ("body", "query", "form", "param")
            ):
                offenders.append(f"{path.name}:{node.lineno} call.{node.attr}")
    assert offenders == []


async def test_a_slow_sender_does_not_hold_a_turn(aiohttp_client):
    # one turn only: a client that sends its JSON body slowly must not block the others
    from handlers.app import create_app
    from tests.support.api import Api, make_settings

    client = await aiohttp_client(create_app(make_settings(embedded_max_active_requests=1)))
    owner = await Api(client).register()
    more = asyncio.Event()

    async def slow_body():
        yield b'{"key": "slow", '
        await more.wait()
        yield b'"columns": []}'

    slow = asyncio.create_task(
        client.post(
            "/api/meta/tables",
            data=slow_body(),
            headers={**owner.headers, "Content-Type": "application/json"},
        )
    )
    await asyncio.sleep(0.1)
    quick = await asyncio.wait_for(client.get("/api/auth/me", headers=owner.headers), 5)
    assert quick.status == 200
    more.set()
    assert (await slow).status == 201
