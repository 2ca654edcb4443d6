"""Column definitions as stored (the `_tables` layout analysts read, docs/storage.md) and the
settings each type owns: what a type change keeps and drops, and the 400s for settings a type
does not have."""

from __future__ import annotations

import pytest

from crm_core.platform.phones import InvalidPhone, normalise_phone
from tests.support.api import rows_of, tenant_db

COLUMNS = [
    {"key": "title", "type": "string", "max_length": 50, "validators": ["inn", "inn"]},
    {
        "key": "stage",
        "type": "select",
        "options": [{"label": "New"}, {"label": "Won", "color": "#00ff00"}],
    },
    {"key": "company", "type": "link", "table": "legal_entities", "indexed": False},
    {"key": "amount", "type": "float", "required": True, "default": 1.5, "unique": True},
]


async def stored_columns(client, owner, table: str) -> list[dict]:
    doc = await tenant_db(client, owner)["_tables"].find_one({"key": table})
    return doc["columns"]


async def test_definitions_are_stored_in_the_documented_shape(client, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    assert await stored_columns(client, owner, "deals") == [
        {
            "key": "title",
            "name": "title",
            "type": "string",
            "required": False,
            "unique": False,
            "indexed": False,
            "default": None,
            "max_length": 50,
            "validators": ["inn"],
        },
        {
            "key": "stage",
            "name": "stage",
            "type": "select",
            "required": False,
            "unique": False,
            "indexed": False,
            "default": None,
            "options": [{"id": 1, "label": "New"}, {"id": 2, "label": "Won", "color": "#00ff00"}],
            "max_option_id": 2,
        },
        {
            "key": "company",
            "name": "company",
            "type": "link",
            "required": False,
            "unique": False,
            "indexed": False,
            "default": None,
            "table": "legal_entities",
        },
        {
            "key": "amount",
            "name": "amount",
            "type": "float",
            "required": True,
            "unique": True,
            "indexed": False,
            "default": 1.5,
        },
    ]
    indexes = await (await rows_of(client, owner, "deals")).index_information()
    assert {"i_company", "u_amount"} <= set(indexes)  # a link column is always indexed


async def test_an_edit_keeps_the_stored_shape_of_the_other_columns(
    api, client, owner, create_table
):
    await create_table(owner, "deals", COLUMNS)
    before = await stored_columns(client, owner, "deals")
    await api.call(
        "PATCH", "/api/meta/tables/deals/columns/title", owner, expect=200, json={"name": "Title"}
    )
    after = await stored_columns(client, owner, "deals")
    assert after[0] == {**before[0], "name": "Title"}
    assert after[1:] == before[1:]


async def test_a_type_change_drops_the_settings_the_new_type_has_not(
    api, client, owner, create_table
):
    await create_table(owner, "deals", COLUMNS)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"stage": 2})
    await api.call(
        "PATCH", "/api/meta/tables/deals/columns/stage", owner, expect=200, json={"type": "string"}
    )
    await api.call(
        "PATCH", "/api/meta/tables/deals/columns/title", owner, expect=200, json={"type": "integer"}
    )
    stage, title = (await stored_columns(client, owner, "deals"))[1::-1]
    assert "options" not in stage and "max_option_id" not in stage and stage["type"] == "string"
    assert "max_length" not in title and "validators" not in title and title["type"] == "integer"
    rows = await api.call("GET", "/api/data/deals", owner, expect=200)
    assert rows["items"][0]["stage"] == "Won"  # converted by label


@pytest.mark.parametrize(
    ("column", "change", "field", "message"),
    [
        (
            "title",
            {"options": [{"label": "a"}]},
            "options",
            "only multi_select, select columns have options",
        ),
        ("amount", {"max_length": 5}, "max_length", "only string columns have max_length"),
        ("amount", {"validators": ["inn"]}, "validators", "only string columns have validators"),
        ("stage", {"max_length": 5}, "max_length", "only string columns have max_length"),
    ],
)
async def test_settings_a_type_has_not_are_a_400_and_change_nothing(
    api, client, owner, create_table, column, change, field, message
):
    await create_table(owner, "deals", COLUMNS)
    before = await stored_columns(client, owner, "deals")
    body = await api.call(
        "PATCH", f"/api/meta/tables/deals/columns/{column}", owner, expect=400, json=change
    )
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"] == [{"field": field, "message": message}]
    assert await stored_columns(client, owner, "deals") == before


async def test_max_length_above_the_tenant_limit_is_a_400(api, owner):
    body = await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=400,
        json={"key": "t", "columns": [{"key": "s", "type": "string", "max_length": 20_000}]},
    )
    assert body["error"]["details"] == [
        {"field": "columns.0.max_length", "message": "max_length may be at most 10000"}
    ]


def test_phone_numbers_are_normalised_by_one_function():
    assert normalise_phone("8 (916) 123-45-67", "RU") == "+79161234567"
    assert normalise_phone("+7 916 123 45 67", "US") == "+79161234567"
    with pytest.raises(InvalidPhone, match="is not a phone number"):
        normalise_phone("call me", "RU")
    with pytest.raises(ValueError, match="is not a valid phone number"):
        normalise_phone("+7 999", "RU")
