"""The messages our own code raises, through real requests under `Accept-Language: ru`
(docs/api.md "Languages"): a row's values of the wrong type, an unknown column, a role that is
not the company's, a live-events error frame; the `code`, the `details`' fields and the English
answer stay as they were."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Account, Api
from tests.support.live import LiveSocket, ready

pytestmark = pytest.mark.asyncio

EN = {"Accept-Language": "en"}
RU = {"Accept-Language": "ru-RU,ru;q=0.9"}


async def both(
    api: Api, owner: Account, method: str, path: str, status: int, body: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `error` of one request, asked in English and in Russian: the same `code` and the
    same fields, in the same order."""
    options = {} if body is None else {"json": body}
    english = (await api.call(method, path, owner, expect=status, headers=EN, **options))["error"]
    russian = (await api.call(method, path, owner, expect=status, headers=RU, **options))["error"]
    assert english["code"] == russian["code"]
    fields = [d.get("field") for d in english.get("details", [])]
    assert [d.get("field") for d in russian.get("details", [])] == fields
    return english, russian


def messages(error: dict[str, Any]) -> list[str]:
    return [detail["message"] for detail in error["details"]]


async def deals(factories: Any, owner: Account) -> None:
    await factories.table(
        owner,
        key="deals",
        columns=[
            {"key": "title", "type": "string", "max_length": 5},
            {"key": "amount", "type": "integer"},
            {"key": "price", "type": "decimal", "scale": 2},
            {"key": "due", "type": "date"},
            {"key": "stage", "type": "select", "options": [{"label": "new"}]},
            {"key": "phone", "type": "phone"},
        ],
    )


async def test_row_values_of_the_wrong_type(api, owner, factories):
    await deals(factories, owner)
    body = {"title": 5, "amount": "x", "price": "1.234", "due": "x", "stage": 99, "phone": "abc"}
    english, russian = await both(api, owner, "POST", "/api/data/deals", 400, body)
    assert english["code"] == "validation_error"
    assert [d["field"] for d in russian["details"]] == [
        "title", "amount", "price", "due", "stage", "phone"
    ]  # fmt: skip
    assert english["message"] == "title: expected a string, got a number"
    assert russian["message"] == "title: ожидалось: строка; получено: число"
    assert messages(english)[1:] == [
        "expected a whole number, got a string",
        "has more than 2 digits after the point (the column's scale)",
        "is not a valid date (use YYYY-MM-DD or an ISO 8601 date-time)",
        "99 is not an option of this column",
        "is not a phone number",
    ]
    assert messages(russian)[1:] == [
        "ожидалось: целое число; получено: строка",
        "содержит больше 2 цифр после точки (точность столбца)",
        "не является корректной датой (укажите YYYY-MM-DD или дату-время ISO 8601)",
        "99 — нет такого варианта в этом столбце",
        "не является номером телефона",
    ]
    english, russian = await both(api, owner, "POST", "/api/data/deals", 400, {"title": "x" * 9})
    assert (english["message"], russian["message"]) == (
        "title: is longer than 5 characters",
        "title: длиннее 5 симв.",
    )
    # nothing was written, in either language
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 0


async def test_an_unknown_column(api, owner, factories):
    await deals(factories, owner)
    english, russian = await both(api, owner, "POST", "/api/data/deals", 400, {"nope": 1})
    assert english["details"] == [{"field": "nope", "message": "unknown column"}]
    assert russian["details"] == [{"field": "nope", "message": "неизвестный столбец"}]
    assert russian["message"] == "nope: неизвестный столбец"

    english, russian = await both(api, owner, "GET", "/api/data/deals?sort=nope", 400)
    assert english["message"] == "sort: unknown column or field 'nope'"
    assert russian["message"] == "sort: неизвестный столбец или поле 'nope'"

    condition = '[{"field":"nope","op":"eq","value":1}]'
    english, russian = await both(api, owner, "GET", f"/api/data/deals?filters={condition}", 400)
    assert english["code"] == "invalid_filter"
    assert russian["details"] == [{"field": "filters.0", "message": "неизвестное поле 'nope'"}]

    # an operator's complaint about its value, inside the condition's own template
    condition = '[{"field":"amount","op":"gt","value":"x"}]'
    english, russian = await both(api, owner, "GET", f"/api/data/deals?filters={condition}", 400)
    assert english["message"] == "filters.0: 'amount' gt: expected a whole number, got a string"
    assert russian["message"] == "filters.0: 'amount' gt: ожидалось: целое число; получено: строка"


async def test_a_role_not_found(api, owner, factories):
    await deals(factories, owner)
    missing = "0" * 24
    share = {"table": "deals", "role_id": missing, "access": "read"}
    english, russian = await both(api, owner, "POST", "/api/shares", 400, share)
    assert english["details"] == [{"field": "role_id", "message": "no such role in this company"}]
    assert russian["details"] == [{"field": "role_id", "message": "в этой компании нет такой роли"}]
    assert russian["code"] == "validation_error"

    english, russian = await both(api, owner, "GET", f"/api/roles/{missing}", 404)
    assert (english["code"], english["message"]) == ("not_found", "Role not found")
    assert russian["message"] == "Роль не найдена"
    assert (await api.call("GET", "/api/shares", owner, expect=200))["granted"] == []


async def test_a_live_error_frame_follows_the_connection_s_language(client, owner, factories):
    """The opening request's `Accept-Language` (a browser sends its own with the handshake):
    an `error` frame's message and its details' in Russian, the code and the field kept."""
    await deals(factories, owner)
    frames = {}
    for language in ("en", "ru"):
        ws = await client.ws_connect(
            "/api/events",
            protocols=["crm.events", f"bearer.{owner.access_token}"],
            headers={"Accept-Language": language},
        )
        live = await ready(LiveSocket(ws))
        refused = await live.subscribe("nope")
        bad = await live.subscribe("deals", filters=[{"field": "nope", "op": "eq", "value": 1}])
        frames[language] = (refused, bad)
        assert (await live.subscribe("deals"))["type"] == "subscribed"  # the connection stays
        await ws.close()
    (refused_en, bad_en), (refused_ru, bad_ru) = frames["en"], frames["ru"]
    assert refused_ru["type"] == refused_en["type"] == "error"
    assert refused_ru["code"] == refused_en["code"] == "not_found"
    assert refused_ru["table"] == refused_en["table"] == "nope"
    assert refused_en["message"] == "Table 'nope' not found"
    assert refused_ru["message"] == "Таблица 'nope' не найдена"
    assert bad_ru["code"] == bad_en["code"] == "invalid_filter"
    assert bad_en["message"] == "filters.0: unknown field 'nope'"
    assert bad_ru["message"] == "filters.0: неизвестное поле 'nope'"
    assert bad_ru["details"] == [{"field": "filters.0", "message": "неизвестное поле 'nope'"}]
