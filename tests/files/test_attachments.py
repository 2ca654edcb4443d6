"""Attachments (issue #23): `POST /api/files`, `GET /api/files/{id}`, the `attachment` column
type, files in the trash, the orphan sweeper. Runs on the embedded engine (files in FILES_DIR)
and in the mongoeco lane (GridFS through the real driver, scripts/test-mongoeco)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import FormData
from bson import ObjectId

from crm_core.files.attachments import WRITE_LEASE_SECONDS
from crm_core.platform.clock import utcnow
from handlers.routing import SERVICES
from tests.support.api import make_settings, rows_of, tenant_db
from tests.support.attachments import PNG, form, raw_form, upload
from tests.support.files import confirm, finished

COLUMNS = [
    {"key": "title", "type": "string"},
    {"key": "docs", "type": "attachment"},
]


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(files_dir=str(tmp_path / "files"), file_max_bytes=64 * 1024)


async def make_table(api, account, key="deals"):
    body = {"key": key, "columns": COLUMNS}
    return await api.call("POST", "/api/meta/tables", account, expect=201, json=body)


async def blobs_of(client, account) -> int:
    """How many stored blobs (files in FILES_DIR, or GridFS files and chunks) the company has."""
    services = client.app[SERVICES]
    db = tenant_db(client, account)
    if services.storage.embedded:
        folder = Path(services.settings.files_dir) / db.name
        return len(list(folder.iterdir())) if folder.exists() else 0
    return await db["_blobs.files"].count_documents({}) + await db["_blobs.chunks"].count_documents(
        {}
    )


async def download(client, account, file_id):
    return await client.get(f"/api/files/{file_id}", headers=account.headers)


async def test_upload_sniffs_the_type_and_download_streams_it_back(api, client, owner):
    data = PNG + b"rest of the picture" * 100
    stored = await upload(api, owner, data, name="../../etc/Фото 1.png")
    assert stored["name"] == "Фото 1.png"  # no path parts
    assert stored["size"] == len(data)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["content_type"] == "image/png"  # the bytes, not the client's text/html
    resp = await download(client, owner, stored["id"])
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    assert f"filename*=UTF-8''{quote('Фото 1.png', safe='')}" in disposition


async def test_a_download_answers_a_type_its_document_allows(api, client, owner):
    """The answer's Content-Type is the sniffed one (image/png here): the document's media
    range for the download must cover it (Schemathesis' content-type check in scripts/fuzz)."""
    document = await (await client.get("/api/openapi.json")).json()
    answers = document["paths"]["/api/files/{file_id}"]["get"]["responses"]["200"]["content"]
    stored = await upload(api, owner, PNG + b"picture")
    resp = await download(client, owner, stored["id"])
    main, sub = resp.headers["Content-Type"].split(";")[0].split("/")
    assert main == "image" and sub == "png"
    ranges = [tuple(key.split("/")) for key in answers]
    assert any(m in ("*", main) and s in ("*", sub) for m, s in ranges), ranges


async def test_a_name_that_tries_to_break_the_header_is_made_safe(api, client, owner):
    body, headers = raw_form(b"plain text", b"..\\a%22b%0D%0AX-Evil: 1;%07.html")
    resp = await client.post("/api/files", data=body, headers={**owner.headers, **headers})
    assert resp.status == 201
    stored = await resp.json()
    assert stored["name"] == 'a"bX-Evil: 1;.html'  # no path, no control characters
    assert stored["content_type"] == "text/plain"
    resp = await download(client, owner, stored["id"])
    assert "X-Evil" not in resp.headers
    assert resp.headers["Content-Disposition"].startswith(
        'attachment; filename="a_bX-Evil_ 1_.html"'
    )


async def test_an_upload_over_the_limit_is_413_and_stores_nothing(api, client, owner):
    big = PNG + bytes(64 * 1024)
    resp = await client.post("/api/files", data=form(big), headers=owner.headers)
    assert resp.status == 413
    body = await resp.json()
    assert body["error"]["details"][0]["field"] == "file"
    assert await tenant_db(client, owner)["_attachments"].count_documents({}) == 0
    assert await blobs_of(client, owner) == 0


async def test_bad_uploads_name_the_file_field(api, client, owner):
    empty = await api.call("POST", "/api/files", owner, expect=400, data=form(b""))
    assert empty["error"]["details"][0] == {"field": "file", "message": "the file is empty"}
    other = FormData()
    other.add_field("document", b"x", filename="x.txt")
    missing = await api.call("POST", "/api/files", owner, expect=400, data=other)
    assert missing["error"]["details"][0]["field"] == "file"
    raw = await api.call("POST", "/api/files", owner, expect=400, data=b"x")
    assert raw["error"]["details"][0]["field"] == "file"
    assert await tenant_db(client, owner)["_attachments"].count_documents({}) == 0
    assert await blobs_of(client, owner) == 0


async def test_rows_hold_files_of_their_own_company_only(api, client, owner):
    await make_table(api, owner)
    mine = await upload(api, owner)
    row = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"title": "a", "docs": [mine["id"]]}
    )
    assert row["docs"] == [mine["id"]]
    stored = await (await rows_of(client, owner, "deals")).find_one({})
    assert [str(v) for v in stored["docs"]] == [mine["id"]]

    other = await api.register()
    theirs = await upload(api, other)
    # company A cannot attach B's file, nor read it
    refused = await api.call(
        "POST", "/api/data/deals", owner, expect=400, json={"title": "b", "docs": [theirs["id"]]}
    )
    assert refused["error"]["details"][0]["field"] == "docs"
    assert "no such file" in refused["error"]["details"][0]["message"]
    assert (await download(client, owner, theirs["id"])).status == 404
    # and B cannot read A's file (attached or not)
    assert (await download(client, other, mine["id"])).status == 404
    await make_table(api, other)
    await api.call(
        "POST", "/api/data/deals", other, expect=400, json={"title": "c", "docs": [mine["id"]]}
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5f0000000000000000000000", "expected an array of file ids"),
        ([], "give at least one file id (null removes every file)"),
        (["nope"], "item 0 is not a file id"),
    ],
)
async def test_bad_cell_values_name_the_column(api, owner, value, message):
    await make_table(api, owner)
    body = {"title": "x", "docs": value}
    refused = await api.call("POST", "/api/data/deals", owner, expect=400, json=body)
    assert refused["error"]["details"] == [{"field": "docs", "message": message}]


async def test_only_readers_of_a_row_holding_the_file_may_download_it(api, client, owner):
    await make_table(api, owner)
    viewer = await api_user(api, owner, "viewer")  # no access to the owner's custom table
    admin = await api_user(api, owner, "admin")  # manages every table
    stored = await upload(api, owner)
    # unattached: only its uploader
    assert (await download(client, owner, stored["id"])).status == 200
    assert (await download(client, admin, stored["id"])).status == 404
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [stored["id"]]})
    assert (await download(client, admin, stored["id"])).status == 200
    hidden = await download(client, viewer, stored["id"])
    assert hidden.status == 404  # never 403: whether it exists is not told
    assert (await hidden.json())["error"]["message"] == "File not found"
    # the viewer's own upload, once a row holds it, is the row's readers' alone
    own = await upload(api, viewer)
    assert (await download(client, viewer, own["id"])).status == 200
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [own["id"]]})
    assert (await download(client, viewer, own["id"])).status == 404


async def api_user(api, owner, role):
    from tests.support.api import Factories

    return await Factories(api).user(owner, role)


async def test_files_follow_their_rows_into_the_trash_and_out(api, client, owner):
    await make_table(api, owner)
    shared = await upload(api, owner, PNG + b"shared")
    alone = await upload(api, owner, PNG + b"alone")
    first = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"docs": [shared["id"], alone["id"]]}
    )
    second = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"docs": [shared["id"]]}
    )
    await api.call("DELETE", f"/api/data/deals/{first['id']}", owner, expect=204)
    # in the trash: its files are kept, but no readable row holds `alone`
    assert (await download(client, owner, alone["id"])).status == 404
    assert (await download(client, owner, shared["id"])).status == 200
    trash = await api.call("GET", "/api/trash", owner, expect=200)
    item = trash["items"][0]
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert (await download(client, owner, alone["id"])).status == 200
    # deleted again and purged (a write lease after the rows were written: crm_core/files/
    # attachments.py): `alone` goes, `shared` stays (the second row holds it)
    await api.call("DELETE", f"/api/data/deals/{first['id']}", owner, expect=204)
    lease = timedelta(seconds=WRITE_LEASE_SECONDS + 1)
    client.app[SERVICES].files.clock = lambda: utcnow() + lease
    trash = await api.call("GET", "/api/trash", owner, expect=200)
    await api.call("DELETE", f"/api/trash/{trash['items'][0]['id']}", owner, expect=204)
    files = tenant_db(client, owner)["_attachments"]
    assert {str(d["_id"]) async for d in files.find({})} == {shared["id"]}
    assert (await download(client, owner, shared["id"])).status == 200
    assert (await download(client, owner, alone["id"])).status == 404
    # the last holder purged: the file and its bytes go
    await api.call("DELETE", f"/api/data/deals/{second['id']}", owner, expect=204)
    trash = await api.call("GET", "/api/trash", owner, expect=200)
    await api.call("DELETE", f"/api/trash/{trash['items'][0]['id']}", owner, expect=204)
    assert await files.count_documents({}) == 0
    assert await blobs_of(client, owner) == 0


async def test_the_sweeper_removes_files_never_attached(api, client, owner):
    await make_table(api, owner)
    orphan = await upload(api, owner, PNG + b"orphan")
    kept = await upload(api, owner, PNG + b"kept")
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [kept["id"]]})
    services = client.app[SERVICES]
    db = tenant_db(client, owner)
    # within the grace period nothing goes
    assert await services.files.sweep_orphans(db) == 0
    later = utcnow() + timedelta(seconds=services.settings.file_orphan_grace_seconds + 1)
    assert await services.files.sweep_orphans(db, now=later) == 1
    left = {str(d["_id"]): d["attached"] async for d in db["_attachments"].find({})}
    assert left == {kept["id"]: True}
    assert (await download(client, owner, kept["id"])).status == 200
    assert (await download(client, owner, orphan["id"])).status == 404
    assert await blobs_of(client, owner) >= 1
    # checked again a grace period later: still held, so kept
    again = later + timedelta(seconds=services.settings.file_orphan_grace_seconds + 1)
    assert await services.files.sweep_orphans(db, now=again) == 0
    # its table deleted: in the trash its rows still hold the file, which stays
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    last = again + timedelta(seconds=services.settings.file_orphan_grace_seconds + 1)
    assert await services.files.sweep_orphans(db, now=last) == 0
    # the table purged from the trash: the next check removes the file
    (item,) = (await api.call("GET", "/api/trash?kind=table", owner, expect=200))["items"]
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    final = last + timedelta(seconds=services.settings.file_orphan_grace_seconds + 1)
    assert await services.files.sweep_orphans(db, now=final) == 1
    assert await db["_attachments"].count_documents({}) == 0
    assert await blobs_of(client, owner) == 0
    # the company-wide round reaches every tenant
    assert await services.files.sweep(services.storage) == 0  # not in a process's first minute
    orphan = await upload(api, owner, PNG + b"orphan again")
    await db["_attachments"].update_one(
        {"_id": ObjectId(orphan["id"])}, {"$set": {"created_at": utcnow() - timedelta(days=2)}}
    )
    assert await services.files.sweep(services.storage, now=True) == 1


async def test_filters_by_blank_and_by_file_id_and_a_cleared_cell(api, owner):
    await make_table(api, owner)
    stored = await upload(api, owner)
    with_file = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"title": "a", "docs": [stored["id"]]}
    )
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "b"})

    async def titles(op):
        filters = quote(json.dumps([{"field": "docs", "op": op}]))
        page = await api.call("GET", f"/api/data/deals?filters={filters}", owner, expect=200)
        return [row["title"] for row in page["items"]]

    assert await titles("blank") == ["b"]
    assert await titles("not_blank") == ["a"]

    async def having(op, ids):
        filters = quote(json.dumps([{"field": "docs", "op": op, "value": ids}]))
        page = await api.call("GET", f"/api/data/deals?filters={filters}", owner, expect=200)
        return sorted(row["title"] for row in page["items"])

    other = "0" * 24
    assert await having("has_any_of", [stored["id"], other]) == ["a"]
    assert await having("has_all_of", [stored["id"], other]) == []
    assert await having("has_none_of", [stored["id"]]) == ["b"]
    bad = quote(json.dumps([{"field": "docs", "op": "has_any_of", "value": ["nope"]}]))
    refused = await api.call("GET", f"/api/data/deals?filters={bad}", owner, expect=400)
    assert refused["error"]["code"] == "invalid_filter"
    filters = quote(json.dumps([{"field": "docs", "value": stored["id"]}]))
    refused = await api.call("GET", f"/api/data/deals?filters={filters}", owner, expect=400)
    assert refused["error"]["code"] == "invalid_filter"
    await api.call(
        "PATCH", f"/api/data/deals/{with_file['id']}", owner, expect=200, json={"docs": None}
    )
    assert await titles("blank") == ["a", "b"]


async def test_export_writes_names_and_ids_and_the_import_takes_them_back(api, client, owner):
    await make_table(api, owner)
    one = await upload(api, owner, PNG + b"1", name="one.png")
    two = await upload(api, owner, PNG + b"2", name="two; [x].png")
    await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={"title": "a", "docs": [one["id"], two["id"]]},
    )
    resp = await client.get("/api/data/deals/export?format=csv", headers=owner.headers)
    text = (await resp.read()).decode("utf-8-sig")
    assert f"one.png [{one['id']}]; two; [x].png [{two['id']}]" in text
    # the export imports back into a second table: the same files, by id
    await make_table(api, owner, "copies")
    job = await api.call(
        "POST",
        "/api/data/copies/imports",
        owner,
        expect=201,
        data=text.encode(),
        headers={"Content-Type": "text/csv"},
    )
    await confirm(api, owner, job, table="copies")
    done = await finished(api, owner, job, table="copies")
    assert done["state"] == "completed", done
    page = await api.call("GET", "/api/data/copies", owner, expect=200)
    assert page["items"][0]["docs"] == [one["id"], two["id"]]
    # bare ids are accepted too; an unknown id is a cell error naming the column
    csv = f"title,docs\nb,{one['id']}\nc,{'0' * 24}\n"
    job = await api.call(
        "POST",
        "/api/data/copies/imports",
        owner,
        expect=201,
        data=io.BytesIO(csv.encode()).read(),
        headers={"Content-Type": "text/csv"},
    )
    await confirm(api, owner, job, table="copies", mode="skip_invalid")
    done = await finished(api, owner, job, table="copies")
    assert done["created"] == 1
    assert done["errors"][0]["field"] == "docs"


async def test_an_api_token_uploads_only_with_a_scope_that_writes_tables(api, client, owner):
    from tests.support.tokens import bearer, make_token

    reader = (await make_token(api, owner, table_access="read"))["token"]
    writer = (await make_token(api, owner, table_access="write"))["token"]
    await api.call("POST", "/api/files", bearer(reader), expect=403, data=form(PNG))
    assert await tenant_db(client, owner)["_attachments"].count_documents({}) == 0
    await upload(api, bearer(writer))


async def test_an_attachment_column_is_no_group_and_keeps_its_type(api, client, owner):
    await make_table(api, owner)
    stored = await upload(api, owner)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [stored["id"]]})
    refused = await api.call("GET", "/api/data/deals/aggregate?group_by=docs", owner, expect=400)
    assert refused["error"]["details"][0]["field"] == "group_by"
    counted = await api.call(
        "GET", "/api/data/deals/aggregate?metrics=count_distinct:docs", owner, expect=200
    )
    assert counted["totals"] == {"count_distinct:docs": 1}
    body = {"type": "string"}
    changed = await api.call(
        "PATCH", "/api/meta/tables/deals/columns/docs", owner, expect=400, json=body
    )
    assert changed["error"]["details"][0]["field"] == "type"
