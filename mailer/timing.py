"""Time values that settings carry and the domain applies: the send window and retry schedules.

Pure and free of the domain, so that settings can parse and check them at start-up.

The send window: the local days and hours in which marketing mail may start going out.

Written as ``mon-fri 09:00-17:00`` (days: a range or a comma list of mon..sun; hours: start
inclusive, end exclusive, 24:00 allowed) in a named time zone, so daylight saving time moves
the window with the clock on the wall, not with UTC. Whole local days stay shut besides: the
public holidays of a country (a code of the ``holidays`` package, such as ``NL``) and quiet
dates written ``12-24..01-01,2027-05-05`` (``MM-DD`` every year, ``YYYY-MM-DD`` once, and
ranges ``a..b`` of either form; an ``MM-DD`` range may run over the new year).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import SettingsError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SPEC = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)\s*$")
_QUIET_DAY = re.compile(r"^(?:(?P<year>\d{4})-)?(?P<month>\d\d)-(?P<day>\d\d)$")
# How far next_opening looks: past any holiday stretch and a long quiet range (a month of
# summer), but a window that stays shut for more than a year is a mistake, not a plan.
SEARCH_DAYS = 400


class WindowError(SettingsError, ValueError):
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
class QuietRange:
    """One quiet date or range. Dated: `first`/`last` are dates; yearly: (month, day) pairs, and
    a yearly range whose end comes before its start runs over the new year (12-24..01-01)."""

    first: date | tuple[int, int]
    last: date | tuple[int, int]
    text: str = ""  # as written, for messages

    def covers(self, day: date) -> bool:
        if isinstance(self.first, date):
            return self.first <= day <= self.last
        key = (day.month, day.day)
        if self.first <= self.last:
            return self.first <= key <= self.last
        return key >= self.first or key <= self.last


def parse_quiet_dates(text: str) -> tuple[QuietRange, ...]:
    """'12-24..01-01,2027-05-05' -> the quiet ranges; WindowError says which part is wrong."""
    ranges: list[QuietRange] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first_text, dots, last_text = part.partition("..")
        first = _quiet_day(first_text.strip(), part)
        last = _quiet_day(last_text.strip(), part) if dots else first
        if type(first) is not type(last):
            raise WindowError(f"{part!r}: both ends of a range are MM-DD or both are YYYY-MM-DD")
        if isinstance(first, date) and first > last:
            raise WindowError(f"{part!r}: the range ends before it starts")
        if isinstance(first, date) and (last - first).days >= 366:
            raise WindowError(f"{part!r}: a quiet range of more than a year leaves no day to send on")
        ranges.append(QuietRange(first, last, part))
    leap_year = [date(2028, 1, 1) + timedelta(days=n) for n in range(366)]
    if ranges and all(any(r.covers(day) for r in ranges if not isinstance(r.first, date)) for day in leap_year):
        raise WindowError(f"{text!r} makes every day of the year quiet: nothing would ever be sent")
    return tuple(ranges)


def _quiet_day(text: str, part: str) -> date | tuple[int, int]:
    match = _QUIET_DAY.match(text)
    if not match:
        raise WindowError(f"{part!r} is not a date like 12-24, 2027-05-05 or a range like 12-24..01-01")
    month, day = int(match["month"]), int(match["day"])
    try:
        found = date(int(match["year"] or 2028), month, day)  # 2028: a leap year, so 02-29 is a day
    except ValueError:
        raise WindowError(f"{part!r}: {text} is not a day of the calendar") from None
    return found if match["year"] else (month, day)


def check_country(code: str) -> str:
    """The country code as the ``holidays`` package spells it; WindowError if it has no such country.

    Imports the package (about 15 ms), which the window otherwise does only when it first
    looks a holiday up.
    """
    import holidays

    code = code.strip().upper()
    try:
        holidays.country_holidays(code, years=())
    except NotImplementedError:
        raise WindowError(f"{code!r} is not a country code of the holidays package (for example NL, BE, DE)") from None
    return code


def _holidays(code: str, year: int) -> dict[date, str]:
    import holidays

    language = holidays.country_holidays(code, years=()).default_language  # not the machine's locale
    return dict(holidays.country_holidays(code, years=year, language=language))


@dataclass(frozen=True)
class SendWindow:
    days: frozenset[int]  # 0 = Monday
    start_minute: int  # minutes after local midnight, inclusive
    end_minute: int  # exclusive; 1440 is midnight at the end of the day
    zone: ZoneInfo
    spec: str  # as written, for messages
    holidays: str | None = None  # a country code of the holidays package: its public holidays stay shut
    quiet: tuple[QuietRange, ...] = ()  # further local days that stay shut
    # Per year: the shut days and why (the holiday's name, or the quiet date). Built on first
    # use, so contains(), called for every claim of marketing mail, costs one dict lookup more.
    _closed: dict[int, dict[date, str]] = field(default_factory=dict, init=False, repr=False, compare=False,
                                                 hash=False)

    @classmethod
    def parse(cls, spec: str, zone: str, *, holidays: str | None = None,
              quiet: tuple[QuietRange, ...] = ()) -> "SendWindow":
        """Read 'mon-fri 09:00-17:00' in time zone `zone`; WindowError says what is wrong.

        `holidays` (a country code, checked by check_country) and `quiet` (from
        parse_quiet_dates) name whole local days on which the window stays shut.
        """
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
        return cls(_days(match["days"]), start, end, tz, spec.strip(), holidays or None, tuple(quiet))

    def with_closed_days(self, *, holidays: str | None, quiet: tuple[QuietRange, ...] = ()) -> "SendWindow":
        """The same hours, shut on other days: those of `holidays` (a country code) and `quiet`."""
        return SendWindow(self.days, self.start_minute, self.end_minute, self.zone, self.spec,
                          holidays or None, tuple(quiet))

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return (local.weekday() in self.days and self.start_minute <= minute < self.end_minute
                and not self.closed_on(local.date()))

    def closed_on(self, day: date) -> str | None:
        """Why the window stays shut all of this local day (a holiday's name, a quiet date), or None."""
        if self.holidays is None and not self.quiet:
            return None
        closed = self._closed.get(day.year)
        if closed is None:
            closed = self._closed[day.year] = self._closed_days(day.year)
        return closed.get(day)

    def _closed_days(self, year: int) -> dict[date, str]:
        closed = _holidays(self.holidays, year) if self.holidays else {}
        if self.quiet:
            day = date(year, 1, 1)
            while day.year == year:
                if day not in closed:
                    quiet = next((r for r in self.quiet if r.covers(day)), None)
                    if quiet is not None:
                        closed[day] = f"quiet date {quiet.text}".rstrip()
                day += timedelta(days=1)
        return closed

    def next_opening(self, moment: datetime) -> datetime:
        """`moment` if the window is open then, else the (UTC) moment it next opens.

        Looks SEARCH_DAYS ahead (past holidays and long quiet ranges); WindowError if the
        window stays shut all that time.
        """
        if self.contains(moment):
            return moment
        local_day = moment.astimezone(self.zone).date()
        for offset in range(SEARCH_DAYS):
            day = local_day + timedelta(days=offset)
            if day.weekday() in self.days and not self.closed_on(day):
                opening = self._opening(day)
                if opening > moment:
                    return opening
        raise WindowError(f"the send window ({self.describe_rules()}) stays shut for {SEARCH_DAYS} days "
                          f"from {self.describe(moment)}")

    def describe_rules(self) -> str:
        """The window as the operator set it: 'mon-fri 09:00-17:00, Europe/Amsterdam, not on NL holidays'."""
        text = f"{self.spec}, {self.zone.key}"
        if self.holidays:
            text += f", not on {self.holidays} holidays"
        if self.quiet:
            text += f", not on {','.join(r.text for r in self.quiet)}"
        return text

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
