"""CRM domain layer, one package per domain: `accounts`, `tables`, `files`, `sms`, `webhooks`,
`admin`, and `platform` for what they all use; `services` builds them (composition root)."""
