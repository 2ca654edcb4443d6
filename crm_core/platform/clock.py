"""Time as the service stores it: UTC, to the millisecond (what BSON keeps)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC, cut to milliseconds, so what is stored is exactly what is read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(moment: datetime) -> datetime:
    """A datetime read back from MongoDB (naive, in UTC) made timezone-aware."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
