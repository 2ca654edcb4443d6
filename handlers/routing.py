"""Route declarations: one decorator says method, path, models, access and errors.

The app registers routes from these declarations, the OpenAPI document is generated from them,
and the permission matrix test walks them, so a route cannot exist without saying what access
it needs. The wrapper built here authenticates, checks access, parses the body and query, calls
the handler and serializes what it returns: handlers hold no HTTP plumbing.
"""

from __future__ import annotations

import inspect
import operator
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson
from aiohttp import web
from bson import ObjectId
from multidict import MultiMapping
from pydantic import BaseModel, ValidationError

from crm_core.accounts.context import TenantContext
from crm_core.accounts.tokens import is_api_token
from crm_core.platform import i18n
from crm_core.platform.errors import (
    CrmError,
    Forbidden,
    InvalidJson,
    PasswordChangeRequired,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from crm_core.platform.ids import object_id
from crm_core.platform.jsontext import repeated_key
from crm_core.platform.logs import REQUEST_ID
from crm_core.services import Services
from crm_core.tables.access import Level, require
from crm_core.tables.definitions import Table, load_table
from crm_core.tables.filters import repeated_filter_key
from handlers import ratelimits

SERVICES = web.AppKey("services", Services)
CONTEXT_KEY = web.RequestKey("crm_context", TenantContext)
# Path prefixes whose errors are pages for people, not JSON (the /admin panel): the error
# middleware asks the renderer registered here to draw the error, whatever raised it.
ErrorPage = Callable[[web.Request, CrmError], web.StreamResponse]
ERROR_PAGES = web.AppKey("error_pages", dict[str, ErrorPage])


# ---- access declarations -------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What a route needs from its caller. Subclasses decide; `check` raises Forbidden."""

    needs_auth: bool = True
    # names in the query string or form that this access consumes itself (the panel's CSRF
    # token, its "done" notice): the declared query and form models never see them
    control_fields: frozenset[str] = frozenset()

    def check(self, context: TenantContext | None) -> None:
        return None

    async def authorize(self, call: Call) -> None:
        """Raise Forbidden/NotFound unless the call may proceed; may attach what it loaded."""
        self.check(call.context)

    @property
    def label(self) -> str:
        return "authenticated"


@dataclass(frozen=True)
class Public(Access):
    needs_auth: bool = False

    @property
    def label(self) -> str:
        return "public"


@dataclass(frozen=True)
class Authenticated(Access):
    pass


@dataclass(frozen=True)
class Permission(Access):
    code: str = ""

    def check(self, context: TenantContext | None) -> None:
        if context is None or not context.has(self.code):
            raise Forbidden(f"This needs the '{self.code}' permission")

    @property
    def label(self) -> str:
        return self.code


@dataclass(frozen=True)
class TableAccess(Access):
    """The `{table}` of the path at a level: none is 404, too weak is 403 (docs/api.md "Roles,
    users, shares, aliases"). `permission`, when set, is needed as well (e.g. `aliases.manage`)."""

    level: Level = Level.READ
    permission: str | None = None
    fixed_table: str | None = None  # the built-in entity routes name their table themselves

    async def authorize(self, call: Call) -> None:
        if self.permission and not call.ctx.has(self.permission):
            raise Forbidden(f"This needs the '{self.permission}' permission")
        key = self.fixed_table or call.param("table")
        table = await load_table(call.ctx, call.services.column_types, key)
        await require(call.ctx, table, self.level)
        call.table = table

    @property
    def label(self) -> str:
        extra = f"+{self.permission}" if self.permission else ""
        return f"{self.fixed_table or 'table'}:{self.level.name.lower()}{extra}"


# ---- declarations --------------------------------------------------------------------------


class JsonObject:
    """Marker body type: a free-form JSON object validated by the domain (rows, filters...)."""


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    body: type[BaseModel] | type[JsonObject] | None = None
    body_schema: dict[str, Any] | None = None
    # columns: the body model of this app (a subclass of `body` built from the app's
    # registries, e.g. the table constructor's column types); `for_app` resolves it
    body_factory: Callable[[Services], type[BaseModel]] | None = None
    query: type[BaseModel] | None = None
    # an HTML form (`application/x-www-form-urlencoded` or multipart) read into this model: the
    # /admin pages' POSTs; a route has a JSON `body` or a `form`, not both
    form: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_schema: dict[str, Any] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""
    in_schema: bool = True
    operation_id: str | None = None
    # non-JSON bodies (file uploads, downloads): OpenAPI `content` maps; the handler reads the
    # request body itself (`body` stays None) or returns its own response
    request_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    # reachable with a temporary password (POST /api/auth/password, me, logout); every other
    # authenticated route answers 403 `password_change_required` until the password changes
    allow_pending_password: bool = False
    # request headers the route reads and response headers it sets, documented as OpenAPI
    # header parameters and success headers (name -> description): `If-Match`, `ETag`
    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    # what the handler receives after `call`, read from its signature (see `handler_arguments`)
    arguments: tuple[Argument, ...] = ()

    def for_app(self, services: Services) -> RouteSpec:
        """This route as an app serves and documents it: `body` from `body_factory`."""
        if self.body_factory is None:
            return self
        return replace(self, body=self.body_factory(services))

    @property
    def body_required(self) -> bool:
        """An absent body reads as `{}`, so it is optional when the model requires nothing; a
        free-form object (a row) may be `{}` too (a PATCH changing nothing, a row whose columns
        are all optional), so the table's columns decide, not the schema."""
        if self.body is JsonObject:
            return False
        if self.body is None or self.body_schema is not None:
            return self.body is not None
        return bool(self.body.model_json_schema().get("required"))  # type: ignore[union-attr]

    @property
    def path_params(self) -> list[str]:
        return list(path_parameters(self.path))

    @property
    def openapi_path(self) -> str:
        """The path without aiohttp's regular expressions (`{row_id:[0-9a-f]{24}}`)."""
        path = self.path
        for name, pattern in path_parameters(self.path).items():
            if pattern:
                path = path.replace(f"{{{name}:{pattern}}}", f"{{{name}}}")
        return path

    @property
    def error_statuses(self) -> list[int]:
        """What the route can answer besides its success, read from its declaration (the
        document lists them all; docs/api.md "Errors"): its own `errors`, and
        - 400 when it parses input (body, query, form, path), 413 for a body (and 415 for a
          JSON one);
        - 401 when it needs a token; 403 when it checks a permission or a table's access, and
          on every authenticated route but the few a temporary password may use
          (`password_change_required`);
        - 404 for a table's access, and for path parameters (an id that is not ours);
        - 503 whenever it reaches the database (a route that takes input or a token: all but
          `/health`-like public routes without input), answered with `Retry-After`."""
        statuses = set(self.errors)
        parsed = (self.body, self.query, self.form)
        if any(model is not None for model in parsed) or self.path_params:
            statuses.add(400)
        if self.body is not None:
            statuses.update((413, 415))
        if self.request_content is not None:
            statuses.update((400, 413))
        if self.access.needs_auth:
            statuses.update((401, 503))
            if not self.allow_pending_password:
                statuses.add(403)
        if isinstance(self.access, Permission | TableAccess):
            statuses.add(403)
        if isinstance(self.access, TableAccess) or self.path_params:
            statuses.add(404)
        if any(model is not None for model in parsed) or self.request_content is not None:
            statuses.add(503)
        return sorted(statuses)


class RouteTable:
    """The routes of one endpoint group (one handlers module)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[RouteSpec] = []

    def route(
        self, method: str, path: str, *, access: Access, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            arguments, declared = handler_arguments(handler, path, options)
            self.routes.append(
                RouteSpec(
                    method=method,
                    path=path,
                    handler=handler,
                    access=access,
                    summary=summary,
                    tag=options.pop("tag", self.tag),
                    description=options.pop("description", handler.__doc__ or ""),
                    arguments=arguments,
                    **{**options, **declared},
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def path_parameters(path: str) -> dict[str, str | None]:
    """`{name}` or `{name:regex}` placeholders of an aiohttp path, in order."""
    params: dict[str, str | None] = {}
    depth, start = 0, 0
    for index, char in enumerate(path):
        if char == "{":
            depth += 1
            if depth == 1:
                start = index + 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                name, _, pattern = path[start:index].partition(":")
                params[name] = pattern or None
    return params


# ---- typed handler arguments ---------------------------------------------------------------


@dataclass(frozen=True)
class Argument:
    """One keyword argument of a handler: its name and how it is read from the call."""

    name: str
    read: Callable[[Call], Any]


PARSED = ("body", "query", "form")  # the arguments the routing parses before the handler runs


def _path_reader(name: str, annotation: Any) -> Callable[[Call], Any]:
    if annotation is str:
        return lambda call: call.param(name)
    if annotation is ObjectId:
        # `role_id` -> "Role not found": an id that is not one of ours is simply not found
        what = name.removesuffix("_id").replace("_", " ").capitalize()
        return lambda call: object_id(call.param(name), what)
    raise TypeError(f"path parameter '{name}' must be annotated str or ObjectId")


def handler_arguments(
    handler: Handler, path: str, options: dict[str, Any]
) -> tuple[tuple[Argument, ...], dict[str, Any]]:
    """The arguments a handler takes after `call`, from its annotations: `body` (the declared
    body model, parsed from JSON), `query` (the declared query model, parsed), `form` (the
    declared form model, parsed from an HTML form) and path parameters by name (`str`, or
    `ObjectId`: a malformed id is a 404). A `body`/`query`/`form` annotation that is not declared
    on the route declares it; one that differs from the declaration is an error at import time,
    so the handler's types are always what the routing parses. Runs once, at import: a request
    only runs the readers it returns."""
    hints = typing.get_type_hints(handler)
    params = list(inspect.signature(handler).parameters)[1:]  # the first is the call
    in_path = path_parameters(path)
    arguments: list[Argument] = []
    declared: dict[str, Any] = {}
    for name in params:
        annotation = hints.get(name)
        if name in PARSED:
            model = options.get(name)
            wanted = dict[str, Any] if model is JsonObject else model
            if model is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
                declared[name] = annotation
            elif annotation != wanted:
                raise TypeError(
                    f"{handler.__qualname__}: '{name}' is annotated {annotation!r} but the route "
                    f"declares {model!r}"
                )
            arguments.append(Argument(name, operator.attrgetter(name)))
        elif name in in_path:
            arguments.append(Argument(name, _path_reader(name, annotation)))
        else:
            raise TypeError(
                f"{handler.__qualname__}: '{name}' is not body, query, form or in {path}"
            )
    if (declared.get("body") or options.get("body")) and (
        declared.get("form") or options.get("form")
    ):
        raise TypeError(f"{handler.__qualname__}: a route reads a JSON body or a form, not both")
    return tuple(arguments), declared


# ---- the call a handler receives -----------------------------------------------------------


@dataclass
class Call:
    request: web.Request
    services: Services
    context: TenantContext | None
    body: Any = None
    query: Any = None
    form: Any = None
    token: dict[str, Any] = field(default_factory=dict)
    table: Table | None = None
    operator: Any = None  # crm_core.admin.service.Operator on the /admin pages

    @property
    def ctx(self) -> TenantContext:
        assert self.context is not None, "route declared Public but uses the tenant context"
        return self.context

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def tbl(self) -> Table:
        assert self.table is not None, "route is not declared with TableAccess"
        return self.table


def pydantic_details(exc: ValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "body"
        # translated by its type and ctx where it is rendered (crm_core/platform/i18n.py)
        details.append({"field": loc, "message": i18n.pydantic_message(err)})
    return details


def validation_error(exc: ValidationError) -> ValidationFailed:
    details = pydantic_details(exc)
    first = details[0]
    return ValidationFailed(i18n.field_message(first["field"], first["message"]), details)


def is_json_content_type(content_type: str) -> bool:
    """`application/json` or a structured `+json` type (`application/merge-patch+json`)."""
    kind, _, subtype = content_type.lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}  # an absent body is an empty object: required fields are then named
    if not is_json_content_type(request.content_type):
        raise UnsupportedMediaType(
            f"The request body must be JSON, not '{request.content_type}': "
            "send 'Content-Type: application/json'"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJson() from None
    if not isinstance(data, dict):
        raise ValidationFailed.field("body", "must be a JSON object")
    refuse_repeated_keys(raw)
    return data


def refuse_repeated_keys(raw: bytes) -> None:
    """A key named twice in one object of a body is a 400 naming it: the parser would keep
    the last value silently. Inside a body's `filters` it is the filter language's
    `invalid_filter` (docs/filters.md "Errors")."""
    found = repeated_key(raw)
    if found is None:
        return
    where, key = found
    if where == "filters" or where.startswith("filters."):
        raise repeated_filter_key(where, key)
    field = f"{where}.{key[:64]}" if where else key[:64]
    raise ValidationFailed.field(field, "given twice in one object")


async def parse_body(request: web.Request, model: type[BaseModel] | type[JsonObject]) -> Any:
    data = await read_json_object(request)
    if model is JsonObject:
        return data
    try:
        return model.model_validate_json(orjson.dumps(data))  # type: ignore[union-attr]
    except ValidationError as exc:
        raise validation_error(exc) from None


Fields = TypeVar("Fields", bound=BaseModel)


def parse_fields(
    fields: MultiMapping[Any], model: type[Fields], ignored: frozenset[str] = frozenset()
) -> Fields:
    """Named text values (a query string, a form) into `model`: a name given twice is a list."""
    values: dict[str, Any] = {}
    for key in fields:
        if key in ignored or key in values:
            continue
        items = fields.getall(key)
        values[key] = items[0] if len(items) == 1 else items
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        failed = validation_error(exc)
        repeated = [
            d["field"]
            for d in failed.details or []
            if isinstance(values.get(d["field"]), list)
            and d["field"] in model.model_fields
            and not _takes_many(model, d["field"])
        ]
        if repeated:  # a parameter that takes one value, given twice: say so, not its type
            raise ValidationFailed.field(repeated[0], REPEATED) from None
        raise failed from None


REPEATED = "given more than once; give it once"


def _takes_many(model: type[BaseModel], name: str) -> bool:
    """Whether `model`'s field `name` holds a list (so a repeated parameter is its items)."""
    field = model.model_fields[name]
    kinds = [field.annotation, *typing.get_args(field.annotation)]
    return any(typing.get_origin(kind) in (list, tuple, set, frozenset) for kind in kinds)


def parse_query(
    request: web.Request, model: type[Fields], ignored: frozenset[str] = frozenset()
) -> Fields:
    return parse_fields(request.query, model, ignored)


async def parse_form(
    request: web.Request, model: type[Fields], ignored: frozenset[str] = frozenset()
) -> Fields:
    """An HTML form's fields (read once: aiohttp keeps them for the access check too)."""
    return parse_fields(await request.post(), model, ignored)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send 'Authorization: Bearer <access_token>'")
    return token.strip()


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def render(result: Any, status: int) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204)
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    return json_response(result, status)


def build_view(spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    # uploads and downloads are paced by the client: they never hold a turn
    takes_turns = spec.access.needs_auth and not (spec.request_content or spec.response_content)

    async def view(request: web.Request) -> web.StreamResponse:
        slots = request.app[SERVICES].request_slots
        if slots is None or not takes_turns:
            return await serve(request)
        if spec.body is not None or spec.form is not None:
            await request.read()  # a slow sender must not hold a turn (bounded by the size limit)
        async with slots:  # the embedded mode: wait for a turn before any work
            return await serve(request)

    async def serve(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        context = None
        token: dict[str, Any] = {}
        if spec.access.needs_auth:
            bearer = bearer_token(request)
            if is_api_token(bearer):  # integrations
                context, jti, expires_at = await services.tokens.authenticate(bearer)
            else:
                context, jti, expires_at = await services.auth.authenticate(bearer)
            request[CONTEXT_KEY] = context
            await ratelimits.reserve(request, context)  # issue 28: the API limits, before the work
            token = {"jti": jti, "expires_at": expires_at}
            if context.user.must_change_password and not spec.allow_pending_password:
                raise PasswordChangeRequired()
        call = Call(request, services, context, token=token)
        await spec.access.authorize(call)  # Public allows all; the /admin pages check a cookie
        if spec.query is not None:
            call.query = parse_query(request, spec.query, spec.access.control_fields)
        if spec.body is not None:
            call.body = await parse_body(request, spec.body)
        elif spec.form is not None:
            call.form = await parse_form(request, spec.form, spec.access.control_fields)
        arguments = {argument.name: argument.read(call) for argument in spec.arguments}
        return render(await spec.handler(call, **arguments), spec.status)

    view.__name__ = spec.handler.__name__
    return view


def error_response(error: CrmError) -> web.Response:
    """The §2 body, with the request's id so the answer can be found in the logs."""
    body = error.to_body(i18n.translate)  # the message in the request's language
    body["error"]["request_id"] = REQUEST_ID.get()
    return json_response(body, error.status, error.headers or None)
