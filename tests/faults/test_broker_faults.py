"""Faults of the broker and of the workers (issue #19 part 4, docs/operations.md "Faults: the
broker"): Redis stopped mid-campaign and started again empty, a worker that dies mid-batch
while Redis forgets its task, an import whose runner died. The campaign completes with every
message sent at most once (the fake gateway counts what it accepted), the import ends
`completed` with each row once, and nothing stays queued, sending or running.

The workers are real taskiq receivers on a real redis-server (a private one on a fixed port,
stopped and started again by the test), in the test process so that they share its database.
Without `redis-server` these tests say that they did not run, except under CI=true, where that
is a failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from crm_core.auth import context_for_user
from crm_core.files.imports import FILES, JOBS, JOURNAL
from crm_core.outbox import OUTBOX
from crm_core.services import build_services
from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.broker import receiving, start_broker, stop_broker
from tests.conftest import Api, free_port, make_settings, redis_settings, wait_done
from tests.support.files import confirm, finished, make_table, stored, upload
from tests.support.sms_gateway import phone

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class KillableRedis:
    """A redis-server without persistence on one port: `kill()` (SIGKILL) and `start()` again
    give an empty Redis at the same address, as after a crash or a restarted container."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def killable_redis(tmp_path: Path) -> Iterator[KillableRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not on the PATH: the broker fault tests did NOT run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    redis = KillableRedis(binary, tmp_path)
    redis.start()
    yield redis
    if redis.process is not None:
        redis.kill()


class Gate:
    """Wraps a worker's rate limiter: after `after` slots, the next wait holds until `opened`,
    then asks the real limiter (which, with Redis gone, fails: the task stops between two
    claims, every claim before it recorded)."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner = inner
        self.after = after
        self.granted = 0
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def wait(self, tenant_id: str, count: int = 1) -> list[float]:
        if self.granted >= self.after:
            self.reached.set()
            await self.opened.wait()
        self.granted += count
        slots: list[float] = await self.inner.wait(tenant_id, count)
        return slots


class HangingProvider:
    """Wraps a worker's SMS provider: after `after` sends, every send hangs (the worker is
    stuck mid-claim, as one killed with its requests in flight)."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.after = after
        self.calls = 0
        self.hung = asyncio.Event()

    async def send(self, phone: str, text: str, message_id: str) -> str:
        self.calls += 1
        if self.calls > self.after:
            self.hung.set()
            await asyncio.Event().wait()
        result: str = await self.inner.send(phone, text, message_id)
        return result


@contextlib.asynccontextmanager
async def worker(app: Any, settings: Any, name: str) -> AsyncIterator[Any]:
    """A task worker (receiver and sweeper) on the app's database, as `crm worker` runs."""
    broker = await start_broker(build_services(settings, app[SERVICES].storage), name)
    try:
        async with receiving(broker, settings):
            yield broker
    finally:
        await stop_broker(broker)


def campaign(name: str, first: int, n: int) -> dict[str, Any]:
    recipients = [{"phone": phone(first + i), "n": i} for i in range(n)]
    return {"name": name, "text": "Привет, {{n}}", "recipients": recipients}


async def test_redis_killed_mid_campaign_and_back_empty_every_message_sent_once(
    aiohttp_client: Any, killable_redis: KillableRedis, gateway: Any
) -> None:
    settings = redis_settings(killable_redis.url, gateway, sms_rate_per_second=50)
    app = create_app(settings)
    api = Api(await aiohttp_client(app))
    owner = await api.register()
    async with worker(app, settings, "w1") as broker:
        gate = Gate(broker.state.sms.limiter, after=20)
        broker.state.sms.limiter = gate
        first = await api.call(
            "POST", "/api/sms/campaigns", owner, expect=202, json=campaign("a", 0, 60)
        )
        await asyncio.wait_for(gate.reached.wait(), 5)
        killable_redis.kill()  # mid-campaign: 20 sent, 40 waiting, Redis gone with its stream
        gate.opened.set()
        # while Redis is down a new campaign is accepted, stored and recorded, never a 500
        second = await api.call(
            "POST", "/api/sms/campaigns", owner, expect=202, json=campaign("b", 100, 25)
        )
        assert second["status"] == "queued"
        due = (
            await app[SERVICES].storage.system_db[OUTBOX].count_documents({"args.0": second["id"]})
        )
        assert due == 3  # its three batches wait in the outbox for the broker
        killable_redis.start()  # empty: no stream, no consumer group, no task
        done = [await wait_done(api, owner, c["id"], timeout=60) for c in (first, second)]
    assert [d["counts"]["sent"] for d in done] == [60, 25]
    assert [d["counts"]["unknown"] for d in done] == [0, 0]
    per_phone = gateway.accepted_per_phone()
    assert len(per_phone) == 85 and set(per_phone.values()) == {1}
    assert await app[SERVICES].storage.system_db[OUTBOX].count_documents({}) == 0


async def test_a_worker_dead_mid_batch_while_redis_forgets_its_task_no_duplicates(
    aiohttp_client: Any, killable_redis: KillableRedis, gateway: Any
) -> None:
    settings = redis_settings(killable_redis.url, gateway, sms_rate_per_second=50)
    app = create_app(settings)
    api = Api(await aiohttp_client(app))
    owner = await api.register()
    before = asyncio.all_tasks()
    doomed = await start_broker(build_services(settings, app[SERVICES].storage), "doomed")
    hanging = HangingProvider(doomed.state.sms.provider, after=15)
    doomed.state.sms.provider = hanging
    receiving_doomed = receiving(doomed, settings)
    await receiving_doomed.__aenter__()
    created = await api.call(
        "POST", "/api/sms/campaigns", owner, expect=202, json=campaign("crash", 0, 40)
    )
    await asyncio.wait_for(hanging.hung.wait(), 20)
    # the worker dies with a claim in flight: its tasks stop where they are, and Redis forgets
    # them (restarted empty), so no redelivery of the same task will ever come
    for task in asyncio.all_tasks() - before:
        task.cancel()
    killable_redis.kill()
    killable_redis.start()
    db = app[SERVICES].storage.tenant_db(owner.tenant_id)
    assert await db["_sms_messages"].count_documents({"status": "sending"}) > 0
    async with worker(app, settings, "survivor"):
        done = await wait_done(api, owner, created["id"], timeout=60)
    counts = done["counts"]
    assert done["status"] == "completed"
    assert counts["sent"] + counts["unknown"] == 40 and counts["unknown"] > 0
    per_phone = gateway.accepted_per_phone()
    assert set(per_phone.values()) == {1}  # nobody got two
    sent = await db["_sms_messages"].find({"status": "sent"}, {"phone": 1}).to_list(None)
    assert {m["phone"].lstrip("+") for m in sent} <= set(per_phone)
    # what was claimed by the dead worker is `unknown`, to be checked, never resent blindly
    unknown = await db["_sms_messages"].find({"status": "unknown"}).to_list(None)
    assert all("worker stopped" in m["error"] for m in unknown)
    assert await app[SERVICES].storage.system_db[OUTBOX].count_documents({}) == 0
    with contextlib.suppress(Exception):
        await stop_broker(doomed)


async def test_an_import_whose_runner_died_is_taken_over_when_its_lease_expires(
    aiohttp_client: Any,
) -> None:
    # the embedded database, tasks in the API process (in-memory broker): a runner that dies
    # mid-import leaves its job `importing`; the outbox's sweeper queues it again once the
    # lease expires, and the new delivery undoes the dead runner's rows and imports once
    settings = make_settings(import_stale_seconds=0.5, import_batch_size=2)
    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    services = app[SERVICES]
    imports = services.imports
    real_write = imports._write
    wrote_one = asyncio.Event()
    runner_task: list[asyncio.Task[Any]] = []

    async def dying_write(*args: Any, **kwargs: Any) -> None:
        if wrote_one.is_set():  # the second batch: the runner dies here
            runner_task.append(asyncio.current_task())  # type: ignore[arg-type]
            await asyncio.Event().wait()
        await real_write(*args, **kwargs)
        wrote_one.set()

    imports._write = dying_write  # type: ignore[method-assign]
    rows = "".join(f"R{i},r{i}@example.com,{i},,,,\n" for i in range(6))
    status, job = await upload(
        client, owner, ("Full name,email,Amount,due,vip,status,n\n" + rows).encode()
    )
    assert status == 201
    await confirm(api, owner, job)
    await asyncio.wait_for(wrote_one.wait(), 10)
    while not runner_task:
        await asyncio.sleep(0.01)
    imports._write = real_write  # type: ignore[method-assign]
    runner_task[0].cancel()  # the runner dies: its job stays `importing`, one batch written
    ctx = await context_for_user(services.storage, owner.tenant_id, owner.user_id)
    from bson import ObjectId

    left = await ctx.db[JOBS].find_one({"_id": ObjectId(job["id"])})
    assert left["state"] == "importing"
    assert await ctx.db[JOURNAL].count_documents({}) == 1
    done = await finished(api, owner, job)
    assert (done["state"], done["created"], done["rows_done"]) == ("completed", 6, 6)
    names = sorted(r["name"] for r in await stored(api, owner))
    assert names == sorted(f"R{i}" for i in range(6))  # each row once
    assert await ctx.db[FILES].count_documents({}) == 0
    assert await ctx.db[JOURNAL].count_documents({}) == 0
    assert await services.storage.system_db[OUTBOX].count_documents({}) == 0


async def test_an_upload_whose_process_stopped_fails_with_its_reason(aiohttp_client: Any) -> None:
    settings = make_settings(import_stale_seconds=0.3)
    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    services = app[SERVICES]
    ctx = await context_for_user(services.storage, owner.tenant_id, owner.user_id)
    from crm_core.tables.definitions import load_table
    from models.files import UploadQuery

    table = await load_table(ctx, services.column_types, "people")
    sent_first = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"Full name\nAnn\n"
        sent_first.set()
        await asyncio.Event().wait()  # the process is gone: nothing more ever comes
        yield b""

    upload_task = asyncio.create_task(
        imports_upload(services, ctx, table, stalled(), UploadQuery())
    )
    await asyncio.wait_for(sent_first.wait(), 10)
    jobs = await api.call("GET", "/api/data/people/imports", owner, expect=200)
    job = jobs["items"][0]
    assert job["state"] == "uploading"
    done = await finished(api, owner, job)  # the sweeper's watch: no heartbeat, so it fails
    assert done["state"] == "failed"
    assert "interrupted" in done["message"]
    assert await ctx.db[FILES].count_documents({}) == 0
    assert await services.storage.system_db[OUTBOX].count_documents({}) == 0
    upload_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await upload_task


async def imports_upload(services: Any, ctx: Any, table: Any, chunks: Any, query: Any) -> Any:
    return await services.imports.upload(ctx, table, chunks, "people.csv", "text/csv", query)
