"""Error messages in Russian and English (crm_core/platform/i18n.py, docs/api.md "Languages"):
the catalog translates every message id, and an answer's `message` follows `Accept-Language`
(else `DEFAULT_LANGUAGE`) while its `code` stays."""

from __future__ import annotations

import os
import re

import pytest
from babel.messages.pofile import read_po

from crm_core.platform import errors, i18n
from crm_core.sms.dailycap import DailyCapReached
from handlers.app import create_app
from tests.support.api import Api, make_settings

PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def po_messages(language: str) -> list[tuple[str, str]]:
    path = i18n.LOCALE_DIR / language / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle)
    return [(str(m.id), str(m.string or "")) for m in catalog if m.id]


@pytest.mark.parametrize("language", [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE])
def test_every_message_id_has_a_translation_with_its_placeholders(language):
    messages = po_messages(language)
    assert messages
    missing = [msgid for msgid, text in messages if not text.strip()]
    assert missing == [], f"no {language} translation for {missing}"
    for msgid, text in messages:
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(text)), msgid


def _error_classes(root: type) -> list[type]:
    found = []
    for sub in root.__subclasses__():
        found.append(sub)
        found.extend(_error_classes(sub))
    return found


@pytest.mark.parametrize("language", [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE])
def test_every_error_class_default_message_is_in_the_catalog(language):
    ids = {msgid for msgid, _ in po_messages(language)}
    classes = [errors.CrmError, DailyCapReached, *_error_classes(errors.CrmError)]
    missing = sorted({c.default_message for c in classes} - ids)
    assert missing == [], f"add these to crm_core/locale/{language}/LC_MESSAGES/crm.po"


def test_the_compiled_catalog_is_there():
    """scripts/install compiles the catalogs; without them the service answers in English."""
    assert i18n.catalog_file("ru").exists(), "run ./scripts/install (pybabel compile)"
    assert i18n.catalog("ru") is not None


def _locale_copy(tmp_path, monkeypatch, compiled: bool):
    """crm_core/locale copied to `tmp_path` (with its compiled catalog or without), and the
    i18n module pointed at it with its per-process cache emptied."""
    source = i18n.LOCALE_DIR / "ru" / "LC_MESSAGES"
    target = tmp_path / "ru" / "LC_MESSAGES"
    target.mkdir(parents=True)
    (target / "crm.po").write_bytes((source / "crm.po").read_bytes())
    if compiled:
        (target / "crm.mo").write_bytes((source / "crm.mo").read_bytes())
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.catalog.cache_clear()
    return target


@pytest.fixture
def fresh_catalogs():
    i18n.catalog.cache_clear()
    yield
    i18n.catalog.cache_clear()


def test_without_a_compiled_catalog_the_po_is_read(tmp_path, monkeypatch, fresh_catalogs):
    """A checkout that pulled new messages without installing again (no crm.mo, or an older
    one) answers from crm.po, never in English for want of a compile."""
    _locale_copy(tmp_path, monkeypatch, compiled=False)
    found = i18n.catalog("ru")
    assert found is not None
    assert found.translate("Field required") == "обязательное поле"


def test_a_compiled_catalog_older_than_its_po_is_not_trusted(tmp_path, monkeypatch, fresh_catalogs):
    target = _locale_copy(tmp_path, monkeypatch, compiled=True)
    po = target / "crm.po"
    text = po.read_text(encoding="utf-8")
    assert 'msgstr "обязательное поле"' in text
    po.write_text(text.replace('msgstr "обязательное поле"', 'msgstr "поле обязательно"'))
    mo = target / "crm.mo"
    os.utime(mo, (po.stat().st_mtime - 60, po.stat().st_mtime - 60))
    found = i18n.catalog("ru")
    assert found is not None
    assert found.translate("Field required") == "поле обязательно"
    os.utime(mo, (po.stat().st_mtime + 60, po.stat().st_mtime + 60))
    i18n.catalog.cache_clear()
    newer = i18n.catalog("ru")
    assert newer is not None
    assert newer.translate("Field required") == "обязательное поле"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("ru", "ru"),
        ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        ("en-US,en;q=0.9,ru;q=0.8", "en"),
        ("fr-FR, de;q=0.5", "en"),
        ("ru;q=0, en", "en"),
        ("en;q=0.2, ru;q=0.7", "ru"),
        ("", "en"),
        (None, "en"),
        ("ru;q=abc", "en"),
    ],
)
def test_negotiate(header, language):
    assert i18n.negotiate(header, "en") == language


def test_templates_translate_their_values_in_turn():
    assert (
        i18n.translate("send_at: is in the past: give a moment still to come", "ru")
        == "send_at: в прошлом: укажите момент в будущем"
    )
    assert (
        i18n.translate("The database is not reachable; try again in 5 s", "ru")
        == "База данных: нет связи; попробуйте снова через 5 с"
    )
    assert i18n.translate("Nothing known", "ru") == "Nothing known"
    assert i18n.translate("Campaign not found", "en") == "Campaign not found"


async def test_an_error_follows_accept_language_and_keeps_its_code(aiohttp_client):
    api = Api(await aiohttp_client(create_app(make_settings())))
    owner = await api.register()
    path = f"/api/sms/campaigns/{'0' * 24}"
    english = await api.call("GET", path, owner, expect=404)
    russian = await api.call("GET", path, owner, expect=404, headers={"Accept-Language": "ru-RU"})
    assert english["error"]["message"] == "Campaign not found"
    assert russian["error"]["message"] == "Рассылка не найдена"
    assert russian["error"]["code"] == english["error"]["code"] == "not_found"
    bad = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=400,
        headers={"Accept-Language": "ru"},
        json={
            "name": "x",
            "text": "t",
            "recipients": [{"phone": "+79160000001"}],
            "send_at": "2001-01-01T00:00:00Z",
        },
    )
    assert bad["error"]["message"] == "send_at: в прошлом: укажите момент в будущем"
    assert bad["error"]["code"] == "validation_error"
    assert bad["error"]["details"][0]["field"] == "send_at"


async def test_the_default_language_is_a_setting(aiohttp_client):
    api = Api(await aiohttp_client(create_app(make_settings(default_language="ru"))))
    answer = await api.call("GET", "/api/auth/me", expect=401)
    assert answer["error"]["code"] == "unauthorized"
    assert answer["error"]["message"] != "Authentication is required"
    english = await api.call("GET", "/api/auth/me", expect=401, headers={"Accept-Language": "en"})
    assert english["error"]["code"] == "unauthorized"
    assert all(ord(c) < 128 for c in english["error"]["message"])
    assert not all(ord(c) < 128 for c in answer["error"]["message"])
