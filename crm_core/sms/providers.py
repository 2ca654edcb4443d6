"""SMS providers behind one interface.

`send` either returns the provider's message id or raises one of three errors, and the sender
acts on the kind:
- `TransientSendError`: the provider said "not now" (HTTP 5xx, 429, 408/504, a connection that
  never carried the request): safe to try again later;
- `PermanentSendError`: the provider refused this message (4xx, a rejected number): fail it;
- `AmbiguousSendError`: the request left and no answer came (a read timeout, a dropped
  connection): the SMS may or may not have gone out, so it is never sent again blindly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from crm_core.platform.settings import Settings
from crm_core.sms.service import (  # the domain decides what each kind means (docs/sms.md)
    AmbiguousSendError,
    PermanentSendError,
    SendError,
    SmsProvider,
    TransientSendError,
)

__all__ = [
    "AmbiguousSendError",
    "LogProvider",
    "PermanentSendError",
    "SendError",
    "SmsProvider",
    "SmsRuProvider",
    "TransientSendError",
    "make_provider",
]

log = logging.getLogger(__name__)


@dataclass
class LogProvider:
    """The default: records each message in memory and logs it; nothing leaves the machine."""

    name = "log"
    sent: list[dict[str, str]] = field(default_factory=list)

    async def send(self, phone: str, text: str, message_id: str) -> str:
        provider_id = f"log-{len(self.sent) + 1}"
        self.sent.append(
            {"phone": phone, "text": text, "message_id": message_id, "provider_id": provider_id}
        )
        log.info("SMS to %s (%s): %s", phone, message_id, text)
        return provider_id

    async def close(self) -> None:
        return None


FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}

# SMS.ru answers per number; these codes mean "try later" rather than "this message is refused"
SMSRU_TRANSIENT_CODES = {220, 221}  # service temporarily unavailable, sender not ready


class SmsRuProvider:
    """SMS.ru's HTTP API (`POST {base}/sms/send`, `json=1`), as its public documentation
    describes: a request status, then a status, code and `sms_id` per number."""

    name = "smsru"

    def __init__(self, api_id: str, base_url: str, sender: str, timeout: float) -> None:
        self.api_id = api_id
        self.base_url = base_url.rstrip("/")
        self.sender = sender
        self.timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def send(self, phone: str, text: str, message_id: str) -> str:
        number = phone.lstrip("+")
        form = {"api_id": self.api_id, "to": number, "msg": text, "json": "1"}
        if self.sender:
            form["from"] = self.sender
        try:
            # the form encoded here: aiohttp's FormData costs more than the rest of a send
            payload = urlencode(form).encode()
            async with self._client().post(
                f"{self.base_url}/sms/send", data=payload, headers=FORM_HEADERS
            ) as resp:
                status = resp.status
                if status >= 500 or status in (408, 429, 504):
                    raise TransientSendError(f"SMS.ru answered HTTP {status}")
                if status >= 400:
                    raise PermanentSendError(f"SMS.ru refused the request: HTTP {status}")
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransientSendError(f"could not connect to SMS.ru: {exc}") from None
        except (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise AmbiguousSendError(f"no answer from SMS.ru after sending: {exc!r}") from None
        except ValueError as exc:  # includes aiohttp's ContentTypeError and bad JSON
            raise AmbiguousSendError(f"unreadable answer from SMS.ru: {exc}") from None
        if not isinstance(body, dict):
            raise AmbiguousSendError("unreadable answer from SMS.ru")
        if body.get("status") != "OK":
            code = body.get("status_code")
            reason = f"SMS.ru error {code}: {body.get('status_text', '')}".strip()
            if code in SMSRU_TRANSIENT_CODES:
                raise TransientSendError(reason)
            raise PermanentSendError(reason)
        result = (body.get("sms") or {}).get(number) or {}
        if result.get("status") == "OK" and result.get("sms_id"):
            return str(result["sms_id"])
        code = result.get("status_code")
        reason = f"SMS.ru error {code}: {result.get('status_text', '')}".strip()
        if code in SMSRU_TRANSIENT_CODES:
            raise TransientSendError(reason)
        raise PermanentSendError(reason)

    async def cost(self, messages: list[tuple[str, str]]) -> float:
        """`sms/cost` of these (number, text) messages, 100 per request (`to[NUMBER]=text`);
        `SendError` when SMS.ru gives no price."""
        total = 0.0
        for start in range(0, len(messages), 100):
            form = [("api_id", self.api_id), ("json", "1")]
            form += [
                (f"to[{phone.lstrip('+')}]", text) for phone, text in messages[start : start + 100]
            ]
            try:
                async with self._client().post(
                    f"{self.base_url}/sms/cost", data=urlencode(form).encode(), headers=FORM_HEADERS
                ) as resp:
                    if resp.status >= 400:
                        raise TransientSendError(f"SMS.ru answered HTTP {resp.status}")
                    body: Any = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise TransientSendError(f"no price from SMS.ru: {exc!r}") from None
            if not isinstance(body, dict) or body.get("status") != "OK":
                raise PermanentSendError("SMS.ru gave no price")
            price = body.get("total_cost")
            if not isinstance(price, int | float) or isinstance(price, bool):
                raise PermanentSendError("SMS.ru gave no price")
            total += float(price)
        return round(total, 2)

    async def status(self, provider_ids: list[str]) -> dict[str, int]:
        """`sms/status` for up to 100 ids: the provider's code per id it knows (docs/sms.md,
        "Delivery reports"). Any trouble raises `SendError`: the poll tries again later."""
        form = {"api_id": self.api_id, "sms_id": ",".join(provider_ids), "json": "1"}
        try:
            async with self._client().post(
                f"{self.base_url}/sms/status", data=urlencode(form).encode(), headers=FORM_HEADERS
            ) as resp:
                if resp.status >= 400:
                    raise TransientSendError(f"SMS.ru answered HTTP {resp.status}")
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransientSendError(f"no status from SMS.ru: {exc!r}") from None
        if not isinstance(body, dict) or body.get("status") != "OK":
            raise TransientSendError("SMS.ru refused the status request")
        codes: dict[str, int] = {}
        for sms_id, item in (body.get("sms") or {}).items():
            code = item.get("status_code") if isinstance(item, dict) else None
            if isinstance(item, dict) and item.get("status") == "OK" and isinstance(code, int):
                codes[str(sms_id)] = code
        return codes

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "smsru":
        return SmsRuProvider(
            settings.smsru_api_id,
            settings.smsru_base_url,
            settings.sms_sender,
            settings.sms_send_timeout_seconds,
        )
    return LogProvider()
