"""SMS providers behind one interface.

`send` takes up to `batch_limit` messages in one request and answers, per message, the
provider's message id or the error that number got; an answer about the whole request raises.
The sender acts on the kind (docs/sms.md, "Message states"):
- `TransientSendError`: the provider said "not now" (HTTP 429, 408, SMS.ru 220/221, a connection
  that never carried the request): safe to try again later;
- `PermanentSendError`: the provider refused (other 4xx, a rejected number), and its
  `LimitSendError` for a sending limit (SMS.ru 206, 230, 231, 232);
- `AmbiguousSendError`: the request left and no clear answer came (a read timeout, a dropped
  connection, HTTP 5xx, an unreadable answer, a number the answer leaves out): the SMS may or
  may not have gone out, so it is never sent again blindly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from crm_core.platform.settings import Settings
from crm_core.sms.contract import (  # the domain decides what each kind means (docs/sms.md)
    AmbiguousSendError,
    LimitSendError,
    Outbound,
    PermanentSendError,
    SendError,
    SmsProvider,
    TransientSendError,
)

__all__ = [
    "AmbiguousSendError",
    "LimitSendError",
    "LogProvider",
    "Outbound",
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
    batch_limit = 100
    sent: list[dict[str, str]] = field(default_factory=list)

    async def send(self, messages: Sequence[Outbound]) -> list[str | SendError]:
        ids: list[str | SendError] = []
        for message in messages:
            provider_id = f"log-{len(self.sent) + 1}"
            self.sent.append(
                {
                    "phone": message.phone,
                    "text": message.text,
                    "message_id": message.message_id,
                    "provider_id": provider_id,
                }
            )
            log.info("SMS to %s (%s): %s", message.phone, message.message_id, message.text)
            ids.append(provider_id)
        return ids

    async def close(self) -> None:
        return None


FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}

# SMS.ru's codes (per number or for the whole request) that mean "try later" rather than
# "refused", and those of its sending limits (docs/sms.md, "Message states")
SMSRU_TRANSIENT_CODES = {220, 221}  # service temporarily unavailable, sender not ready
SMSRU_LIMIT_CODES = {
    206: "the SMS.ru account's daily sending limit is reached",
    230: "the daily limit of messages to this number is reached",
    231: "identical messages to this number within a minute are refused",
    232: "identical messages to this number within a day are refused",
}
SMSRU_BATCH = 100  # numbers one `sms/send` or `sms/cost` request carries


def smsru_error(code: object, text: object) -> SendError:
    """SMS.ru's error `code` (with its `status_text`) as the kind of error it is."""
    number = code if isinstance(code, int) and not isinstance(code, bool) else None
    if number in SMSRU_LIMIT_CODES:
        return LimitSendError(f"SMS.ru error {number}: {SMSRU_LIMIT_CODES[number]}", number)
    reason = f"SMS.ru error {code}: {text or ''}".strip()
    if number in SMSRU_TRANSIENT_CODES:
        return TransientSendError(reason, number)
    return PermanentSendError(reason, number)


def _form_body(form: list[tuple[str, str]]) -> str:
    """`urlencode(form)` (names and values quoted by `quote_plus`), with a `to[NUMBER]` name of
    digits quoted without `quote_plus`: half of a send's quoting, one per message."""
    return "&".join(f"{_quote_name(name)}={quote_plus(value)}" for name, value in form)


def _quote_name(name: str) -> str:
    number = name[3:-1]
    if name[:3] == "to[" and name[-1:] == "]" and number.isascii() and number.isdigit():
        return f"to%5B{number}%5D"
    return quote_plus(name)


class SmsRuProvider:
    """SMS.ru's HTTP API (`POST {base}/<method>`, `json=1`), as its public documentation
    describes: `sms/send` with `to[NUMBER]=text` for up to 100 numbers, answered by a request
    status, then a status, code and `sms_id` per number; `sms/cost` alike; `sms/status`."""

    name = "smsru"
    batch_limit = SMSRU_BATCH

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

    async def _post(
        self, method: str, form: list[tuple[str, str]], sends: bool = False
    ) -> dict[str, Any]:
        """The one request path: POST `form` (with `api_id` and `json=1`) to `method` and
        return SMS.ru's JSON answer once its request status is OK. A connection never opened,
        HTTP 429 or 408, or SMS.ru 220/221 raise `TransientSendError`; another 4xx or request
        error `PermanentSendError` (`LimitSendError` for a limit). A request that left without
        a clear answer (HTTP 5xx, a timeout or a dropped connection after sending, an
        unreadable answer) raises `AmbiguousSendError` when it `sends`; else a
        `TransientSendError` (nothing happened that cannot be asked again)."""
        unclear = AmbiguousSendError if sends else TransientSendError
        # the form encoded here: aiohttp's FormData costs more than the rest of a request
        payload = _form_body([("api_id", self.api_id), ("json", "1"), *form]).encode()
        try:
            async with self._client().post(
                f"{self.base_url}/{method}", data=payload, headers=FORM_HEADERS
            ) as resp:
                status = resp.status
                if status in (408, 429):
                    raise TransientSendError(f"SMS.ru answered HTTP {status}")
                if status >= 500:
                    raise unclear(f"SMS.ru answered HTTP {status}")
                if status >= 400:
                    raise PermanentSendError(f"SMS.ru refused the request: HTTP {status}")
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransientSendError(f"could not connect to SMS.ru: {exc}") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise unclear(f"no answer from SMS.ru after sending: {exc!r}") from None
        except ValueError as exc:  # bad JSON
            raise unclear(f"unreadable answer from SMS.ru: {exc}") from None
        if not isinstance(body, dict) or "status" not in body:
            raise unclear("unreadable answer from SMS.ru")
        if body["status"] != "OK":
            raise smsru_error(body.get("status_code"), body.get("status_text"))
        return body

    async def send(self, messages: Sequence[Outbound]) -> list[str | SendError]:
        form = [(f"to[{m.phone.lstrip('+')}]", m.text) for m in messages]
        if self.sender:
            form.append(("from", self.sender))
        body = await self._post("sms/send", form, sends=True)
        numbers = body.get("sms")
        if not isinstance(numbers, dict):
            raise AmbiguousSendError("unreadable answer from SMS.ru: no per-number results")
        answers: list[str | SendError] = []
        for message in messages:
            item = numbers.get(message.phone.lstrip("+"))
            if not isinstance(item, dict):
                answers.append(AmbiguousSendError("SMS.ru's answer does not mention the number"))
            elif item.get("status") == "OK" and item.get("sms_id"):
                answers.append(str(item["sms_id"]))
            elif item.get("status") == "OK":
                answers.append(AmbiguousSendError("SMS.ru accepted the number without an id"))
            else:
                answers.append(smsru_error(item.get("status_code"), item.get("status_text")))
        return answers

    async def cost(self, messages: list[tuple[str, str]]) -> float:
        """`sms/cost` of these (number, text) messages, 100 per request (`to[NUMBER]=text`);
        `SendError` when SMS.ru gives no price."""
        total = 0.0
        for start in range(0, len(messages), SMSRU_BATCH):
            chunk = messages[start : start + SMSRU_BATCH]
            body = await self._post("sms/cost", [(f"to[{p.lstrip('+')}]", t) for p, t in chunk])
            price = body.get("total_cost")
            if not isinstance(price, int | float) or isinstance(price, bool):
                raise PermanentSendError("SMS.ru gave no price")
            total += float(price)
        return round(total, 2)

    async def status(self, provider_ids: list[str]) -> dict[str, int]:
        """`sms/status` for up to 100 ids: the provider's code per id it knows (docs/sms.md,
        "Delivery reports"). Any trouble raises `SendError`: the poll tries again later."""
        body = await self._post("sms/status", [("sms_id", ",".join(provider_ids))])
        codes: dict[str, int] = {}
        items = body.get("sms")
        for sms_id, item in (items if isinstance(items, dict) else {}).items():
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
