"""SMS mailings (docs/sms.md): campaigns and the message state machine (`service`), the
gateways that send (`providers`) and the per-tenant sending rate (`ratelimit`)."""
