"""`/admin`: the platform operator's panel, server-rendered pages for superadmins (docs/admin.md).

Plain HTML forms, no script on any page (the Content-Security-Policy allows none). Every page
but the sign-in form is declared with `Superadmin` access: without a live panel session the
browser is sent to the sign-in form, and every POST must carry the session's CSRF token. The
sign-in form itself uses a double-submit token (a cookie and a hidden field). Errors on these
pages are drawn as pages (the error middleware asks `error_page`), never as JSON.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
import pygal
from aiohttp import web
from bson import ObjectId
from pygal.etree import etree
from pygal.style import Style

from crm_core.platform import i18n
from crm_core.platform.errors import CrmError, Forbidden, RateLimited, Unauthorized
from handlers.routing import (
    ERROR_PAGES,
    Access,
    Call,
    ErrorPage,
    Public,
    RouteTable,
    parse_fields,
)
from models.admin import (
    ACTIONS,
    ActiveForm,
    AuditQuery,
    CampaignQuery,
    CompanyQuery,
    SignInForm,
)

routes = RouteTable("admin")

PREFIX = "/admin"
STATIC = "/admin/static"
SESSION_COOKIE = "crm_admin"
LOGIN_CSRF_COOKIE = "crm_admin_login"
TEMPLATES = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
TENANT = "{tenant_id:[0-9a-f]{24}}"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
CHART_HEADERS = {
    # pygal's SVG carries its own <style>; as an <img> it can run nothing
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Superadmin(Access):
    """A platform superadmin signed in to the panel (its session cookie, not a bearer token).
    No session: a redirect to the sign-in form. A POST also needs the session's CSRF token
    in its `csrf` field: without it 403 and nothing changes."""

    needs_auth: bool = False  # no bearer token: the cookie is checked here
    # the CSRF token of every form, the "done" notice after a redirect: not the page's fields
    control_fields: frozenset[str] = frozenset({"csrf", "done"})

    async def authorize(self, call: Call) -> None:
        request = call.request
        secret = request.cookies.get(SESSION_COOKIE, "")
        operator = await call.services.admin.operator(secret, client_address(request))
        if operator is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs)}")
            raise Unauthorized("Your panel session has ended: sign in again")
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not isinstance(token, str) or not operator.csrf_matches(token):
                raise Forbidden("The form did not come from this panel (no valid CSRF token)")
        call.operator = operator

    @property
    def label(self) -> str:
        return "superadmin"


ADMIN = Superadmin()


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(f"admin/{template}", request, context, status=status)
    response.headers.update(PAGE_HEADERS)
    return response


def error_page(request: web.Request, error: CrmError) -> web.Response:
    """How an error looks on the panel's pages."""
    response = page(
        request,
        "error.html",
        {"error": error, "operator": None, "back": request.headers.get("Referer", PREFIX)},
        status=error.status,
    )
    response.headers.update(error.headers)
    return response


def done(location: str, action: str) -> web.HTTPSeeOther:
    """After a POST, back to a page that says what was done (post/redirect/get)."""
    separator = "&" if "?" in location else "?"
    return web.HTTPSeeOther(f"{location}{separator}done={action}")


def context(call: Call, **values: Any) -> dict[str, Any]:
    return {
        "operator": call.operator,
        "csrf": call.operator.csrf_token if call.operator else "",
        "done": ACTIONS.get(call.request.query.get("done", "")),
        **values,
    }


def safe_next(target: str) -> str:
    """Only a path of this panel: never another host (open redirect)."""
    if not target.isprintable() or " " in target or "\\" in target:
        return PREFIX  # header injection, or a path a browser might read as another host
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX):
        return PREFIX
    return target


# ---- signing in and out --------------------------------------------------------------------


def _sign_in_form(
    request: web.Request, message: str = "", status: int = 200, next_page: str = PREFIX
) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        {"operator": None, "csrf": token, "message": message, "next": safe_next(next_page)},
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        path=f"{PREFIX}/login",
        max_age=3600,
    )
    return response


def _secure(request: web.Request) -> bool:
    """Secure cookies over HTTPS, also behind a TLS-terminating proxy that says so."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


@routes.get(f"{PREFIX}/login", access=Public(), summary="Panel sign-in form", in_schema=False)
async def sign_in_form(call: Call) -> web.Response:
    return _sign_in_form(call.request, next_page=call.request.query.get("next", PREFIX))


@routes.post(f"{PREFIX}/login", access=Public(), summary="Panel sign-in", in_schema=False)
async def sign_in(call: Call) -> web.StreamResponse:
    """The answer is the form again, with the reason, unless the account is a superadmin."""
    request = call.request
    form = await request.post()
    token, cookie = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not isinstance(token, str) or not cookie or not hmac.compare_digest(token, cookie):
        return _sign_in_form(request, "The form expired; please try again.", 403)
    try:
        data = parse_fields(form, SignInForm, ADMIN.control_fields)
    except CrmError:
        return _sign_in_form(request, "Enter an email and a password.", 400)
    try:
        secret, _operator = await call.services.admin.sign_in(
            data.email, data.password, client_address(request)
        )
    except (Unauthorized, Forbidden, RateLimited) as exc:
        response = _sign_in_form(request, exc.message, exc.status, data.next)
        response.headers.update(exc.headers)
        return response
    response = web.Response(status=303, headers={"Location": safe_next(data.next)})
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        path=PREFIX,
        max_age=call.services.settings.admin_session_ttl_seconds,
    )
    response.del_cookie(LOGIN_CSRF_COOKIE, path=f"{PREFIX}/login")
    return response


@routes.post(f"{PREFIX}/logout", access=ADMIN, summary="Panel sign-out", in_schema=False)
async def sign_out(call: Call) -> web.StreamResponse:
    await call.services.admin.sign_out(call.operator)
    response = web.Response(status=303, headers={"Location": f"{PREFIX}/login"})
    response.del_cookie(SESSION_COOKIE, path=PREFIX)
    return response


# ---- pages ---------------------------------------------------------------------------------


@routes.get(PREFIX, access=ADMIN, summary="Panel overview", in_schema=False)
async def overview(call: Call) -> web.Response:
    admin = call.services.admin
    companies = await admin.list_companies("", 1)
    return page(
        call.request,
        "overview.html",
        context(call, companies=companies.total, section="overview"),
    )


@routes.get(f"{PREFIX}/companies", access=ADMIN, summary="Companies", in_schema=False)
async def companies(call: Call, query: CompanyQuery) -> web.Response:
    result = await call.services.admin.list_companies(query.q, query.page)
    return page(call.request, "companies.html", context(call, result=result, section="companies"))


@routes.get(f"{PREFIX}/companies/{TENANT}", access=ADMIN, summary="A company", in_schema=False)
async def company(call: Call, tenant_id: ObjectId) -> web.Response:
    detail = await call.services.admin.company(str(tenant_id))
    return page(call.request, "company.html", context(call, detail=detail, section="companies"))


@routes.post(
    f"{PREFIX}/companies/{TENANT}/active",
    access=ADMIN,
    summary="Deactivate or reactivate a company",
    in_schema=False,
)
async def set_company_active(
    call: Call, form: ActiveForm, tenant_id: ObjectId
) -> web.StreamResponse:
    tenant = await call.services.admin.set_company_active(
        call.operator, str(tenant_id), form.active
    )
    action = "company_reactivated" if form.active else "company_deactivated"
    raise done(f"{PREFIX}/companies/{tenant.id}", action)


@routes.post(
    f"{PREFIX}/users/{{user_id:[0-9a-f]{{24}}}}/active",
    access=ADMIN,
    summary="Deactivate or reactivate a user",
    in_schema=False,
)
async def set_user_active(call: Call, form: ActiveForm, user_id: ObjectId) -> web.StreamResponse:
    user = await call.services.admin.set_user_active(call.operator, str(user_id), form.active)
    action = "user_reactivated" if form.active else "user_deactivated"
    raise done(f"{PREFIX}/companies/{user.tenant_id}", action)


@routes.post(
    f"{PREFIX}/users/{{user_id:[0-9a-f]{{24}}}}/temporary-password",
    access=ADMIN,
    summary="Set a temporary password",
    in_schema=False,
)
async def set_temporary_password(call: Call, user_id: ObjectId) -> web.Response:
    """The password is on this page only (not stored in clear, not in a redirect)."""
    user, password = await call.services.admin.set_temporary_password(call.operator, str(user_id))
    return page(
        call.request,
        "temporary_password.html",
        context(call, user=user, password=password, section="companies"),
    )


@routes.get(f"{PREFIX}/campaigns", access=ADMIN, summary="SMS campaigns", in_schema=False)
async def campaigns(call: Call, query: CampaignQuery) -> web.Response:
    result = await call.services.admin.list_campaigns(query.status, query.page)
    return page(call.request, "campaigns.html", context(call, result=result, section="campaigns"))


@routes.post(
    f"{PREFIX}/companies/{TENANT}/campaigns/{{campaign_id:[0-9a-f]{{24}}}}/cancel",
    access=ADMIN,
    summary="Cancel a campaign",
    in_schema=False,
)
async def cancel_campaign(
    call: Call, tenant_id: ObjectId, campaign_id: ObjectId
) -> web.StreamResponse:
    await call.services.admin.cancel_campaign(call.operator, str(tenant_id), str(campaign_id))
    raise done(f"{PREFIX}/campaigns", "campaign_cancelled")


@routes.get(f"{PREFIX}/system", access=ADMIN, summary="System status", in_schema=False)
async def system(call: Call) -> web.Response:
    status = await call.services.admin.system_status(call.services.queue.probe)
    return page(call.request, "system.html", context(call, status=status, section="system"))


@routes.get(f"{PREFIX}/audit", access=ADMIN, summary="Audit log", in_schema=False)
async def audit(call: Call, query: AuditQuery) -> web.Response:
    result = await call.services.admin.audit(query.page)
    return page(call.request, "audit.html", context(call, result=result, section="audit"))


# ---- charts (server-made SVG) --------------------------------------------------------------

CHART_STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#999",
    colors=("#2f6fb0", "#3a9d5d"),
    font_family="sans-serif",
)


def bar_chart(title: str, labels: list[str], values: list[int], series: str) -> bytes:
    chart = pygal.Bar(
        js=[],  # no script from any host: the chart is a picture
        style=CHART_STYLE,
        width=640,
        height=280,
        show_legend=False,
        x_label_rotation=45,
        print_values=False,
        truncate_label=14,
        margin=12,
    )
    chart.title = title
    chart.x_labels = labels
    chart.add(series, values)
    tree = chart.render_tree()
    for parent in list(tree.iter()):  # pygal always adds its tooltip config script: drop it
        for child in list(parent):
            if str(child.tag).endswith("script"):
                parent.remove(child)
    svg: bytes = etree.tostring(tree, encoding="utf-8", xml_declaration=True)
    return svg


def svg(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="image/svg+xml", headers=CHART_HEADERS)


@routes.get(
    f"{PREFIX}/charts/messages.svg", access=ADMIN, summary="SMS per day chart", in_schema=False
)
async def messages_chart(call: Call) -> web.Response:
    days = await call.services.admin.messages_per_day()
    return svg(
        bar_chart(
            "SMS sent per day (last 30 days, UTC)",
            [d.day[5:] for d in days],
            [d.count for d in days],
            "sent",
        )
    )


@routes.get(
    f"{PREFIX}/charts/rows.svg", access=ADMIN, summary="Rows per company chart", in_schema=False
)
async def rows_chart(call: Call) -> web.Response:
    top = await call.services.admin.rows_per_company()
    return svg(
        bar_chart("Rows per company (top 10)", [c.name for c in top], [c.rows for c in top], "rows")
    )


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    # the page texts in the request's language (Accept-Language; crm_core/platform/i18n.py)
    env.globals.update(_=i18n.gettext, language=i18n.language)
    app.router.add_static(STATIC, str(STATIC_DIR / "admin"), name="admin-static")
    pages: dict[str, ErrorPage] = {PREFIX: error_page}
    app[ERROR_PAGES] = pages
