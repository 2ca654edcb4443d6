"""One-time tickets for a browser's `EventSource`, which cannot send headers (docs/api.md
"Live events", "Signing in").

`POST /api/events/ticket` (signed in) answers `<company id>.<secret>`, valid
`TICKET_SECONDS` and for one `GET /api/events?ticket=...`. The system database keeps
`live_tickets` `{_id: sha256(ticket), tenant_id, user_id, sealed, expires_at}`: the caller's
credential sealed under a key drawn from the secret (a one-time key, the record alone does not
reveal the credential), so the stream re-checks access with that credential as any other
connection does. Redeeming deletes the record first (single use, across processes); an
unknown, used, expired, altered or another company's ticket is a 401. A TTL index removes
tickets never redeemed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import as_utc, utcnow
from crm_core.platform.errors import Unauthorized
from crm_core.platform.storage import Database

TICKETS = "live_tickets"
TICKET_SECONDS = 30
MAX_TICKET_CHARS = 128


@dataclass(frozen=True)
class Redeemed:
    bearer: str
    tenant_id: str
    user_id: str


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _keystream(secret: str, size: int) -> bytes:
    return hashlib.shake_256(b"crm.live.ticket\x00" + secret.encode()).digest(size)


def _seal(secret: str, bearer: str) -> bytes:
    plain = bearer.encode()
    box = bytes(a ^ b for a, b in zip(plain, _keystream(secret, len(plain)), strict=True))
    tag = hmac.new(secret.encode(), box, hashlib.sha256).digest()
    return tag + box


def _open(secret: str, sealed: bytes) -> str | None:
    tag, box = sealed[:32], sealed[32:]
    if not hmac.compare_digest(tag, hmac.new(secret.encode(), box, hashlib.sha256).digest()):
        return None
    plain = bytes(a ^ b for a, b in zip(box, _keystream(secret, len(box)), strict=True))
    return plain.decode()


class LiveTickets:
    """Issues and redeems the tickets in the system database `db`."""

    def __init__(self, db: Database, seconds: int = TICKET_SECONDS) -> None:
        self.db = db
        self.seconds = seconds

    async def issue(self, ctx: TenantContext, bearer: str) -> str:
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        ticket = f"{ctx.tenant_id}.{secret}"
        await self.db[TICKETS].insert_one(
            {
                "_id": _digest(ticket),
                "tenant_id": ctx.tenant_id,
                "user_id": ctx.user_id,
                "sealed": _seal(secret, bearer),
                "expires_at": utcnow() + timedelta(seconds=self.seconds),
            }
        )
        return ticket

    async def redeem(self, ticket: str) -> Redeemed:
        """The credential the ticket was issued with (the record is gone after this); 401 for
        a ticket that is not one that stands."""
        tenant_id, _, secret = ticket.partition(".")
        if not secret or len(ticket) > MAX_TICKET_CHARS:
            raise Unauthorized("The ticket is not valid")
        record = await self.db[TICKETS].find_one_and_delete({"_id": _digest(ticket)})
        if record is None or record.get("tenant_id") != tenant_id:
            raise Unauthorized("The ticket is not valid, or was used already")
        if as_utc(record["expires_at"]) <= utcnow():
            raise Unauthorized(f"The ticket expired (tickets last {self.seconds} seconds)")
        bearer = _open(secret, bytes(record.get("sealed") or b""))
        if bearer is None:
            raise Unauthorized("The ticket is not valid")
        return Redeemed(bearer, tenant_id, str(record["user_id"]))
