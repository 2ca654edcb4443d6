"""The SMS tasks: each receives ids (tenant, campaign, batch or message) and hands them to the
SMS domain's sender (`crm_core.sms.service.SmsSender`, the message state machine). Nothing here
reads or writes the database; the broker glue is tasks/broker.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crm_core.platform.outbox import Outbox
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Storage
from crm_core.sms.providers import SmsProvider
from crm_core.sms.ratelimit import SlotLimiter
from crm_core.sms.service import (
    CampaignEvents,
    SendCapacity,
    SmsSender,
    claim_size,
    request_size,
)


@dataclass
class SmsRuntime:
    """What the SMS tasks use, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    provider: SmsProvider
    limiter: SlotLimiter
    webhooks: CampaignEvents | None = None  # campaign.finished events
    outbox: Outbox | None = None  # the recorded work whose entries the sender holds and ends
    capacity: SendCapacity | None = field(default=None, repr=False)

    def sender(self) -> SmsSender:
        """The domain's sender on this process's provider, limiter and capacity (read at each
        task: a test may swap the limiter of a running worker)."""
        if self.capacity is None:
            self.capacity = SendCapacity(
                claim_size(self.settings), request_size(self.settings, self.provider)
            )
        return SmsSender(
            self.settings,
            self.provider,
            self.limiter,
            self.capacity,
            self.webhooks,
            self.outbox,
            self.storage.system_db,
        )

    def db(self, tenant_id: str) -> Any:
        return self.storage.tenant_db(tenant_id)


async def send_batch(
    runtime: SmsRuntime, task_id: str, tenant_id: str, campaign_id: str, batch: int
) -> dict[str, int]:
    result = await runtime.sender().send_batch(
        runtime.db(tenant_id), tenant_id, campaign_id, batch, task_id
    )
    return result.model_dump()


async def send_one(runtime: SmsRuntime, task_id: str, tenant_id: str, message_id: str) -> int:
    return await runtime.sender().send_one(runtime.db(tenant_id), tenant_id, message_id, task_id)


async def poll_status(runtime: SmsRuntime, tenant_id: str, campaign_id: str) -> dict[str, int]:
    """The delivery-status poll of one campaign (run by the outbox sweeper)."""
    return await runtime.sender().poll_status(runtime.db(tenant_id), tenant_id, campaign_id)
