"""The taskiq broker: taskiq-redis's stream broker with `REDIS_URL`, the in-memory broker
without it. Tasks are registered on the broker built here; they find what they need
(`SmsRuntime`) in the broker's state, set by whoever runs them: the API process (embedded
database, or no Redis) or `crm worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq.receiver import Receiver

from crm_core.files.imports import IMPORT_RUN, IMPORT_UPLOAD
from crm_core.platform.outbox import Dispatch, Outbox, Work
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Storage, is_database_unreachable
from crm_core.platform.tracing import configure_tracing
from crm_core.services import TRASH_PURGE, Services
from crm_core.sms.providers import make_provider
from crm_core.sms.ratelimit import SlotLimiter
from crm_core.sms.service import SMS_BATCH, SMS_ONE, SMS_STATUS, CampaignEvents
from crm_core.webhooks.service import WebhookService
from tasks import files, sms

log = logging.getLogger(__name__)

SEND_BATCH = "crm.sms.send_batch"
SEND_ONE = "crm.sms.send_one"
HEARTBEAT = "crm.heartbeat"
WEBHOOK_DELIVER = "crm.webhooks.deliver"
RUN_IMPORT = "crm.files.run_import"
QUEUE = "crm:tasks"
GROUP = "crm-workers"
HEARTBEATS = "crm:workers:heartbeat"  # hash: receiver id -> unix time of its last beat
FORGET_SECONDS = 24 * 3600


async def _send_batch(
    tenant_id: str, campaign_id: str, batch: int, context: Context = TaskiqDepends()
) -> dict[str, int]:
    return await sms.send_batch(
        context.state.sms, context.message.task_id, tenant_id, campaign_id, batch
    )


async def _send_one(tenant_id: str, message_id: str, context: Context = TaskiqDepends()) -> int:
    return await sms.send_one(context.state.sms, context.message.task_id, tenant_id, message_id)


async def _deliver_webhook(
    tenant_id: str, delivery_id: str, context: Context = TaskiqDepends()
) -> str:
    return str(await context.state.webhooks.deliver(tenant_id, delivery_id))


async def _run_import(
    tenant_id: str, job_id: str, user_id: str, context: Context = TaskiqDepends()
) -> None:
    await files.run_import(context.state.files, context.message.task_id, tenant_id, job_id, user_id)


async def _heartbeat() -> None:
    """Does nothing: its arrival makes a consumer look for unacknowledged tasks to take over
    (taskiq-redis claims idle messages only after reading new ones)."""


def build_broker(settings: Settings, consumer_name: str | None = None) -> AsyncBroker:
    broker: AsyncBroker
    if settings.redis_url:
        from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

        broker = RedisStreamBroker(
            settings.redis_url,
            queue_name=QUEUE,
            consumer_group_name=GROUP,
            consumer_name=consumer_name,
            xread_block=1000,
            idle_timeout=int(settings.sms_redelivery_seconds * 1000),
            unacknowledged_lock_timeout=30,
        ).with_result_backend(RedisAsyncResultBackend(settings.redis_url, result_ex_time=3600))
    else:
        broker = InMemoryBroker()
    broker.register_task(_send_batch, task_name=SEND_BATCH)
    broker.register_task(_send_one, task_name=SEND_ONE)
    broker.register_task(_heartbeat, task_name=HEARTBEAT)
    broker.register_task(_deliver_webhook, task_name=WEBHOOK_DELIVER)
    broker.register_task(_run_import, task_name=RUN_IMPORT)
    if (provider := configure_tracing(settings)) is not None:  # issue 28: into the worker
        from taskiq.middlewares.opentelemetry_middleware import OpenTelemetryMiddleware

        broker.add_middlewares(OpenTelemetryMiddleware(tracer_provider=provider))
    return broker


@dataclass
class WorkerSeen:
    name: str
    idle_seconds: float
    pending: int


@dataclass
class QueueStats:
    kind: str
    reachable: bool
    queue_depth: int | None = None  # tasks not yet delivered to any worker
    in_flight: int | None = None  # delivered, not yet acknowledged
    workers: list[WorkerSeen] = field(default_factory=list)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BrokerQueue:
    """`crm_core.sms.service.SmsQueue` on a taskiq broker."""

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker

    async def ping(self) -> bool:
        """Redis answers (always true for the in-memory broker)."""
        redis = self.broker.state.sms.limiter.redis
        if redis is None:
            return True
        try:
            return bool(await redis.ping())
        except Exception as exc:  # any connection failure means "not ready": one line each
            log.warning("Redis ping failed: %r", exc)
            return False

    async def metrics_stats(self, heartbeat_seconds: float) -> dict[str, Any] | None:
        """For /metrics: tasks waiting in the stream (not yet read by the group), pending
        (read, not acknowledged) and each receiver's last heartbeat. None without Redis."""
        redis = self.broker.state.sms.limiter.redis
        if redis is None:
            return None
        waiting = pending = 0
        if await redis.exists(QUEUE):
            for group in await redis.xinfo_groups(QUEUE):
                if _text(group.get("name")) == GROUP:
                    waiting = int(group.get("lag") or 0)
                    pending = int(group.get("pending") or 0)
        beats = {_text(k): float(v) for k, v in (await redis.hgetall(HEARTBEATS)).items()}
        # a receiver that died without a clean stop stays visible (stale) for a day, then goes
        forgotten = [k for k, stamp in beats.items() if time.time() - stamp > FORGET_SECONDS]
        if forgotten:
            await redis.hdel(HEARTBEATS, *forgotten)
        return {
            "waiting": waiting,
            "pending": pending,
            "heartbeats": {k: v for k, v in beats.items() if k not in forgotten},
            "heartbeat_seconds": heartbeat_seconds,
        }

    async def stats(self) -> QueueStats:
        """What the operator's system page shows: the broker, its backlog, the workers seen."""
        redis = self.broker.state.sms.limiter.redis
        if redis is None:
            return QueueStats(kind="in-memory (tasks run in the API process)", reachable=True)
        stats = QueueStats(kind=f"Redis stream {QUEUE}", reachable=await self.ping())
        if not stats.reachable:
            return stats
        try:
            groups = await redis.xinfo_groups(QUEUE)
            consumers = await redis.xinfo_consumers(QUEUE, GROUP)
        except Exception:  # the stream or the group does not exist before the first task
            log.info("no task stream yet", exc_info=True)
            stats.queue_depth, stats.in_flight = 0, 0
            return stats
        group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
        if group is not None:
            stats.queue_depth = int(group.get("lag") or 0)
            stats.in_flight = int(group.get("pending") or 0)
        stats.workers = [
            WorkerSeen(
                name=_text(c.get("name")),
                idle_seconds=int(c.get("idle") or 0) / 1000,
                pending=int(c.get("pending") or 0),
            )
            for c in consumers
        ]
        return stats

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None:
        task = self.broker.find_task(SEND_BATCH)
        assert task is not None
        await task.kiq(tenant_id, campaign_id, batch)

    async def send_one(self, tenant_id: str, message_id: str) -> None:
        task = self.broker.find_task(SEND_ONE)
        assert task is not None
        await task.kiq(tenant_id, message_id)

    async def run_import(self, tenant_id: str, job_id: str, user_id: str) -> None:
        """`crm_core.files.imports.ImportQueue`."""
        task = self.broker.find_task(RUN_IMPORT)
        assert task is not None
        await task.kiq(tenant_id, job_id, user_id)


class WebhookBrokerQueue:
    """`crm_core.webhooks.service.WebhookQueue` on a taskiq broker."""

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker

    async def deliver(self, tenant_id: str, delivery_id: str) -> None:
        task = self.broker.find_task(WEBHOOK_DELIVER)
        assert task is not None
        await task.kiq(tenant_id, delivery_id)


async def make_runtime(
    settings: Settings, storage: Storage, webhooks: CampaignEvents, outbox: Outbox
) -> sms.SmsRuntime:
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url)
    return sms.SmsRuntime(
        settings=settings,
        storage=storage,
        provider=make_provider(settings),
        limiter=SlotLimiter(settings.sms_rate_per_second, redis),
        webhooks=webhooks,
        outbox=outbox,
    )


async def start_broker(services: Services, consumer_name: str | None = None) -> AsyncBroker:
    """A started broker whose tasks find their runtimes in its state, made from `services`
    (crm_core/services.py `build_services`: the API passes its own, a worker builds its own,
    so both know the same column types); the services' queue hands its work to this broker
    from now on."""
    settings, storage = services.settings, services.storage
    broker = build_broker(settings, consumer_name)
    events = services.sms.events or services.webhooks  # campaign.finished and .progress
    broker.state.sms = await make_runtime(settings, storage, events, services.outbox)
    broker.state.webhooks = services.webhooks
    broker.state.live_bus = services.live.bus  # live events the tasks publish (campaigns)
    broker.state.files = files.FilesRuntime(settings, storage, services.imports)
    broker.state.outbox = services.outbox
    broker.state.trash = services.trash  # a trashed table's rows, dropped once expired
    broker.state.history = services.rows.changes  # revisions a stopped process left unstored
    broker.state.column_types = services.column_types
    broker.state.attachments = services.files  # the orphan sweep (crm_core/files/attachments.py)
    broker.state.attachments_storage = storage
    queue = BrokerQueue(broker)
    services.queue.connect(
        sms=queue, imports=queue, webhooks=WebhookBrokerQueue(broker), probe=queue
    )
    await broker.startup()
    return broker


def outbox_dispatch(broker: AsyncBroker) -> dict[str, Dispatch]:
    """What the sweeper does with each kind of recorded work (crm_core/platform/outbox.py): queue it
    on this broker, or, for an upload in progress, check it here."""
    queue = BrokerQueue(broker)
    runtime: files.FilesRuntime = broker.state.files

    async def send_batch(work: Work) -> None:
        await queue.send_batch(work.tenant_id, str(work.args[0]), int(work.args[1]))

    async def send_one(work: Work) -> None:
        await queue.send_one(work.tenant_id, str(work.args[0]))

    async def run_import(work: Work) -> None:
        await queue.run_import(work.tenant_id, str(work.args[0]), str(work.args[1]))

    async def watch_upload(work: Work) -> None:
        db = runtime.storage.tenant_db(work.tenant_id)
        await runtime.imports.expire_upload(db, work.tenant_id, str(work.args[0]))

    async def poll_status(work: Work) -> None:  # delivery reports: polled here, not queued
        await sms.poll_status(broker.state.sms, work.tenant_id, str(work.args[0]))

    async def purge_trash(work: Work) -> None:  # docs/history.md "Trash": done here, not queued
        db = runtime.storage.tenant_db(work.tenant_id)
        if await broker.state.trash.purge_expired(db, *(str(arg) for arg in work.args[:3])):
            await broker.state.outbox.done(work.key)

    return {
        TRASH_PURGE: purge_trash,
        SMS_BATCH: send_batch,
        SMS_ONE: send_one,
        SMS_STATUS: poll_status,
        IMPORT_RUN: run_import,
        IMPORT_UPLOAD: watch_upload,
    }


async def stop_broker(broker: AsyncBroker) -> None:
    await broker.shutdown()
    await broker.state.sms.provider.close()
    await broker.state.webhooks.close()
    live_bus = getattr(broker.state, "live_bus", None)
    if live_bus is not None:  # its Redis client, made by the first event a task published
        await live_bus.close()


@contextlib.asynccontextmanager
async def sweeping(broker: AsyncBroker, settings: Settings) -> AsyncIterator[None]:
    """Where tasks run: queue webhook retries and the outbox's due work
    (crm_core/platform/outbox.py), every `WEBHOOK_SWEEP_SECONDS`, until the block ends."""
    sweeper = asyncio.create_task(_sweep(broker, settings), name="crm-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


async def _sweep(broker: AsyncBroker, settings: Settings) -> None:
    webhooks: WebhookService = broker.state.webhooks
    outbox: Outbox = broker.state.outbox
    dispatch = outbox_dispatch(broker)
    recovered_at = time.monotonic()  # a round after the start, then every interval
    while True:
        await asyncio.sleep(settings.webhook_sweep_seconds)
        if time.monotonic() - recovered_at >= settings.history_recovery_seconds:
            recovered_at = time.monotonic()
            try:  # docs/history.md "Crash between a write and its revision"
                await broker.state.history.recover_all(
                    broker.state.files.storage,
                    broker.state.column_types,
                    timedelta(seconds=settings.history_recovery_grace_seconds),
                )
            except Exception as exc:
                log.warning("history recovery failed: %r", exc, exc_info=True)
        try:
            await webhooks.sweep()
        except Exception as exc:  # the database away for a moment: the next round tries again
            # an outage is announced once by crm.outages: one line here, no traceback
            log.warning("webhook sweep failed: %r", exc, exc_info=not is_database_unreachable(exc))
        try:
            await outbox.sweep(dispatch)
        except Exception as exc:  # the database away: the next round tries again; one line
            log.warning("outbox sweep failed: %r", exc, exc_info=not is_database_unreachable(exc))
        try:  # uploaded files never attached (at most every few minutes)
            await broker.state.attachments.sweep(broker.state.attachments_storage)
        except Exception as exc:  # the database away: the next round tries again; one line
            log.warning("file sweep failed: %r", exc, exc_info=not is_database_unreachable(exc))


@contextlib.asynccontextmanager
async def receiving(broker: AsyncBroker, settings: Settings) -> AsyncIterator[Receiver]:
    """Run a receiver (and, with Redis, the heartbeat) until the block ends."""
    receiver = Receiver(broker, run_startup=False, max_async_tasks=50)
    finish = asyncio.Event()
    listener = asyncio.create_task(_listen(broker, receiver, finish), name="crm-receiver")
    pulse = asyncio.create_task(_pulse(broker, settings), name="crm-heartbeat")
    alive = asyncio.create_task(_worker_heartbeat(broker, settings), name="crm-alive")  # ops
    try:
        async with sweeping(broker, settings):
            yield receiver
    finally:
        pulse.cancel()
        finish.set()
        # The receiver notices `finish` between messages; an idle one sits in a blocking stream
        # read, so it is cancelled after the grace period. `asyncio.wait` never waits for a
        # cancellation to complete (`wait_for` does, and a stream read cancelled mid-reply can
        # hang until the broker's connections close in `stop_broker`).
        try:
            await asyncio.wait({listener}, timeout=settings.sms_send_timeout_seconds + 5)
        finally:
            if not listener.done():
                listener.cancel()
                await asyncio.wait({listener}, timeout=5)
            alive.cancel()  # after the running tasks: the beat goes when the receiver stops
            await asyncio.wait({alive}, timeout=2)  # removes its beat from Redis


async def _listen(broker: AsyncBroker, receiver: Receiver, finish: asyncio.Event) -> None:
    """Receive until `finish`. A receiver that stops on a broker failure (Redis stopped; Redis
    back empty, without the consumer group) is started again after a pause, with the group
    declared again: a worker outlives an outage. Tasks already running go on meanwhile."""
    pause = 0.2
    while True:
        try:
            await receiver.listen(finish)
        except BaseException as exc:  # the receiver stopped on a broker error
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this worker is stopping
            log.warning("the task receiver stopped on a broker error: %r", exc, exc_info=True)
        if finish.is_set():
            return
        log.warning("the task receiver stopped; listening again in %.1f s", pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finish.wait(), pause)
        if finish.is_set():
            return
        pause = min(pause * 2, 5.0)
        await _declare_group(broker)
        receiver = Receiver(broker, run_startup=False, max_async_tasks=50)


async def _declare_group(broker: AsyncBroker) -> None:
    """The consumer group, made again after Redis restarted empty; from the stream's start, so
    that tasks queued since the restart (the sweeper's) are read too."""
    pool = getattr(broker, "connection_pool", None)
    if pool is None:  # the in-memory broker
        return
    from redis.asyncio import Redis

    try:
        async with Redis(connection_pool=pool) as redis:
            await redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists; or Redis is still away
        log.info("consumer group not declared: %s", exc)


async def _pulse(broker: AsyncBroker, settings: Settings) -> None:
    if not settings.redis_url:
        return
    task = broker.find_task(HEARTBEAT)
    assert task is not None
    period = max(0.2, settings.sms_redelivery_seconds / 2)
    while True:
        await asyncio.sleep(period)
        try:
            await task.kiq()
        except Exception:  # Redis away for a moment: the next beat tries again
            log.warning("heartbeat could not be sent", exc_info=True)


def receiver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _worker_heartbeat(broker: AsyncBroker, settings: Settings) -> None:
    """Every WORKER_HEARTBEAT_SECONDS: the receiver's beat in Redis (for /metrics) and the
    mtime of WORKER_HEARTBEAT_FILE (for `crm worker-health`, the container healthcheck). The
    beat is removed when the receiver stops cleanly."""
    redis = broker.state.sms.limiter.redis
    me = receiver_id()
    path = Path(settings.worker_heartbeat_file) if settings.worker_heartbeat_file else None
    try:
        while True:
            try:
                if path is not None:
                    path.touch()
                if redis is not None:
                    await redis.hset(HEARTBEATS, me, str(time.time()))
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("worker heartbeat could not be written", exc_info=True)
            await asyncio.sleep(settings.worker_heartbeat_seconds)
    finally:
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.hdel(HEARTBEATS, me)
