"""What an SMS provider is to the SMS domain (crm_core/sms/providers.py implements it,
crm_core/sms/service.py acts on it): the messages it sends and the kinds of error it answers,
each meaning one thing for a message's state (docs/sms.md, "Message states")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class SendError(Exception):
    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # the provider's error code, when it gave one


class TransientSendError(SendError):
    """The provider said "not now" (HTTP 429/408, SMS.ru 220/221, no connection): try again
    later."""


class PermanentSendError(SendError):
    """The provider refused this message (4xx, a rejected number): fail it."""


class LimitSendError(PermanentSendError):
    """The provider refused it for a sending limit (SMS.ru 206, 230, 231, 232): `limited`."""


class AmbiguousSendError(SendError):
    """The request left and no clear answer came (a timeout, HTTP 5xx, an unreadable answer):
    it may have been sent, never resend it blindly."""


class Outbound(NamedTuple):
    """One message as a provider sends it: the E.164 number, the text, our message id."""

    phone: str
    text: str
    message_id: str


class SmsProvider(Protocol):
    """Sends SMS in requests of up to `batch_limit` messages (crm_core/sms/providers.py
    `LogProvider`, `SmsRuProvider`); implementations never retry themselves."""

    name: str
    batch_limit: int  # the most messages one request carries

    async def send(self, messages: Sequence[Outbound]) -> list[str | SendError]:
        """Send `messages` (distinct numbers, at most `batch_limit`) in one request. Returns,
        per message in order, the provider's id or the error the provider gave that number
        (a number the answer does not mention is an `AmbiguousSendError`). An answer about the
        whole request raises: `TransientSendError` (nothing was sent), `AmbiguousSendError`
        (no clear answer: any of them may have gone), `PermanentSendError` (all refused)."""
        ...

    async def close(self) -> None:
        """Release the provider's connections (when the broker stops)."""
