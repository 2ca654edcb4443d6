"""Failed sign-in limits that an await cannot slip past and nobody can aim at someone else
(docs/operations.md "Failed-login throttling").

Three counters decide whether an attempt may reach the password check, each taken atomically
*before* the slow work (bcrypt) by one increment, so of N concurrent attempts at most the limit
get through and the rest answer 429 (`Retry-After`) at once:

- per client address: `LOGIN_MAX_FAILURES_PER_IP` attempts within `LOGIN_LOCKOUT_SECONDS`;
- per account *and* address: `LOGIN_MAX_FAILURES` within `LOGIN_LOCKOUT_SECONDS`. This is the
  only hard lock, and it locks the pair: a stranger who types the owner's email from their
  own address locks out only themselves;
- per account, from addresses the account has not signed in from (within
  `LOGIN_KNOWN_ADDRESS_DAYS`): after `LOGIN_ACCOUNT_FREE_FAILURES` attempts within the window,
  each further one waits its turn behind a delay that doubles (1 s, 2 s, 4 s...) up to
  `LOGIN_ACCOUNT_MAX_DELAY_SECONDS`. Never a lock: an attempt is always possible within the
  longest delay. An address that signed in to the account before is not slowed by it at all,
  so an attacker hammering from other addresses cannot keep the owner (or the platform's
  superadmin, whose panel sign-in shares this throttle) out.

A successful sign-in gives its slots back (the pair's window is cleared, the address's and the
account's slot refunded) and remembers the address as known to the account.

With `REDIS_URL` the counters live in Redis, shared by every API process. When Redis does not
answer, each process counts in its own memory until Redis answers again (a warning is logged
once per outage): sign-in keeps working and stays limited, per process (the decision is
documented there). Without `REDIS_URL` they live in this process (the embedded database is one
process anyway).
"""

from __future__ import annotations

import logging
import math
import time

from limits.aio.storage import MemoryStorage, Storage
from limits.errors import StorageError

from crm_core.platform.apilimits import limit_storage
from crm_core.platform.errors import RateLimited

log = logging.getLogger(__name__)

KEY_PREFIX = "crm:limits"
MESSAGE = "Too many failed login attempts; try again later"
SLOWED = "Too many failed login attempts for this account; try again in a moment"


def login_limit_storage(redis_url: str | None) -> Storage:
    """The sign-in counters: in Redis under their own prefix, or in memory."""
    return limit_storage(redis_url, KEY_PREFIX)


class Counters:
    """Expiring counters in `primary` (Redis or memory); while `primary` fails, in this
    process's memory."""

    def __init__(self, primary: Storage) -> None:
        self.primary = primary
        self.fallback = primary if isinstance(primary, MemoryStorage) else MemoryStorage()
        self.degraded = False

    def _failed(self, exc: Exception) -> Storage:
        if not self.degraded:
            self.degraded = True
            log.warning("login limits: Redis does not answer (%s); counting in this process", exc)
        return self.fallback

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("login limits: Redis answers again; counting there")

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount`; a new key lives `expiry` seconds from now. Returns the new count."""
        try:
            value = await self.primary.incr(key, expiry, amount)
        except (StorageError, OSError, TimeoutError) as exc:
            return await self._failed(exc).incr(key, expiry, amount)
        self._recovered()
        return value

    async def get(self, key: str) -> int:
        try:
            value = await self.primary.get(key)
        except (StorageError, OSError, TimeoutError) as exc:
            return await self._failed(exc).get(key)
        self._recovered()
        return value

    async def seconds_left(self, key: str) -> int:
        """Seconds until `key` expires (at least 1): the `Retry-After` of a refusal."""
        try:
            expiry = await self.primary.get_expiry(key)
        except (StorageError, OSError, TimeoutError) as exc:
            expiry = await self._failed(exc).get_expiry(key)
        return max(1, math.ceil(expiry - time.time()))

    async def clear(self, key: str) -> None:
        try:
            await self.primary.clear(key)
        except (StorageError, OSError, TimeoutError) as exc:
            await self._failed(exc).clear(key)

    async def close(self) -> None:
        bridge = getattr(self.primary, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


class LoginThrottle:
    """The failed sign-in limits of the module docstring, and the password-change guesses of a
    signed-in user (`LOGIN_MAX_FAILURES` per account within `LOGIN_LOCKOUT_SECONDS`, counted
    apart from sign-ins: a session's guesses never lock the account's sign-in)."""

    MESSAGE = MESSAGE

    def __init__(
        self,
        storage: Storage,
        per_email: int,
        per_address: int,
        window_seconds: int,
        account_free: int = 20,
        account_max_delay_seconds: int = 60,
        known_address_seconds: int = 30 * 24 * 3600,
    ) -> None:
        self.counters = Counters(storage)
        self.per_pair = per_email
        self.per_address = per_address
        self.window = window_seconds
        self.account_free = account_free
        self.max_delay = account_max_delay_seconds
        self.known_seconds = known_address_seconds

    @property
    def storage(self) -> Storage:
        return self.counters.primary

    async def _refused(self, key: str, message: str = MESSAGE) -> RateLimited:
        retry = await self.counters.seconds_left(key)
        return RateLimited(message, headers={"Retry-After": str(retry)})

    async def _take(self, key: str, limit: int) -> bool:
        """One slot of a fixed window (opened by the key's first attempt); False past the limit
        (the slot is given back)."""
        if await self.counters.incr(key, self.window) <= limit:
            return True
        await self.counters.incr(key, self.window, -1)
        return False

    async def reserve(self, email: str, address: str | None = None) -> None:
        """Count this sign-in attempt as a failure before checking the password; 429 past a
        limit (nothing is counted then)."""
        if address is None:  # callers without an address share one: the strictest reading
            address = "unknown"
        taken: list[str] = []
        try:
            address_key = f"login-address:{address}"
            if not await self._take(address_key, self.per_address):
                raise await self._refused(address_key)
            taken.append(address_key)
            pair_key = f"login-pair:{email}|{address}"
            if not await self._take(pair_key, self.per_pair):
                raise await self._refused(pair_key)
            taken.append(pair_key)
            if not await self._known(email, address):
                await self._wait_turn(email)
        except RateLimited:
            for key in taken:
                await self.counters.incr(key, self.window, -1)
            raise

    async def _known(self, email: str, address: str) -> bool:
        return await self.counters.get(f"login-known:{email}|{address}") > 0

    async def _wait_turn(self, email: str) -> None:
        """The account-wide slow-down for addresses it does not know: past the free attempts,
        one attempt per delay, the delay doubling with each attempt let through."""
        account_key = f"login-account:{email}"
        count = await self.counters.incr(account_key, self.window)
        if count <= self.account_free:
            return
        delay = min(self.max_delay, 2 ** min(count - self.account_free - 1, 30))
        gate_key = f"login-gate:{email}"
        if await self.counters.incr(gate_key, delay) == 1:
            return  # this attempt takes the turn; the next one waits `delay`
        await self.counters.incr(account_key, self.window, -1)
        raise await self._refused(gate_key, SLOWED)

    async def succeeded(self, email: str, address: str | None = None) -> None:
        """The attempt signed in: its failures are forgiven and its address becomes known."""
        if address is None:
            address = "unknown"
        if not await self._known(email, address):
            await self.counters.incr(f"login-account:{email}", self.window, -1)
        await self.counters.clear(f"login-pair:{email}|{address}")
        await self.counters.incr(f"login-address:{address}", self.window, -1)
        known_key = f"login-known:{email}|{address}"
        await self.counters.clear(known_key)  # remembered afresh from now
        await self.counters.incr(known_key, self.known_seconds)

    # ---- a signed-in user's password guesses (POST /api/auth/password) --------------------

    async def reserve_password_check(self, email: str) -> None:
        key = f"password-check:{email}"
        if not await self._take(key, self.per_pair):
            raise await self._refused(key)

    async def password_check_succeeded(self, email: str) -> None:
        await self.counters.clear(f"password-check:{email}")

    async def close(self) -> None:
        await self.counters.close()
