"""The one clock of recorded timestamps: UTC, naive (the store's columns carry no zone)."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now in UTC without tzinfo, as the store's ``DateTime`` columns hold it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
