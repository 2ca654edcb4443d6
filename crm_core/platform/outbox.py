"""The outbox (docs/operations.md, "Workers and Redis"): every unit of background work (an SMS
campaign's batch, a resent message, a confirmed import, an upload in progress) is recorded in
the system database before it is handed to the broker, and stays recorded until the work
itself says it is finished. The broker is a fast path, not the record: a sweeper (in every
worker, and in `crm serve` when it runs tasks) hands again what is due: work whose hand-off
failed (Redis down), work Redis forgot (restarted empty), work whose worker died.

Each entry is a lease: `due_at` is when it may be handed again. Handing it (at creation or by
a sweeper) pushes `due_at` by the entry's `lease_seconds`; a worker at work on it pushes it
further (`Lease.keep`). Sweepers claim entries with one conditional update each, so several
sweeping at once never hand the same entry twice per lease. A second delivery of the same
work is always possible (a lease that ran out under a slow worker) and harmless: whether a
message is sent or an import runs is decided by the claims on the work's own documents
(crm_core/sms/service.py, crm_core/files/imports.py), never by the queue.

Webhook deliveries have the same design in their own collection (`webhook_due`,
crm_core/webhooks/service.py), which predates this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from crm_core.platform.clock import utcnow
from crm_core.platform.storage import Collection, Storage

log = logging.getLogger(__name__)

OUTBOX = "task_outbox"  # system database
HAND_OFF_SECONDS = 60.0  # a sweeper's claim on an entry while it hands it to the broker


@dataclass(frozen=True)
class Work:
    """One unit of recorded work: `kind` names what the sweeper does with it (the domain's
    constants, e.g. `crm_core.sms.service.SMS_BATCH`), `args` are its ids."""

    kind: str
    tenant_id: str
    args: tuple[Any, ...]
    lease_seconds: float
    # when its first hand-off cannot be at work before some time (a campaign's later batches
    # wait for the tenant's rate): the first lease is that much longer, so that work waiting
    # its turn in the queue is not handed again
    start_after: float = 0.0

    @property
    def key(self) -> str:
        return work_key(self.kind, self.tenant_id, *self.args)

    def document(self, due_in: float) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": self.key,
            "kind": self.kind,
            "tenant_id": self.tenant_id,
            "args": list(self.args),
            "lease_seconds": self.lease_seconds,
            "due_at": now + timedelta(seconds=due_in),
            "created_at": now,
        }


def work_key(kind: str, tenant_id: str, *args: object) -> str:
    return ":".join([kind, tenant_id, *(str(a) for a in args)])


Dispatch = Callable[[Work], Awaitable[None]]


class Outbox:
    """The recorded work of every tenant (one system collection, `due_at` indexed)."""

    def __init__(self, storage: Storage, retry_seconds: float = 5.0) -> None:
        self.storage = storage
        self.retry_seconds = retry_seconds  # how soon a failed hand-off is tried again

    @property
    def _entries(self) -> Collection:
        return self.storage.system_db[OUTBOX]

    async def record(self, works: Sequence[Work]) -> None:
        """Record new work, due after its lease (its first hand-off follows at once). Keys
        already recorded (the same message resent twice) are renewed, not duplicated."""
        if len(works) == 1:
            doc = works[0].document(works[0].lease_seconds + works[0].start_after)
            await self._entries.update_one(
                {"_id": doc.pop("_id")},
                {"$set": {"due_at": doc.pop("due_at")}, "$setOnInsert": doc},
                upsert=True,
            )
        elif works:
            docs = [w.document(w.lease_seconds + w.start_after) for w in works]
            await self._entries.insert_many(docs)

    async def hand_off(self, works: Sequence[Work], send: Dispatch) -> int:
        """Hand recorded work to the broker; on the first failure (the broker is down) the
        rest is made due at the next sweep instead. Returns how many were handed."""
        for index, work in enumerate(works):
            try:
                await send(work)
            except Exception:  # Redis refused or is away: the sweeper hands it later
                log.warning(
                    "the task broker refused %s; %d units of work wait for the sweeper",
                    work.key,
                    len(works) - index,
                    exc_info=True,
                )
                await self.retry_soon([w.key for w in works[index:]])
                return index
        return len(works)

    async def retry_soon(self, keys: list[str]) -> None:
        due = utcnow() + timedelta(seconds=self.retry_seconds)
        if len(keys) == 1:
            await self._entries.update_one({"_id": keys[0]}, {"$set": {"due_at": due}})
        elif keys:
            await self._entries.update_many({"_id": {"$in": keys}}, {"$set": {"due_at": due}})

    async def done(self, key: str) -> None:
        """The work is finished (or has nothing left to do): forget it."""
        await self._entries.delete_one({"_id": key})

    async def extend(self, key: str, seconds: float) -> None:
        """A worker at work on it: nobody hands it again for `seconds`."""
        due = utcnow() + timedelta(seconds=seconds)
        await self._entries.update_one({"_id": key}, {"$set": {"due_at": due}})

    async def sweep(self, dispatch: Mapping[str, Dispatch], limit: int = 100) -> int:
        """Hand again what is due (at most `limit` entries); returns how many were handed. One
        indexed query when nothing is due. An entry of an unknown kind (written by a newer
        version) is left for a process that knows it."""
        handed = 0
        while handed < limit:
            now = utcnow()
            entry = await self._entries.find_one_and_update(
                {"due_at": {"$lte": now}},
                {"$set": {"due_at": now + timedelta(seconds=HAND_OFF_SECONDS)}},
                sort=[("due_at", 1)],
            )
            if entry is None:
                break
            work = Work(
                kind=entry["kind"],
                tenant_id=entry["tenant_id"],
                args=tuple(entry.get("args") or ()),
                lease_seconds=float(entry.get("lease_seconds") or HAND_OFF_SECONDS),
            )
            send = dispatch.get(work.kind)
            if send is None:
                log.warning("outbox entry %s of unknown kind %r left", entry["_id"], work.kind)
                continue
            if await self.hand_off([work], send) == 0:
                break  # the broker is down: the next round tries again
            # the lease starts now; the work may also have finished (and gone) meanwhile
            await self.extend(entry["_id"], work.lease_seconds)
            handed += 1
        if handed:
            log.info("outbox: handed %d units of due work to the broker", handed)
        return handed


@dataclass
class Lease:
    """A worker's hold on one entry while it works: `keep()` pushes the entry's `due_at` by
    `seconds` once half of the last push has passed (one write per half lease)."""

    outbox: Outbox | None
    key: str
    seconds: float
    _renew_at: float = field(default=0.0, init=False)

    async def keep(self) -> None:
        if self.outbox is None or time.monotonic() < self._renew_at:
            return
        await self.outbox.extend(self.key, self.seconds)
        self._renew_at = time.monotonic() + self.seconds / 2

    async def done(self) -> None:
        if self.outbox is not None:
            await self.outbox.done(self.key)
