"""The embedded engine's snapshot writer (issue #26, docs/operations.md "Embedded data on disk"):
a snapshot holds the data as it was when the engine's stores were copied, requests are answered
while it is encoded and written, and a snapshot is written only when the data changed (the
engine counts changes made, not calls asked: an idle server's sweeper rounds count nothing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from crm_core.platform import snapshots as snapshots_module
from crm_core.platform.outbox import Outbox
from crm_core.platform.snapshots import CURRENT, SNAPSHOT_PREFIX, Snapshots, read_dump
from crm_core.platform.storage.embedded import (
    EmbeddedWrites,
    copy_stored,
    embedded_client,
    release_stored,
)
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, Factories, make_settings, rows_of


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (a guard against a hang, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def engine() -> Any:
    executor = ThreadPoolExecutor(max_workers=1)
    yield embedded_client(executor)
    executor.shutdown()


def changes() -> int:
    return EmbeddedWrites.count


async def test_the_engine_counts_changes_not_calls(engine: Any) -> None:
    c = engine["crm"]["things"]

    async def counted(call: Any) -> int:
        before = changes()
        await call
        return changes() - before

    assert await counted(c.insert_one({"_id": 1, "a": 1, "tags": ["x"]})) == 1
    assert await counted(c.insert_many([{"_id": 2, "a": 2}, {"_id": 3, "a": 3}])) == 2
    # a sweeper's claim that finds nothing due, an update that sets what is there, a delete of
    # nothing, an index that exists: no change
    nothing_due = c.find_one_and_update({"a": {"$gt": 9}}, {"$set": {"a": 0}}, sort=[("a", 1)])
    assert await counted(nothing_due) == 0
    assert await counted(c.update_one({"_id": 1}, {"$set": {"a": 1}})) == 0
    assert await counted(c.update_many({}, {"$set": {"b": None}})) == 3
    assert await counted(c.update_many({}, {"$set": {"b": None}})) == 0
    assert await counted(c.delete_one({"_id": 9})) == 0
    assert await counted(c.create_index("a")) == 1
    assert await counted(c.create_index("a")) == 0
    # and every real change counts
    assert await counted(c.find_one_and_update({"_id": 1}, {"$push": {"tags": "y"}})) == 1
    assert await counted(c.replace_one({"_id": 2}, {"a": 20})) == 1
    assert await counted(c.update_one({"_id": 4}, {"$set": {"a": 4}}, upsert=True)) == 1
    assert await counted(c.delete_many({"a": {"$gte": 4}})) == 2
    assert await counted(c.drop_index("a_1")) == 1
    assert await counted(engine["crm"].drop_collection("things")) == 1
    assert await counted(engine["crm"].drop_collection("things")) == 0


async def test_a_copy_keeps_the_documents_as_they_were(engine: Any, tmp_path: Path) -> None:
    """Updates store a changed copy of a document: the copy a snapshot took (references to the
    stored documents) keeps them as they were, nested values included."""
    c = engine["crm"]["things"]
    await c.insert_many(
        [{"_id": i, "n": i, "nested": {"list": [i], "deep": {"v": i}}} for i in range(4)]
    )
    before = await c.find({}, sort=[("_id", 1)]).to_list(None)
    stored = await copy_stored(engine, lambda names: [n for n in names if n == "crm"])

    await c.update_one({"_id": 0}, {"$set": {"nested.deep.v": "changed"}, "$inc": {"n": 10}})
    await c.update_many({}, {"$push": {"nested.list": "pushed"}})
    await c.replace_one({"_id": 1}, {"other": True})
    await c.find_one_and_update({"_id": 2}, {"$unset": {"nested": ""}})
    await c.delete_one({"_id": 3})
    await c.insert_one({"_id": 4, "n": 4})

    snapshots_module.write_stored_copy(stored, tmp_path / "snap")
    (things,) = read_dump(tmp_path / "snap").databases["crm"]
    assert things.documents == before
    now = await c.find({}, sort=[("_id", 1)]).to_list(None)
    assert now[0]["nested"] == {"list": [0, "pushed"], "deep": {"v": "changed"}}
    assert now[1:] == [{"_id": 1, "other": True}, {"_id": 2, "n": 2}, {"_id": 4, "n": 4}]


async def test_a_failed_update_leaves_the_stored_document(engine: Any) -> None:
    """A unique index refusing an update: the document stays as it was (mongomock's rollback
    with the copy in the store)."""
    c = engine["crm"]["things"]
    await c.create_index("email", unique=True)
    await c.insert_many([{"_id": 1, "email": "a"}, {"_id": 2, "email": "b"}])
    from crm_core.platform.storage import DuplicateKeyError

    with pytest.raises(DuplicateKeyError):
        await c.update_one({"_id": 2}, {"$set": {"email": "a"}})
    assert await c.find({}, sort=[("_id", 1)]).to_list(None) == [
        {"_id": 1, "email": "a"},
        {"_id": 2, "email": "b"},
    ]


async def test_requests_are_answered_while_a_snapshot_is_written(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is held (a barrier) after the engine's stores were copied: rows created,
    changed and deleted meanwhile are answered, and the snapshot holds the rows as they were at
    the copy; the next one holds the changes."""
    client = await aiohttp_client(create_app(make_settings()))
    api = Api(client)
    factories = Factories(api)
    owner = await api.register()
    await factories.table(owner, "deals", [{"key": "n", "type": "integer"}])
    rows = await factories.rows(owner, "deals", [{"n": i} for i in range(3)])
    collection = await rows_of(client, owner, "deals")
    as_copied = await collection.find({}, sort=[("_id", 1)]).to_list(None)

    copied, release = threading.Event(), threading.Event()
    write = snapshots_module.write_stored_copy

    def held_writer(stored: Any, out: Path, *args: Any) -> Any:
        copied.set()
        assert release.wait(60)
        return write(stored, out, *args)

    def stored_rows(name: str) -> list[dict[str, Any]]:
        dump = read_dump(tmp_path / "d" / name)
        tenant = dump.databases[f"crm_t_{owner.tenant_id}"]
        (found,) = [c for c in tenant if c.name == collection.name]
        return sorted(found.documents, key=lambda d: d["_id"])

    monkeypatch.setattr(snapshots_module, "write_stored_copy", held_writer)
    snapshots = Snapshots(client.app[SERVICES].storage, tmp_path / "d", 3600)
    snapshots.data_dir.lock()
    try:
        writing = asyncio.create_task(snapshots.snapshot(force=True))
        await until(copied.is_set, "the stores copied")
        path = f"/api/data/deals/{rows[0]['id']}"
        await api.call("PATCH", path, owner, expect=200, json={"n": 100})
        await api.call("DELETE", f"/api/data/deals/{rows[1]['id']}", owner, expect=204)
        await factories.rows(owner, "deals", [{"n": 3}])
        assert not writing.done()
        release.set()
        first = await writing
        assert first is not None and stored_rows(first.name) == as_copied
        second = await snapshots.snapshot()
        assert second is not None
        assert [r["n"] for r in stored_rows(second.name)] == [100, 2, 3]
    finally:
        release.set()
        snapshots.data_dir.unlock()


async def test_an_idle_server_writes_no_new_snapshot(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshot rounds every 50 ms with the sweepers' rounds (every 20 ms) between them: once
    the start-up's data is saved, no round writes a snapshot; one row changed, exactly one."""
    rounds: list[str | None] = []
    sweeps = [0]
    snapshot, outbox_sweep = Snapshots.snapshot, Outbox.sweep

    async def counted_snapshot(self: Snapshots, force: bool = False) -> Any:
        result = await snapshot(self, force)
        rounds.append(result.name if result else None)
        return result

    async def counted_outbox_sweep(self: Outbox, *args: Any, **kwargs: Any) -> int:
        sweeps[0] += 1
        return await outbox_sweep(self, *args, **kwargs)

    monkeypatch.setattr(Snapshots, "snapshot", counted_snapshot)
    monkeypatch.setattr(Outbox, "sweep", counted_outbox_sweep)
    data = tmp_path / "d"
    settings = make_settings(embedded_data_dir=str(data), embedded_snapshot_seconds=0.05)
    client = await aiohttp_client(create_app(settings))

    async def idle_rounds(count: int) -> list[str | None]:
        """The next `count` snapshot rounds, each with sweeper rounds before it."""
        seen: list[str | None] = []
        for _ in range(count):
            start_rounds, start_sweeps = len(rounds), sweeps[0]
            await until(lambda s=start_sweeps: sweeps[0] >= s + 2, "two sweeper rounds")
            await until(lambda r=start_rounds: len(rounds) > r, "a snapshot round")
            seen.append(rounds[-1])
        return seen

    def snapshot_dirs() -> list[str]:
        return sorted(p.name for p in data.iterdir() if p.name.startswith(SNAPSHOT_PREFIX))

    api = Api(client)
    owner = await api.register()
    await Factories(api).table(owner, "deals", [{"key": "n", "type": "integer"}])
    await until(lambda: bool(rounds) and rounds[-1] is None, "the start-up's data saved")
    saved = (data / CURRENT).read_text().strip()

    assert await idle_rounds(5) == [None] * 5
    assert (data / CURRENT).read_text().strip() == saved
    assert snapshot_dirs() == [saved]

    await Factories(api).rows(owner, "deals", [{"n": 1}])
    written = [name for name in await idle_rounds(6) if name is not None]
    number = int(saved[len(SNAPSHOT_PREFIX) :])
    assert written == [f"{SNAPSHOT_PREFIX}{number + 1:06d}"]
    assert snapshot_dirs() == written
    assert (data / CURRENT).read_text().strip() == written[0]
    await client.close()
    assert snapshot_dirs() == written  # a graceful stop with nothing changed writes none


async def test_a_copy_stays_whole_while_another_is_released(engine: Any, tmp_path: Path) -> None:
    """Two copies of the same stores (say, a snapshot and a benchmark's): releasing one leaves
    the other's documents as they were."""
    c = engine["crm"]["things"]
    await c.insert_many([{"_id": i, "n": i} for i in range(3)])

    def crm(names: list[str]) -> list[str]:
        return [n for n in names if n == "crm"]

    first = await copy_stored(engine, crm)
    second = await copy_stored(engine, crm)
    await release_stored(engine, first)
    await c.insert_one({"_id": 3, "n": 3})
    await c.delete_one({"_id": 0})
    snapshots_module.write_stored_copy(second, tmp_path / "snap")
    await release_stored(engine, second)
    (things,) = read_dump(tmp_path / "snap").databases["crm"]
    assert things.documents == [{"_id": i, "n": i} for i in range(3)]
