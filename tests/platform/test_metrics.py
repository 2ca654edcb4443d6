"""`/metrics`: who may read it, and that the figures a scraper sees move with what happens."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from crm_app.cli import run_worker
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, make_settings, wait_done
from tests.support.sms_gateway import gateway_settings, phone, redis_settings
from tests.support.tools import free_port

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client) -> str:
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


@pytest.fixture
async def mclient(aiohttp_client):
    return await aiohttp_client(create_app(make_settings(metrics_token=TOKEN)))


async def test_metrics_are_absent_without_a_token_setting(client):
    resp = await client.get("/metrics")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": TOKEN}],
)
async def test_metrics_need_the_token(mclient, headers):
    resp = await mclient.get("/metrics", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_a_user_token_is_not_a_metrics_token(mclient):
    owner = await Api(mclient).register()
    resp = await mclient.get("/metrics", headers=owner.headers)
    assert resp.status == 401


async def test_requests_are_counted_per_route_template_and_status(mclient):
    api = Api(mclient)
    owner = await api.register()
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "deals", "columns": [{"key": "n", "type": "integer"}]},
    )
    before = await scrape(mclient)
    for _ in range(3):
        await api.call("GET", "/api/data/deals", owner, expect=200)
    await api.call("GET", "/api/data/deals", expect=401)
    await mclient.get("/no/such/route/secret-looking-path")
    after = await scrape(mclient)
    route = {"method": "GET", "route": "/api/data/{table}"}
    ok = value(after, "crm_http_requests_total", **route, status="200") - value(
        before, "crm_http_requests_total", **route, status="200"
    )
    denied = value(after, "crm_http_requests_total", **route, status="401") - value(
        before, "crm_http_requests_total", **route, status="401"
    )
    assert (ok, denied) == (3, 1)
    latency = value(after, "crm_http_request_duration_seconds_count", **route) - value(
        before, "crm_http_request_duration_seconds_count", **route
    )
    assert latency == 4
    assert "deals" not in after and "secret-looking-path" not in after
    assert value(after, "crm_http_requests_total", method="GET", route="unmatched", status="404")


async def test_login_failures_and_lockouts_are_counted(aiohttp_client):
    client = await aiohttp_client(
        create_app(make_settings(metrics_token=TOKEN, login_max_failures=2))
    )
    api = Api(client)
    owner = await api.register()
    before = await scrape(client)
    for _ in range(2):
        await api.call(
            "POST", "/api/auth/login", expect=401, json={"email": owner.email, "password": "nope"}
        )
    await api.call(
        "POST", "/api/auth/login", expect=429, json={"email": owner.email, "password": "nope"}
    )
    after = await scrape(client)
    assert value(after, "crm_login_failures_total") - value(before, "crm_login_failures_total") == 2
    assert value(after, "crm_login_lockouts_total") - value(before, "crm_login_lockouts_total") == 1


async def test_sms_messages_by_state_and_provider(aiohttp_client, gateway):
    client = await aiohttp_client(create_app(gateway_settings(gateway, metrics_token=TOKEN)))
    api = Api(client)
    owner = await api.register()
    before = await scrape(client)
    gateway.fail_next("ok", "error207")  # the second message is refused for good
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={
            "name": "m",
            "text": "t",
            "recipients": [{"phone": phone(1)}, {"phone": phone(2)}, {"phone": "not a phone"}],
        },
    )
    await wait_done(api, owner, created["id"])
    after = await scrape(client)

    def delta(state, provider):
        labels = {"state": state, "provider": provider}
        return value(after, "crm_sms_messages_total", **labels) - value(
            before, "crm_sms_messages_total", **labels
        )

    assert delta("queued", "-") == 2 and delta("invalid", "-") == 1
    assert delta("sent", "smsru") == 1 and delta("failed", "smsru") == 1


async def test_readiness_failures_count_as_backend_errors(mclient, monkeypatch):
    storage = mclient.app[SERVICES].storage
    before = await scrape(mclient)

    async def down():
        return False

    monkeypatch.setattr(storage, "ping", down)
    assert (await mclient.get("/ready")).status == 503
    after = await scrape(mclient)
    assert (
        value(after, "crm_backend_errors_total", backend="database")
        - value(before, "crm_backend_errors_total", backend="database")
        == 1
    )


async def test_a_database_failure_in_a_request_is_counted(aiohttp_client):
    from pymongo.errors import ServerSelectionTimeoutError

    app = create_app(make_settings(metrics_token=TOKEN))

    async def lost(request):
        raise ServerSelectionTimeoutError("no primary")

    app.router.add_get("/lost", lost)
    client = await aiohttp_client(app)
    before = await scrape(client)
    resp = await client.get("/lost")
    assert resp.status == 503  # unreachable: service_unavailable (docs/operations.md)
    after = await scrape(client)
    assert (
        value(after, "crm_backend_errors_total", backend="database")
        - value(before, "crm_backend_errors_total", backend="database")
        == 1
    )


async def test_a_separate_metrics_port_serves_without_token(aiohttp_client):
    port = free_port()
    client = await aiohttp_client(create_app(make_settings(metrics_port=port)))
    assert (await client.get("/health")).status == 200
    async with ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(f"http://127.0.0.1:{port}/api/auth/me") as resp:
            assert resp.status == 404  # the listener serves nothing else
    assert value(text, "crm_http_requests_total", method="GET", route="/health", status="200")
    assert (await client.get("/metrics")).status == 404  # not on the API port without a token


async def test_queue_depth_and_worker_heartbeats_with_redis(aiohttp_client, clean_redis, gateway):
    settings = redis_settings(
        clean_redis, gateway, metrics_token=TOKEN, worker_heartbeat_seconds=0.05
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client)
    owner = await api.register()
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "q", "text": "t", "recipients": [{"phone": phone(i)} for i in range(25)]},
    )
    text = await scrape(client)
    assert value(text, "crm_task_queue_depth", state="waiting") == 3  # 3 batches of 10, unread
    assert value(text, "crm_workers_alive") == 0

    # what `crm worker` runs, with its own metrics listener (its SMS counters live there)
    worker_port = free_port()
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            settings.model_copy(update={"metrics_port": worker_port}),
            stop,
            storage=app[SERVICES].storage,
        )
    )
    try:
        await wait_done(api, owner, created["id"])
        for _ in range(100):
            text = await scrape(client)
            if value(text, "crm_workers_alive") == 1:
                break
            await asyncio.sleep(0.02)
        assert value(text, "crm_workers_alive") == 1
        beats = [k for k in samples(text) if k[0] == "crm_worker_heartbeat_timestamp_seconds"]
        assert len(beats) == 1
        assert value(text, "crm_task_queue_depth", state="waiting") == 0
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{worker_port}/metrics") as resp:
                assert resp.status == 200
                worker_text = await resp.text()
        assert value(worker_text, "crm_sms_messages_total", state="sent", provider="smsru") >= 25
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=30)
    text = await scrape(client)
    # a receiver that stopped cleanly takes its beat with it
    assert value(text, "crm_workers_alive") == 0
    assert not [k for k in samples(text) if k[0] == "crm_worker_heartbeat_timestamp_seconds"]


async def test_a_dead_receivers_beat_goes_stale_then_is_forgotten(
    aiohttp_client,
    clean_redis,
    gateway,
):
    import time

    from redis.asyncio import Redis

    settings = redis_settings(clean_redis, gateway, metrics_token=TOKEN)
    client = await aiohttp_client(create_app(settings))
    redis = Redis.from_url(clean_redis)
    now = time.time()
    await redis.hset(
        "crm:workers:heartbeat",
        mapping={"host:1": str(now - 120), "host:2": str(now - 2 * 24 * 3600)},
    )
    text = await scrape(client)
    beats = {
        dict(labels)["worker"]: v
        for (name, labels), v in samples(text).items()
        if name == "crm_worker_heartbeat_timestamp_seconds"
    }
    assert list(beats) == ["host:1"] and beats["host:1"] == pytest.approx(now - 120)
    assert value(text, "crm_workers_alive") == 0  # 120 s > 3 x 10 s: stale, not alive
    assert await redis.hkeys("crm:workers:heartbeat") == [b"host:1"]
    await redis.aclose()


def test_multiprocess_mode_answers_the_sum_of_all_processes(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR: two processes count, a third answers for both."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = (
        "from crm_core.platform import metrics\n"
        "for _ in range(3): metrics.observe_request('GET', '/health', 200, 0.01)\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    answer = subprocess.run(
        [
            sys.executable,
            "-c",
            "from crm_core.platform import metrics; print(metrics.exposition([]).decode())",
        ],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    labels = {"method": "GET", "route": "/health", "status": "200"}
    assert value(answer, "crm_http_requests_total", **labels) == 6
