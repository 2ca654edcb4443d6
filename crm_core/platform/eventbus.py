"""The process-crossing event bus of live events (docs/api.md "Live events").

One message is bytes (the live domain encodes it, crm_core/live/events.py). `publish` hands it
to this process's listeners at once and, when `REDIS_URL` is set, to every other process
through one Redis pub/sub channel; a process skips its own messages coming back from Redis
(each message is prefixed with the id of the process that sent it). Without Redis the bus is
this process alone.

Pub/sub delivers at most once: a process that is cut off from Redis misses what was published
meanwhile, and its clients catch up from the row history when they reconnect with their last
event id (`since` / `Last-Event-ID`). The bus knows no domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = b"crm:live"
ORIGIN_BYTES = 16  # uuid4 bytes of the sending process
RECONNECT_SECONDS = 1.0

Listener = Callable[[bytes], None]


class EventBus:
    """In-process fan-out; `RedisEventBus` adds the other processes."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().bytes
        self.listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.remove(listener)

    def deliver(self, message: bytes) -> None:
        """Hand a message to this process's listeners (a failing listener is logged)."""
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception:
                log.exception("a live event listener failed")

    async def publish(self, message: bytes) -> None:
        self.deliver(message)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisEventBus(EventBus):
    """Local fan-out plus one Redis pub/sub channel every API process reads."""

    def __init__(self, redis_url: str, channel: bytes = CHANNEL) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.channel = channel
        self._client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set once the channel is read (tests wait for it)

    def _redis(self) -> Any:
        if self._client is None:
            from redis.asyncio import Redis

            self._client = Redis.from_url(self.redis_url)
        return self._client

    async def publish(self, message: bytes) -> None:
        self.deliver(message)
        try:
            await self._redis().publish(self.channel, self.origin + message)
        except Exception:  # the write is done; other processes miss this one event
            log.warning("live event not published to Redis", exc_info=True)

    async def start(self) -> None:
        """Start reading the channel (the API processes; a worker only publishes)."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                async for item in pubsub.listen():
                    data = item.get("data")
                    if isinstance(data, bytes) and data[:ORIGIN_BYTES] != self.origin:
                        self.deliver(data[ORIGIN_BYTES:])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.subscribed.clear()
                log.warning("live events: Redis subscription lost; retrying", exc_info=True)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None


def make_event_bus(redis_url: str | None) -> EventBus:
    return RedisEventBus(redis_url) if redis_url else EventBus()
