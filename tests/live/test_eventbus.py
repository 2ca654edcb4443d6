"""The live events' bus (crm_core/platform/eventbus.py): in process without Redis; with Redis,
every process's listeners get each message exactly once (its own process directly, the
others through the channel)."""

from __future__ import annotations

import asyncio

import pytest

from crm_core.platform.eventbus import EventBus, RedisEventBus, make_event_bus
from tests.support.waits import DEADLINE

pytestmark = pytest.mark.asyncio


async def test_without_redis_the_bus_is_the_process():
    bus = make_event_bus(None)
    assert type(bus) is EventBus
    got: list[bytes] = []
    bus.listen(got.append)
    await bus.publish(b"one")
    assert got == [b"one"]


async def test_a_failing_listener_does_not_stop_the_others():
    bus = EventBus()
    got: list[bytes] = []

    def broken(message: bytes) -> None:
        raise RuntimeError("boom")

    bus.listen(broken)
    bus.listen(got.append)
    await bus.publish(b"x")
    assert got == [b"x"]


async def test_through_redis_each_process_gets_each_message_once(clean_redis):
    a, b = RedisEventBus(clean_redis), RedisEventBus(clean_redis)
    on_a: list[bytes] = []
    on_b: list[bytes] = []
    a.listen(on_a.append)
    b.listen(on_b.append)
    arrived = asyncio.Event()
    b.listen(lambda message: arrived.set() if message == b"last" else None)
    try:
        for bus in (a, b):
            await bus.start()
        subscribed = asyncio.gather(a.subscribed.wait(), b.subscribed.wait())
        await asyncio.wait_for(subscribed, DEADLINE)
        await a.publish(b"first")
        await a.publish(b"last")
        await asyncio.wait_for(arrived.wait(), DEADLINE)
        # a message of b reaching a through the channel comes after a's own two did: by then
        # a duplicate of them from Redis would have arrived
        back = asyncio.Event()
        a.listen(lambda message: back.set() if message == b"from b" else None)
        await b.publish(b"from b")
        await asyncio.wait_for(back.wait(), DEADLINE)
        assert on_a == [b"first", b"last", b"from b"]  # its own directly, never again
        assert on_b == [b"first", b"last", b"from b"]
    finally:
        for bus in (a, b):
            await bus.close()
