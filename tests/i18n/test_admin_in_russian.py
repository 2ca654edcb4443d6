"""/admin in Russian (crm_core/platform/i18n.py): every page text of the panel's templates has
a translation, and a browser that asks for Russian (Chromium via Playwright, as
tests/admin/test_browser.py) signs in and reads the panel in Russian."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crm_core.platform import i18n
from handlers.app import create_app
from tests.support.api import make_settings
from tests.support.browser import LoopThread, launched_chromium

TEMPLATES = Path(__file__).resolve().parents[2] / "handlers" / "templates" / "admin"
PAGE_TEXT = re.compile(r"""_\("((?:[^"\\]|\\.)*)"[,)]""")
ROOT_EMAIL, ROOT_PASSWORD = "root@example.com", "root-password-1"


def test_every_page_text_of_the_panel_has_a_translation():
    texts = {m for path in TEMPLATES.glob("*.html") for m in PAGE_TEXT.findall(path.read_text())}
    assert len(texts) > 50
    for language in i18n.LANGUAGES:
        found = i18n.catalog(language)
        if found is None:
            assert language == i18n.SOURCE
            continue
        missing = sorted(texts - set(found.by_id))
        assert missing == [], f"add to crm_core/locale/{language}/LC_MESSAGES/crm.po: {missing}"


class LiveServer(LoopThread):
    def __init__(self) -> None:
        super().__init__()
        settings = make_settings(
            crm_superuser_email=ROOT_EMAIL, crm_superuser_password=ROOT_PASSWORD
        )
        self.app = create_app(settings)

    def start(self) -> None:
        self.url = self.serve(self.app)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer()
    live.start()
    try:
        yield live
    finally:
        live.stop()


def test_the_panel_in_russian_in_a_browser(server: Any) -> None:
    with launched_chromium() as browser:
        context = browser.new_context(base_url=server.url, locale="ru-RU")
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto("/admin/login")
        assert page.locator("html").get_attribute("lang") == "ru"
        assert page.get_by_role("heading", name="Войти").is_visible()
        page.get_by_label("Эл. почта").fill(ROOT_EMAIL)
        page.get_by_label("Пароль").fill(ROOT_PASSWORD)
        page.get_by_role("button", name="Войти").click()
        page.wait_for_url("**/admin")
        nav = page.locator("header nav").inner_text()
        for word in ("Обзор", "Компании", "Система", "Журнал аудита"):
            assert word in nav
        assert page.get_by_role("button", name="Выйти").is_visible()
        page.goto("/admin/campaigns")
        headers = page.locator("thead").inner_text()
        assert "Доставлено" in headers and "Лимит" in headers
        context.close()
        english = browser.new_context(base_url=server.url, locale="en-US")
        page = english.new_page()
        page.goto("/admin/login")
        assert page.get_by_role("heading", name="Sign in").is_visible()
        english.close()
