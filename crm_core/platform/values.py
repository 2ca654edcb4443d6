"""What reading a value needs to know about the tenant (`ValueContext`): its time zone, its
default phone region and the string limit. The request's context carries one
(`TenantContext.values`); column types (crm_core/tables/columns.py) read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class ValueContext:
    """What coercion needs to know about the tenant; `parsed` (set for one bulk request by
    `with_memo`) keeps each distinct parsed text value, so a thousand rows that repeat a
    phone number parse it once."""

    timezone: ZoneInfo
    phone_region: str
    string_max_length: int
    parsed: dict[tuple[str, str], str | ValueError] | None = field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def default(cls) -> ValueContext:
        return cls(ZoneInfo("UTC"), "RU", 10_000)

    def with_memo(self) -> ValueContext:
        return replace(self, parsed={})

    def parse_once(
        self,
        kind: str,
        value: str,
        parse: Callable[[str], str],
        refusal: type[ValueError],
    ) -> str:
        """`parse(value)`, or its remembered answer (a value or the same error) for this
        request. `refusal` is the error type `parse` refuses a value with (built from the
        message alone: the column types' ColumnValueError); a remembered refusal is raised
        anew."""
        if self.parsed is None:
            return parse(value)
        key = (kind, value)
        known = self.parsed.get(key)
        if known is None:
            try:
                known = parse(value)
            except refusal as exc:
                known = exc
            self.parsed[key] = known
        if isinstance(known, ValueError):
            raise refusal(str(known))
        return known
