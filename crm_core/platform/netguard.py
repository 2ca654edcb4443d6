"""Outgoing requests to addresses that users choose (webhooks) never reach internal networks.

A target is refused unless every address its host resolves to is public unicast: loopback,
private, link-local, multicast, shared (CGNAT), reserved and unspecified addresses are refused,
and so are IPv6 forms that carry such an IPv4 address (`::ffff:127.0.0.1`, 6to4, Teredo,
NAT64). The check runs when a URL is saved and again when a connection is made: the resolver
below is the one aiohttp's connector uses, so the addresses it checked are the very ones the
connection goes to (a name that resolves to a public address first and to a private one later
gains nothing). Literal IP hosts never reach a resolver, so `check_literal_host` covers them.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(OSError):
    """The target resolves to an address outgoing requests may not reach."""


def address_refusal(ip: IpAddress) -> str | None:
    """Why requests may not go to `ip`, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address | None] = [ip.ipv4_mapped, ip.sixtofour]
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (reason := address_refusal(inner)) is not None:
                return reason
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def url_host(url: URL) -> str:
    """The host of `url` as it goes on the wire (ASCII, punycode for names), or ValueError
    saying why no request could use it. yarl parses `https://xn--zz.com/` but raises
    UnicodeError when its host is read (the punycode does not decode), and a resolver raises
    one for a name IDNA cannot encode (an empty or over-long label): every place that reads a
    user's or an operator's URL asks here first."""
    raw = url.raw_host
    if not raw:
        raise ValueError("has no host")
    try:
        url.host  # noqa: B018 - decodes the punycode labels; raises on a broken one
        if parse_ip(raw) is None:
            raw.encode("idna")
    except UnicodeError:
        raise ValueError(f"{raw[:100]} is not a valid host name") from None
    return raw


def http_url_problem(text: str) -> str | None:
    """Why `text` cannot be the base of outgoing requests (an operator's setting), or None."""
    try:
        url = URL(text)
        url.port  # noqa: B018 - yarl checks the port when it is read
        if url.scheme not in ("http", "https") or not url.is_absolute():
            return "must be an absolute http or https URL"
        url_host(url)
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    return None


def parse_ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal_host(host: str, allow_private: bool) -> None:
    """Raise BlockedAddress when `host` is an IP address that may not be reached."""
    ip = parse_ip(host)
    if ip is None or allow_private:
        return
    reason = address_refusal(ip)
    if reason is not None:
        raise BlockedAddress(f"{ip} is {reason}")


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` and refuses the host when any of its addresses is not public.

    Refusing the whole host (not only its bad addresses) keeps a name that mixes public and
    internal addresses from being used to reach the internal one on a retry."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner  # made at first use: aiohttp's resolvers need a running loop

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.inner is None:
            self.inner = ThreadedResolver()
        results = await self.inner.resolve(host, port, family)
        if not results:
            raise BlockedAddress(f"{host} does not resolve")
        if not self.allow_private:
            for result in results:
                ip = parse_ip(str(result["host"]))
                reason = "not an IP address" if ip is None else address_refusal(ip)
                if reason is not None:
                    raise BlockedAddress(f"{host} resolves to {result['host']}, {reason}")
        return results

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


async def check_target(resolver: GuardedResolver, host: str, port: int) -> None:
    """The whole check for a URL's host (as `url_host` gives it), as a connection would make
    it."""
    check_literal_host(host, resolver.allow_private)
    if parse_ip(host) is None:
        try:
            await resolver.resolve(host, port, socket.AF_UNSPEC)
        except BlockedAddress:
            raise
        except (OSError, ValueError) as exc:  # ValueError (UnicodeError): IDNA refused it
            raise BlockedAddress(f"{host[:100]} does not resolve") from exc


def describe(exc: BaseException) -> str:
    """A short reason for a failed request, taken from aiohttp's wrapped OS errors."""
    inner: Any = getattr(exc, "os_error", None)
    if isinstance(inner, BlockedAddress):
        return f"refused: {inner}"
    if isinstance(exc, BlockedAddress):
        return f"refused: {exc}"
    return f"{type(exc).__name__}: {exc}"[:500]
