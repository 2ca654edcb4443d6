"""/docs and /admin in a real browser: Playwright driving the system's Chromium (headless)
against the service on a free port, on the embedded defaults.

Chromium is found at $CRM_CHROMIUM, else `chromium` on the PATH (Debian: `apt-get install
chromium`; scripts/install-system, run by `./scripts/test` and `.ci/run`, installs it). Without
it these tests fail under CI=true, and elsewhere are skipped and listed at the end of the run
with that instruction (tests/conftest.py `missing_tool`): they never pass silently.
Screenshots of every page go to a temporary folder, or to $CRM_SCREENSHOT_DIR
(`CRM_SCREENSHOT_DIR=docs/img .venv/bin/pytest tests/admin/test_browser.py` refreshes the README's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import make_settings
from tests.support.browser import LoopThread, chromium_path, launched_chromium
from tests.support.tools import NOT_RUN

ROOT_EMAIL, ROOT_PASSWORD = "root@example.com", "root-password-1"


class LiveServer(LoopThread):
    """The app on 127.0.0.1 and a free port, in its own thread and event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = make_settings(
            crm_superuser_email=ROOT_EMAIL, crm_superuser_password=ROOT_PASSWORD
        )
        self.app = create_app(self.settings)

    def start(self) -> None:
        self.url = self.serve(self.app)

    @property
    def services(self):
        return self.app[SERVICES]


class HeldQueue:
    """Keeps campaign work instead of sending it, so campaigns stay queued (cancellable)."""

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None:
        return None

    async def send_one(self, tenant_id: str, message_id: str) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def stats(self) -> Any:
        from tasks.broker import QueueStats

        return QueueStats(kind="in-memory (tasks held by the test)", reachable=True)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer()
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser(server) -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("CRM_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Watch:
    """Every request a page makes, every file it fails to load and every console error it
    logs (CSP violations, script errors): a page that calls another host or breaks shows up
    here. The pages themselves may answer 4xx on purpose (a refused sign-in)."""

    def __init__(self, page: Any, base: str) -> None:
        self.base = urlsplit(base).netloc
        self.outside: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        # a failed load is also reported by _response (with its URL), or is a page's own 4xx
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        request = response.request
        if response.status >= 400 and request.resource_type != "document":
            if urlsplit(request.url).path.startswith("/api/"):
                return  # what "Try it out" asked the API is the test's business
            self.errors.append(f"{response.status} {request.url}")

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != self.base:
            self.outside.append(request.url)

    def assert_clean(self) -> None:
        assert self.outside == [], self.outside
        assert self.errors == [], self.errors


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.watch = Watch(page, server.url)
    yield page
    context.close()


def api(page: Any, method: str, path: str, token: str | None = None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = page.request.fetch(path, method=method, headers=headers, data=body or None)
    return response.status, response.json() if response.body() else None


def register(page: Any, company: str, email: str, password: str = "correct-horse") -> str:
    status, tokens = api(
        page,
        "POST",
        "/api/auth/register",
        company_name=company,
        email=email,
        password=password,
        full_name=company + " owner",
    )
    assert status == 201, tokens
    return tokens["access_token"]


def sign_in(page: Any, email: str = ROOT_EMAIL, password: str = ROOT_PASSWORD) -> None:
    page.goto("/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


# ---- /docs --------------------------------------------------------------------------------------


def test_docs_render_every_operation(page, server, shots):
    document = page.request.get("/api/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    page.goto("/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == operations
    assert page.get_by_text("Unable to render this definition").count() == 0
    assert page.locator(".info .title").inner_text().startswith("CRM API")
    page.screenshot(path=str(shots / "docs.png"))
    page.watch.assert_clean()


def test_docs_try_it_out_on_me_answers_200(page, server):
    token = register(page, "Docs Co", "docs@example.com")
    page.goto("/docs")
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".dialog-ux")
    dialog.get_by_label("auth-bearer-value").fill(token)
    dialog.get_by_role("button", name="Apply credentials").click()
    dialog.locator("button.btn-done").click()
    operation = page.locator("#operations-auth-auth_me")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.first.wait_for()
    assert status.first.inner_text().strip() == "200"
    assert "docs@example.com" in operation.locator(".live-responses-table").inner_text()
    page.watch.assert_clean()


# ---- /admin -------------------------------------------------------------------------------------


def test_wrong_password_is_refused(page, server):
    sign_in(page, password="not-the-password")
    assert page.get_by_role("alert").inner_text() == "Invalid email or password"
    page.goto("/admin/companies")
    assert re.search(r"/admin/login\?next=", page.url)
    page.watch.assert_clean()


def test_company_user_is_refused(page, server):
    register(page, "Not Admins", "plain@example.com", "plain-password")
    sign_in(page, "plain@example.com", "plain-password")
    assert "not a platform administrator" in page.get_by_role("alert").inner_text()
    page.goto("/admin")
    assert "/admin/login" in page.url
    assert "Companies" not in page.locator("body").inner_text()


def test_post_without_csrf_token_is_refused(page, server):
    sign_in(page)
    page.wait_for_url("**/admin")
    token = register(page, "Csrf Co", "csrf@example.com")
    _, me = api(page, "GET", "/api/auth/me", token)
    # the browser's own session cookie goes along; the form's token does not
    response = page.request.post(
        f"/admin/users/{me['user']['id']}/active", form={"active": "false"}
    )
    assert response.status == 403 and "CSRF" in response.text()
    assert api(page, "GET", "/api/auth/me", token)[0] == 200


def test_find_a_company_and_deactivate_a_user(page, server, shots):
    owner_token = register(page, "Hooli", "gavin@hooli.example.com")
    status, _ = api(
        page,
        "POST",
        "/api/users",
        owner_token,
        email="richard@hooli.example.com",
        full_name="Richard",
        password="richard-password",
        role_ids=[],
    )
    assert status == 201
    status, tokens = api(
        page,
        "POST",
        "/api/auth/login",
        email="richard@hooli.example.com",
        password="richard-password",
    )
    user_token = tokens["access_token"]
    assert api(page, "GET", "/api/auth/me", user_token)[0] == 200

    sign_in(page)
    page.wait_for_url("**/admin")
    page.get_by_role("link", name="Companies").click()
    page.get_by_role("searchbox", name="Search companies").fill("hooli")
    page.get_by_role("button", name="Search").click()
    page.screenshot(path=str(shots / "admin-companies.png"), full_page=True)
    page.get_by_role("link", name="Hooli").click()
    assert page.get_by_role("heading", name=re.compile("Hooli")).is_visible()
    page.get_by_role("button", name="Deactivate richard@hooli.example.com").click()
    assert "Done: you deactivated a user" in page.get_by_role("status").inner_text()
    page.screenshot(path=str(shots / "admin-company.png"), full_page=True)

    status, body = api(page, "GET", "/api/auth/me", user_token)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert api(page, "GET", "/api/auth/me", owner_token)[0] == 200

    page.get_by_role("link", name="Audit log").click()
    log = page.locator("table").inner_text()
    assert "deactivated a user" in log and "richard@hooli.example.com" in log
    page.screenshot(path=str(shots / "admin-audit.png"), full_page=True)
    page.watch.assert_clean()


def test_cancel_a_running_campaign(page, server, shots):
    token = register(page, "Vandelay", "art@vandelay.example.com")
    held, server.services.sms_queue = server.services.sms_queue, HeldQueue()
    try:
        status, campaign = api(
            page,
            "POST",
            "/api/sms/campaigns",
            token,
            name="Latex launch",
            text="Hello",
            recipients=[{"phone": "+79161234567"}, {"phone": "+79161234568"}],
        )
        assert status == 202
        sign_in(page)
        page.wait_for_url("**/admin")
        page.get_by_role("link", name="SMS").click()
        page.get_by_label("Status").select_option("queued")
        page.get_by_role("button", name="Show").click()
        page.screenshot(path=str(shots / "admin-campaigns.png"), full_page=True)
        page.get_by_role("button", name="Cancel Latex launch").click()
        assert "Done: you cancelled a campaign" in page.get_by_role("status").inner_text()
    finally:
        server.services.sms_queue = held
    status, seen = api(page, "GET", f"/api/sms/campaigns/{campaign['id']}", token)
    assert seen["status"] == "cancelled" and seen["counts"]["cancelled"] == 2
    page.watch.assert_clean()


def test_charts_are_drawn(page, server, shots):
    token = register(page, "Chart Co", "chart@example.com")
    table = {"key": "orders", "columns": [{"key": "n", "type": "integer"}]}
    assert api(page, "POST", "/api/meta/tables", token, **table)[0] == 201
    for n in range(12):
        assert api(page, "POST", "/api/data/orders", token, n=n)[0] == 201
    status, campaign = api(
        page,
        "POST",
        "/api/sms/campaigns",
        token,
        name="Sent one",
        text="Hi",
        recipients=[{"phone": "+79161234569"}],
    )
    assert status == 202
    for _ in range(200):
        if api(page, "GET", f"/api/sms/campaigns/{campaign['id']}", token)[1]["counts"]["sent"]:
            break
        page.wait_for_timeout(20)
    sign_in(page)
    page.wait_for_url("**/admin")
    for name in ("SMS sent per day", "rows per company"):
        image = page.get_by_role("img", name=re.compile(name, re.I))
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=str(shots / "admin-overview.png"), full_page=True)
    chart = page.request.get("/admin/charts/messages.svg").text()
    assert "<svg" in chart and ">1<" in chart  # the one message sent today is on the chart
    rows = page.request.get("/admin/charts/rows.svg").text()
    assert "Chart Co" in rows and ">12<" in rows
    page.watch.assert_clean()


def test_system_page(page, server, shots):
    sign_in(page)
    page.wait_for_url("**/admin")
    page.get_by_role("link", name="System").click()
    text = page.locator("main").inner_text()
    assert "database" in text and "task broker" in text and "aiohttp" in text
    assert page.locator(".ok").count() == 2
    page.screenshot(path=str(shots / "admin-system.png"), full_page=True)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/admin/login")
    page.screenshot(path=str(shots / "admin-login.png"))
    page.goto("/admin/system")
    assert "/admin/login" in page.url
    page.watch.assert_clean()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_without_chromium_the_browser_tests_say_how_to_install_it(
    monkeypatch, tmp_path, ci, outcome
):
    """Under CI=true a missing Chromium fails them; elsewhere they are skipped with a reason the
    terminal summary lists (NOT_RUN)."""
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("CRM_CHROMIUM", str(tmp_path / "no-such-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(outcome, match=f"{NOT_RUN} chromium.*apt-get install chromium"):
        chromium_path()
    monkeypatch.delenv("CRM_CHROMIUM")
    with pytest.raises(outcome, match="CRM_CHROMIUM"):
        chromium_path()
