"""Issue #30's rest: phone extensions refused alike by the API and the import, merged XLSX
cells filled from their top-left cell, the failing-row count before confirming, and the
`skip_invalid` error report."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest

from tests.support.files import confirm, finished, make_table, stored, upload

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
