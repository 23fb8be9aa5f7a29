"""UTC instants: the one parser for times written in definition files and on command lines, and
the check that a datetime handed to the domain code carries its zone."""

from __future__ import annotations

from datetime import UTC, date, datetime


def require_utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; naive datetimes are refused because their zone is a guess."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def parse_utc(value: object) -> datetime:
    """A YAML timestamp, date or ISO-8601 text in UTC; naive means UTC (YAML 1.1's rule)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date or timestamp") from None
    else:
        raise ValueError(f"must be a date or timestamp, got {value!r}")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
