"""Webhook test helpers: a local receiver (an aiohttp app that records every request and
answers with the statuses it is told to, 200 when told nothing), the receiver's signature
check, and API helpers that register webhooks and wait for their deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.api import Api
from tests.support.waits import until


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    script: deque[int] = field(default_factory=deque)  # statuses of the next answers
    always: int = 200

    def answer_next(self, *statuses: int) -> None:
        self.script.extend(statuses)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        status = self.script.popleft() if self.script else self.always
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": f"{self.url}/elsewhere"})
        return web.Response(status=status, text="ok")

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [r.json for r in self.received if r.path == path]


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does (the snippet in docs/integrations.md, written independently of
    the service's code): recompute the HMAC over `{id}.{timestamp}.{body}`."""
    message_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


ROW_EVENTS = ["row.created", "row.updated", "row.deleted"]


async def make_table(api: Api, account, key: str = "deals") -> None:
    await api.call(
        "POST",
        "/api/meta/tables",
        account,
        expect=201,
        json={
            "key": key,
            "columns": [
                {"key": "title", "type": "string", "required": True},
                {"key": "amount", "type": "integer"},
            ],
        },
    )


async def make_hook(api: Api, account, url: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "sync", "url": url, "events": ROW_EVENTS, "tables": ["deals"], **fields}
    return await api.call("POST", "/api/webhooks", account, expect=201, json=body)


async def wait_for(condition, what: str = "condition") -> None:
    await until(condition, what)  # the deadline only bounds a hang (tests/support/waits.py)


async def deliveries(api: Api, account, hook_id: str, **query: Any) -> list[dict[str, Any]]:
    page = await api.call(
        "GET", f"/api/webhooks/{hook_id}/deliveries", account, expect=200, params=query
    )
    return page["items"]


async def settled(api: Api, account, hook_id: str, count: int) -> list[dict[str, Any]]:
    """The log once `count` deliveries have reached a final state."""

    async def done() -> bool:
        items = await deliveries(api, account, hook_id)
        final = [d for d in items if d["status"] in ("succeeded", "failed", "skipped")]
        return len(final) >= count

    await wait_for(done, f"{count} settled deliveries")
    return await deliveries(api, account, hook_id)
