"""CORS in a real browser (issue 28 §1): a page served from one loopback port calls the API on
another. From the listed origin the call (with its preflight: it sends `Authorization`) works
and the page reads the exposed headers; from an origin not listed, Chromium itself blocks it,
although the server answered. Chromium as in tests/admin/test_browser.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from handlers.app import create_app
from tests.support.api import make_settings
from tests.support.browser import LoopThread, launched_chromium
from tests.support.tools import free_port

PAGE = "<!doctype html><title>spa</title><p>a single-page app on its own origin</p>"
CALL = """async ([url, token]) => {
  try {
    const resp = await fetch(url, {headers: {Authorization: 'Bearer ' + token}});
    const body = await resp.json();
    return {ok: true, status: resp.status, email: body.user && body.user.email,
            requestId: resp.headers.get('X-Request-ID'),
            rateLimit: resp.headers.get('RateLimit')};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


class Sites(LoopThread):
    """The API and two static pages, each on its own loopback port, in one event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.allowed_port, self.other_port, self.api_port = free_port(), free_port(), free_port()
        self.allowed = f"http://127.0.0.1:{self.allowed_port}"
        self.other = f"http://127.0.0.1:{self.other_port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.api_hits = 0

    def start(self) -> None:
        api = create_app(make_settings(cors_origins=self.allowed))

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "GET":
                self.api_hits += 1
            return await handler(request)

        api.middlewares.append(count)
        self.serve(api, self.api_port)
        for port in (self.allowed_port, self.other_port):
            page = web.Application()
            page.router.add_get("/", _page)
            self.serve(page, port)


@pytest.fixture(scope="module")
def sites() -> Iterator[Sites]:
    live = Sites()
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser(sites) -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


def token(browser: Any, sites: Sites) -> tuple[str, str]:
    context = browser.new_context()
    resp = context.request.post(
        sites.api + "/api/auth/register",
        data=json.dumps(
            {
                "company_name": "Spa",
                "email": "spa@example.com",
                "password": "correct-horse",
                "full_name": "Spa owner",
            }
        ),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 201, resp.text()
    access = resp.json()["access_token"]
    context.close()
    return access, "spa@example.com"


def test_the_listed_origin_calls_the_api_and_another_is_blocked_by_the_browser(browser, sites):
    access, email = token(browser, sites)
    context = browser.new_context()
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))

    page.goto(sites.allowed + "/")
    answer = page.evaluate(CALL, [sites.api + "/api/auth/me", access])
    assert answer["ok"] is True, answer
    assert answer["status"] == 200 and answer["email"] == email
    assert answer["requestId"] and answer["rateLimit"].startswith('"user";r=')

    hits = sites.api_hits
    page.goto(sites.other + "/")
    answer = page.evaluate(CALL, [sites.api + "/api/auth/me", access])
    assert answer == {"ok": False, "error": "TypeError: Failed to fetch"}
    # the preflight was refused, so the browser never sent the call itself
    assert sites.api_hits == hits
    assert any("CORS" in m for m in messages), messages
    context.close()
