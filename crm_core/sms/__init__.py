"""SMS mailings (docs/sms.md): campaigns and the message state machine (`service`), the
gateways that send (`providers`) and the per-tenant sending rate (`ratelimit`)."""

from crm_core.sms.service import CampaignService as CampaignService
from crm_core.sms.service import SmsSender as SmsSender
