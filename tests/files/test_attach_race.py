"""A file removed while a row write is attaching it (docs/operations.md "Faults: a file removed
while being attached"): a hook holds the row write between its check of the files and its
insert while the trash purge or the orphan sweeper runs; the file must outlive the write, and
once the write's lease has passed and nothing holds it, it goes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from crm_core.files.attachments import WRITE_LEASE_SECONDS
from crm_core.platform.clock import utcnow
from handlers.routing import SERVICES
from tests.support.api import make_settings, tenant_db
from tests.support.attachments import PNG, upload

COLUMNS = [{"key": "title", "type": "string"}, {"key": "docs", "type": "attachment"}]
HANG_GUARD = 60.0  # a bound on what must happen (never a pass condition)


@pytest.fixture
def settings(tmp_path: Path):
    # no grace: the sweeper looks at every file at once
    return make_settings(files_dir=str(tmp_path / "files"), file_orphan_grace_seconds=0)


class Held:
    """The `after_check` hook: the next row write checking `file_id` waits there."""

    def __init__(self, file_id: str) -> None:
        self.file_id = ObjectId(file_id)
        self.checked = asyncio.Event()
        self.go = asyncio.Event()

    async def __call__(self, found: list[ObjectId]) -> None:
        if self.file_id in found and not self.checked.is_set():
            self.checked.set()
            await self.go.wait()


async def _download(client: Any, account: Any, file_id: str) -> int:
    return (await client.get(f"/api/files/{file_id}", headers=account.headers)).status


async def _held_write(api: Any, client: Any, owner: Any, file_id: str) -> tuple[Held, Any]:
    held = Held(file_id)
    client.app[SERVICES].files.after_check = held
    write = asyncio.create_task(
        api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [file_id]})
    )
    await asyncio.wait_for(held.checked.wait(), HANG_GUARD)
    return held, write


async def test_a_purge_does_not_remove_a_file_a_write_is_attaching(api, client, owner):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "deals", "columns": COLUMNS}
    )
    file = await upload(api, owner, PNG + b"shared")
    services = client.app[SERVICES]
    later = timedelta(seconds=WRITE_LEASE_SECONDS + 1)
    services.files.clock = lambda: utcnow() - later  # the first write's mark is long past
    first = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"docs": [file["id"]]}
    )
    services.files.clock = utcnow
    held, write = await _held_write(api, client, owner, file["id"])  # checked: the file exists
    # meanwhile the only row holding the file is deleted and purged
    await api.call("DELETE", f"/api/data/deals/{first['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    held.go.set()
    second = await asyncio.wait_for(write, HANG_GUARD)
    # the new row holds a file that is still there
    assert second["docs"] == [file["id"]]
    assert await _download(client, owner, file["id"]) == 200
    db = tenant_db(client, owner)
    assert await db["_attachments"].count_documents({"_id": ObjectId(file["id"])}) == 1
    # still held a lease later: the sweeper keeps it
    assert await services.files.sweep_orphans(db, now=utcnow() + later) == 0
    assert await _download(client, owner, file["id"]) == 200


async def test_the_sweeper_does_not_remove_a_file_a_write_is_attaching(api, client, owner):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "deals", "columns": COLUMNS}
    )
    file = await upload(api, owner, PNG + b"new")
    services = client.app[SERVICES]
    db = tenant_db(client, owner)
    held, write = await _held_write(api, client, owner, file["id"])
    # the sweeper's round while the write is held: nothing holds the file yet, but it stays
    assert await services.files.sweep_orphans(db) == 0
    held.go.set()
    row = await asyncio.wait_for(write, HANG_GUARD)
    assert row["docs"] == [file["id"]]
    assert await _download(client, owner, file["id"]) == 200


async def test_a_purge_within_the_lease_leaves_the_file_to_the_sweeper(api, client, owner):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "deals", "columns": COLUMNS}
    )
    file = await upload(api, owner, PNG + b"quick")
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"docs": [file["id"]]})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    services = client.app[SERVICES]
    db = tenant_db(client, owner)
    # written a moment ago: the purge cannot tell that write from one still in flight
    assert await db["_attachments"].count_documents({}) == 1
    assert await services.files.sweep_orphans(db) == 0
    # a lease later nothing holds it: the sweeper removes it
    later = utcnow() + timedelta(seconds=WRITE_LEASE_SECONDS + 1)
    assert await services.files.sweep_orphans(db, now=later) == 1
    assert await db["_attachments"].count_documents({}) == 0
    assert await _download(client, owner, file["id"]) == 404
