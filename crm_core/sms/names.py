"""The SMS domain's collections (tenant databases), shared by its modules."""

from __future__ import annotations

CAMPAIGNS = "_sms_campaigns"
MESSAGES = "_sms_messages"
