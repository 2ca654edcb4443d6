"""Issue #19 part 3 and 4: the database unreachable.

In process (every run): a database or broker that cannot be reached answers 503
`service_unavailable` with `Retry-After`, naming the service, with one WARNING per outage and no
traceback per request. Through real processes (the mongoeco lane: a `crm serve` subprocess
whose driver talks to mongoeco through a TCP proxy the test cuts): the database gone for 5 s
under load answers 503s, then 200s again, without a restart (docs/operations.md, "Faults: the
database")."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession, web
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from taskiq.exceptions import SendTaskError

from crm_core.platform.errors import ServiceUnavailable
from crm_core.platform.settings import SettingsError, load_settings
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import make_settings
from tests.support.remote import crm_env, remote_api, serve_behind
from tests.support.servers import (
    CrmServe,
    TcpProxy,
    crm_environment,
    crm_executable,
    free_port,
)

DRIVER_ERRORS = [
    ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused"),
    AutoReconnect("127.0.0.1:27017: connection closed"),
    NetworkTimeout("127.0.0.1:27017: timed out"),
    ConnectionFailure("connection failure"),
]


def failing_app(exc: BaseException, **settings: Any) -> web.Application:
    app = create_app(make_settings(**settings))

    async def lost(request: web.Request) -> web.Response:
        raise exc

    app.router.add_get("/lost", lost)
    return app


def outage_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "crm.outages"]


@pytest.mark.parametrize("exc", DRIVER_ERRORS, ids=lambda e: type(e).__name__)
async def test_an_unreachable_database_answers_503_with_retry_after(aiohttp_client, caplog, exc):
    client = await aiohttp_client(failing_app(exc, unavailable_retry_after_seconds=7))
    caplog.set_level(logging.INFO)
    for _ in range(3):
        resp = await client.get("/lost")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "7"
        error = (await resp.json())["error"]
        assert error["code"] == "service_unavailable"
        assert error["message"] == "The database is not reachable; try again in 7 s"
        assert error["details"] == [{"service": "database", "message": "not reachable"}]
        assert error["request_id"] == resp.headers["X-Request-ID"]
    # one WARNING for the outage, not one line (or traceback) per request
    warnings = outage_records(caplog)
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in warnings] == [
        ("WARNING", "database unreachable")
    ]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    storage = client.app[SERVICES].storage
    assert storage.outages.down_services() == ["database"]
    storage.outages.up("database")  # what the driver's next good heartbeat does
    assert outage_records(caplog)[-1].levelname == "INFO"
    assert outage_records(caplog)[-1].getMessage().startswith("database reachable again after")


async def test_a_broker_that_cannot_be_reached_answers_503_naming_it(aiohttp_client, caplog):
    """taskiq wraps a failed send in its SendTaskError; the Redis error inside decides."""
    try:
        raise SendTaskError from RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")
    except SendTaskError as wrapped:
        exc = wrapped
    client = await aiohttp_client(failing_app(exc))
    resp = await client.get("/lost")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    error = (await resp.json())["error"]
    assert error["message"] == "The task broker (Redis) is not reachable; try again in 5 s"
    assert error["details"] == [{"service": "broker", "message": "not reachable"}]


async def test_other_failures_stay_500_with_their_traceback(aiohttp_client, caplog):
    client = await aiohttp_client(failing_app(RuntimeError("a bug")))
    resp = await client.get("/lost")
    assert resp.status == 500 and "Retry-After" not in resp.headers
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_503_raised_by_the_domain_gets_a_retry_after(aiohttp_client):
    client = await aiohttp_client(failing_app(ServiceUnavailable("Imports are paused")))
    resp = await client.get("/lost")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await resp.json())["error"]["message"] == "Imports are paused"


async def test_ready_names_the_service_that_is_down(aiohttp_client, monkeypatch):
    client = await aiohttp_client(create_app(make_settings()))
    storage = client.app[SERVICES].storage

    async def down() -> bool:
        return False

    monkeypatch.setattr(storage, "ping", down)
    resp = await client.get("/ready")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    error = (await resp.json())["error"]
    assert error["code"] == "service_unavailable"
    assert error["details"] == [{"service": "database", "message": "not reachable"}]


def test_the_socket_timeout_must_exceed_the_query_time_limit():
    with pytest.raises(SettingsError, match="MONGODB_SOCKET_TIMEOUT_MS must exceed"):
        load_settings(_env_file=None, query_time_limit_ms=5000, mongodb_socket_timeout_ms=5000)


# ---- through the real driver: the database gone for 5 s under load -----------------------------

OUTAGE_SECONDS = 5.0  # issue #19 part 4
CLIENTS = 6


@dataclass
class Answer:
    phase: str  # when it was sent
    answered_in: str  # when its answer came
    status: int
    retry_after: str | None
    error: dict[str, Any] | None


@dataclass
class Load:
    """CLIENTS loops of reads and writes through one API process, each answer tagged with the
    phase the test was in when it was sent. Bounded in count and time; stops by itself."""

    http: ClientSession
    base: str
    headers: dict[str, str]
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        deadline = time.monotonic() + 180
        calls = [
            ("GET", "/api/auth/me", None),
            ("GET", "/api/data/t?limit=5", None),
            ("POST", "/api/data/t", {"n": n}),
        ]
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline and i < 20_000:
            method, path, body = calls[(i + n) % len(calls)]
            i += 1
            phase = self.phase
            async with self.http.request(
                method, self.base + path, json=body, headers=self.headers
            ) as resp:
                payload = await resp.json() if resp.content_type == "application/json" else {}
                error = payload.get("error") if isinstance(payload, dict) else None
                self.answers.append(
                    Answer(phase, self.phase, resp.status, resp.headers.get("Retry-After"), error)
                )
            await asyncio.sleep(0.01)  # pacing only: no result depends on it

    def count(self, phase: str, status: int | None = None) -> int:
        return sum(
            1 for a in self.answers if a.phase == phase and (status is None or a.status == status)
        )

    def trailing_successes(self) -> int:
        n = 0
        for answer in reversed(self.answers):
            if answer.status >= 300:
                break
            n += 1
        return n


async def wait_for(
    condition: Any, what: str, timeout: float = 90, tasks: list[asyncio.Task[None]] = ()
) -> None:
    """Poll `condition`; a failed task among `tasks` is raised at once."""
    deadline = time.monotonic() + timeout
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_database_gone_for_5_s_under_load(logs, db_proxy: TcpProxy, http):
    async with serve_behind(logs, db_proxy.uri) as serve:
        await _outage_under_load(serve, db_proxy, http)


async def _outage_under_load(serve: CrmServe, proxy: TcpProxy, http: ClientSession) -> None:
    api = remote_api(http, serve)
    owner = await api.register()
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    kept = await api.call("POST", "/api/data/t", owner, json={"n": -1}, expect=201)
    pid = serve.pid

    load = Load(http, serve.url, owner.headers)
    clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
    try:
        await wait_for(
            lambda: load.count("before") >= 30, "answers before the outage", tasks=clients
        )
        proxy.cut()
        load.phase = "cut"
        cut_at = time.monotonic()
        ready = await http.get(serve.url + "/ready")
        assert ready.status == 503, await ready.text()
        assert (await ready.json())["error"]["details"] == [
            {"service": "database", "message": "not reachable"}
        ]
        await wait_for(
            lambda: load.count("cut", 503) >= 20 and time.monotonic() - cut_at >= OUTAGE_SECONDS,
            "503s during the outage",
            tasks=clients,
        )
        load.phase = "restored"
        proxy.restore()
        await wait_for(
            lambda: load.count("restored") and load.trailing_successes() >= 60,
            "200s again",
            tasks=clients,
        )
    finally:
        load.stop.set()
        await asyncio.gather(*clients)

    statuses = {a.status for a in load.answers}
    assert statuses <= {200, 201, 503}, statuses  # never a 500
    # sent and answered before the cut: all good (one in flight at the cut may be a 503)
    assert {a.status for a in load.answers if a.answered_in == "before"} <= {200, 201}
    unavailable = [a for a in load.answers if a.status == 503]
    assert unavailable and all(a.retry_after == "5" for a in unavailable)
    assert all(
        a.error is not None
        and a.error["code"] == "service_unavailable"
        and a.error["details"] == [{"service": "database", "message": "not reachable"}]
        for a in unavailable
    )
    # the same process, recovered by itself; the data from before the outage is there
    assert serve.running and serve.pid == pid and serve.starts == 1
    assert (await http.get(serve.url + "/ready")).status == 200
    row = await api.call("GET", f"/api/data/t/{kept['id']}", owner, expect=200)
    assert row["n"] == -1
    # one WARNING for the outage, one INFO when it was back; no traceback, no ERROR
    log = serve.log_text()
    assert log.count("WARNING crm.outages") == 1, log
    assert "database unreachable" in log
    assert log.count("INFO crm.outages") == 1 and "database reachable again after" in log
    records = [line for line in log.splitlines() if line[:2] == "20"]
    assert not [line for line in records if " ERROR " in line or "unhandled error" in line]
    # no traceback at all: requests answer 503 and the sweepers log one line per failed round
    assert log.count("Traceback") == 0, log
    print(
        f"answers: {len(load.answers)}; 503s: {len(unavailable)} "
        f"({load.count('cut', 503)} during the cut, {load.count('restored', 503)} after it)"
    )


def test_a_process_started_while_the_database_is_down_says_so_in_one_line(tmp_path):
    """`crm serve` cannot start without the database (it creates indexes first): exit 1 with
    one line, no traceback; its supervisor starts it again."""
    closed = free_port()
    env = crm_environment(
        crm_env(
            mongodb_url=f"mongodb://127.0.0.1:{closed}/?directConnection=true",
            mongodb_server_selection_timeout_ms=300,
        )
    )
    done = subprocess.run(
        [crm_executable(), "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"crm: the database is not reachable: 127.0.0.1:{closed}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
