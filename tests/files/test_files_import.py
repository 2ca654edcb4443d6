"""`/api/data/{table}/imports`: upload, preview, confirm in the background, progress, modes,
upsert, bad files, limits, permissions and isolation."""

from __future__ import annotations

import io
from datetime import datetime

import openpyxl
import pytest
from aiohttp import FormData

from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, add_user, make_settings, rows_of
from tests.support.files import (
    BAD_ROWS_CSV,
    GOOD_CSV,
    confirm,
    finished,
    make_table,
    stored,
    upload,
)


async def test_upload_detects_columns_and_previews_rows(api, client, owner):
    await make_table(api, owner)
    await api.call(
        "PUT", "/api/aliases/people", owner, expect=200, json={"columns": {"amount": "Amount"}}
    )
    status, job = await upload(client, owner, BAD_ROWS_CSV.encode())
    assert status == 201, job
    assert job["state"] == "uploaded"
    assert job["file"]["format"] == "csv"
    assert job["file"]["encoding"] == "utf-8-sig"
    assert job["file"]["delimiter"] == "comma"
    assert job["rows_total"] == 4
    assert job["columns"] == ["Full name", "email", "Amount", "due", "vip", "status", "notes"]
    # by display name, key and alias; `notes` matches nothing
    assert job["mapping"] == {
        "Full name": "name",
        "email": "email",
        "Amount": "amount",
        "due": "due",
        "vip": "vip",
        "status": "status",
        "notes": None,
    }
    preview = job["preview"]
    assert preview["unmapped"] == ["notes"]
    first, _, third, fourth = preview["rows"]
    assert first == {
        "row": 2,
        "action": "create",
        "values": {
            "name": "Ann",
            "email": "ann@example.com",
            "amount": 1.5,
            "due": "2025-08-15T00:00:00Z",
            "vip": True,
            "status": 2,
        },
        "errors": [],
    }
    assert third["errors"] == [{"field": "name", "message": "is required"}]
    assert {e["field"] for e in fourth["errors"]} == {"email", "amount", "status"}
    assert await stored(api, owner) == []  # nothing until confirmed


async def test_all_or_nothing_stores_nothing_when_a_row_is_bad(api, client, owner):
    await make_table(api, owner)
    _, job = await upload(client, owner, BAD_ROWS_CSV.encode())
    queued = await confirm(api, owner, job)
    assert queued["state"] == "queued"
    assert queued["mode"] == "all_or_nothing"
    done = await finished(api, owner, job)
    assert done["state"] == "failed"
    assert done["errors_total"] == 4
    assert done["errors"][0] == {
        "row": 4,
        "field": "name",
        "column": "Full name",
        "message": "is required",
    }
    assert {(e["row"], e["field"]) for e in done["errors"][1:]} == {
        (5, "email"),
        (5, "amount"),
        (5, "status"),
    }
    assert await stored(api, owner) == []
    await confirm(api, owner, job, expect=409)  # a finished import does not run again


async def test_skip_invalid_stores_the_good_rows_converted(api, client, owner):
    await make_table(api, owner)
    _, job = await upload(client, owner, BAD_ROWS_CSV.encode())
    await confirm(api, owner, job, mode="skip_invalid")
    done = await finished(api, owner, job)
    assert done["state"] == "completed", done
    assert (done["rows_done"], done["created"], done["skipped"]) == (4, 2, 2)
    assert done["errors_total"] == 4
    rows = await stored(api, owner)
    assert [(r["name"], r["amount"], r["due"], r["vip"], r["status"]) for r in rows] == [
        ("Ann", 1.5, "2025-08-15T00:00:00Z", True, 2),
        ("Bob", 2.0, "2025-08-16T00:00:00Z", False, 1),
    ]
    assert rows[0]["_created_by"] == owner.user_id
    jobs = await api.call("GET", "/api/data/people/imports", owner, expect=200)
    assert [j["id"] for j in jobs["items"]] == [job["id"]]


async def test_cp1251_semicolon_file(api, client, owner):
    await make_table(api, owner)
    text = "Full name;email;amount\nИван Петров;ivan@example.com;10\nООО «Ромашка»;;20,5\n"
    status, job = await upload(client, owner, text.encode("cp1251"))
    assert status == 201, job
    assert (job["file"]["encoding"], job["file"]["delimiter"]) == ("cp1251", "semicolon")
    await confirm(api, owner, job)
    assert (await finished(api, owner, job))["state"] == "completed"
    assert [(r["name"], r["amount"]) for r in await stored(api, owner)] == [
        ("Иван Петров", 10.0),
        ("ООО «Ромашка»", 20.5),
    ]


async def test_xlsx_by_multipart_with_typed_cells(api, client, owner):
    await make_table(api, owner)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["name", "amount", "due", "vip", "status"])
    sheet.append(["Ann", 3, datetime(2025, 8, 15, 10, 30), True, "won"])
    sheet.append([])  # a blank row is skipped, numbers stay
    sheet.append(["-1+1", 2.5, None, False, None])
    buffer = io.BytesIO()
    workbook.save(buffer)
    form = FormData()
    form.add_field("file", buffer.getvalue(), filename="people.xlsx")
    resp = await client.post("/api/data/people/imports", data=form, headers=owner.headers)
    job = await resp.json()
    assert resp.status == 201, job
    assert (job["file"]["name"], job["file"]["format"]) == ("people.xlsx", "xlsx")
    assert [r["row"] for r in job["preview"]["rows"]] == [2, 4]
    await confirm(api, owner, job)
    done = await finished(api, owner, job)
    assert (done["state"], done["rows_total"], done["created"]) == ("completed", 2, 2), done
    rows = await stored(api, owner)
    assert [(r["name"], r["amount"], r.get("due"), r["vip"], r.get("status")) for r in rows] == [
        ("-1+1", 2.5, None, False, None),  # text stays text
        ("Ann", 3.0, "2025-08-15T10:30:00Z", True, 2),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("Имя,email\nИван,a@b.ru\n".encode("utf-16"), "not text in UTF-8 or Windows-1251"),
        (
            ("Фамилия,Имя,Отчество\n" + "Петров,Иван,Сергеевич\n" * 20).encode("koi8_r"),
            "neither UTF-8 nor Windows-1251",
        ),
        (b"PK\x03\x04 this is not a zip", "not a readable XLSX workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 old excel", "(.xls) files are not supported"),
        (b"\n\n", "the first row must hold the column names"),
        (b"", "the file is empty"),
    ],
)
async def test_bad_files_are_400_and_leave_nothing(api, client, owner, data, message):
    await make_table(api, owner)
    status, body = await upload(client, owner, data)
    assert status == 400, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "file"
    assert message in body["error"]["details"][0]["message"]
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_jobs"].count_documents({}) == 0
    assert await db["_import_files"].count_documents({}) == 0


async def test_broken_xlsx_named_as_such(api, client, owner):
    await make_table(api, owner)
    status, body = await upload(
        client,
        owner,
        b"name\nAnn\n",
        query="filename=a.xlsx",
        content_type="application/octet-stream",
    )
    assert status == 400
    assert "not a readable XLSX" in body["error"]["message"]


async def test_limits_on_size_rows_columns_and_pending_imports(aiohttp_client):
    client = await aiohttp_client(
        create_app(
            make_settings(
                import_max_bytes=2048, import_max_rows=3, import_max_columns=3, import_max_pending=1
            )
        )
    )
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    status, body = await upload(client, owner, b"name\n" + b"x" * 3000 + b"\n")
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["details"] == [{"field": "file", "message": "at most 2048 bytes"}]
    status, body = await upload(client, owner, b"name\na\nb\nc\nd\n")
    assert status == 400
    assert "more than 3 rows" in body["error"]["message"]
    status, body = await upload(client, owner, b"a,b,c,d\n1,2,3,4\n")
    assert status == 400
    assert "4 columns; at most 3" in body["error"]["message"]
    status, job = await upload(client, owner, b"name\na\n")
    assert status == 201
    status, body = await upload(client, owner, b"name\nb\n")
    assert status == 429
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_jobs"].count_documents({}) == 1
    await api.call("DELETE", f"/api/data/people/imports/{job['id']}", owner, expect=204)
    assert await db["_import_files"].count_documents({}) == 0
    status, _ = await upload(client, owner, b"name\nb\n")
    assert status == 201


async def test_mapping_errors_and_unknown_columns(api, client, owner):
    await make_table(api, owner)
    _, job = await upload(client, owner, b"who,mail,extra\nAnn,a@example.com,1\n")
    assert job["mapping"] == {"who": None, "mail": None, "extra": None}
    path = f"/api/data/people/imports/{job['id']}"
    body = await confirm(api, owner, job, expect=400)
    assert body["error"]["details"] == [
        {"field": "mapping", "message": "map at least one column of the file"}
    ]
    body = await confirm(
        api, owner, job, expect=400, mapping={"who": "nope", "mail": "email", "x": "name"}
    )
    assert {d["field"] for d in body["error"]["details"]} == {"mapping.who", "mapping.x"}
    body = await confirm(api, owner, job, expect=400, mapping={"mail": "email"})
    assert body["error"]["details"] == [
        {"field": "mapping", "message": "required column 'name' is not mapped"}
    ]
    body = await confirm(api, owner, job, expect=400, mapping={"who": "name", "mail": "name"})
    assert "already mapped" in body["error"]["details"][0]["message"]
    preview = await api.call(
        "POST",
        f"{path}/preview",
        owner,
        expect=200,
        json={"mapping": {"who": "name", "mail": "email"}},
    )
    assert preview["rows"][0]["values"] == {"name": "Ann", "email": "a@example.com"}
    assert preview["unmapped"] == ["extra"]
    await confirm(api, owner, job, mapping={"who": "name", "mail": "email"})
    assert (await finished(api, owner, job))["created"] == 1


async def test_upsert_on_a_unique_column(api, client, owner):
    await make_table(api, owner)
    await api.call(
        "POST",
        "/api/data/people",
        owner,
        expect=201,
        json={"name": "Ann", "email": "ann@example.com", "amount": 1},
    )
    data = b"name,email,amount\n,ann@example.com,5\nBob,bob@example.com,\nBob2,bob@example.com,1\n"
    _, job = await upload(client, owner, data)
    body = await confirm(api, owner, job, expect=400, upsert_on="name")
    assert body["error"]["details"][0]["field"] == "upsert_on"
    preview = await api.call(
        "POST",
        f"/api/data/people/imports/{job['id']}/preview",
        owner,
        expect=200,
        json={"upsert_on": "email"},
    )
    assert [r["action"] for r in preview["rows"]] == ["update", "create", "create"]
    await confirm(api, owner, job, upsert_on="email", mode="skip_invalid")
    done = await finished(api, owner, job)
    assert (done["created"], done["updated"], done["skipped"]) == (1, 1, 1)
    assert done["errors"] == [
        {"row": 4, "field": "email", "column": "email", "message": "repeats an earlier item"}
    ]
    rows = await stored(api, owner)
    # the empty name cell left Ann's name as it was
    assert [(r["name"], r["email"], r.get("amount")) for r in rows] == [
        ("Ann", "ann@example.com", 5.0),
        ("Bob", "bob@example.com", None),
    ]


async def test_all_or_nothing_undoes_written_batches_when_a_write_fails(
    aiohttp_client, monkeypatch
):
    from crm_core.files import imports
    from crm_core.platform.errors import Conflict

    client = await aiohttp_client(create_app(make_settings(import_batch_size=2)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    await api.call("POST", "/api/data/people", owner, expect=201, json={"name": "Kept"})
    real_apply = imports.apply_plan
    calls = []

    async def failing_second_batch(ctx, table, plan, rows=None):
        calls.append(plan)
        if len(calls) == 2:  # a concurrent writer took a unique value meanwhile
            raise Conflict("The value of unique column 'email' is already used by another row")
        await real_apply(ctx, table, plan, rows)

    monkeypatch.setattr(imports, "apply_plan", failing_second_batch)
    _, job = await upload(client, owner, b"name\na\nb\nc\nd\ne\n")
    await confirm(api, owner, job)
    done = await finished(api, owner, job)
    assert done["state"] == "failed"
    assert "already used" in done["message"]
    assert [r["name"] for r in await stored(api, owner)] == ["Kept"]
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_import_journal"].count_documents({}) == 0
    assert await db["_import_files"].count_documents({}) == 0


async def test_any_later_delivery_undoes_a_dead_workers_writes_and_imports_once(api, client, owner):
    """A live runner's job is left to it; once its heartbeat is stale, any delivery takes it
    over (the same task delivered again by Redis, or the outbox sweeper's new one after Redis
    forgot the first)."""
    from bson import ObjectId

    from crm_core.accounts.auth import context_for_user
    from crm_core.files.imports import JOBS, JOURNAL

    await make_table(api, owner)
    services = client.app[SERVICES]
    queued = []

    class Holding:
        async def run_import(self, tenant_id, job_id, user_id):
            queued.append(job_id)

    services.imports.queue = Holding()
    _, job = await upload(client, owner, b"name\na\nb\n")
    await confirm(api, owner, job)
    ctx = await context_for_user(services.storage, owner.tenant_id, owner.user_id)
    # a worker claimed it, wrote one row and died: its journal names the row
    dead_row = ObjectId()
    people = await rows_of(client, owner, "people")
    await people.insert_one({"_id": dead_row, "name": "a"})
    await ctx.db[JOURNAL].insert_one(
        {"job_id": ObjectId(job["id"]), "batch": 0, "inserted": [dead_row], "originals": []}
    )
    from datetime import UTC, datetime, timedelta

    def runner(heartbeat):
        return {"$set": {"state": "importing", "claimed_by": "task-1", "heartbeat_at": heartbeat}}

    await ctx.db[JOBS].update_one({"_id": ObjectId(job["id"])}, runner(datetime.now(UTC)))
    await services.imports.run(ctx, job["id"], "task-2")  # task-1 is alive: not its business
    assert (await ctx.db[JOBS].find_one({"_id": ObjectId(job["id"])}))["state"] == "importing"
    assert await people.count_documents({"_id": dead_row}) == 1
    stale = datetime.now(UTC) - timedelta(minutes=5)
    await ctx.db[JOBS].update_one({"_id": ObjectId(job["id"])}, runner(stale))
    await services.imports.run(ctx, job["id"], "task-2")  # task-1 died: task-2 takes over
    done = await finished(api, owner, job)
    assert (done["state"], done["created"]) == ("completed", 2)
    assert sorted(r["name"] for r in await stored(api, owner)) == ["a", "b"]
    assert await people.count_documents({"_id": dead_row}) == 0


async def test_import_needs_write_access(api, client, owner):
    await make_table(api, owner)
    reader = await add_user(api, client, owner, "manager")
    status, _ = await upload(client, reader, GOOD_CSV.encode())
    assert status == 404  # the table is not shared with them
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "people", "user_id": reader.user_id, "access": "read"},
    )
    status, body = await upload(client, reader, GOOD_CSV.encode())
    assert status == 403, body
    _, job = await upload(client, owner, GOOD_CSV.encode())
    await api.call("GET", f"/api/data/people/imports/{job['id']}", reader, expect=403)
    await confirm(api, reader, job, expect=403)
    other = await api.register(company="Other")
    await make_table(api, other)
    await api.call("GET", f"/api/data/people/imports/{job['id']}", other, expect=404)
    await confirm(api, other, job, expect=404)
    await api.call("DELETE", f"/api/data/people/imports/{job['id']}", other, expect=404)
    # a user who loses write access between confirm and the run gets nothing written
    writer = await add_user(api, client, owner, "manager")
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "people", "user_id": writer.user_id, "access": "write"},
    )
    services = client.app[SERVICES]
    held = []

    class Holding:
        async def run_import(self, tenant_id, job_id, user_id):
            held.append((tenant_id, job_id, user_id))

    real_queue, services.imports.queue = services.imports.queue, Holding()
    _, job = await upload(client, writer, GOOD_CSV.encode())
    await confirm(api, writer, job)
    await api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    await real_queue.run_import(*held[0])
    done = await finished(api, owner, job)
    assert done["state"] == "failed"
    assert await stored(api, owner) == []


async def test_import_into_a_builtin_table(api, client, owner):
    text = "Title,Status,Amount\nBig deal,Won,100\nSmall deal,,5\n"
    status, job = await upload(client, owner, text.encode(), table="leads")
    assert status == 201, job
    resp = await client.post(
        f"/api/leads/imports/{job['id']}/confirm", json={}, headers=owner.headers
    )
    assert resp.status == 202
    done = await finished(api, owner, job, table="leads")
    assert done["created"] == 2
    page = await api.call("GET", "/api/leads?sort_by=title", owner, expect=200)
    assert [(r["title"], r["status"]) for r in page["items"]] == [
        ("Big deal", 3),
        ("Small deal", 1),
    ]
    viewer = await add_user(api, client, owner, "viewer")  # leads.read only
    resp = await client.post(
        "/api/leads/imports",
        data=text.encode(),
        headers={**viewer.headers, "Content-Type": "text/csv"},
    )
    assert resp.status == 403


async def test_export_then_import_round_trip(api, client, owner):
    await make_table(api, owner)
    await api.call(
        "POST",
        "/api/data/people/bulk",
        owner,
        expect=201,
        json={
            "items": [
                {"name": "=cmd", "email": "a@example.com", "due": "2025-01-02", "status": 2},
                {"name": "-x", "email": "b@example.com", "amount": 1.25, "vip": True},
            ]
        },
    )
    resp = await client.get("/api/data/people/export?headers=names", headers=owner.headers)
    exported = await resp.read()
    await api.call(
        "POST",
        "/api/data/people/bulk-delete",
        owner,
        expect=200,
        json={"filters": [{"field": "name", "op": "not_blank"}]},
    )
    _, job = await upload(client, owner, exported)
    await confirm(api, owner, job)
    assert (await finished(api, owner, job))["created"] == 2
    rows = await stored(api, owner)
    assert [
        (r["name"], r["email"], r.get("due"), r.get("status"), r.get("amount"), r.get("vip"))
        for r in rows
    ] == [
        ("-x", "b@example.com", None, None, 1.25, True),
        ("=cmd", "a@example.com", "2025-01-02T00:00:00Z", 2, None, None),
    ]


async def test_multipart_without_a_file_field_or_broken(api, client, owner):
    await make_table(api, owner)
    form = FormData()
    form.add_field("other", b"name\nAnn\n", filename="a.csv")
    resp = await client.post("/api/data/people/imports", data=form, headers=owner.headers)
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["details"] == [
        {"field": "file", "message": "send the file in a form field named 'file'"}
    ]
    resp = await client.post(
        "/api/data/people/imports",
        data=b"--xyz\r\nbroken",
        headers={**owner.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert resp.status == 400, await resp.text()
    resp = await client.post(
        "/api/data/people/imports",
        data=b"name\nAnn\n",
        headers={**owner.headers, "Content-Type": "multipart/form-data"},
    )
    assert resp.status == 400, await resp.text()


async def test_an_xlsx_that_unpacks_too_large_is_refused(api, client, owner, monkeypatch):
    from crm_core.files import readers

    await make_table(api, owner)
    workbook = openpyxl.Workbook()
    workbook.active.append(["name"])
    workbook.active.append(["x" * 5000])
    buffer = io.BytesIO()
    workbook.save(buffer)
    monkeypatch.setattr(readers, "XLSX_MAX_UNPACKED", 4000)
    status, body = await upload(client, owner, buffer.getvalue())
    assert status == 400
    assert "unpacks to more than 4000 bytes" in body["error"]["message"]


async def test_imports_and_upserts_tell_webhooks(api, client, owner, receiver):
    from tests.support.webhook_receiver import make_hook, wait_for
    from tests.support.webhook_receiver import make_table as make_deals

    await make_deals(api, owner)
    await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        expect=201,
        json={"key": "ext", "type": "string", "unique": True},
    )
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A", "ext": "a"})
    await make_hook(api, owner, f"{receiver.url}/hook")
    await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"upsert_on": "ext", "items": [{"ext": "a", "amount": 5}, {"ext": "b", "title": "B"}]},
    )
    _, job = await upload(client, owner, b"title,ext\nC,c\nD,d\n", table="deals")
    await confirm(api, owner, job, table="deals")
    assert (await finished(api, owner, job, table="deals"))["created"] == 2

    async def arrived() -> bool:
        return len(receiver.events()) >= 3

    await wait_for(arrived, "3 deliveries")
    created = sorted(
        item["row"]["title"] if "row" in item else item["title"]
        for e in receiver.events()
        if e["event"] == "row.created"
        for item in e["items"]
    )
    assert created == ["B", "C", "D"]
    updated = [
        item for e in receiver.events() if e["event"] == "row.updated" for item in e["items"]
    ]
    assert [(u["row"]["title"], u["changed"], u["previous"]) for u in updated] == [
        ("A", ["amount"], {"amount": None})
    ]
