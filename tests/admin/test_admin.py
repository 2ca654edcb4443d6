"""The operator's panel (/admin) over HTTP, as a browser without script would use it: sign-in,
sessions and CSRF, who is refused, what each page shows and what each action changes. The
same flows in a real browser are in tests/admin/test_browser.py."""

from __future__ import annotations

import asyncio
import re

import pytest

from crm_core.platform.settings import SettingsError
from handlers.admin import ADMIN, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Superadmin
from handlers.app import all_routes
from handlers.routing import SERVICES
from models.accounts import Tenant, User
from models.admin import AdminAction, AdminSession
from tests.support.admin_panel import ROOT_EMAIL, ROOT_PASSWORD, Panel
from tests.support.api import add_user, make_settings

ADMIN_ROUTES = [r for r in all_routes() if isinstance(r.access, Superadmin)]


@pytest.fixture
def settings():
    return make_settings(crm_superuser_email=ROOT_EMAIL, crm_superuser_password=ROOT_PASSWORD)


@pytest.fixture
def panel(client) -> Panel:
    return Panel(client)


@pytest.fixture
async def signed_in(panel) -> Panel:
    await panel.sign_in()
    await panel.get("/admin")  # picks up the session's CSRF token
    return panel


def path_for(route, **values) -> str:
    path = route.openapi_path
    for name in route.path_params:
        path = path.replace(f"{{{name}}}", values.get(name, "0" * 24))
    return path


# ---- the superadmin on the embedded defaults -------------------------------------------------


async def test_superuser_is_created_at_start_from_settings(client):
    user = await User.find_one(User.email == ROOT_EMAIL)
    assert user is not None and user.is_superadmin and user.is_active
    tenant = await Tenant.get(user.tenant_id)
    assert tenant is not None and tenant.name == "Platform"
    actions = await AdminAction.find(AdminAction.action == "superuser_created").to_list()
    assert [a.target_label for a in actions] == [ROOT_EMAIL]


async def test_start_leaves_an_existing_superuser_alone(client):
    admin = client.app[SERVICES].admin
    before = await User.find_one(User.email == ROOT_EMAIL)
    await admin.ensure_superuser(ROOT_EMAIL, "another-password", "Other")
    after = await User.find_one(User.email == ROOT_EMAIL)
    assert after.password_hash == before.password_hash and after.full_name == before.full_name


async def test_start_does_not_promote_a_company_user(client, api):
    owner = await api.register(email="owner-x@example.com")
    await client.app[SERVICES].admin.ensure_superuser(owner.email, "whatever-pass", "X")
    assert not (await User.find_one(User.email == owner.email)).is_superadmin


@pytest.mark.parametrize(
    "values",
    [
        {"crm_superuser_email": "root@example.com"},
        {"crm_superuser_email": "root@example.com", "crm_superuser_password": "short"},
        {"crm_superuser_email": "not-an-email", "crm_superuser_password": "long-enough-1"},
    ],
)
def test_superuser_settings_are_checked(values):
    with pytest.raises(SettingsError, match="CRM_SUPERUSER"):
        make_settings(**values)


# ---- signing in -----------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_http_only_cookie_and_opens_the_panel(panel, client):
    resp, _ = await panel.sign_in()
    assert resp.headers["Location"] == "/admin"
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
    assert not cookie["secure"]  # plain HTTP here; over HTTPS it is Secure
    page = await panel.get("/admin")
    assert "Overview" in page and ROOT_EMAIL in page
    assert await AdminAction.find(AdminAction.action == "sign_in").count() == 1


async def test_cookie_is_secure_behind_https(panel):
    await panel.get("/admin/login")
    resp = await panel.client.post(
        "/admin/login",
        data={"csrf": panel.csrf, "email": ROOT_EMAIL, "password": ROOT_PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.cookies[SESSION_COOKIE]["secure"]


async def test_pages_carry_a_strict_content_security_policy(signed_in):
    resp = await signed_in.client.get("/admin/companies")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp and resp.headers["Cache-Control"] == "no-store"
    assert "<script" not in await resp.text()


async def test_wrong_password_shows_the_form_again(panel):
    _, page = await panel.sign_in(password="wrong-password", status=401)
    assert "Invalid email or password" in page and 'name="password"' in page
    assert SESSION_COOKIE not in panel.client.session.cookie_jar.filter_cookies(
        panel.client.make_url("/admin")
    )
    await panel.get("/admin", status=303)
    failed = await AdminAction.find(AdminAction.action == "sign_in_failed").to_list()
    assert [a.actor_email for a in failed] == [ROOT_EMAIL]


async def test_unknown_email_answers_like_a_wrong_password(panel):
    _, page = await panel.sign_in(email="nobody@example.com", status=401)
    assert "Invalid email or password" in page


async def test_company_user_is_refused_even_with_the_right_password(panel, api):
    owner = await api.register()
    _, page = await panel.sign_in(owner.email, owner.password, status=403)
    assert "not a platform administrator" in page
    await panel.get("/admin/companies", status=303)


async def test_bearer_token_does_not_open_the_panel(client, api):
    owner = await api.register()
    resp = await client.get("/admin/companies", headers=owner.headers, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/admin/login")


async def test_sign_in_without_its_csrf_token_is_refused(panel):
    await panel.get("/admin/login")
    _, page = await panel.post(
        "/admin/login", {"email": ROOT_EMAIL, "password": ROOT_PASSWORD}, 403, csrf=False
    )
    assert "expired" in page
    await panel.get("/admin", status=303)


async def test_sign_in_with_a_forged_csrf_token_is_refused(panel):
    await panel.get("/admin/login")
    panel.csrf = "forged"
    await panel.post("/admin/login", {"email": ROOT_EMAIL, "password": ROOT_PASSWORD}, 403)
    panel.client.session.cookie_jar.clear()
    await panel.post("/admin/login", {"email": ROOT_EMAIL, "password": ROOT_PASSWORD}, 403)


async def test_sign_in_is_throttled_like_the_api_login(panel, settings):
    for _ in range(settings.login_max_failures):
        await panel.sign_in(password="wrong-password", status=401)
    resp, page = await panel.sign_in(status=429)  # even the right password, for a while
    assert "Too many failed login attempts" in page and int(resp.headers["Retry-After"]) > 0


async def test_next_never_leaves_the_panel(panel):
    await panel.get("/admin/login?next=https://evil.example.com/")
    resp, _ = await panel.post(
        "/admin/login",
        {"email": ROOT_EMAIL, "password": ROOT_PASSWORD, "next": "//evil.example.com/x"},
    )
    assert resp.headers["Location"] == "/admin"


async def test_next_returns_to_the_page_asked_for(panel):
    await panel.get("/admin/audit", status=303)
    page = await panel.get("/admin/login?next=/admin/audit")
    assert 'value="/admin/audit"' in page
    resp, _ = await panel.post(
        "/admin/login", {"email": ROOT_EMAIL, "password": ROOT_PASSWORD, "next": "/admin/audit"}
    )
    assert resp.headers["Location"] == "/admin/audit"


async def test_sign_out_ends_the_session(signed_in):
    cookie = signed_in.client.session.cookie_jar.filter_cookies(
        signed_in.client.make_url("/admin")
    )[SESSION_COOKIE].value
    await signed_in.post("/admin/logout", {})
    await signed_in.get("/admin", status=303)
    # the old cookie, replayed, is dead too
    resp = await signed_in.client.get(
        "/admin", cookies={SESSION_COOKIE: cookie}, allow_redirects=False
    )
    assert resp.status == 303
    assert await AdminAction.find(AdminAction.action == "sign_out").count() == 1


async def test_a_demoted_superadmin_loses_the_panel_at_once(signed_in):
    user = await User.find_one(User.email == ROOT_EMAIL)
    user.is_superadmin = False
    await user.save()
    await signed_in.get("/admin", status=303)


# ---- every panel route refuses whoever is not signed in ----------------------------------------


def test_every_panel_page_is_declared_superadmin_only():
    public = {
        (r.method, r.path)
        for r in all_routes()
        if r.path.startswith("/admin") and r not in ADMIN_ROUTES
    }
    assert public == {("GET", "/admin/login"), ("POST", "/admin/login")}
    assert all(r.access == ADMIN and not r.in_schema for r in ADMIN_ROUTES)


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=lambda r: f"{r.method} {r.openapi_path}")
async def test_without_a_session_nothing_is_shown_or_changed(client, api, route):
    owner = await api.register()
    path = path_for(route, tenant_id=owner.tenant_id, user_id=owner.user_id)
    resp = await client.request(route.method, path, allow_redirects=False, data={"active": "false"})
    text = await resp.text()
    if route.method == "GET":
        assert resp.status == 303 and resp.headers["Location"].startswith("/admin/login?next=")
    else:
        assert resp.status == 401 and "sign in again" in text
    assert owner.email not in text
    assert (await User.find_one(User.email == owner.email)).is_active
    assert (await Tenant.get(owner.tenant_id)).is_active


@pytest.mark.parametrize(
    "route",
    [r for r in ADMIN_ROUTES if r.method == "POST"],
    ids=lambda r: f"{r.method} {r.openapi_path}",
)
async def test_post_without_the_session_csrf_token_is_refused(signed_in, api, route):
    owner = await api.register()
    path = path_for(route, tenant_id=owner.tenant_id, user_id=owner.user_id)
    for form in ({"active": "false"}, {"active": "false", "csrf": "forged"}):
        resp = await signed_in.client.post(path, data=form, allow_redirects=False)
        assert resp.status == 403, await resp.text()
        assert "CSRF" in await resp.text()
    assert (await User.find_one(User.email == owner.email)).is_active
    assert (await Tenant.get(owner.tenant_id)).is_active
    await signed_in.get("/admin")  # still signed in


# ---- companies --------------------------------------------------------------------------------


async def test_companies_list_counts_and_search(signed_in, api, client):
    acme = await api.register(company="Acme Trading", email="ann@acme.example.com")
    await add_user(api, client, acme, "manager", email="bob@acme.example.com")
    await api.call(
        "POST",
        "/api/meta/tables",
        acme,
        expect=201,
        json={"key": "deals", "columns": [{"key": "n", "type": "integer"}]},
    )
    for n in range(3):
        await api.call("POST", "/api/data/deals", acme, json={"n": n}, expect=201)
    await api.register(company="Globex", email="gina@globex.example.com")
    page = await signed_in.get("/admin/companies?q=acme")
    assert "Acme Trading" in page and "Globex" not in page
    row = page.split("Acme Trading")[1].split("</tr>")[0]
    # users, tables (3 built-in + deals), rows, SMS sent in 30 days
    assert re.findall(r'class="num">(\d+)<', row) == ["2", "4", "3", "0"]
    by_email = await signed_in.get("/admin/companies?q=gina@globex")
    assert "Globex" in by_email and "Acme Trading" not in by_email
    by_id = await signed_in.get(f"/admin/companies?q={acme.tenant_id}")
    assert "Acme Trading" in by_id and "Globex" not in by_id
    nothing = await signed_in.get("/admin/companies?q=.*")  # a literal, not a pattern
    assert "No company matches" in nothing


async def test_companies_are_paginated(signed_in, api):
    for n in range(26):
        await api.register(company=f"Firm {n:02d}")
    first = await signed_in.get("/admin/companies?q=Firm")
    assert "Firm 00" in first and "Firm 24" in first and "Firm 25" not in first
    assert "Page 1 of 2" in first
    second = await signed_in.get("/admin/companies?q=Firm&page=2")
    assert "Firm 25" in second and "Firm 24" not in second


@pytest.mark.parametrize("query", ["page=0", "page=x", "q=" + "a" * 201])
async def test_bad_list_parameters_are_a_400_page(signed_in, query):
    page = await signed_in.get(f"/admin/companies?{query}", status=400)
    assert "validation error" in page and "<html" in page


async def test_company_page_shows_users_roles_tables_and_campaigns(signed_in, api, client):
    owner = await api.register(company="Initech")
    await add_user(api, client, owner, "viewer", email="vic@initech.example.com")
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "tps", "columns": [{"key": "code", "type": "string", "required": True}]},
    )
    await api.call("POST", "/api/data/tps", owner, json={"code": "A"}, expect=201)
    await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "Spring sale", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    page = await signed_in.get(f"/admin/companies/{owner.tenant_id}")
    assert "Initech" in page and owner.email in page and "vic@initech.example.com" in page
    assert "Owner" in page and "Viewer" in page  # role names
    assert "<code>tps</code>" in page and "string, required" in page
    assert "Spring sale" in page


async def test_unknown_company_is_a_404_page(signed_in):
    page = await signed_in.get("/admin/companies/" + "0" * 24, status=404)
    assert "Company not found" in page and "<html" in page
    await signed_in.get("/admin/companies/not-an-id", status=404)


async def test_deactivated_company_is_locked_out_at_once(signed_in, api, client):
    owner = await api.register(company="Umbrella")
    await api.call("GET", "/api/auth/me", owner, expect=200)
    resp, _ = await signed_in.post(
        f"/admin/companies/{owner.tenant_id}/active", {"active": "false"}
    )
    assert resp.headers["Location"].endswith("done=company_deactivated")
    body = await api.call("GET", "/api/auth/me", owner, expect=401)
    assert body["error"]["code"] == "unauthorized"
    await api.call(
        "POST", "/api/auth/refresh", json={"refresh_token": owner.refresh_token}, expect=401
    )
    await api.call(
        "POST",
        "/api/auth/login",
        json={"email": owner.email, "password": owner.password},
        expect=401,
    )
    page = await signed_in.get(f"/admin/companies/{owner.tenant_id}?done=company_deactivated")
    assert "deactivated" in page and "Done: you deactivated a company" in page
    await signed_in.post(f"/admin/companies/{owner.tenant_id}/active", {"active": "true"})
    await api.login(owner.email, owner.password)
    log = await signed_in.get("/admin/audit")
    assert "deactivated a company" in log and "reactivated a company" in log and "Umbrella" in log


async def test_own_company_cannot_be_deactivated(signed_in):
    root = await User.find_one(User.email == ROOT_EMAIL)
    page = (
        await signed_in.post(
            f"/admin/companies/{root.tenant_id}/active", {"active": "false"}, status=409
        )
    )[1]
    assert "lock you out" in page
    assert (await Tenant.get(root.tenant_id)).is_active


async def test_deactivated_user_is_locked_out_at_once(signed_in, api, client):
    owner = await api.register(company="Hooli")
    member = await add_user(api, client, owner, "manager")
    await signed_in.post(f"/admin/users/{member.user_id}/active", {"active": "false"})
    await api.call("GET", "/api/auth/me", member, expect=401)
    await api.call(
        "POST", "/api/auth/refresh", json={"refresh_token": member.refresh_token}, expect=401
    )
    await api.call("GET", "/api/auth/me", owner, expect=200)  # the others are untouched
    await signed_in.post(f"/admin/users/{member.user_id}/active", {"active": "true"})
    await api.login(member.email, member.password)
    entries = await AdminAction.find(AdminAction.target_id == member.user_id).to_list()
    assert [e.action for e in entries] == ["user_deactivated", "user_reactivated"]
    assert {e.actor_email for e in entries} == {ROOT_EMAIL}


async def test_operator_cannot_deactivate_itself(signed_in):
    root = await User.find_one(User.email == ROOT_EMAIL)
    await signed_in.post(f"/admin/users/{root.id}/active", {"active": "false"}, status=409)
    assert (await User.find_one(User.email == ROOT_EMAIL)).is_active


async def test_a_deactivated_superadmin_loses_its_panel_sessions(signed_in, client):
    admin = client.app[SERVICES].admin
    other = await admin.create_superuser("second@example.com", "second-password", "Second")
    secret, _ = await admin.sign_in("second@example.com", "second-password", "127.0.0.1")
    assert await admin.operator(secret, "127.0.0.1") is not None
    await signed_in.post(f"/admin/users/{other.id}/active", {"active": "false"})
    assert await admin.operator(secret, "127.0.0.1") is None
    assert await AdminSession.find(AdminSession.user_id == other.id).count() == 0


@pytest.mark.parametrize("value", ["maybe", ""])
async def test_bad_form_values_change_nothing(signed_in, api, value):
    owner = await api.register()
    await signed_in.post(f"/admin/companies/{owner.tenant_id}/active", {"active": value}, 400)
    assert (await Tenant.get(owner.tenant_id)).is_active


# ---- SMS, system, charts, audit ----------------------------------------------------------------


class HeldQueue:
    """Keeps campaign work instead of sending it, so a campaign stays queued."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, str, int]] = []

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None:
        self.batches.append((tenant_id, campaign_id, batch))

    async def send_one(self, tenant_id: str, message_id: str) -> None:
        raise AssertionError("not used here")

    async def ping(self) -> bool:
        return True


async def test_cancel_a_running_campaign(signed_in, api, client):
    client.app[SERVICES].sms_queue = HeldQueue()
    owner = await api.register(company="Vandelay")
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "Latex", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    listed = await signed_in.get("/admin/campaigns?status=queued")
    assert "Latex" in listed and "Vandelay" in listed and "Cancel Latex" in listed
    action = f"/admin/companies/{owner.tenant_id}/campaigns/{campaign['id']}/cancel"
    await signed_in.post(action, {})
    seen = await api.call("GET", f"/api/sms/campaigns/{campaign['id']}", owner, expect=200)
    assert seen["status"] == "cancelled" and seen["counts"]["cancelled"] == 1
    assert "Latex" not in await signed_in.get("/admin/campaigns?status=queued")
    assert "Latex" in await signed_in.get("/admin/campaigns?status=cancelled")
    log = await signed_in.get("/admin/audit")
    assert "cancelled a campaign" in log and "Latex" in log


async def test_cancel_of_another_companys_campaign_id_is_404(signed_in, api, client):
    client.app[SERVICES].sms_queue = HeldQueue()
    a = await api.register(company="A")
    b = await api.register(company="B")
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        a,
        expect=202,
        json={"name": "A's", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    await signed_in.post(
        f"/admin/companies/{b.tenant_id}/campaigns/{campaign['id']}/cancel", {}, status=404
    )
    seen = await api.call("GET", f"/api/sms/campaigns/{campaign['id']}", a, expect=200)
    assert seen["status"] == "queued"


async def test_completed_campaign_cannot_be_cancelled(signed_in, api):
    from tests.support.api import sent_campaign

    owner = await api.register()
    campaign_id, _ = await sent_campaign(api, owner)
    for _ in range(100):
        seen = await api.call("GET", f"/api/sms/campaigns/{campaign_id}", owner, expect=200)
        if seen["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    page = (
        await signed_in.post(
            f"/admin/companies/{owner.tenant_id}/campaigns/{campaign_id}/cancel", {}, status=409
        )
    )[1]
    assert "already completed" in page


async def test_system_page_shows_checks_versions_and_queue(signed_in):
    page = await signed_in.get("/admin/system")
    assert "database" in page and "embedded" in page and "task broker" in page
    assert "in-memory" in page and "aiohttp" in page and "swagger-ui-py" in page
    assert page.count('class="ok"') == 2


async def test_charts_are_svg_with_the_data(signed_in, api, client):
    from tests.support.api import sent_campaign

    owner = await api.register(company="Chart Co")
    await sent_campaign(api, owner)
    resp = await signed_in.client.get("/admin/charts/messages.svg")
    assert resp.status == 200 and resp.content_type == "image/svg+xml"
    chart = await resp.text()
    assert chart.lstrip().startswith("<?xml") and "<svg" in chart and "<script" not in chart
    assert "SMS sent per day" in chart
    rows = await (await signed_in.client.get("/admin/charts/rows.svg")).text()
    assert "Rows per company" in rows and "Chart Co" in rows
    daily = await client.app[SERVICES].admin.messages_per_day()
    assert len(daily) == 30 and daily[-1].count == 1 and sum(d.count for d in daily) == 1
    overview = await signed_in.get("/admin")
    assert 'src="/admin/charts/messages.svg"' in overview
    assert 'src="/admin/charts/rows.svg"' in overview


async def test_audit_log_is_paginated_newest_first(signed_in, client):
    admin = client.app[SERVICES].admin
    for n in range(30):
        await admin.record(None, "sign_in_failed", "user", "", f"guess{n:02d}@example.com")
    first = await signed_in.get("/admin/audit")
    # 25 a page: the 30 failures, the operator's sign-in, the superadmin's creation
    assert "guess29@example.com" in first and "guess05@example.com" in first
    assert "guess04@example.com" not in first and "Page 1 of 2" in first
    assert first.index("guess29") < first.index("guess28")
    second = await signed_in.get("/admin/audit?page=2")
    assert "guess04@example.com" in second and "guess05@example.com" not in second
    assert "signed in" in second and "created a superadmin" in second


async def test_admin_routes_stay_out_of_the_api_document(client):
    doc = await (await client.get("/api/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.startswith("/admin")]


async def test_unknown_admin_path_is_an_html_404(client):
    resp = await client.get("/admin/nothing-here")
    assert resp.status == 404 and resp.content_type == "text/html"
    assert "No route" in await resp.text()


async def test_login_cookie_is_scoped_to_the_form(panel):
    await panel.get("/admin/login")
    jar = panel.client.session.cookie_jar
    assert LOGIN_CSRF_COOKIE in jar.filter_cookies(panel.client.make_url("/admin/login"))
    assert LOGIN_CSRF_COOKIE not in jar.filter_cookies(panel.client.make_url("/admin/companies"))


async def test_create_superuser_command_works_with_registration_switched_off():
    from crm_app.cli import create_superuser

    settings = make_settings(registration_enabled=False)
    user_id = await create_superuser(settings, "Boss@Example.com", "boss-password", "Boss")
    assert len(user_id) == 24


async def test_pages_after_an_action_say_what_was_done(signed_in):
    page = await signed_in.get("/admin/campaigns?done=campaign_cancelled")
    assert "Done: you cancelled a campaign" in page
    page = await signed_in.get("/admin/companies?q=x&page=1&done=nonsense")
    assert "Done:" not in page


# ---- with the token epochs: sessions that stay ended --------------------------------------------


async def test_reactivated_user_does_not_get_its_old_tokens_back(signed_in, api, client):
    owner = await api.register(company="Pied Piper")
    member = await add_user(api, client, owner, "viewer")
    await signed_in.post(f"/admin/users/{member.user_id}/active", {"active": "false"})
    await signed_in.post(f"/admin/users/{member.user_id}/active", {"active": "true"})
    await api.call("GET", "/api/auth/me", member, expect=401)
    await api.call(
        "POST", "/api/auth/refresh", json={"refresh_token": member.refresh_token}, expect=401
    )
    fresh = await api.login(member.email, member.password)
    await api.call("GET", "/api/auth/me", fresh, expect=200)


async def test_reactivated_company_does_not_revive_old_tokens(signed_in, api):
    owner = await api.register(company="Aviato")
    await signed_in.post(f"/admin/companies/{owner.tenant_id}/active", {"active": "false"})
    await signed_in.post(f"/admin/companies/{owner.tenant_id}/active", {"active": "true"})
    await api.call("GET", "/api/auth/me", owner, expect=401)
    await api.call("GET", "/api/auth/me", await api.login(owner.email, owner.password), expect=200)


async def test_temporary_password_is_shown_once_and_must_be_changed(signed_in, api, client):
    owner = await api.register(company="Raviga")
    member = await add_user(api, client, owner, "admin")
    resp, page = await signed_in.post(
        f"/admin/users/{member.user_id}/temporary-password", {}, status=200
    )
    assert resp.headers["Cache-Control"] == "no-store"
    password = re.search(r'id="temporary-password">([^<]+)<', page).group(1)
    assert len(password) >= 12 and member.email in page
    await api.call("GET", "/api/auth/me", member, expect=401)  # its sessions ended
    await api.call(
        "POST",
        "/api/auth/login",
        json={"email": member.email, "password": member.password},
        expect=401,
    )
    tokens = await api.call(
        "POST", "/api/auth/login", json={"email": member.email, "password": password}, expect=200
    )
    assert tokens["must_change_password"] is True
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    body = await api.call("GET", "/api/users", headers=headers, expect=403)
    assert body["error"]["code"] == "password_change_required"
    # the page that showed it is not stored anywhere: the audit log names the act, not the secret
    log = await signed_in.get("/admin/audit")
    assert "set a temporary password" in log and password not in log
    company = await signed_in.get(f"/admin/companies/{owner.tenant_id}")
    assert password not in company


async def test_temporary_password_for_oneself_is_refused(signed_in):
    root = await User.find_one(User.email == ROOT_EMAIL)
    await signed_in.post(f"/admin/users/{root.id}/temporary-password", {}, status=409)


async def test_a_reset_superadmin_loses_its_panel_session_and_cannot_sign_in_until_changed(
    signed_in, client
):
    admin = client.app[SERVICES].admin
    other = await admin.create_superuser("third@example.com", "third-password", "Third")
    secret, _ = await admin.sign_in("third@example.com", "third-password", "127.0.0.1")
    _, page = await signed_in.post(f"/admin/users/{other.id}/temporary-password", {}, status=200)
    password = re.search(r'id="temporary-password">([^<]+)<', page).group(1)
    assert await admin.operator(secret, "127.0.0.1") is None
    second = Panel(client)
    _, form = await second.sign_in("third@example.com", password, status=403)
    assert "temporary password" in form


async def test_sms_sent_counts_have_an_index(client, api):
    owner = await api.register()
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    info = await db["_sms_messages"].index_information()
    assert info["sent_at"]["key"] == [("sent_at", 1)]


@pytest.mark.parametrize(
    "target", ["/admin\r\nSet-Cookie: x=1", "/admin\\\\evil.example.com", "/admin x", "/api/users"]
)
async def test_odd_next_values_land_on_the_overview(panel, target):
    await panel.get("/admin/login")
    resp, _ = await panel.post(
        "/admin/login", {"email": ROOT_EMAIL, "password": ROOT_PASSWORD, "next": target}
    )
    assert resp.headers["Location"] == "/admin"


async def test_campaign_list_shows_delivery_counts_and_rate(signed_in, api, client):
    """Delivery reports' states and the delivery rate (docs/sms.md) on /admin/campaigns."""
    from tests.support.api import wait_done

    owner = await api.register(company="Reports Ltd")
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "Reported", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    page = await signed_in.get("/admin/campaigns")
    assert "Delivery rate" in page and "Undelivered" in page
    await wait_done(api, owner, created["id"])
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    moved = {"counts.sent": 0, "counts.delivered": 3, "counts.undelivered": 1}
    await db["_sms_campaigns"].update_one({"name": "Reported"}, {"$set": moved})
    page = await signed_in.get("/admin/campaigns")
    row = page[page.index("Reported") :].split("</tr>")[0]
    assert "75.0%" in row
    assert re.search(r'<td class="num">3</td><td class="num">1</td><td class="num">0</td>', row)


async def test_campaign_list_shows_messages_a_provider_limit_refused(signed_in, api, client):
    """`limited` messages (SMS.ru 206, 230-232; docs/sms.md "Message states") have a column."""
    owner = await api.register(company="Limits Ltd")
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    page = await signed_in.get("/admin/campaigns")
    assert '<th class="num">Limited</th>' in page
    from tests.support.api import wait_done

    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "Capped", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    await wait_done(api, owner, created["id"])
    moved = {"counts.sent": 0, "counts.blocked": 0, "counts.limited": 7}
    await db["_sms_campaigns"].update_one({"name": "Capped"}, {"$set": moved})
    page = await signed_in.get("/admin/campaigns")
    row = page[page.index("Capped") :].split("</tr>")[0]
    assert re.search(r'<td class="num">0</td><td class="num">7</td>', row)
