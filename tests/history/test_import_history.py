"""A file import's rows are recorded by the same path, as the import's."""

from __future__ import annotations

from tests.support.files import GOOD_CSV, confirm, finished, make_table, stored, upload


async def test_imported_rows_have_a_created_revision_by_the_import(api, client, owner):
    await make_table(api, owner)
    _, job = await upload(client, owner, GOOD_CSV.encode())
    await confirm(api, owner, job)
    assert (await finished(api, owner, job))["state"] == "completed"
    for row in await stored(api, owner):
        page = await api.call("GET", f"/api/data/people/{row['id']}/history", owner, expect=200)
        (revision,) = page["items"]
        assert revision["action"] == "created"
        assert revision["actor"]["type"] == "import"
        assert revision["actor"]["id"] == owner.user_id
        assert revision["changes"]["name"] == {"before": None, "after": row["name"]}
