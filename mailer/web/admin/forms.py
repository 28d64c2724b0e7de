"""Days and times typed into the dashboard's forms and query strings.

Every day or datetime an admin view reads goes through here: a value that does not parse, or
falls outside FIRST_DAY .. LAST_DAY, is refused with ValueError (each view says so in Dutch),
so no later step (the end of a day, a time zone, a range of days) can overflow Python's
datetime into a 500."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)  # a day later and a zone still fit in a datetime


def day(value: str | None) -> date | None:
    """A day written as jjjj-mm-dd (what <input type="date"> sends); None when empty."""
    value = (value or "").strip()
    if not value:
        return None
    found = date.fromisoformat(value)  # ValueError when it is no date
    if not FIRST_DAY <= found <= LAST_DAY:
        raise ValueError(f"{found} is outside {FIRST_DAY} .. {LAST_DAY}")
    return found


def moment(value: str | None, zone: tzinfo) -> datetime | None:
    """A date and time (what <input type="datetime-local"> sends), read in `zone` unless it
    names its own offset, as UTC; None when empty."""
    value = (value or "").strip()
    if not value:
        return None
    found = datetime.fromisoformat(value)  # ValueError when it is no date and time
    if not FIRST_DAY <= found.date() <= LAST_DAY:
        raise ValueError(f"{found} is outside {FIRST_DAY} .. {LAST_DAY}")
    try:
        return (found if found.tzinfo else found.replace(tzinfo=zone)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{found} is outside {FIRST_DAY} .. {LAST_DAY}") from None
