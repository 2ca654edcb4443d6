"""A fake SMS.ru gateway for the tests: an aiohttp app that records every request and can be
told how to answer the next ones (OK, HTTP errors, SMS.ru errors, or no answer at all)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from crm_core.platform.settings import Settings
from tests.support.api import make_settings


def phone(n: int) -> str:
    """The n-th of a series of valid Russian mobile numbers."""
    return f"+7916{n:07d}"


def gateway_settings(gateway: FakeGateway, **overrides: Any) -> Settings:
    """Test settings that send through the fake SMS.ru gateway."""
    values = {
        "sms_provider": "smsru",
        "smsru_api_id": "test-api-id",
        "smsru_base_url": gateway.url,
        **overrides,
    }
    return make_settings(**values)


def redis_settings(redis_url: str, gateway: FakeGateway, **overrides: Any) -> Settings:
    """Settings for SMS through Redis and the fake gateway, with short timeouts. Not too
    short: the fake gateway answers in the test's own process, which a loaded machine slows
    down, and a send that times out after the gateway accepted it is `unknown` (0.2 s did
    that under load); the redelivery must exceed the longest send (2 attempts)."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "sms_rate_per_second": 20,
        "sms_batch_size": 10,
        "sms_send_timeout_seconds": 2.0,
        "sms_max_attempts": 2,
        "sms_retry_base_seconds": 0.05,
        "sms_redelivery_seconds": 5.0,
        "api_runs_tasks": False,
    }
    values.update(overrides)
    return gateway_settings(gateway, **values)


@dataclass
class Received:
    phone: str
    text: str
    at: float
    sms_id: str = ""


API_ID = "test-api-id"


def callback_hash(data: list[str], api_id: str = API_ID) -> str:
    """SMS.ru's callback signature: sha256(api_id + the data entries concatenated)."""
    return hashlib.sha256((api_id + "".join(data)).encode()).hexdigest()


def status_entry(sms_id: str, code: int, at: int = 1_700_000_000) -> str:
    return f"sms_status\n{sms_id}\n{code}\n{at}"


def _per_number(behaviour: str) -> bool:
    return behaviour in ("ok", "missing") or behaviour.startswith("error")


@dataclass
class FakeGateway:
    received: list[Received] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)  # behaviours for the next requests
    hang_seconds: float = 5.0
    accepted: list[Received] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # sms_id -> code sms/status gives
    status_requests: list[list[str]] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)  # the numbers of each sms/send
    url: str = ""

    def fail_next(self, *behaviours: str) -> None:
        """How to answer what comes next, in order. About a whole request (taken by the next
        request): '500', '429', '408', '504', '400' (that HTTP status), 'hang' (no answer for
        `hang_seconds`), 'unreadable' (HTTP 200, not JSON), 'top206' (SMS.ru's request status
        ERROR with that code). About one number (taken by the next numbers of a request, in
        order): 'ok', 'error207' (that SMS.ru code for the number), 'missing' (the answer
        leaves the number out)."""
        self.script.extend(behaviours)

    def _request_behaviour(self) -> str:
        if self.script and not _per_number(self.script[0]):
            return self.script.popleft()
        return "ok"

    def _number_behaviour(self) -> str:
        if self.script and _per_number(self.script[0]):
            return self.script.popleft()
        return "ok"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sms/send", self.send)
        app.router.add_post("/sms/status", self.status)
        app.router.add_post("/sms/cost", self.cost)
        return app

    price_per_part: float = 1.5
    cost_requests: int = 0

    async def cost(self, request: web.Request) -> web.Response:
        """`sms/cost` for `to[NUMBER]=text` messages: `price_per_part` per SMS part."""
        from crm_core.sms.parts import parts

        form = await request.post()
        assert form.get("api_id") == API_ID and form.get("json") == "1"
        self.cost_requests += 1
        texts = [str(v) for k, v in form.items() if k.startswith("to[")]
        n = sum(parts(t) for t in texts)
        return web.json_response(
            {
                "status": "OK",
                "status_code": 100,
                "total_cost": n * self.price_per_part,
                "total_sms": n,
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        """`sms/status`: a code per id (103 when told so, else 102 "sent"; -1 for an id it
        never gave)."""
        form = await request.post()
        assert form.get("api_id") == API_ID and form.get("json") == "1"
        ids = [i for i in str(form.get("sms_id", "")).split(",") if i]
        self.status_requests.append(ids)
        known = {r.sms_id for r in self.accepted}
        sms: dict[str, Any] = {}
        for sms_id in ids:
            if sms_id not in known:
                sms[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": "no such id"}
                continue
            code = self.statuses.get(sms_id, 102)
            sms[sms_id] = {"status": "OK", "status_code": code, "status_text": f"code {code}"}
        return web.json_response({"status": "OK", "status_code": 100, "sms": sms})

    async def fire_callback(
        self,
        url: str,
        entries: list[str],
        signed_with: str = API_ID,
        given_hash: str | None = None,
    ) -> tuple[int, str]:
        """POST a delivery callback as SMS.ru does (`data[]` entries and `hash`); a wrong
        hash with `signed_with` another api_id or `given_hash`. Returns status and body."""
        form = [("data[]", e) for e in entries]
        form.append(("hash", given_hash or callback_hash(entries, signed_with)))
        async with aiohttp.ClientSession() as session, session.post(url, data=form) as resp:
            return resp.status, await resp.text()

    async def send(self, request: web.Request) -> web.Response:
        """`sms/send` with `to[NUMBER]=text` (up to 100 numbers): a request status, then a
        status, code and `sms_id` per number, as `fail_next` says."""
        form = await request.post()
        assert form.get("api_id") == API_ID and form.get("json") == "1"
        numbers = [(k[3:-1], str(v)) for k, v in form.items() if k.startswith("to[")]
        assert 1 <= len(numbers) <= 100 and len({n for n, _ in numbers}) == len(numbers)
        self.requests.append([n for n, _ in numbers])
        items = [Received(number, text, time.monotonic()) for number, text in numbers]
        self.received.extend(items)
        behaviour = self._request_behaviour()
        if behaviour == "hang":
            await asyncio.sleep(self.hang_seconds)
        if behaviour.isdigit():
            return web.Response(status=int(behaviour), text="gateway trouble")
        if behaviour == "unreadable":
            return web.Response(status=200, text="<html>maintenance</html>")
        if behaviour.startswith("top"):
            code = int(behaviour[3:])
            return web.json_response(
                {"status": "ERROR", "status_code": code, "status_text": f"code {code}"}
            )
        sms: dict[str, Any] = {}
        for item in items:
            number = self._number_behaviour()
            if number == "missing":
                continue
            if number.startswith("error"):
                code = int(number[5:])
                sms[item.phone] = {
                    "status": "ERROR",
                    "status_code": code,
                    "status_text": f"code {code}",
                }
                continue
            self.accepted.append(item)
            item.sms_id = f"000000-{len(self.accepted)}"
            sms[item.phone] = {"status": "OK", "status_code": 100, "sms_id": item.sms_id}
        return web.json_response({"status": "OK", "status_code": 100, "sms": sms, "balance": 100.0})

    def accepted_per_phone(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.accepted:
            counts[item.phone] = counts.get(item.phone, 0) + 1
        return counts


class SlotRecorder:
    """Wraps a receiver's rate limiter and keeps the send slots it hands out: the rate is
    checked on the slots the shared limiter granted, not on arrival times a loaded machine
    shifts."""

    def __init__(self, inner, slots):
        self.inner = inner
        self.slots = slots

    async def wait(self, tenant_id, count=1):
        granted = await self.inner.wait(tenant_id, count)
        self.slots.extend(granted)
        return granted


def max_in_window(moments, seconds=1.0):
    times = sorted(moments)
    best = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= seconds - 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


# what the SMS tests run with (tests/sms/conftest.py): a fast rate, small batches, short waits
SMS_TEST_SETTINGS: dict[str, Any] = {
    "sms_rate_per_second": 200,
    "sms_max_attempts": 3,
    "sms_retry_base_seconds": 0.01,
    "sms_send_timeout_seconds": 0.3,
    "sms_redelivery_seconds": 5,
    "sms_batch_size": 4,
}


def sms_test_settings(gateway: FakeGateway, **overrides: Any) -> Settings:
    """The SMS tests' settings through the fake gateway, with `overrides`."""
    return gateway_settings(gateway, **{**SMS_TEST_SETTINGS, **overrides})
