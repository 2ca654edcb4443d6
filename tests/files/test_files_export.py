"""`GET /api/data/{table}/export`: CSV and XLSX with the list route's rows and the caller's
column view, select labels, dates in the company's timezone, formula injection neutralised."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import openpyxl
from bson import ObjectId

from handlers.routing import SERVICES
from models.accounts import Tenant
from tests.support.api import add_user

COLUMNS = [
    {"key": "name", "type": "string", "name": "Name"},
    {"key": "n", "type": "integer"},
    {"key": "amount", "type": "float"},
    {"key": "due", "type": "date"},
    {"key": "at", "type": "time"},
    {"key": "done", "type": "boolean"},
    {
        "key": "status",
        "type": "select",
        "options": [{"id": 1, "label": "New"}, {"id": 2, "label": "Won"}],
    },
    {"key": "phone", "type": "phone"},
]
ROWS = [
    {"name": "Ann", "n": 3, "amount": 1.5, "due": "2025-08-15", "done": True, "status": 2},
    {"name": '=HYPERLINK("http://evil")', "n": 1, "due": "2025-08-15T21:30:00Z", "at": "9:05"},
    {"name": "-2+3", "n": 2, "status": 1, "phone": "+79161234567"},
]


async def setup_table(api, owner, timezone="Europe/Moscow"):
    await Tenant.get_motor_collection().update_one(
        {"_id": ObjectId(owner.tenant_id)}, {"$set": {"timezone": timezone}}
    )
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "deals", "columns": COLUMNS}
    )
    await api.call("POST", "/api/data/deals/bulk", owner, expect=201, json={"items": ROWS})


async def export(client, account, query="", table="deals", expect=200):
    resp = await client.get(f"/api/data/{table}/export?{query}", headers=account.headers)
    body = await resp.read()
    assert resp.status == expect, body[:500]
    return resp, body


def read_csv(body: bytes, delimiter=","):
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=delimiter))


async def test_csv_export_renders_cells_for_spreadsheets(api, client, owner):
    await setup_table(api, owner)
    resp, body = await export(client, owner, "sort_by=n")
    assert resp.content_type == "text/csv"
    assert 'attachment; filename="deals-' in resp.headers["Content-Disposition"]
    rows = read_csv(body)
    assert rows[0] == ["name", "n", "amount", "due", "at", "done", "status", "phone"]
    assert rows[1] == [
        '\'=HYPERLINK("http://evil")',
        "1",
        "",
        "2025-08-16T00:30:00+03:00",
        "09:05:00",
        "",
        "",
        "",
    ]
    assert rows[2] == ["'-2+3", "2", "", "", "", "", "New", "'+79161234567"]
    # a date-only value is midnight in the company's timezone: the day alone
    assert rows[3] == ["Ann", "3", "1.5", "2025-08-15", "", "true", "Won", ""]


async def test_export_follows_filters_sort_and_the_column_view(api, client, owner):
    await setup_table(api, owner)
    await api.call(
        "PUT",
        "/api/meta/tables/deals/view",
        owner,
        expect=200,
        json={"column_order": ["n", "name"], "hidden": ["amount", "due", "at", "done", "phone"]},
    )
    filters = '[{"field":"n","op":"gte","value":2}]'
    _, body = await export(client, owner, f"filters={filters}&sort_by=n&sort_order=desc")
    assert read_csv(body) == [["n", "name", "status"], ["3", "Ann", "Won"], ["2", "'-2+3", "New"]]
    _, body = await export(client, owner, "columns=id,status,n&sort=-n&delimiter=semicolon")
    rows = read_csv(body, ";")
    assert [r[1:] for r in rows] == [["status", "n"], ["Won", "3"], ["New", "2"], ["", "1"]]
    assert rows[0][0] == "id" and len(rows[1][0]) == 24


async def test_export_in_manual_order(api, client, owner):
    await setup_table(api, owner)
    page = await api.call("GET", "/api/data/deals?sort_by=n", owner, expect=200)
    ids = [r["id"] for r in page["items"]]
    await api.call(
        "POST", f"/api/data/deals/{ids[2]}/move", owner, expect=200, json={"before_id": ids[0]}
    )
    _, body = await export(client, owner, "sort_by=manual&columns=n")
    assert read_csv(body) == [["n"], ["3"], ["1"], ["2"]]


async def test_display_names_as_headers(api, client, owner):
    await setup_table(api, owner)
    await api.call(
        "PUT", "/api/aliases/deals", owner, expect=200, json={"columns": {"n": "Количество"}}
    )
    _, body = await export(client, owner, "headers=names&columns=name,n,status")
    assert read_csv(body)[0] == ["Name", "Количество", "status"]


async def test_xlsx_export_types_cells_and_never_writes_formulas(api, client, owner):
    await setup_table(api, owner)
    resp, body = await export(client, owner, "format=xlsx&sort_by=n")
    assert resp.content_type.endswith("spreadsheetml.sheet")
    sheet = openpyxl.load_workbook(io.BytesIO(body)).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0] == ["name", "n", "amount", "due", "at", "done", "status", "phone"]
    assert rows[1][0] == '=HYPERLINK("http://evil")'
    assert sheet.cell(2, 1).data_type == "s"  # text, not a formula
    assert rows[1][3] == datetime(2025, 8, 16, 0, 30)
    assert rows[3][:7] == ["Ann", 3, 1.5, datetime(2025, 8, 15), None, True, "Won"]
    assert rows[2][7] == "+79161234567"


async def test_bad_parameters_are_400_before_any_byte(api, client, owner):
    await setup_table(api, owner)
    for query, field in (
        ("format=pdf", "format"),
        ("columns=name,nope", "columns"),
        ("columns=name,name", "columns"),
        ("sort_by=nope", "sort_by"),
        ("headers=labels", "headers"),
    ):
        resp = await client.get(f"/api/data/deals/export?{query}", headers=owner.headers)
        body = await resp.json()
        assert resp.status == 400, query
        assert body["error"]["details"][0]["field"] == field, (query, body)
    resp = await client.get(
        '/api/data/deals/export?filters=[{"field":"nope"}]', headers=owner.headers
    )
    assert (await resp.json())["error"]["code"] == "invalid_filter"


async def test_read_share_can_export_and_others_cannot_see_the_table(api, client, owner):
    await setup_table(api, owner)
    reader = await add_user(api, client, owner, "viewer")
    await export(client, reader, expect=404)
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": reader.user_id, "access": "read"},
    )
    _, body = await export(client, reader, "columns=n&sort_by=n")
    assert read_csv(body) == [["n"], ["1"], ["2"], ["3"]]
    other = await api.register(company="Other")
    await export(client, other, expect=404)


async def test_export_of_a_builtin_table(api, client, owner):
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "Deal", "status": 3})
    resp = await client.get("/api/leads/export?columns=title,status", headers=owner.headers)
    assert resp.status == 200
    assert read_csv(await resp.read()) == [["title", "status"], ["Deal", "Won"]]
    viewer = await add_user(api, client, owner, "viewer")  # leads.read
    resp = await client.get("/api/leads/export?format=xlsx", headers=viewer.headers)
    assert resp.status == 200
    sheet = openpyxl.load_workbook(io.BytesIO(await resp.read())).active
    assert [c.value for c in sheet[2]][:1] == ["Deal"]


async def test_concurrent_exports_are_limited_per_company(api, client, owner):
    await setup_table(api, owner)
    service = client.app[SERVICES].exports
    ctx_tenant = owner.tenant_id
    service._running[ctx_tenant] = service.max_concurrent
    resp = await client.get("/api/data/deals/export", headers=owner.headers)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    service._running.pop(ctx_tenant)
    await export(client, owner)
    assert ctx_tenant not in service._running  # the slot is given back


async def test_every_formula_start_is_neutralised_in_csv(api, client, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "texts", "columns": [{"key": "t", "type": "string"}]},
    )
    values = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain", "a=b"]
    await api.call(
        "POST",
        "/api/data/texts/bulk",
        owner,
        expect=201,
        json={"items": [{"t": v} for v in values]},
    )
    _, body = await export(client, owner, "columns=t", table="texts")
    cells = [row[0] for row in read_csv(body)[1:]]
    assert cells == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b"]
