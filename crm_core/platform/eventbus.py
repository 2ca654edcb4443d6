"""The process-crossing event bus of live events (docs/api.md "Live events").

One message is bytes (the live domain encodes it, crm_core/live/events.py). `publish` hands it
to this process's listeners at once and, when `REDIS_URL` is set, to every other process
through one Redis pub/sub channel; a process skips its own messages coming back from Redis
(each message is prefixed with the id of the process that sent it). Without Redis the bus is
this process alone.

Pub/sub delivers at most once: a process that is cut off from Redis misses what was published
meanwhile, and its clients catch up from the row history when they reconnect with their last
event id (`since` / `Last-Event-ID`). The bus knows no domain.

Redis failing (docs/operations.md "Faults: Redis and live events"): `publish` never waits on
Redis. It queues the message for one sender task per process, which sends them in order, in
pipelines, each call bounded by `REDIS_TIMEOUT_SECONDS`; a failed send is tried again every
`RECONNECT_SECONDS` (at most `MAX_PENDING` messages wait; past that the oldest go). The reader
pings the channel's connection every `PING_SECONDS` and counts it lost when nothing came back
for `SILENT_SECONDS` (a stopped Redis answers nothing and closes nothing). Once the channel is
read again after a loss, the gap listeners are told (the live domain closes its connections so
that clients resume with `since`). One WARNING per outage, one INFO when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = b"crm:live"
ORIGIN_BYTES = 16  # uuid4 bytes of the sending process
RECONNECT_SECONDS = 1.0
REDIS_TIMEOUT_SECONDS = 1.0  # a connect or a publish to a Redis that does not answer
PING_SECONDS = 1.0  # the reader's liveness check of its connection
SILENT_SECONDS = 3.0  # nothing heard for this long: the subscription is lost
PING_PAYLOAD = b"crm-live"
MAX_PENDING = 10_000  # messages waiting for Redis in one process
SEND_BATCH = 100  # messages per pipeline

Listener = Callable[[bytes], None]
GapListener = Callable[[], None]


class SubscriptionLost(Exception):
    """The channel's connection stopped answering pings."""


class EventBus:
    """In-process fan-out; `RedisEventBus` adds the other processes."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().bytes
        self.listeners: list[Listener] = []
        self.gap_listeners: list[GapListener] = []

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def on_gap(self, listener: GapListener) -> None:
        """Told when messages of other processes may have been missed (the channel is read
        again after it was lost)."""
        self.gap_listeners.append(listener)

    def gap(self) -> None:
        for listener in list(self.gap_listeners):
            try:
                listener()
            except Exception:
                log.exception("a live event gap listener failed")

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
        self._client: Any = None  # publishes (bounded by REDIS_TIMEOUT_SECONDS)
        self._reader_client: Any = None  # the subscription (its reads wait for messages)
        self._reader: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set once the channel is read (tests wait for it)
        self._pending: deque[tuple[int, bytes]] = deque()  # (sequence, payload) to send
        self._sequence = itertools.count()
        self._sender: asyncio.Task[None] | None = None
        self._wake_sender = asyncio.Event()
        self.dropped = 0  # messages that never reached Redis (the queue was full)
        self._down_since: dict[str, float] = {}  # the outage being logged, by what failed

    def _redis(self) -> Any:
        if self._client is None:
            from redis.asyncio import Redis

            self._client = Redis.from_url(
                self.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
        return self._client

    def _subscriber(self) -> Any:
        if self._reader_client is None:
            from redis.asyncio import Redis

            self._reader_client = Redis.from_url(
                self.redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
            )
        return self._reader_client

    def _lost(self, what: str, error: BaseException) -> None:
        if what not in self._down_since:
            self._down_since[what] = time.monotonic()
            log.warning("live events: Redis unreachable (%s): %r", what, error)

    def _back(self, what: str) -> None:
        if what in self._down_since:
            seconds = time.monotonic() - self._down_since.pop(what)
            log.info("live events: Redis reachable again (%s) after %.1f s", what, seconds)

    async def publish(self, message: bytes) -> None:
        """Deliver here at once; queue for the other processes (never waits on Redis)."""
        self.deliver(message)
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % MAX_PENDING == 0:
                log.warning("live events: %d messages dropped waiting for Redis", self.dropped)
        self._pending.append((next(self._sequence), self.origin + message))
        self._wake_sender.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            while self._pending:
                if not await self._send_batch():
                    await asyncio.sleep(RECONNECT_SECONDS)

    async def _send_batch(self) -> bool:
        """Send the oldest waiting messages in one pipeline; False when Redis failed."""
        batch = list(itertools.islice(self._pending, SEND_BATCH))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS * 2):
                pipe = self._redis().pipeline(transaction=False)
                for _, payload in batch:
                    pipe.publish(self.channel, payload)
                await pipe.execute()
        except Exception as exc:  # TimeoutError included: the messages wait (in order)
            self._lost("publish", exc)
            return False
        last = batch[-1][0]
        while self._pending and self._pending[0][0] <= last:  # some may have been dropped
            self._pending.popleft()
        self._back("publish")
        return True

    async def start(self) -> None:
        """Start reading the channel (the API processes; a worker only publishes)."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        lost = False
        while True:
            pubsub = self._subscriber().pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(SILENT_SECONDS):
                    await pubsub.subscribe(self.channel)
                self.subscribed.set()
                self._back("subscription")
                if lost:  # what other processes published meanwhile never came
                    lost = False
                    self.gap()
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                lost = True
                self._lost("subscription", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                        await pubsub.aclose()

    async def _listen(self, pubsub: Any) -> None:
        """Deliver the channel's messages; ping when it is quiet; SubscriptionLost when
        nothing (not even a pong) came for SILENT_SECONDS."""
        heard = pinged = time.monotonic()
        while True:
            now = time.monotonic()
            if now - heard > SILENT_SECONDS:
                raise SubscriptionLost(f"no answer from Redis for {now - heard:.1f} s")
            if now - pinged >= PING_SECONDS:
                pinged = now
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    await pubsub.ping(PING_PAYLOAD)
            item = await pubsub.get_message(timeout=PING_SECONDS)
            if item is None:
                continue
            heard = time.monotonic()
            data = item.get("data")
            if item.get("type") not in ("message", "pmessage"):
                continue  # a pong
            if isinstance(data, bytes) and data[:ORIGIN_BYTES] != self.origin:
                self.deliver(data[ORIGIN_BYTES:])

    async def close(self) -> None:
        for task in (self._reader, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reader = self._sender = None
        if self._pending:  # one last try for what waits (a worker stopping after a campaign)
            await self._send_batch()
        for client in (self._client, self._reader_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._reader_client = None


def make_event_bus(redis_url: str | None) -> EventBus:
    return RedisEventBus(redis_url) if redis_url else EventBus()
