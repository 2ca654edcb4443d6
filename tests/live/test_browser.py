"""Live events in a real browser (issue #25 §6): a small page served by the test opens the
WebSocket as a browser does (the token as a subprotocol), in two Chromium pages of the owner
and one of a user without access. A row created through the API appears in both owner pages
within a second; the other page shows nothing (a ping/pong barrier proves it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from playwright import sync_api as playwright_api

from handlers.app import create_app
from tests.support.api import make_settings
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.waits import DEADLINE

WAIT_MS = DEADLINE * 1000  # playwright's waits: bound a hang, never decide

PAGE = """<!doctype html>
<html><body data-state="connecting"><ul id="rows"></ul>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("t");
const ws = new WebSocket(`ws://${location.host}/api/events`, ["crm.events", "bearer." + token]);
let pong = null;
window.barrier = () => new Promise((resolve) => {
  pong = resolve; ws.send(JSON.stringify({type: "ping"}));
});
ws.onmessage = (message) => {
  const frame = JSON.parse(message.data);
  if (frame.type === "ready") ws.send(JSON.stringify({type: "subscribe", table: "deals"}));
  if (frame.type === "subscribed") document.body.dataset.state = "subscribed";
  if (frame.type === "error") document.body.dataset.state = "error:" + frame.code;
  if (frame.type === "pong" && pong) pong();
  if (frame.type === "row.created") {
    const item = document.createElement("li");
    item.textContent = frame.row.title;
    document.getElementById("rows").appendChild(item);
  }
};
</script></body></html>"""


async def live_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


class Server:
    """The app (and the test's page) on 127.0.0.1 and a free port, in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app = create_app(make_settings())
        self.app.router.add_get("/live-test", live_page)
        self.runner = web.AppRunner(self.app)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.run(site.start())
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    live = Server()
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    path = chromium_path()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def call(request: Any, method: str, url: str, token: str | None = None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = request.fetch(url, method=method, headers=headers, data=body or None)
    assert response.ok, f"{method} {url}: {response.status} {response.text()}"
    return response.json() if response.status != 204 else None


def test_a_created_row_appears_in_both_pages_and_not_for_a_stranger(server, browser):
    context = browser.new_context()
    api = context.request
    base = server.url
    owner = call(
        api,
        "POST",
        f"{base}/api/auth/register",
        company_name="Live",
        email="live-owner@example.com",
        password="correct-horse",
        full_name="Owner",
    )["access_token"]
    call(
        api,
        "POST",
        f"{base}/api/meta/tables",
        owner,
        key="deals",
        columns=[{"key": "title", "type": "string"}],
    )
    roles = call(api, "GET", f"{base}/api/roles", owner)
    viewer_role = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    call(
        api,
        "POST",
        f"{base}/api/users",
        owner,
        email="live-viewer@example.com",
        full_name="Viewer",
        password="user-password",
        role_ids=[viewer_role],
    )
    viewer = call(
        api,
        "POST",
        f"{base}/api/auth/login",
        email="live-viewer@example.com",
        password="user-password",
    )["access_token"]

    pages = [context.new_page() for _ in range(3)]
    for page, token in zip(pages, (owner, owner, viewer), strict=True):
        page.goto(f"{base}/live-test#t={token}")
    expect = playwright_api.expect
    for page in pages[:2]:
        expect(page.locator("body")).to_have_attribute("data-state", "subscribed", timeout=WAIT_MS)
    expect(pages[2].locator("body")).to_have_attribute(
        "data-state", "error:not_found", timeout=WAIT_MS
    )

    call(api, "POST", f"{base}/api/data/deals", owner, title="Appears live")
    for page in pages[:2]:
        expect(page.locator("#rows li")).to_have_text(["Appears live"], timeout=WAIT_MS)
    pages[2].evaluate("barrier()")  # every frame queued before the pong has arrived
    assert pages[2].locator("#rows li").count() == 0
    context.close()
