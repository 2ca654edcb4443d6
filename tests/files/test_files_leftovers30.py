"""Issue #30's rest: phone extensions refused alike by the API and the import, merged XLSX
cells filled from their top-left cell, the failing-row count before confirming, and the
`skip_invalid` error report."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest

from tests.support.files import BAD_ROWS_CSV, confirm, finished, make_table, stored, upload

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PHONES = [{"key": "name", "type": "string"}, {"key": "phone", "type": "phone"}]


@pytest.mark.parametrize(
    "text", ["8 (916) 123-45-67 доб. 123", "+7 916 123 45 67 ext. 5", "8 916 123-45-67 x12"]
)
async def test_the_api_refuses_a_phone_extension_naming_the_field(api, owner, text):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "calls", "columns": PHONES}
    )
    refused = await api.call("POST", "/api/data/calls", owner, expect=400, json={"phone": text})
    (detail,) = refused["error"]["details"]
    assert detail["field"] == "phone"
    assert "has an extension" in detail["message"]
    assert (await api.call("GET", "/api/data/calls", owner, expect=200))["items"] == []
    # the number alone is kept, as E.164
    alone = {"phone": "8 (916) 123-45-67"}
    row = await api.call("POST", "/api/data/calls", owner, expect=201, json=alone)
    assert row["phone"] == "+79161234567"


async def test_the_import_refuses_the_extension_too(api, client, owner):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "calls", "columns": PHONES}
    )
    data = "name,phone\nAnn,8 (916) 123-45-67 доб. 123\n".encode()
    status, job = await upload(client, owner, data, table="calls")
    assert status == 201, job
    (row,) = job["preview"]["rows"]
    assert row["errors"][0]["field"] == "phone"
    assert "extension" in row["errors"][0]["message"]


def merged_workbook() -> bytes:
    """A sheet as people make one: a status written once for a group of rows (A2:A4 merged),
    and a name merged across two columns (B5:C5)."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["status", "Full name", "email"])
    sheet.append(["Won", "Ann", "ann@example.com"])
    sheet.append([None, "Bob", "bob@example.com"])
    sheet.append([None, "Cid", "cid@example.com"])
    sheet.append(["New", "Dan", None])
    sheet.merge_cells("A2:A4")
    sheet.merge_cells("B5:C5")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


async def test_merged_cells_fill_every_cell_of_their_range(api, client, owner):
    await make_table(api, owner)
    status, job = await upload(client, owner, merged_workbook(), content_type=XLSX)
    assert status == 201, job
    rows = job["preview"]["rows"]
    assert [r["values"].get("status") for r in rows] == [2, 2, 2, 1]
    await confirm(api, owner, job, mode="skip_invalid")
    done = await finished(api, owner, job)
    assert done["created"] == 3, done
    # B5:C5 merged: the email cell holds the name too, which is not an address: refused
    (error,) = done["errors"]
    assert (error["row"], error["field"]) == (5, "email")
    assert "not a valid email" in error["message"]
    names = {r["name"]: r["status"] for r in await stored(api, owner)}
    assert names == {"Ann": 2, "Bob": 2, "Cid": 2}


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


async def test_skip_invalid_writes_an_error_report_to_fix_and_import_again(api, client, owner):
    await make_table(api, owner)
    status, job = await upload(client, owner, BAD_ROWS_CSV.encode())
    assert status == 201, job
    report_url = f"/api/data/people/imports/{job['id']}/errors"
    # nothing rejected before it runs
    resp = await client.get(report_url, headers=owner.headers)
    assert csv_rows(await resp.text())[1:] == []
    await confirm(api, owner, job, mode="skip_invalid")
    done = await finished(api, owner, job)
    assert (done["created"], done["skipped"]) == (2, 2)

    resp = await client.get(report_url, headers=owner.headers)
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="people-import-errors.csv"'
    header, *rows = csv_rows(await resp.text())
    assert header == [*job["columns"], "error_row", "error_reason"]
    assert [r[-2] for r in rows] == ["4", "5"]
    assert rows[0][:7] == ["", "nobody@example.com", "3", "", "", "", ""]
    assert rows[0][-1] == "Full name: is required"
    assert rows[1][:7] == ["Cid", "not-an-email", "abc", "", "", "Lost", ""]
    reasons = rows[1][-1].split("; ")
    assert sorted(r.split(":")[0] for r in reasons) == ["Amount", "email", "status"]

    as_json = await api.call("GET", f"{report_url}?format=json", owner, expect=200)
    assert [item["row"] for item in as_json] == [4, 5]
    assert as_json[0]["cells"]["email"] == "nobody@example.com"
    assert as_json[0]["errors"] == [
        {"field": "name", "column": "Full name", "message": "is required"}
    ]

    # fixed in the report and uploaded again: the two report columns map to nothing
    rows[0][0] = "Nobody"
    rows[1][1:3], rows[1][5] = ["cid@example.com", "7"], "New"
    fixed = io.StringIO()
    csv.writer(fixed).writerows([header, *rows])
    status, again = await upload(client, owner, fixed.getvalue().encode())
    assert status == 201, again
    assert again["preview"]["unmapped"] == ["notes", "error_row", "error_reason"]
    await confirm(api, owner, again)
    assert (await finished(api, owner, again))["created"] == 2
    assert [r["name"] for r in await stored(api, owner)] == ["Ann", "Bob", "Cid", "Nobody"]


async def test_the_error_report_is_the_tables_writers_alone(api, client, owner):
    await make_table(api, owner)
    _, job = await upload(client, owner, BAD_ROWS_CSV.encode())
    other = await api.register()
    await make_table(api, other)
    url = f"/api/data/people/imports/{job['id']}/errors"
    assert (await client.get(url, headers=other.headers)).status == 404
    bad = await api.call("GET", f"{url}?format=xml", owner, expect=400)
    assert bad["error"]["details"][0]["field"] == "format"


async def test_the_preview_counts_the_rows_that_would_fail_before_confirming(api, client, owner):
    await make_table(api, owner)
    # two good rows, then rows 4 and 5 bad, and row 6 repeating row 2's unique email
    data = BAD_ROWS_CSV + "Eve,ann@example.com,1,,,,\n"
    status, job = await upload(client, owner, data.encode())
    assert status == 201, job
    assert job["preview"]["failing_rows"] == 3
    url = f"/api/data/people/imports/{job['id']}"
    again = await api.call("GET", url, owner, expect=200)
    assert again["preview"]["failing_rows"] == 3
    # another mapping, another count: without the required name every row fails
    mapping = {**job["mapping"], "Full name": None}
    other = await api.call("POST", f"{url}/preview", owner, expect=200, json={"mapping": mapping})
    assert other["failing_rows"] == 5
    await confirm(api, owner, job)
    done = await finished(api, owner, job)
    assert done["state"] == "failed"
    assert {e["row"] for e in done["errors"]} == {4, 5, 6}
