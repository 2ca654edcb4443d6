"""Live events in tests (docs/api.md "Live events"): a WebSocket or SSE client that reads
frames by type, and the ping/pong barrier that proves a frame did NOT come.

Frames of one connection are written in the order they were queued, and a write through the
API queues its events on every connection of the process before it answers (the in-process
bus; through Redis, the test waits for the event on a connection that does see it first).
So after the write, a `ping` answered by `pong` without the frame means it was never queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import ClientResponse, ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from tests.support.waits import DEADLINE

WAIT = DEADLINE  # a bound on waiting for a frame that must come (never a pass condition)


class LiveSocket:
    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame that is not a heartbeat; a close is `{"type": "_closed", code}`."""
        while True:
            async with asyncio.timeout(timeout):
                message = await self.ws.receive()
            if message.type == WSMsgType.TEXT:
                frame = orjson.loads(message.data)
                if frame["type"] == "heartbeat":
                    continue
                self.seen.append(frame)
                return frame
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                # the code as the client ends the close handshake with (1006: the server
                # dropped the connection without waiting for the client's answer)
                closed = {"type": "_closed", "code": self.ws.close_code, "extra": message.extra}
                self.seen.append(closed)
                return closed
            raise AssertionError(f"unexpected message {message.type}")

    async def expect(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """Frames up to the first of `kind` (the skipped ones stay in `seen`)."""
        while True:
            frame = await self.next(timeout)
            if frame["type"] == kind:
                return frame
            if frame["type"] == "_closed":
                raise AssertionError(f"closed ({frame}) while waiting for {kind}: {self.seen}")

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def barrier(self) -> list[dict[str, Any]]:
        """Every frame queued before now (ping → pong): what arrived before the pong."""
        before = len(self.seen)
        await self.send(type="ping")
        await self.expect("pong")
        return [f for f in self.seen[before:-1]]

    async def closed(self, timeout: float = WAIT) -> dict[str, Any]:
        """Read until the server closes; answers the `close` frame with the close code."""
        close_frame: dict[str, Any] = {}
        while True:
            frame = await self.next(timeout)
            if frame["type"] == "close":
                close_frame = frame
            if frame["type"] == "_closed":
                return {**close_frame, "ws_code": frame["code"]}

    async def subscribe(self, table: str, **extra: Any) -> dict[str, Any]:
        await self.send(type="subscribe", table=table, **extra)
        return await self.next()


async def ws_connect(
    client: TestClient, token: str | None = None, first_frame: bool = False, query: str = ""
) -> LiveSocket:
    """A WebSocket to /api/events: the token as a subprotocol, or (first_frame) in `auth`."""
    protocols = ["crm.events"]
    if token is not None and not first_frame:
        protocols.append(f"bearer.{token}")
    ws = await client.ws_connect(f"/api/events{query}", protocols=protocols)
    live = LiveSocket(ws)
    if token is not None and first_frame:
        await live.send(type="auth", token=token)
    return live


async def ready(live: LiveSocket) -> LiveSocket:
    await live.expect("ready")
    return live


class SseReader:
    """Frames of an SSE answer: `{"event", "id", "data"}`."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        event: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode()
                if line == "":
                    return {"event": "_eof"}
                line = line.rstrip("\n")
                if not line:
                    if "event" in event:
                        return event
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                event[name] = orjson.loads(value) if name == "data" else value

    async def expect(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        while True:
            event = await self.next(timeout)
            if event["event"] == kind:
                return event
            assert event["event"] != "_eof", f"stream ended while waiting for {kind}"


async def sse_connect(
    session: ClientSession | TestClient, path: str, token: str, **headers: str
) -> SseReader:
    response = await session.get(
        path,
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **headers},
    )
    assert response.status == 200, await response.text()
    return SseReader(response)
