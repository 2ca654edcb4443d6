"""The embedded database on disk (EMBEDDED_DATA_DIR): snapshots in mongodump's layout, loaded at
start; `crm dump` / `crm restore`; damaged, foreign and locked directories refused (issue #26,
docs/operations.md "Embedded data on disk")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from crm_app.cli import main
from crm_core.platform.snapshots import (
    CURRENT,
    FORMAT,
    LOCK,
    MANIFEST,
    PAUSE_ENV,
    SnapshotError,
    dump_client,
    load_dump,
    read_dump,
    service_databases,
)
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, Factories, make_settings
from tests.support.servers import (
    CrmServe,
    MongoecoServer,
    crm_environment,
    crm_executable,
    wait_until,
)


async def engine_contents(storage_client: Any, prefix: str = "crm") -> dict[str, Any]:
    """Every document and every index definition of the service's databases."""
    out: dict[str, Any] = {}
    for db in service_databases(await storage_client.list_database_names(), prefix):
        for name in sorted(await storage_client[db].list_collection_names()):
            collection = storage_client[db][name]
            documents = await collection.find({}, sort=[("_id", 1)]).to_list(None)
            indexes = {
                n: (list(i["key"]), bool(i.get("unique")), bool(i.get("sparse")))
                for n, i in (await collection.index_information()).items()
            }
            out[f"{db}.{name}"] = (documents, indexes)
    return out


async def populate(api: Api) -> dict[str, Any]:
    """A company with a user, a table and rows, a manual order, a share and a campaign."""
    factories = Factories(api)
    owner = await api.register()
    await factories.user(owner, "manager")
    await factories.table(owner, "deals", [{"key": "n", "type": "integer"}])
    rows = await factories.rows(owner, "deals", [{"n": i} for i in range(5)])
    await api.call(
        "POST",
        f"/api/data/deals/{rows[4]['id']}/move",
        owner,
        expect=200,
        json={"before_id": rows[0]["id"]},
    )
    role = await factories.role(owner)
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "role_id": role["id"], "access": "read"},
    )
    campaign = await factories.campaign(owner)
    return {"owner": owner, "rows": rows, "campaign": campaign}


async def serve_in_process(aiohttp_client: Any, data_dir: Path) -> Any:
    return await aiohttp_client(create_app(make_settings(embedded_data_dir=str(data_dir))))


async def run_cli(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *argv: str) -> int:
    monkeypatch.setenv("EMBEDDED_DATA_DIR", str(data_dir))
    monkeypatch.setenv("BCRYPT_ROUNDS", "4")
    monkeypatch.delenv("MONGODB_URL", raising=False)
    return await asyncio.to_thread(main, list(argv))


async def test_round_trip_through_dump_and_restore(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await serve_in_process(aiohttp_client, tmp_path / "first")
    made = await populate(Api(first))
    before = await engine_contents(first.app[SERVICES].storage.client)
    await first.close()  # a graceful stop writes the last snapshot

    dump = tmp_path / "dump"
    assert await run_cli(monkeypatch, tmp_path / "first", "dump", "--out", str(dump)) == 0
    tenant_db = f"crm_t_{made['owner'].tenant_id}"
    for name in ("tenants", "users"):
        assert (dump / "crm" / f"{name}.bson").stat().st_size > 0
    for name in ("_tables", "_orders", "_shares", "_roles", "_sms_messages"):
        assert (dump / tenant_db / f"{name}.bson").stat().st_size > 0, name
    assert await run_cli(monkeypatch, tmp_path / "second", "restore", "--from", str(dump)) == 0

    second = await serve_in_process(aiohttp_client, tmp_path / "second")
    after = await engine_contents(second.app[SERVICES].storage.client)
    assert after.keys() == before.keys()
    for key, (documents, indexes) in before.items():
        assert after[key][0] == documents, key
        assert after[key][1] == indexes, key
    # and the service works on it: the owner signs in and reads its rows in its own order
    api = Api(second)
    owner = await api.login(made["owner"].email, made["owner"].password)
    page = await api.call("GET", "/api/data/deals?sort_by=manual", owner, expect=200)
    assert [r["id"] for r in page["items"]][:2] == [made["rows"][4]["id"], made["rows"][0]["id"]]
    campaign = await api.call("GET", f"/api/sms/campaigns/{made['campaign']['id']}", owner)
    assert campaign["counts"]["sent"] == 1


async def test_metadata_is_mongodumps(aiohttp_client: Any, tmp_path: Path) -> None:
    """What mongorestore reads: <db>/<coll>.bson (BSON documents back to back) and
    <coll>.metadata.json with `indexes` ({v, key, name, options}), `uuid`, `collectionName`,
    `type` in Extended JSON; only a real server can show the indexes build there."""
    client = await serve_in_process(aiohttp_client, tmp_path / "d")
    await Api(client).register()
    await client.close()
    snapshot = tmp_path / "d" / (tmp_path / "d" / CURRENT).read_text().strip()
    metadata = json_util.loads((snapshot / "crm" / "users.metadata.json").read_text())
    assert metadata["collectionName"] == "users" and metadata["type"] == "collection"
    assert len(metadata["uuid"]) == 32 and metadata["options"] == {}
    assert metadata["indexes"][0] == {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    unique = [i for i in metadata["indexes"] if i.get("unique")]
    assert unique and all(set(i) >= {"v", "key", "name"} for i in unique)
    raw = (snapshot / "crm" / "users.bson").read_bytes()
    assert int.from_bytes(raw[:4], "little") <= len(raw) and raw[-1] == 0


async def test_dump_through_the_real_driver(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded engine's dump loaded through PyMongo into a mongoeco server and dumped back
    from it: the same documents and index definitions."""
    from crm_core.platform.storage import Storage

    first = await serve_in_process(aiohttp_client, tmp_path / "first")
    await populate(Api(first))
    await first.close()
    dump = read_dump(tmp_path / "first" / (tmp_path / "first" / CURRENT).read_text().strip())
    server = MongoecoServer(tmp_path / "mongoeco.log")
    server.start()
    try:
        storage = Storage(make_settings(mongodb_url=server.uri))
        await storage.start([])
        try:
            await load_dump(storage.client, dump)
            await dump_client(storage.client, tmp_path / "back", "crm")
        finally:
            storage.close()
    finally:
        server.terminate()
    back = read_dump(tmp_path / "back")
    assert back.counts() == dump.counts()
    for db, collections in dump.databases.items():
        theirs = {c.name: c for c in back.databases[db]}
        for c in collections:
            by_id = sorted(c.documents, key=lambda d: str(d["_id"]))
            assert sorted(theirs[c.name].documents, key=lambda d: str(d["_id"])) == by_id
            keys = {i["name"]: dict(i["key"]) for i in c.indexes}
            assert {i["name"]: dict(i["key"]) for i in theirs[c.name].indexes} == keys


async def saved_dir(aiohttp_client: Any, path: Path) -> Path:
    client = await serve_in_process(aiohttp_client, path)
    await Api(client).register()
    await client.close()
    return path / (path / CURRENT).read_text().strip()


def serve_refusal(data_dir: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """`crm serve` on `data_dir`: its exit status and stderr lines (it must not start)."""
    env = crm_environment({"EMBEDDED_DATA_DIR": str(data_dir), "PORT": "1"})
    done = subprocess.run(
        [crm_executable(), "serve"], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    lines = [line for line in done.stderr.decode().splitlines() if line.startswith("crm:")]
    return done.returncode, lines


@pytest.mark.parametrize("damage", ["truncated", "cut at a document", "corrupted"])
async def test_damaged_snapshot_refuses_to_start(
    aiohttp_client: Any, tmp_path: Path, damage: str
) -> None:
    snapshot = await saved_dir(aiohttp_client, tmp_path / "d")
    file = snapshot / "crm" / "users.bson"
    raw = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(raw[: len(raw) - 7])
    elif damage == "cut at a document":
        file.write_bytes(b"")
    else:
        file.write_bytes(raw[:4] + b"\x7f" * (len(raw) - 4))
    status, lines = serve_refusal(tmp_path / "d", tmp_path)
    assert status == 2
    assert len(lines) == 1 and str(file) in lines[0], lines
    with pytest.raises(SnapshotError, match=r"users\.bson"):
        read_dump(snapshot)


async def test_other_format_is_refused_with_the_reason(aiohttp_client: Any, tmp_path: Path) -> None:
    snapshot = await saved_dir(aiohttp_client, tmp_path / "d")
    manifest = json.loads((snapshot / MANIFEST).read_text())
    (snapshot / MANIFEST).write_text(json.dumps({**manifest, "format": FORMAT + 1}))
    status, lines = serve_refusal(tmp_path / "d", tmp_path)
    assert status == 2
    assert len(lines) == 1 and f"format {FORMAT + 1} was written by a newer crm" in lines[0]


async def test_directory_not_writable_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, lines = serve_refusal(blocker / "data", tmp_path)
    assert status == 2
    assert len(lines) == 1 and "EMBEDDED_DATA_DIR is not writable" in lines[0], lines


def http_json(url: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def register(server: CrmServe, email: str) -> Any:
    body = {"company_name": "Acme", "email": email, "password": "correct-horse", "full_name": "A"}
    return http_json(f"{server.url}/api/auth/register", body)


def sign_in(server: CrmServe, email: str) -> int:
    try:
        http_json(f"{server.url}/api/auth/login", {"email": email, "password": "correct-horse"})
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_sigkill_during_a_snapshot_keeps_the_previous_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"EMBEDDED_DATA_DIR": str(data), "BCRYPT_ROUNDS": "4", "SECRET_KEY": "k" * 40}
    first = CrmServe(tmp_path / "serve.log", env)
    first.start()
    register(first, "kept@example.com")
    assert first.terminate() == 0  # snapshot 1
    saved = (data / CURRENT).read_text()

    marker = tmp_path / "writer-paused"
    paused = CrmServe(
        tmp_path / "serve.log",
        {**env, PAUSE_ENV: str(marker), "EMBEDDED_SNAPSHOT_SECONDS": "0.2"},
    )
    paused.start()
    register(paused, "lost@example.com")
    wait_until(marker.exists, "the snapshot writer paused in the middle of a file")
    assert int(marker.read_text()) == paused.pid  # the writer is a thread of the server
    assert (data / CURRENT).read_text() == saved  # not yet published
    paused.kill()
    assert any(p.name.endswith(".tmp") for p in data.iterdir())  # the half-written one

    again = CrmServe(tmp_path / "serve.log", env)
    again.start()
    try:
        assert sign_in(again, "kept@example.com") == 200
        assert sign_in(again, "lost@example.com") == 401  # after the last snapshot: lost
        assert not any(p.name.endswith(".tmp") for p in data.iterdir())
    finally:
        again.terminate()


def test_second_server_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    env = {"EMBEDDED_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "k" * 40}
    first = CrmServe(tmp_path / "serve.log", env)
    first.start()
    try:
        assert (tmp_path / "data" / LOCK).read_text().strip() == str(first.pid)
        status, lines = serve_refusal(tmp_path / "data", tmp_path)
        assert status == 2
        assert len(lines) == 1 and f"in use by process {first.pid}" in lines[0], lines
    finally:
        first.terminate()
    assert not (tmp_path / "data" / LOCK).exists()


async def test_stale_lock_of_a_dead_process_is_taken_over(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / LOCK).write_text(f"{gone.pid}\n")
    client = await serve_in_process(aiohttp_client, tmp_path / "d")
    assert (tmp_path / "d" / LOCK).read_text().strip() == str(os.getpid())
    await Api(client).register()
    await client.close()
    assert not (tmp_path / "d" / LOCK).exists()


async def test_nothing_changed_writes_no_snapshot(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await serve_in_process(aiohttp_client, tmp_path / "d")
    await Api(client).register()
    await client.close()
    first = (tmp_path / "d" / CURRENT).read_text()
    client = await serve_in_process(aiohttp_client, tmp_path / "d")
    await client.get("/health")
    started = time.time()
    await client.close()
    assert (tmp_path / "d" / CURRENT).read_text() == first
    assert (tmp_path / "d" / CURRENT).stat().st_mtime < started


async def test_restore_refuses_over_data_and_while_served(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await saved_dir(aiohttp_client, tmp_path / "d")
    dump = tmp_path / "dump"
    assert await run_cli(monkeypatch, tmp_path / "d", "dump", "--out", str(dump)) == 0
    assert await run_cli(monkeypatch, tmp_path / "d", "restore", "--from", str(dump)) == 1
    assert await run_cli(monkeypatch, tmp_path / "d", "dump", "--out", str(dump)) == 1  # not empty
    client = await serve_in_process(aiohttp_client, tmp_path / "d")
    try:
        argv = ("restore", "--from", str(dump), "--replace")
        assert await run_cli(monkeypatch, tmp_path / "d", *argv) == 1  # in use
    finally:
        await client.close()
    assert await run_cli(monkeypatch, tmp_path / "d", *argv) == 0
