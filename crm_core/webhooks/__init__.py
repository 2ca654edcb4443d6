"""Webhooks (docs/integrations.md): subscriptions to table and campaign events, their
signed deliveries with retries and the delivery log (`service`)."""

from crm_core.webhooks.service import WebhookService as WebhookService
