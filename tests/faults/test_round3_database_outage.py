"""The round-3 routes with the database gone (docs/operations.md "Faults: the database"): a
`crm serve` subprocess on mongoeco through a TCP proxy the test cuts. History, trash (list,
restore, purge), files (upload, download), live events (ticket, SSE, WebSocket) answer 503
`service_unavailable` naming the database, never a 500, and the same process answers them
again once the proxy is restored; a purge and a restore refused during the outage change
nothing (the item is restored once afterwards)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, FormData

from tests.support.remote import remote_api, serve_behind
from tests.support.servers import CrmServe, TcpProxy

RECOVERY = 90.0


async def _status(http: ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def test_round3_routes_answer_503_while_the_database_is_cut(
    logs, db_proxy: TcpProxy, http: ClientSession
):
    async with serve_behind(logs, db_proxy.uri) as serve:
        await _round3_outage(serve, db_proxy, http)


async def _round3_outage(serve: CrmServe, proxy: TcpProxy, http: ClientSession) -> None:
    api = remote_api(http, serve)
    owner = await api.register()
    columns = [{"key": "name", "type": "string"}, {"key": "files", "type": "attachment"}]
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "t", "columns": columns}
    )
    form = FormData()
    form.add_field("file", b"hello", filename="a.txt")
    upload = await api.call("POST", "/api/files", owner, expect=201, data=form)
    row = await api.call(
        "POST", "/api/data/t", owner, expect=201, json={"name": "a", "files": [upload["id"]]}
    )
    await api.call("DELETE", f"/api/data/t/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    base, headers = serve.url, owner.headers

    def upload_form() -> FormData:
        fresh = FormData()
        fresh.add_field("file", b"again", filename="b.txt")
        return fresh

    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/api/data/t/{row['id']}/history", {}),
        ("GET", "/api/trash?kind=row", {}),
        ("POST", f"/api/trash/{item['id']}/restore", {}),
        ("POST", "/api/trash/restore", {"json": {"ids": [item["id"], item["id"]]}}),
        ("DELETE", f"/api/trash/{item['id']}", {}),
        ("GET", f"/api/files/{upload['id']}", {}),
        ("POST", "/api/files", {"data": upload_form}),
        ("POST", "/api/events/ticket", {}),
        ("GET", "/api/events?tables=t", {"headers": {"Accept": "text/event-stream"}}),
        ("GET", "/api/audit", {}),
    ]
    proxy.cut()
    answers = {}
    for method, path, extra in calls:
        kwargs = dict(extra)
        if callable(kwargs.get("data")):
            kwargs["data"] = kwargs["data"]()
        kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
        answers[f"{method} {path}"] = await _status(http, method, base + path, **kwargs)
    for call, (status, body) in answers.items():
        assert status == 503, (call, status, body)
        assert body["error"]["code"] == "service_unavailable", (call, body)
        assert body["error"]["details"] == [{"service": "database", "message": "not reachable"}]
    # a WebSocket with the token as a subprotocol: refused before the upgrade, as a 503
    status, body = await _status(
        http,
        "GET",
        base + "/api/events",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": f"crm.events, bearer.{owner.access_token}",
        },
    )
    assert status == 503, body

    proxy.restore()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECOVERY
    while (await http.get(base + "/ready")).status != 200:
        assert loop.time() < deadline, "the service did not recover by itself"
        await asyncio.sleep(0.2)
    # nothing the refused calls asked for happened: the item is there, restored once now
    history = await api.call("GET", f"/api/data/t/{row['id']}/history", owner, expect=200)
    assert [r["action"] for r in history["items"]] == ["deleted", "created"]
    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert restored["files"] == [upload["id"]]
    async with http.get(f"{base}/api/files/{upload['id']}", headers=headers) as resp:
        assert resp.status == 200 and await resp.read() == b"hello"
    log = serve.log_text()
    assert " ERROR " not in log and "unhandled error" not in log, serve.log_tail(80)
    assert serve.starts == 1 and serve.running
