"""pydantic's field messages through real requests (docs/api.md "Languages"): under
`Accept-Language: ru` the `message` and each detail's `message` are Russian, with the limits,
choices and types kept; the `code` and the `details`' fields are those of the English answer,
and the English answer reads as it always has."""

from __future__ import annotations

from typing import Any

from handlers.app import create_app
from tests.support.api import Account, Api, make_settings

EN = {"Accept-Language": "en"}
RU = {"Accept-Language": "ru-RU,ru;q=0.9"}


async def both(
    api: Api, owner: Account, method: str, path: str, body: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The 400 `error` of one request, asked in English and in Russian: the same `code` and the
    same fields, in the same order."""
    options = {} if body is None else {"json": body}
    english = (await api.call(method, path, owner, expect=400, headers=EN, **options))["error"]
    russian = (await api.call(method, path, owner, expect=400, headers=RU, **options))["error"]
    assert english["code"] == russian["code"] == "validation_error"
    assert [d["field"] for d in russian["details"]] == [d["field"] for d in english["details"]]
    return english, russian


def messages(error: dict[str, Any]) -> list[str]:
    return [detail["message"] for detail in error["details"]]


async def test_table_and_column_definitions(api, owner, factories):
    await factories.table(owner)
    english, russian = await both(
        api,
        owner,
        "POST",
        "/api/meta/tables",
        {"key": "Bad Key", "columns": [{"key": "n", "type": "nope"}]},
    )
    assert english["message"] == "key: String should match pattern '^[a-z][a-z0-9_]{0,62}$'"
    assert (
        russian["message"] == "key: строка должна соответствовать шаблону '^[a-z][a-z0-9_]{0,62}$'"
    )
    assert messages(english)[1].startswith(
        "Input tag 'nope' found using 'type' does not match any of the expected tags: 'string', "
    )
    assert messages(russian)[1].startswith(
        "значение 'nope' поля 'type' не из допустимых: 'string', 'integer', "
    )
    assert russian["details"][1]["field"] == "columns.0"

    english, russian = await both(
        api,
        owner,
        "POST",
        "/api/meta/tables",
        {"key": "t2", "columns": [{"key": "n", "type": "integer", "required": "yes"}]},
    )
    assert english["message"] == "columns.0.integer.required: Input should be a valid boolean"
    assert russian["message"] == "columns.0.integer.required: должно быть логическим значением"

    english, russian = await both(api, owner, "POST", "/api/meta/tables/t/columns", {"key": "m"})
    assert english["message"] == "body: Unable to extract tag using discriminator 'type'"
    assert russian["message"] == "body: не удалось определить вариант по полю 'type'"


async def test_rows(api, owner, factories):
    await factories.table(owner)
    english, russian = await both(api, owner, "POST", "/api/data/t/bulk", {"items": []})
    assert english["message"] == "items: List should have at least 1 item after validation, not 0"
    assert russian["message"] == "items: список: элементов должно быть не меньше 1, а не 0"

    many = {"items": [{"n": i} for i in range(1001)]}
    english, russian = await both(api, owner, "POST", "/api/data/t/bulk", many)
    assert russian["message"] == "items: список: элементов должно быть не больше 1000, а не 1001"

    body = {"items": [{"n": 1}]}
    english, russian = await both(api, owner, "POST", "/api/data/t/bulk?return=all", body)
    assert english["message"] == "return: Input should be 'ids' or 'rows'"
    assert russian["message"] == "return: должно быть 'ids' или 'rows'"

    english, russian = await both(api, owner, "GET", "/api/data/t?limit=0")
    assert english["message"] == "limit: Input should be greater than or equal to 1"
    assert russian["message"] == "limit: должно быть не меньше 1"

    english, russian = await both(api, owner, "PATCH", "/api/data/t/bulk", {"items": [], "x": 1})
    assert messages(english)[:2] == [
        "List should have at least 1 item after validation, not 0",
        "unknown field",
    ]
    assert messages(russian)[:3] == [
        "список: элементов должно быть не меньше 1, а не 0",
        "неизвестное поле",
        "обязательное поле",
    ]


async def test_users(api, owner):
    bad = {"email": "nope", "password": "short", "full_name": "", "role_ids": "r"}
    english, russian = await both(api, owner, "POST", "/api/users", bad)
    assert messages(english) == [
        "String should have at least 8 characters",
        "value is not a valid email address: An email address must have an @-sign.",
        "String should have at least 1 character",
        "Input should be a valid array",
    ]
    assert russian["message"] == "password: строка должна быть не короче 8 симв."
    assert messages(russian) == [
        "строка должна быть не короче 8 симв.",
        "некорректный адрес электронной почты: В адресе должен быть знак @.",
        "строка должна быть не короче 1 симв.",
        "должно быть списком",
    ]

    english, russian = await both(api, owner, "POST", "/api/users", {})
    assert messages(english) == ["Field required"] * 3
    assert messages(russian) == ["обязательное поле"] * 3
    assert russian["message"] == "password: обязательное поле"

    path = f"/api/users/{'0' * 24}"
    english, russian = await both(api, owner, "PATCH", path, {"is_active": "yes"})
    assert english["message"] == "is_active: Input should be a valid boolean"
    assert russian["message"] == "is_active: должно быть логическим значением"


async def test_sms_campaigns(api, owner):
    bad = {
        "name": "x" * 201,
        "text": 5,
        "recipients": [{"phone": "+79160000001", "fields": {"a": [1]}}],
        "zz": 1,
    }
    english, russian = await both(api, owner, "POST", "/api/sms/campaigns", bad)
    assert messages(english) == [
        "String should have at most 200 characters",
        "Input should be a valid string",
        "Value error, must be text, a number or a boolean",
        "unknown field",
    ]
    assert russian["message"] == "name: строка должна быть не длиннее 200 симв."
    assert messages(russian) == [
        "строка должна быть не длиннее 200 симв.",
        "должно быть строкой",
        "должно быть текстом, числом или логическим значением",  # our validator's, translated
        "неизвестное поле",
    ]
    english, russian = await both(api, owner, "GET", "/api/sms/campaigns?limit=abc")
    assert english["message"] == (
        "limit: Input should be a valid integer, unable to parse string as an integer"
    )
    assert russian["message"] == (
        "limit: должно быть целым числом: строку не удалось разобрать как целое число"
    )


async def test_tenant_settings(api, owner):
    bad = {
        "name": None,
        "sms_daily_cap": 0,
        "sms_quiet_hours": {"start": "21:00", "end": "21:00"},
    }
    english, russian = await both(api, owner, "PATCH", "/api/tenant", bad)
    assert messages(english) == [
        "Value error, cannot be null; leave the field out to keep it",
        "Value error, start and end must differ",
        "Input should be greater than or equal to 1",
    ]
    assert russian["message"] == (
        "name: не может быть null; не передавайте поле, чтобы оставить его как есть"
    )
    assert messages(russian) == [
        "не может быть null; не передавайте поле, чтобы оставить его как есть",
        "start и end должны различаться",
        "должно быть не меньше 1",
    ]
    bad = {"sms_quiet_hours": {"start": "9", "end": "21:00"}, "timezone": 3}
    english, russian = await both(api, owner, "PATCH", "/api/tenant", bad)
    assert [d["field"] for d in russian["details"]] == ["timezone", "sms_quiet_hours.start"]
    assert messages(russian) == [
        "должно быть строкой",
        "строка должна соответствовать шаблону '^([01][0-9]|2[0-3]):[0-5][0-9]$'",
    ]
    # nothing was changed by either request
    tenant = await api.call("GET", "/api/tenant", owner, expect=200)
    assert tenant["name"] == "Acme"


async def test_query_dates(api, owner):
    english, russian = await both(api, owner, "GET", "/api/audit?since=0.5")
    assert english["message"] == (
        "since: Value error, must be an ISO 8601 date-time, e.g. 2026-12-05T10:00:00Z"
    )
    assert (
        russian["message"] == "since: должно быть моментом ISO 8601, например 2026-12-05T10:00:00Z"
    )
    english, russian = await both(api, owner, "GET", "/api/audit?since=2020-13-01T00:00:00Z")
    assert english["message"] == (
        "since: Input should be a valid datetime or date, month value is outside expected "
        "range of 1-12"
    )
    assert (
        russian["message"]
        == "since: должно быть моментом времени или датой: месяц вне диапазона 1-12"
    )


async def test_the_default_language_translates_field_messages_too(aiohttp_client):
    api = Api(await aiohttp_client(create_app(make_settings(default_language="ru"))))
    owner = await api.register()
    answer = await api.call("POST", "/api/users", owner, expect=400, json={})
    assert answer["error"]["message"] == "password: обязательное поле"
    english = await api.call("POST", "/api/users", owner, expect=400, json={}, headers=EN)
    assert english["error"]["message"] == "password: Field required"


async def test_reading_the_body_and_the_query(api, owner, factories):
    """What the routing says before a model sees the input (handlers/routing.py) is Russian
    too: a body that is not an object, a key given twice, a parameter given twice, a body that
    is not JSON."""
    await factories.table(owner)
    english, russian = await both(api, owner, "POST", "/api/users", [1])
    assert english["message"] == "body: must be a JSON object"
    assert russian["message"] == "body: должно быть объектом JSON"

    raw = b'{"full_name": "A", "full_name": "B"}'
    headers = {"Content-Type": "application/json"}
    for language, expected in (
        ("en", "full_name: given twice in one object"),
        ("ru", "full_name: указано дважды в одном объекте"),
    ):
        answer = await api.call(
            "POST",
            "/api/users",
            owner,
            expect=400,
            data=raw,
            headers={**headers, "Accept-Language": language},
        )
        assert answer["error"]["message"] == expected
        assert answer["error"]["details"][0]["field"] == "full_name"

    english, russian = await both(api, owner, "GET", "/api/data/t?limit=1&limit=2")
    assert english["message"] == "limit: given more than once; give it once"
    assert russian["message"] == "limit: указано несколько раз; укажите один раз"

    answer = await api.call(
        "POST",
        "/api/users",
        owner,
        expect=415,
        data=b"email=a",
        headers={"Content-Type": "text/plain", **RU},
    )
    assert answer["error"]["code"] == "unsupported_media_type"
    assert answer["error"]["message"] == (
        "Тело запроса должно быть JSON, а не 'text/plain': отправьте "
        "'Content-Type: application/json'"
    )
