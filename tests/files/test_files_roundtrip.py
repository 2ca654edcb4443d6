"""Export then import gives back every value exactly (issue #30 §1): every column type with its
edge values, through CSV (by keys, by names, `;`, `locale=ru`) and XLSX (by keys, by names),
into an identical table; any difference fails, and what a format cannot carry (an empty text
in XLSX) is refused by the import, named in its errors, never stored changed."""

from __future__ import annotations

import pytest
from bson import ObjectId

from models.accounts import Tenant
from tests.support.files import confirm, finished, upload

OPTIONS = [
    {"id": 1, "label": "A"},
    {"id": 2, "label": "a"},
    {"id": 3, "label": "=x"},
    {"id": 4, "label": "1"},
    {"id": 5, "label": "Да"},
]


def columns():
    return [
        {"key": "k", "type": "integer", "unique": True, "required": True},
        {"key": "s", "type": "string", "name": "=Total"},
        {"key": "email", "type": "email", "name": "@mail"},
        {"key": "phone", "type": "phone", "name": "-phone"},
        {"key": "url", "type": "url", "name": "+url"},
        {"key": "i", "type": "integer", "name": "Same"},
        {"key": "f", "type": "float", "name": "Same"},
        {"key": "b", "type": "boolean", "name": "Да?"},
        {"key": "d", "type": "date", "name": "When"},
        {"key": "t", "type": "time", "name": "At"},
        {"key": "sel", "type": "select", "name": "Status", "options": OPTIONS},
        {"key": "who", "type": "user", "name": "Who"},
        {"key": "to", "type": "link", "table": "targets", "name": "To"},
    ]


LINE_BREAKS = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]
STRINGS = [
    *(f"первая{c}вторая" for c in LINE_BREAKS),
    "a\r\nb",
    "a\rb",
    "a\nb",
    "ends\n",
    "'=x",
    "'abc",
    "''",
    "'",
    "=1+1",
    '=HYPERLINK("http://evil")',
    "+7",
    "-5",
    "@a",
    "\tx",
    "\rx",
    "  ",
    " ",
    "",
    " lead",
    "trail ",
    'quote "q"',
    '"',
    "a;b",
    "a,b",
    "a|b",
    "emoji 😀 ё Ё",
    "x" * 10_000,
    "_x000B_",
    "_x005F_",
    "ctrl\x01\x02\x08\x0e\x1f\x7f",
    "0123",
    "1e5",
    "0.30000000000000004",
    "true",
    "Да",
    "2025-08-15",
    "\ufeffbom",
    "NULL",
]
INTEGERS = [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, 12_345_678_901_234_567, 1_000_000]
FLOATS = [
    0.30000000000000004,
    1000000000000000.2,
    -0.0,
    0.0,
    1e-300,
    1.7976931348623157e308,
    5e-324,
    0.1,
    123456789.12345679,
    1e16,
    -2.5,
    1234.56,
]
DATES = [
    "1900-01-01",
    "2100-12-31",
    "2025-08-15",
    "9999-12-31T23:00:00Z",  # "no end date": beyond year 9999 in Moscow
    "9999-12-31T23:59:59.999Z",
    "0001-01-01T00:00:00Z",
    "2025-08-15T23:59:59.999Z",
    "2025-08-15T21:00:00Z",  # midnight in Moscow
    "2010-10-30T22:30:00Z",  # 02:30 in Moscow, the first of the two (UTC+4)
    "2010-10-30T23:30:00Z",  # 02:30 in Moscow again (UTC+3)
    "2010-03-27T23:30:00Z",  # 03:30 MSD, just after the missing hour
]
TIMES = ["00:00:00", "23:59:59", "09:05:00"]
PHONES = ["+79161234567", "+12025550143"]


def edge_rows(user_id: str, target_id: str):
    values = (
        [("s", v) for v in STRINGS]
        + [("i", v) for v in INTEGERS]
        + [("f", v) for v in FLOATS]
        + [("b", v) for v in (True, False)]
        + [("d", v) for v in DATES]
        + [("t", v) for v in TIMES]
        + [("sel", o["id"]) for o in OPTIONS]
        + [("phone", v) for v in PHONES]
        + [("email", "ann@example.com"), ("url", "https://example.com/a?b=c;d,e")]
        + [("who", user_id), ("to", target_id)]
    )
    rows = [{"k": n, key: value} for n, (key, value) in enumerate(values, 1)]
    rows.append({"k": 0})  # every cell empty but the key
    return rows


async def make_tables(api, owner):
    await Tenant.get_motor_collection().update_one(
        {"_id": ObjectId(owner.tenant_id)}, {"$set": {"timezone": "Europe/Moscow"}}
    )
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "targets", "columns": [{"key": "n", "type": "string"}]},
    )
    target = await api.call("POST", "/api/data/targets", owner, expect=201, json={"n": "x"})
    for key in ("src", "dst"):
        await api.call(
            "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": columns()}
        )
    items = edge_rows(owner.user_id, target["id"])
    await api.call("POST", "/api/data/src/bulk", owner, expect=201, json={"items": items})


async def rows_by_key(api, owner, table):
    page = await api.call("GET", f"/api/data/{table}?sort_by=k&limit=1000", owner, expect=200)
    return {
        row["k"]: {k: v for k, v in row.items() if k != "id" and not k.startswith("_")}
        for row in page["items"]
    }


EXPORTS = [
    ("csv", "format=csv"),
    ("csv", "format=csv&headers=names"),
    ("csv", "format=csv&delimiter=semicolon"),
    ("csv", "format=csv&locale=ru&headers=names"),
    ("csv", "format=csv&delimiter=tab&bom=false"),
    ("xlsx", "format=xlsx"),
    ("xlsx", "format=xlsx&headers=names"),
]


@pytest.mark.parametrize(("fmt", "query"), EXPORTS, ids=[q for _, q in EXPORTS])
async def test_every_value_survives_export_then_import(api, client, owner, fmt, query):
    await make_tables(api, owner)
    source = await rows_by_key(api, owner, "src")
    assert len(source) == len(edge_rows("", "")), "the API took every edge value"
    resp = await client.get(f"/api/data/src/export?{query}", headers=owner.headers)
    body = await resp.read()
    assert resp.status == 200, body[:300]
    content_type = "text/csv" if fmt == "csv" else "application/octet-stream"
    status, job = await upload(client, owner, body, table="dst", content_type=content_type)
    assert status == 201, job
    mapped = {v for v in job["mapping"].values() if v}
    assert mapped == {c["key"] for c in columns()}, job["mapping"]
    await confirm(api, owner, job, table="dst", mode="skip_invalid")
    done = await finished(api, owner, job, table="dst")
    assert done["state"] == "completed", done
    # what the format cannot carry is refused, by name; nothing else is
    uncarried = {n for n, row in source.items() if fmt == "xlsx" and row.get("s") == ""}
    refused = {e["row"] for e in done["errors"]}
    assert all("XLSX could not hold" in e["message"] for e in done["errors"]), done["errors"]
    imported = await rows_by_key(api, owner, "dst")
    assert len(refused) == len(uncarried)
    assert set(imported) == set(source) - uncarried
    differences = [
        (k, source[k], imported[k]) for k in sorted(imported) if source[k] != imported[k]
    ]
    assert differences == []
    # -0.0 == 0.0 in Python: its sign is compared on its own
    negative_zero = next(k for k, row in source.items() if repr(row.get("f")) == "-0.0")
    assert repr(imported[negative_zero]["f"]) == "-0.0"
