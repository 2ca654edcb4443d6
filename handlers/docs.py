"""`/api/openapi.json`, generated with apispec from the route declarations and the same pydantic
models that validate requests and shape responses; `/docs`, Swagger UI 5 from the files that the
`swagger-ui-py` package ships (no CDN, online validator off, a CSP that allows no other host)."""

from __future__ import annotations

import copy
import functools
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from apispec import APISpec
from pydantic import BaseModel
from swagger_ui.utils import SWAGGER_UI_PY_ROOT

from handlers.routing import (
    Authenticated,
    Call,
    JsonObject,
    Public,
    RouteSpec,
    RouteTable,
    path_parameters,
)
from handlers.tenant_openapi import tenant_document
from models.base import SCHEMA_COMPONENTS, ErrorResponse, component

API_VERSION = "0.1.0"
REF = "#/components/schemas/{model}"
SWAGGER_STATIC = "/docs/static"
DOCS_ASSETS = "/docs/assets"  # our own script and styles for the docs pages
ASSETS_DIR = Path(__file__).parent / "static"
# The browser enforces it: the page may load and call nothing but this server.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

routes = RouteTable("docs")

_ERROR_TEXT = {
    400: "Bad input: `validation_error`, `invalid_json`, `invalid_filter` or `invalid_cursor`",
    401: "`unauthorized`: no, expired, revoked or invalid access token",
    403: "`forbidden`: the caller lacks the permission or access this needs, or "
    "`password_change_required` until a temporary password is changed",
    404: "`not_found`: no such object in the caller's tenant",
    409: "`conflict`: duplicate key, stale version or a state that forbids this",
    412: "`precondition_failed`: the object changed since the version sent in `If-Match` "
    "(`details` name the current version, also in `ETag`)",
    413: "`payload_too_large`: the body is larger than `MAX_BODY_BYTES`",
    415: "`unsupported_media_type`: the body is not `application/json`",
    429: "`rate_limited`: too many attempts, see `Retry-After`",
    503: "`service_unavailable`: a backing service is not reachable, see `Retry-After`",
}
# Where the API is: relative, the origin that serves this document (Swagger UI's "Try it out"
# calls it there); generated clients are given their base URL when they are made (docs/api.md
# "Generating a client").
SERVERS = [{"url": "/", "description": "The origin that serves this document"}]
COMPONENT_MARK = "x-component"  # models.base.component()


def strip_input_defaults(schema: Any) -> None:
    """Input properties without `default`: generators read a default as "always present" and
    would make the field required in a request. The default moves into the description."""
    if isinstance(schema, list):
        for item in schema:
            strip_input_defaults(item)
        return
    if not isinstance(schema, dict):
        return
    for prop in (schema.get("properties") or {}).values():
        if isinstance(prop, dict) and "default" in prop:
            default = prop.pop("default")
            if default is not None and default != [] and default != {}:
                note = f"Default: `{orjson.dumps(default).decode()}`."
                text = prop.get("description", "")
                prop["description"] = f"{text} {note}".strip() if text else note
    for key, value in schema.items():
        if key not in ("default", "examples", "enum", "const", "example"):
            strip_input_defaults(value)


class OpenApiBuilder:
    def __init__(self, specs: list[RouteSpec]) -> None:
        self.spec = APISpec(
            title="CRM API",
            version=API_VERSION,
            openapi_version="3.1.0",
            info={
                "description": "Multi-tenant CRM backend. Errors always have the shape of "
                "`ErrorResponse`; see docs/api.md.",
            },
            servers=SERVERS,
        )
        self.spec.components.security_scheme(
            "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        )
        self.modes: dict[str, str] = {}
        self.ref(ErrorResponse, "serialization")
        for route in specs:
            if route.in_schema:
                self.add(route)

    def ref(self, model: type[BaseModel], mode: str = "validation") -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        if mode == "validation":
            strip_input_defaults(schema)
        for name, definition in schema.pop("$defs", {}).items():
            self._register(name, definition, mode)
        self._register(model.__name__, schema, mode)
        return {"$ref": REF.format(model=model.__name__)}

    def _register(self, name: str, schema: dict[str, Any], mode: str = "") -> None:
        schema = self.resolve(copy.deepcopy(schema))
        if name not in self.spec.components.schemas:
            self.modes[name] = mode
            self.spec.components.schema(name, schema)
        elif self.spec.components.schemas[name] != schema:
            # one name, two shapes (a model used as input and as output whose schemas differ):
            # a generator would get one of them wrong
            raise ValueError(f"schema {name!r} is used as {self.modes[name]} and {mode}")

    def resolve(self, schema: Any) -> Any:
        """`models.base.component(name)` marks as `$ref`s, their schemas registered."""
        if isinstance(schema, list):
            return [self.resolve(item) for item in schema]
        if not isinstance(schema, dict):
            return schema
        if COMPONENT_MARK in schema:
            name = schema.pop(COMPONENT_MARK)
            if name not in self.spec.components.schemas:
                self.spec.components.schema(name, {})  # recursive schemas refer to themselves
                resolved = self.resolve(copy.deepcopy(SCHEMA_COMPONENTS[name]))
                self.spec.components.schemas[name].update(resolved)
            return {"$ref": REF.format(model=name), **self.resolve(schema)}
        return {key: self.resolve(value) for key, value in schema.items()}

    def named(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An inline schema with a `title` (a model's schema written into a route's
        declaration) becomes a component of that name: every answer has a named schema."""
        schema = self.resolve(copy.deepcopy(schema))
        for key in ("oneOf", "anyOf"):
            if key in schema:
                schema[key] = [self.named(item) for item in schema[key]]
        title = schema.get("title")
        if isinstance(title, str) and schema.get("type") == "object":
            self._register(title, schema, "serialization")
            return {"$ref": REF.format(model=title)}
        return schema

    def add(self, route: RouteSpec) -> None:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "description": route.description.strip(),
            "tags": [route.tag],
            "operationId": route.operation_id
            or route.handler.__module__.rsplit(".", 1)[-1] + "_" + route.handler.__name__,
            "x-access": route.access.label,
            "responses": {},
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", **({"pattern": f"^{p}$"} if p else {})},
            }
            for name, p in path_parameters(route.path).items()
        ]
        if route.query is not None:
            query_schema = route.query.model_json_schema(ref_template=REF)
            strip_input_defaults(query_schema)
            query_schema = self.resolve(query_schema)
            for name, definition in query_schema.get("$defs", {}).items():
                self._register(name, definition, "validation")
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                param = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if "description" in prop:
                    param["description"] = prop["description"]
                parameters.append(param)
        parameters += [
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string"},
            }
            for name, description in route.request_headers
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            if route.body_schema is not None:
                body_schema = self.named(route.body_schema)
                if route.method == "PATCH" and body_schema == {"$ref": REF.format(model="RowIn")}:
                    # a row's PATCH takes the same free-form object (handlers/data.py declares
                    # ROW_INPUT_SCHEMA for both) but its own named schema: nothing is required
                    body_schema = self.resolve(component("RowPatch"))
            elif route.body is JsonObject:
                body_schema = {"type": "object"}
            else:
                body_schema = self.ref(route.body)  # type: ignore[arg-type]
            operation["requestBody"] = {
                "required": route.body_required,
                "content": {"application/json": {"schema": body_schema}},
            }
        if route.form is not None:  # an HTML form (the /admin pages)
            operation["requestBody"] = {
                "required": bool(route.form.model_json_schema().get("required")),
                "content": {"application/x-www-form-urlencoded": {"schema": self.ref(route.form)}},
            }
        if route.request_content is not None:
            operation["requestBody"] = {
                "required": True,
                "content": self.resolve(copy.deepcopy(route.request_content)),
            }
        if route.access.needs_auth:
            operation["security"] = [{"bearerAuth": []}]
        else:
            operation["security"] = []
        operation["responses"][str(route.status)] = self._success(route)
        for status in route.error_statuses:
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT.get(status, HTTPStatus(status).phrase),
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}
                },
            }
        self.spec.path(path=route.openapi_path, operations={route.method.lower(): operation})

    def _success(self, route: RouteSpec) -> dict[str, Any]:
        ok: dict[str, Any] = {"description": HTTPStatus(route.status).phrase}
        if route.response_headers:
            ok["headers"] = {
                name: {"description": description, "schema": {"type": "string"}}
                for name, description in route.response_headers
            }
        if route.status == 204:
            return ok
        if route.response_content is not None:  # downloads
            ok["content"] = self.resolve(copy.deepcopy(route.response_content))
        elif route.response_schema is not None:
            ok["content"] = {"application/json": {"schema": self.named(route.response_schema)}}
        elif route.response is not None:
            ok["content"] = {
                "application/json": {"schema": self.ref(route.response, "serialization")}
            }
        return ok

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()


class OpenApiDocument:
    """The document of an app's routes, built on first use and kept: building it costs about
    half a second, which every app start (and every test's app) would otherwise pay."""

    def __init__(self, specs: list[RouteSpec]) -> None:
        self.specs = specs

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        return OpenApiBuilder(self.specs).to_dict()


@routes.get("/api/openapi.json", access=Public(), summary="This OpenAPI document", in_schema=False)
async def openapi_document(call: Call) -> dict[str, Any]:
    return call.request.app[OPENAPI].document


@routes.get(
    "/api/openapi/tenant.json",
    access=Authenticated(),
    summary="An OpenAPI document of your company's tables",
    response_schema={"type": "object", "description": "An OpenAPI 3.1 document"},
)
async def tenant_openapi_document(call: Call) -> dict[str, Any]:
    """The row routes of each table you can read, with `Row_<table>`, `RowIn_<table>` and
    `RowPatch_<table>` typed by its columns as they stand (docs/api.md "Generating a
    client"): feed it to a client generator for your company's own tables."""
    return await tenant_document(call, call.request.app[OPENAPI].document)


@routes.get("/docs", access=Public(), summary="Swagger UI", in_schema=False)
async def swagger_ui(call: Call) -> web.Response:
    """`?tenant=1`: your company's tables (the token given to "Authorize" loads it)."""
    return docs_page(tenant=call.request.query.get("tenant") == "1")


OPENAPI = web.AppKey("openapi", OpenApiDocument)

DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{swagger}/swagger-ui.css">
<link rel="stylesheet" href="{assets}/docs.css">
<link rel="icon" type="image/png" href="{swagger}/favicon-32x32.png"></head>
<body data-spec="{spec}">
<p class="crm-docs-switch">{switch}</p>
<div id="swagger-ui"></div>
<script src="{swagger}/swagger-ui-bundle.js"></script>
<script src="{swagger}/swagger-ui-standalone-preset.js"></script>
<script src="{assets}/docs.js"></script>
</body></html>
"""


TENANT_SPEC = "/api/openapi/tenant.json"
SWITCH_TO_TENANT = (
    'The whole API. <a href="/docs?tenant=1">Your company\'s tables</a> (after "Authorize")'
)
SWITCH_TO_ALL = 'Your company\'s tables. <a href="/docs">The whole API</a>'


def docs_page(tenant: bool = False) -> web.Response:
    html = DOCS_PAGE.format(
        title="CRM API",
        swagger=SWAGGER_STATIC,
        assets=DOCS_ASSETS,
        spec=TENANT_SPEC if tenant else "/api/openapi.json",
        switch=SWITCH_TO_ALL if tenant else SWITCH_TO_TENANT,
    )
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"},
    )


def add_static(app: web.Application) -> None:
    app.router.add_static(SWAGGER_STATIC, str(SWAGGER_UI_PY_ROOT / "static"), name="swagger-static")
    app.router.add_static(DOCS_ASSETS, str(ASSETS_DIR), name="docs-assets")
