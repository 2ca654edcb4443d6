"""Issue #19 part 5: many processes, one system. Two `crm serve` and two `crm worker`
processes on one database (a mongoeco server: the real driver) and one Redis; what one process
changes, the other honours at its next request. SMS go out exactly once across the workers,
and each webhook event is delivered once (docs/scaling.md)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.api import Account, Api, user_with_permissions
from tests.support.remote import crm_env, remote_api
from tests.support.servers import (
    CrmServe,
    CrmWorker,
    ManagedProcess,
    MongoecoServer,
    RedisServer,
    ThreadedApp,
    eventually,
)
from tests.support.sms_gateway import FakeGateway, phone
from tests.support.webhook_receiver import Receiver, make_hook, make_table

LOGIN_MAX_FAILURES = 3


@dataclass
class System:
    a: CrmServe
    b: CrmServe
    workers: list[CrmWorker]
    gateway: FakeGateway
    receiver: Receiver
    processes: list[ManagedProcess]

    def log_tails(self) -> str:
        return "\n".join(f"==== {p.name} ({p.log_path}):\n{p.log_tail(30)}" for p in self.processes)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    logs = tmp_path_factory.mktemp("many-processes")
    gateway = FakeGateway()
    receiver = Receiver()
    gateway_app = ThreadedApp(gateway.app()).start()
    receiver_app = ThreadedApp(receiver.app()).start()
    receiver.url = receiver_app.url
    mongoeco = MongoecoServer(logs / "mongoeco.log")
    redis = RedisServer(logs / "redis.log")
    started: list[ManagedProcess] = []
    try:
        for server in (mongoeco, redis):
            server.start()
            started.append(server)
        env = crm_env(
            mongodb_url=mongoeco.uri,
            redis_url=redis.url,
            sms_provider="smsru",
            smsru_api_id="test-api-id",
            smsru_base_url=gateway_app.url,
            sms_rate_per_second=200,
            sms_batch_size=5,  # a campaign is many tasks, for both workers to take
            webhook_allow_private_addresses="true",
            webhook_retry_base_seconds=0.05,
            webhook_sweep_seconds=0.5,
            login_max_failures=LOGIN_MAX_FAILURES,
        )
        a = CrmServe(logs / "serve-a.log", env)
        b = CrmServe(logs / "serve-b.log", env)
        workers = [CrmWorker(logs / f"worker-{n}.log", env) for n in (1, 2)]
        for process in (a, b, *workers):
            process.start()
            started.append(process)
        yield System(a, b, workers, gateway, receiver, started)
    finally:
        for process in reversed(started):
            process.terminate()
        gateway_app.close()
        receiver_app.close()


@pytest.fixture
async def apis(system: System, http: Any) -> tuple[Api, Api]:
    return remote_api(http, system.a), remote_api(http, system.b)


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, system: System) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(system.log_tails())


async def user_with_role(api: Api, owner: Account, permissions: list[str]) -> tuple[Account, str]:
    """A user holding one custom role with `permissions`, signed in: (user, role id)."""
    user, role = await user_with_permissions(api, owner, permissions)
    return user, role["id"]


async def status(api: Api, method: str, path: str, account: Account | None, **kw: Any) -> int:
    headers = dict(account.headers) if account else {}
    headers.update(kw.pop("headers", {}))
    async with api.client.request(method, path, headers=headers, **kw) as resp:
        await resp.read()
        return resp.status


async def test_login_limits_hold_across_api_processes(apis):
    a, b = apis
    owner = await a.register(password="right-password")
    wrong = {"email": owner.email, "password": "wrong-password"}
    for api in (a, b, a)[:LOGIN_MAX_FAILURES]:
        assert await status(api, "POST", "/api/auth/login", None, json=wrong) == 401
    # the slots are spent in Redis: the other process refuses even the right password
    right = {"email": owner.email, "password": "right-password"}
    assert await status(b, "POST", "/api/auth/login", None, json=right) == 429
    assert await status(a, "POST", "/api/auth/login", None, json=right) == 429


async def test_a_role_change_in_one_process_holds_in_the_other_at_once(apis):
    a, b = apis
    owner = await a.register()
    user, role_id = await user_with_role(a, owner, ["users.read"])
    assert await status(b, "GET", "/api/users", user) == 200  # b caches the role now
    await a.call("PATCH", f"/api/roles/{role_id}", owner, expect=200, json={"permissions": []})
    assert await status(b, "GET", "/api/users", user) == 403
    await a.call(
        "PATCH", f"/api/roles/{role_id}", owner, expect=200, json={"permissions": ["users.read"]}
    )
    assert await status(b, "GET", "/api/users", user) == 200


async def test_a_deactivation_in_one_process_ends_the_users_tokens_in_the_other(apis):
    a, b = apis
    owner = await a.register()
    user, _ = await user_with_role(a, owner, ["users.read"])
    assert await status(b, "GET", "/api/auth/me", user) == 200
    await a.call("DELETE", f"/api/users/{user.user_id}", owner, expect=200)
    assert await status(b, "GET", "/api/auth/me", user) == 401
    refresh = {"refresh_token": user.refresh_token}
    assert await status(b, "POST", "/api/auth/refresh", None, json=refresh) == 401


async def test_a_token_revoked_in_one_process_is_refused_by_the_other(apis):
    a, b = apis
    owner = await a.register()
    token = await a.call(
        "POST",
        "/api/tokens",
        owner,
        expect=201,
        json={"name": "sync", "permissions": ["users.read"]},
    )
    bearer = {"Authorization": f"Bearer {token['token']}"}
    assert await status(b, "GET", "/api/users", None, headers=bearer) == 200
    await a.call("DELETE", f"/api/tokens/{token['id']}", owner, expect=204)
    assert await status(b, "GET", "/api/users", None, headers=bearer) == 401
    # a refresh token ended by a sign-out in one process is refused by the other
    await a.call("POST", "/api/auth/logout", owner, json={"refresh_token": owner.refresh_token})
    refresh = {"refresh_token": owner.refresh_token}
    assert await status(b, "POST", "/api/auth/refresh", None, json=refresh) == 401


async def test_a_table_change_in_one_process_is_used_by_the_other_at_once(apis):
    a, b = apis
    owner = await a.register()
    await a.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    await b.call("POST", "/api/data/t", owner, expect=201, json={"n": 1})  # b caches `t`
    await a.call(
        "POST", "/api/meta/tables/t/columns", owner, expect=201, json={"key": "m", "type": "string"}
    )
    row = await b.call("POST", "/api/data/t", owner, expect=201, json={"n": 2, "m": "new"})
    assert row["m"] == "new"
    await a.call("DELETE", "/api/meta/tables/t/columns/m", owner, expect=200)
    error = await b.call("POST", "/api/data/t", owner, expect=400, json={"m": "gone"})
    assert error["error"]["code"] == "validation_error"


async def test_sms_go_out_exactly_once_across_workers(apis, system):
    a, b = apis
    owner = await a.register()
    numbers = [phone(900_000 + n) for n in range(40)]
    campaign = await a.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "many", "text": "hello", "recipients": [{"phone": p} for p in numbers]},
    )

    async def done() -> bool:
        got = await b.call("GET", f"/api/sms/campaigns/{campaign['id']}", owner, expect=200)
        return bool(got["counts"]["sent"] + got["counts"]["failed"] == len(numbers))

    await eventually(done, "the campaign to be sent")
    got = await b.call("GET", f"/api/sms/campaigns/{campaign['id']}", owner, expect=200)
    assert got["counts"]["sent"] == len(numbers) and got["status"] == "completed"
    wanted = [n.lstrip("+") for n in numbers]  # SMS.ru takes numbers without the plus
    sent = Counter(r.phone for r in system.gateway.received if r.phone in set(wanted))
    assert sent == Counter(wanted)  # every number once: none twice, none missing
    batches = [w.log_text().count("Executing task crm.sms.send_batch") for w in system.workers]
    print(f"SMS batches run per worker: {batches}")


async def test_each_webhook_event_is_delivered_once(apis, system):
    a, b = apis
    owner = await a.register()
    await make_table(a, owner)
    path = f"/hook-{time.monotonic_ns()}"
    hook = await make_hook(a, owner, f"{system.receiver.url}{path}", events=["row.created"])
    titles = [f"row {n}" for n in range(20)]
    for n, title in enumerate(titles):
        api = (a, b)[n % 2]
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": title})

    async def settled() -> bool:
        page = await a.call("GET", f"/api/webhooks/{hook['id']}/deliveries", owner, expect=200)
        final = [d for d in page["items"] if d["status"] in ("succeeded", "failed", "skipped")]
        return len(final) >= len(titles)

    await eventually(settled, "the deliveries to settle")
    page = await a.call("GET", f"/api/webhooks/{hook['id']}/deliveries", owner, expect=200)
    assert sorted(d["status"] for d in page["items"]) == ["succeeded"] * len(titles)
    assert all(d["attempts"] == 1 for d in page["items"])
    received = [r for r in system.receiver.received if r.path == path]
    ids = Counter(r.headers["webhook-id"] for r in received)
    assert len(ids) == len(titles) and set(ids.values()) == {1}, ids
    rows = [item.get("row", item) for r in received for item in r.json["items"]]
    assert sorted(row["title"] for row in rows) == sorted(titles)
