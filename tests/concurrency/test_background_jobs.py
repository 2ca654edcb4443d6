"""Background work is bound to the table's identity (issue #29 §5): deleting a table stops its
import (`cancelled`, with the reason), no row lands in a table re-created with the same key, and
the old job does not show under the new table."""

from __future__ import annotations

from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, make_settings
from tests.support.files import make_table, upload
from tests.support.waits import until


async def test_deleting_a_table_cancels_its_import_and_a_new_table_gets_nothing(
    aiohttp_client, monkeypatch
):
    from crm_core.files import imports

    client = await aiohttp_client(create_app(make_settings(import_batch_size=2)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    real_apply = imports.apply_plan
    calls = []

    async def replace_table_after_the_first_batch(ctx, table, plan, rows=None):
        calls.append(plan)
        await real_apply(ctx, table, plan, rows)
        if len(calls) == 1:
            await api.call("DELETE", "/api/meta/tables/people", owner, expect=204)
            await make_table(api, owner)

    monkeypatch.setattr(imports, "apply_plan", replace_table_after_the_first_batch)
    names = "".join(f"n{i}\n" for i in range(10))
    _, job = await upload(client, owner, f"name\n{names}".encode())
    await api.call(
        "POST", f"/api/data/people/imports/{job['id']}/confirm", owner, expect=202, json={}
    )
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    from bson import ObjectId

    async def ended() -> dict | None:
        stored = await db["_jobs"].find_one({"_id": ObjectId(job["id"])})
        return stored if stored["state"] in ("completed", "failed", "cancelled") else None

    stored = await until(ended, "the import to end")
    assert stored["state"] == "cancelled"
    assert stored["message"] == "The table was deleted; the import stopped"
    assert len(calls) == 2  # it stopped at the first write after the deletion
    page = await api.call("GET", "/api/data/people", owner, expect=200)
    assert page["total"] == 0
    listed = await api.call("GET", "/api/data/people/imports", owner, expect=200)
    assert listed["items"] == []
    await api.call("GET", f"/api/data/people/imports/{job['id']}", owner, expect=404)
    rows = [n for n in await db.list_collection_names() if n.startswith("rows.")]
    # the deleted table waits in the trash with the batch written before (docs/history.md
    # "Trash": its rows stay in its own collection until it is purged)
    trashed = {i["collection"] async for i in db["_trash"].find({"kind": "table"})}
    for name in rows:  # nothing the old job wrote is left anywhere else
        expected = 2 if name in trashed else 0
        assert await db[name].count_documents({"name": {"$regex": "^n"}}) == expected
