"""The /admin error page in the panel's language (docs/api.md "Languages", docs/admin.md): the
error's message, as an answer of the API would give it, under `Accept-Language: ru`; the status
and the code stay."""

from __future__ import annotations

import html

import pytest

from tests.support.admin_panel import ROOT_EMAIL, ROOT_PASSWORD, Panel
from tests.support.api import make_settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings():
    return make_settings(crm_superuser_email=ROOT_EMAIL, crm_superuser_password=ROOT_PASSWORD)


async def page(panel: Panel, path: str, language: str, status: int) -> str:
    response = await panel.client.get(
        path, headers={"Accept-Language": language}, allow_redirects=False
    )
    assert response.status == status
    return html.unescape(await response.text())


async def test_the_error_page_follows_the_panel_s_language(client):
    panel = Panel(client)
    await panel.sign_in()
    missing = "/admin/companies/" + "0" * 24
    english = await page(panel, missing, "en", 404)
    russian = await page(panel, missing, "ru-RU,ru;q=0.9", 404)
    assert '<p class="error" role="alert">Company not found</p>' in english
    assert '<p class="error" role="alert">Компания не найдена</p>' in russian
    assert "Company not found" not in russian
    assert "404 · not found" in russian and "404 · not found" in english  # the code stays
    assert '<html lang="ru">' in russian

    # a form that did not come from the panel (no CSRF token): the panel's own message
    response = await client.post(
        "/admin/logout", data={}, headers={"Accept-Language": "ru"}, allow_redirects=False
    )
    text = html.unescape(await response.text())
    assert response.status == 403
    assert "Форма отправлена не из этой панели (нет действительного CSRF-токена)" in text
    await page(panel, "/admin", "ru", 200)  # still signed in: the refused form changed nothing
