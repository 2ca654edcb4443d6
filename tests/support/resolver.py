"""A DNS resolver answering from a table, for the SSRF guard's tests of webhooks
(crm_core/platform/netguard.py)."""

from __future__ import annotations

from aiohttp.abc import AbstractResolver


class FakeResolver(AbstractResolver):
    """Answers from a table; a list of answers is used one per call (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: dict[str, int] = {}

    async def resolve(self, host, port=0, family=0):
        index = self.calls.get(host, 0)
        self.calls[host] = index + 1
        options = self.answers[host]
        addresses = options[min(index, len(options) - 1)]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": 10 if ":" in address else 2,
                "proto": 0,
                "flags": 0,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None
