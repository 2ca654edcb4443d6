"""Issue #30, finding by finding: nothing changes silently on the way out or in, and files as
Russian Excel users save them import."""

from __future__ import annotations

import io
from datetime import datetime
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from bson import ObjectId

from crm_core.files.cells import CellError, local_moment, parse_number, read_cell
from crm_core.files.readers import csv_cell, csv_rows
from crm_core.tables.columns import Column, SelectOption, ValueContext, default_column_types
from models.accounts import Tenant
from tests.support.files import confirm, finished, upload

TYPES = default_column_types()
MOSCOW = ValueContext(ZoneInfo("Europe/Moscow"), "RU", 10_000)


def cell(type_name: str, value: object, **settings: object) -> object:
    column = Column.from_doc({"key": "c", "type": type_name, **settings})
    return read_cell(column, TYPES.get(type_name), value, MOSCOW)


# 1. rows cut in two
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1e", "\x85"])
def test_a_line_break_character_inside_a_field_does_not_cut_the_row(char):
    data = f"a,b\r\nпервая{char}вторая,x\r\n".encode()
    rows = list(csv_rows(io.BytesIO(data), "utf-8-sig", ","))
    assert rows == [["a", "b"], [f"первая{char}вторая", "x"]]


async def make(api, owner, columns, rows=(), key="t", timezone="Europe/Moscow"):
    await Tenant.get_motor_collection().update_one(
        {"_id": ObjectId(owner.tenant_id)}, {"$set": {"timezone": timezone}}
    )
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": columns}
    )
    if rows:
        await api.call("POST", f"/api/data/{key}/bulk", owner, expect=201, json={"items": rows})


async def test_export_quotes_line_breaks_keeps_milliseconds_and_never_overflows(api, client, owner):
    await make(
        api,
        owner,
        [{"key": "s", "type": "string"}, {"key": "d", "type": "date"}],
        [
            {"s": "первая\u2028вторая", "d": "9999-12-31T23:00:00Z"},
            {"s": "'=x", "d": "2025-08-15T20:59:59.999Z"},
        ],
    )
    resp = await client.get("/api/data/t/export?format=csv&sort_by=s", headers=owner.headers)
    assert resp.status == 200
    text = (await resp.read()).decode("utf-8-sig")
    assert text.splitlines(keepends=False)[0] == "s,d"
    assert '"первая\u2028вторая",9999-12-31T23:00:00Z\r\n' in text  # 10. no 500
    assert "''=x,2025-08-15T23:59:59.999+03:00\r\n" in text  # 5. and 6.
    resp = await client.get("/api/data/t/export?format=xlsx", headers=owner.headers)
    assert resp.status == 200
    sheet = openpyxl.load_workbook(io.BytesIO(await resp.read())).active
    assert "9999-12-31T23:00:00Z" in [c.value for c in sheet["B"]]


# 5. a value really starting with an apostrophe
def test_one_neutralising_apostrophe_is_taken_off():
    assert csv_cell("''=x") == "'=x"
    assert csv_cell("'=x") == "=x"
    assert csv_cell("'abc") == "'abc"


# 7. empty and whitespace-only text
def test_text_cells_keep_their_whitespace():
    assert cell("string", "  ") == "  "
    assert cell("string", "") == ""
    assert cell("integer", "  ") is None


# 9. phone extensions
@pytest.mark.parametrize("text", ["8 (916) 123-45-67 доб. 123", "+7 916 123 45 67 ext. 5"])
def test_a_phone_extension_is_refused_not_dropped(text):
    with pytest.raises(CellError, match="extension"):
        cell("phone", text)
    assert cell("phone", "8 (916) 123-45-67") == "8 (916) 123-45-67"


# 2. and 4. select labels
def test_select_labels_exact_then_unambiguous_and_never_ids_from_cell_types():
    options = [
        SelectOption(1, "A").to_doc(),
        SelectOption(2, "a").to_doc(),
        SelectOption(3, "1").to_doc(),
        SelectOption(4, "Won").to_doc(),
    ]
    assert cell("select", "A", options=options) == 1
    assert cell("select", "a", options=options) == 2
    assert cell("select", "won ", options=options) == 4
    assert cell("select", 1, options=options) == 3  # a number cell is the label "1"
    with pytest.raises(CellError, match="'A', 'a'"):
        cell("select", " A ", options=options)
    with pytest.raises(CellError, match=r"not an option.*'Won'"):
        cell("select", 4, options=options)


# 3. DST
def test_a_missing_local_time_is_refused_and_an_ambiguous_one_is_the_first():
    with pytest.raises(CellError, match="does not exist"):
        local_moment(datetime(2010, 3, 28, 2, 30), MOSCOW.timezone)
    first = local_moment(datetime(2010, 10, 31, 2, 30), MOSCOW.timezone)
    assert first.isoformat() == "2010-10-31T02:30:00+04:00"
    assert cell("date", "2010-10-31T02:30:00+03:00") == "2010-10-31T02:30:00.000+03:00"


# Russian Excel numbers and booleans
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 234,56", "1234.56"),
        ("1\u00a0234,56", "1234.56"),
        ("1\u202f234,56 р.", "1234.56"),
        ("1 234,56 руб.", "1234.56"),
        ("1 234 ₽", "1234"),
        ("15%", "0.15"),
        ("(1 234,56)", "-1234.56"),
        ("-0,5", "-0.5"),
    ],
)
def test_russian_numbers(text, value):
    assert str(parse_number(text)) == value


@pytest.mark.parametrize("text", ["1,234.56", "12 34", "abc", "1.2.3"])
def test_unreadable_numbers_say_what_is_accepted(text):
    with pytest.raises(CellError, match=r"accepted: .*1 234,56"):
        cell("float", text)


def test_russian_booleans():
    assert [cell("boolean", w) for w in ("ИСТИНА", "ЛОЖЬ", "Да", "нет")] == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(CellError, match="истина/ложь"):
        cell("boolean", "может быть")


async def test_export_for_russian_excel(api, client, owner):
    await make(
        api,
        owner,
        [
            {"key": "n", "type": "string"},
            {"key": "f", "type": "float"},
            {"key": "b", "type": "boolean"},
            {"key": "d", "type": "date"},
        ],
        [{"n": "Ann", "f": 1234.56, "b": True, "d": "2025-08-15T07:30:00Z"}],
    )
    resp = await client.get("/api/data/t/export?format=csv&locale=ru", headers=owner.headers)
    body = await resp.read()
    assert body.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM: Excel opens it as UTF-8
    assert body.decode("utf-8-sig") == "n;f;b;d\r\nAnn;1234,56;Да;15.08.2025 10:30:00\r\n"


RUSSIAN_CSV = (
    "Имя;Сумма;Доля;VIP;Дата;Статус\r\n"
    "Иван Петров;1 234,56 р.;15%;ИСТИНА;15.08.2025;Новый\r\n"
    "ООО «Ромашка»;(2\u00a0000,00);7,5%;ЛОЖЬ;01.09.2025 10:00;выигран\r\n"
)
RU_COLUMNS = [
    {"key": "name", "type": "string", "name": "Имя"},
    {"key": "sum", "type": "float", "name": "Сумма"},
    {"key": "share", "type": "float", "name": "Доля"},
    {"key": "vip", "type": "boolean", "name": "VIP"},
    {"key": "due", "type": "date", "name": "Дата"},
    {
        "key": "status",
        "type": "select",
        "name": "Статус",
        "options": [{"id": 1, "label": "Новый"}, {"id": 2, "label": "Выигран"}],
    },
]
RU_STORED = [
    ("Иван Петров", 1234.56, 0.15, True, "2025-08-14T21:00:00Z", 1),
    ("ООО «Ромашка»", -2000.0, 0.075, False, "2025-09-01T07:00:00Z", 2),
]


async def import_all(api, client, owner, data, query="", content_type="text/csv"):
    status, job = await upload(
        client, owner, data, table="t", query=query, content_type=content_type
    )
    assert status == 201, job
    assert all(not r["errors"] for r in job["preview"]["rows"]), job["preview"]
    await confirm(api, owner, job, table="t")
    done = await finished(api, owner, job, table="t")
    assert done["state"] == "completed", done
    page = await api.call("GET", "/api/data/t?sort_by=name", owner, expect=200)
    return [tuple(r.get(c["key"]) for c in RU_COLUMNS) for r in page["items"]]


async def test_a_russian_excel_csv_in_windows_1251(api, client, owner):
    await make(api, owner, RU_COLUMNS)
    stored = await import_all(api, client, owner, RUSSIAN_CSV.encode("cp1251"))
    assert stored == RU_STORED


async def test_an_xlsx_with_title_rows_and_header_row(api, client, owner):
    await make(api, owner, RU_COLUMNS)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Выгрузка клиентов за август"])
    sheet.append([])
    for line in RUSSIAN_CSV.splitlines():
        sheet.append(line.split(";"))
    sheet["B4"] = 1234.56
    sheet["E4"] = datetime(2025, 8, 15)
    buffer = io.BytesIO()
    workbook.save(buffer)
    stored = await import_all(
        api, client, owner, buffer.getvalue(), "header_row=3", "application/octet-stream"
    )
    assert stored == RU_STORED


async def test_preview_shows_parsed_values_and_the_error_per_cell(api, client, owner):
    await make(api, owner, RU_COLUMNS)
    data = "Имя;Сумма;Статус\r\nАнна;1 234,56;нет такого\r\n".encode()
    status, job = await upload(client, owner, data, table="t")
    assert status == 201, job
    (row,) = job["preview"]["rows"]
    assert row["values"] == {"name": "Анна", "sum": 1234.56}
    assert [e["field"] for e in row["errors"]] == ["status"]
    assert "options: 'Новый', 'Выигран'" in row["errors"][0]["message"]


# 4. XLSX formulas saved without their value
async def test_a_formula_without_a_saved_value_is_an_error_naming_the_cell(api, client, owner):
    await make(api, owner, RU_COLUMNS)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Имя", "Сумма"])
    sheet.append(["Анна", "=1+2"])  # openpyxl saves formulas without a computed value
    buffer = io.BytesIO()
    workbook.save(buffer)
    status, job = await upload(
        client, owner, buffer.getvalue(), table="t", content_type="application/octet-stream"
    )
    assert status == 201, job
    (row,) = job["preview"]["rows"]
    assert [e["field"] for e in row["errors"]] == ["sum"]
    assert row["errors"][0]["message"].startswith("B2 holds the formula =1+2 without a saved")
