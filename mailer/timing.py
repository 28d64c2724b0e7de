"""Time values that settings carry and the domain applies: the send window and retry schedules.

Pure and free of the domain, so that settings can parse and check them at start-up.

The send window: the local days and hours in which marketing mail may start going out.

Written as ``mon-fri 09:00-17:00`` (days: a range or a comma list of mon..sun; hours: start
inclusive, end exclusive, 24:00 allowed) in a named time zone, so daylight saving time moves
the window with the clock on the wall, not with UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import SettingsError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SPEC = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)\s*$")


class WindowError(ValueError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    delays: tuple[timedelta, ...]  # after attempt 1, 2, ...; the last one repeats
    give_up_after: timedelta  # counted from when the mail was queued


# Transactional mail (confirmation, guide) is awaited by a person: retry soon, give up in two
# days. Marketing mail can wait: retry gently, so a struggling relay is not pushed harder.
TRANSACTIONAL = "30s,2m,10m,30m,1h/2d"
MARKETING = "5m,30m,2h,6h/3d"


def parse_policy(variable: str, value: str) -> RetryPolicy:
    """'30s,2m,10m/2d' -> delays 30 s, 2 min, 10 min (repeating), give up after 2 days."""
    delays_text, _, give_up_text = value.partition("/")
    try:
        delays = tuple(_duration(part) for part in delays_text.split(","))
        give_up = _duration(give_up_text)
    except ValueError:
        raise SettingsError(
            f"{variable} must look like '30s,2m,10m,1h/2d' (delays, then the give-up age), got {value!r}"
        ) from None
    return RetryPolicy(delays, give_up)


def _duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(text)
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class SendWindow:
    days: frozenset[int]  # 0 = Monday
    start_minute: int  # minutes after local midnight, inclusive
    end_minute: int  # exclusive; 1440 is midnight at the end of the day
    zone: ZoneInfo
    spec: str  # as written, for messages

    @classmethod
    def parse(cls, spec: str, zone: str) -> "SendWindow":
        """Read 'mon-fri 09:00-17:00' in time zone `zone`; WindowError says what is wrong."""
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(f"unknown time zone {zone!r} (expected a name like Europe/Amsterdam)") from None
        match = _SPEC.match(spec.lower())
        if not match:
            raise WindowError(f"{spec!r} is not like 'mon-fri 09:00-17:00'")
        start, end = _minute(match["start"]), _minute(match["end"])
        if start >= end:
            raise WindowError(f"{spec!r}: the window must end after it starts, on the same day")
        return cls(_days(match["days"]), start, end, tz, spec.strip())

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start_minute <= minute < self.end_minute

    def next_opening(self, moment: datetime) -> datetime:
        """`moment` if the window is open then, else the (UTC) moment it next opens."""
        if self.contains(moment):
            return moment
        local_day = moment.astimezone(self.zone).date()
        for offset in range(8):
            day = local_day + timedelta(days=offset)
            if day.weekday() in self.days:
                opening = self._opening(day)
                if opening > moment:
                    return opening
        raise AssertionError("a window with at least one day opens within a week")

    def _opening(self, day: date) -> datetime:
        local = datetime.combine(day, time(self.start_minute // 60, self.start_minute % 60), tzinfo=self.zone)
        return local.astimezone(timezone.utc)

    def describe(self, moment: datetime) -> str:
        """A moment as the operator reads it: local time in the window's zone."""
        return moment.astimezone(self.zone).strftime("%a %Y-%m-%d %H:%M %Z")


def _minute(text: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise WindowError(f"{text} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise WindowError(f"{part!r} is not a day or a range of days ({', '.join(DAYS)})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)
