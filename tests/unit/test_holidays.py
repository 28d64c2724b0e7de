"""The send window stays shut on Dutch public holidays and on the operator's quiet dates.

Christmas, Koningsdag and a moving feast (Hemelvaartsdag: 39 days after Easter) are checked
against the calendar; the quiet dates in every form the setting takes (MM-DD every year,
YYYY-MM-DD once, ranges of either, one that runs over the new year).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from mailer import timing
from mailer.errors import SettingsError
from mailer.settings import Settings
from mailer.timing import SendWindow, WindowError, parse_quiet_dates

UTC = timezone.utc
NL = SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam", holidays="NL")


def settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"MAILER_INSTANCE_PATH": str(tmp_path / "instance"), **env},
                             dotenv=tmp_path / "none.env")


def window(quiet: str, holidays: str | None = "NL") -> SendWindow:
    return SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam", holidays=holidays,
                            quiet=parse_quiet_dates(quiet))


# --- Dutch public holidays ---------------------------------------------------------------

@pytest.mark.parametrize("moment, opening, holiday", [
    # Christmas 2026: Friday 25 December; the 26th is a Saturday: Monday 28 December at nine (CET).
    (datetime(2026, 12, 25, 9, 0, tzinfo=UTC), datetime(2026, 12, 28, 8, 0, tzinfo=UTC), "Eerste kerstdag"),
    (datetime(2026, 12, 24, 16, 30, tzinfo=UTC), datetime(2026, 12, 28, 8, 0, tzinfo=UTC), None),
    # Christmas 2025: Thursday and Friday; Monday 29 December.
    (datetime(2025, 12, 26, 9, 0, tzinfo=UTC), datetime(2025, 12, 29, 8, 0, tzinfo=UTC), "Tweede kerstdag"),
    # New Year's Day 2027 is a Friday: Monday 4 January.
    (datetime(2027, 1, 1, 10, 0, tzinfo=UTC), datetime(2027, 1, 4, 8, 0, tzinfo=UTC), "Nieuwjaarsdag"),
    # Koningsdag 2027: Tuesday 27 April; Wednesday at nine, summer time (07:00 UTC).
    (datetime(2027, 4, 27, 8, 0, tzinfo=UTC), datetime(2027, 4, 28, 7, 0, tzinfo=UTC), "Koningsdag"),
    # Koningsdag 2025 fell on a Sunday and was kept on Saturday 26 April: Monday opens as usual.
    (datetime(2025, 4, 26, 12, 0, tzinfo=UTC), datetime(2025, 4, 28, 7, 0, tzinfo=UTC), "Koningsdag"),
    # Hemelvaartsdag moves with Easter: Thursday 14 May 2026, Thursday 6 May 2027.
    (datetime(2026, 5, 14, 8, 0, tzinfo=UTC), datetime(2026, 5, 15, 7, 0, tzinfo=UTC), "Hemelvaartsdag"),
    (datetime(2027, 5, 6, 12, 0, tzinfo=UTC), datetime(2027, 5, 7, 7, 0, tzinfo=UTC), "Hemelvaartsdag"),
    # Easter Monday 2027 (29 March, the day after the clocks went forward).
    (datetime(2027, 3, 29, 8, 0, tzinfo=UTC), datetime(2027, 3, 30, 7, 0, tzinfo=UTC), "Tweede paasdag"),
])
def test_the_window_stays_shut_on_dutch_public_holidays(moment, opening, holiday):
    assert not NL.contains(moment)
    assert NL.next_opening(moment) == opening
    assert NL.closed_on(moment.astimezone(NL.zone).date()) == holiday


def test_ordinary_days_around_the_holidays_stay_open():
    for moment in (datetime(2026, 12, 24, 9, 0, tzinfo=UTC), datetime(2026, 12, 28, 8, 0, tzinfo=UTC),
                   datetime(2027, 4, 26, 7, 0, tzinfo=UTC), datetime(2027, 5, 7, 7, 0, tzinfo=UTC)):
        assert NL.contains(moment) and NL.next_opening(moment) == moment


def test_without_holidays_christmas_is_a_working_day():
    plain = SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam")
    christmas = datetime(2026, 12, 25, 9, 0, tzinfo=UTC)
    assert plain.contains(christmas) and plain.closed_on(christmas.date()) is None


def test_holiday_names_are_the_countrys_own_whatever_the_machines_language(monkeypatch):
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.setenv(variable, "en_US.UTF-8")
    fresh = SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam", holidays="NL")
    assert fresh.closed_on(date(2027, 4, 27)) == "Koningsdag"


def test_holidays_are_looked_up_once_a_year_not_per_call(monkeypatch):
    calls = []
    real = timing._holidays
    monkeypatch.setattr(timing, "_holidays", lambda code, year: calls.append((code, year)) or real(code, year))
    fresh = SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam", holidays="NL")
    for hour in range(24):
        fresh.contains(datetime(2026, 12, 22, hour, tzinfo=UTC))
        fresh.contains(datetime(2026, 12, 25, hour, tzinfo=UTC))
    fresh.next_opening(datetime(2026, 12, 31, 17, tzinfo=UTC))  # into 2027
    assert calls == [("NL", 2026), ("NL", 2027)]
    # Outside the hours the calendar is not even consulted.
    SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam", holidays="NL").contains(
        datetime(2028, 1, 4, 2, 0, tzinfo=UTC))
    assert ("NL", 2028) not in calls


# --- quiet dates -------------------------------------------------------------------------

def test_a_quiet_range_over_the_new_year_and_a_single_date():
    quiet = window("12-24..01-01,2027-05-05")
    # Thursday 24 December 2026 to Friday 1 January 2027: back on Monday 4 January.
    assert quiet.next_opening(datetime(2026, 12, 23, 16, 0, tzinfo=UTC)) == datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    assert quiet.closed_on(date(2026, 12, 24)) == "quiet date 12-24..01-01"
    assert quiet.closed_on(date(2026, 12, 25)) == "Eerste kerstdag"  # the holiday's name comes first
    assert quiet.closed_on(date(2026, 12, 31)) == "quiet date 12-24..01-01"
    assert not quiet.contains(datetime(2026, 12, 30, 12, 0, tzinfo=UTC))
    assert quiet.contains(datetime(2026, 12, 23, 12, 0, tzinfo=UTC))
    assert quiet.contains(datetime(2027, 1, 4, 12, 0, tzinfo=UTC))
    # Every year: the same range in 2027-2028.
    assert quiet.closed_on(date(2027, 12, 27)) and quiet.closed_on(date(2028, 1, 1))
    # 5 May only in 2027: Wednesday 5 May 2027 is shut, Friday 5 May 2028 is not.
    assert quiet.closed_on(date(2027, 5, 5)) == "quiet date 2027-05-05"
    assert quiet.closed_on(date(2028, 5, 5)) is None


def test_a_summer_break_makes_the_window_look_further_than_a_week():
    summer = window("07-20..08-14", holidays=None)
    # Monday 20 July 2026 to Friday 14 August: back on Monday 17 August at nine (summer time).
    assert summer.next_opening(datetime(2026, 7, 17, 16, 0, tzinfo=UTC)) == datetime(2026, 8, 17, 7, 0, tzinfo=UTC)
    half_year = window("2027-07-01..2027-12-31")
    # ... and past half a year and New Year's Day (a Saturday in 2028): Monday 3 January 2028.
    assert half_year.next_opening(datetime(2027, 7, 1, 8, 0, tzinfo=UTC)) == datetime(2028, 1, 3, 8, 0, tzinfo=UTC)


def test_a_window_shut_for_more_than_a_search_says_so_instead_of_looping():
    shut = window("2027-01-01..2027-12-31,2028-01-01..2028-12-31")
    with pytest.raises(WindowError, match="stays shut for 400 days"):
        shut.next_opening(datetime(2027, 1, 1, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize("quiet, problem", [
    ("christmas", "is not a date like"),
    ("12-32", "is not a day of the calendar"),
    ("2027-02-29", "is not a day of the calendar"),
    ("12-24..2027-01-01", "both ends of a range"),
    ("2027-05-06..2027-05-01", "ends before it starts"),
    ("2027-01-01..2028-06-30", "more than a year"),
    ("01-01..12-31", "every day of the year"),
    ("07-01..06-30", "every day of the year"),
])
def test_bad_quiet_dates_say_what_is_wrong(quiet, problem):
    with pytest.raises(WindowError, match=problem):
        parse_quiet_dates(quiet)


def test_february_29_is_a_quiet_date_in_leap_years_only():
    leap = window("02-29", holidays=None)
    assert leap.closed_on(date(2028, 2, 29)) and leap.closed_on(date(2027, 2, 28)) is None


# --- the settings ------------------------------------------------------------------------

def test_dutch_holidays_are_on_by_default_and_empty_turns_them_off(tmp_path):
    default = settings(tmp_path).drip_window
    assert default.holidays == "NL" and not default.contains(datetime(2026, 12, 25, 9, 0, tzinfo=UTC))
    off = settings(tmp_path, MAILER_DRIP_HOLIDAYS="").drip_window
    assert off.holidays is None and off.contains(datetime(2026, 12, 25, 9, 0, tzinfo=UTC))
    belgian = settings(tmp_path, MAILER_DRIP_HOLIDAYS="be").drip_window
    assert belgian.holidays == "BE"
    assert not belgian.contains(datetime(2027, 7, 21, 9, 0, tzinfo=UTC))  # Nationale feestdag
    assert default.contains(datetime(2027, 7, 21, 9, 0, tzinfo=UTC))


def test_quiet_dates_come_from_their_setting(tmp_path):
    quiet = settings(tmp_path, MAILER_DRIP_QUIET_DATES="12-24..01-01, 2027-05-05").drip_window
    assert [r.text for r in quiet.quiet] == ["12-24..01-01", "2027-05-05"]
    assert "not on NL holidays, not on 12-24..01-01,2027-05-05" in quiet.describe_rules()
    assert not quiet.contains(datetime(2027, 5, 5, 9, 0, tzinfo=UTC))


@pytest.mark.parametrize("variable, value, message", [
    ("MAILER_DRIP_HOLIDAYS", "XX", "MAILER_DRIP_HOLIDAYS: 'XX' is not a country code of the holidays package"),
    ("MAILER_DRIP_HOLIDAYS", "Nederland", "MAILER_DRIP_HOLIDAYS: 'NEDERLAND' is not a country code"),
    ("MAILER_DRIP_QUIET_DATES", "24-12", "MAILER_DRIP_QUIET_DATES: '24-12': 24-12 is not a day of the calendar"),
    ("MAILER_DRIP_QUIET_DATES", "kerst", "MAILER_DRIP_QUIET_DATES: 'kerst' is not a date like"),
])
def test_bad_holiday_settings_name_their_variable(tmp_path, variable, value, message):
    with pytest.raises(SettingsError, match=message):
        settings(tmp_path, **{variable: value})


def test_quiet_dates_that_keep_the_window_shut_for_good_are_refused_at_start_up(tmp_path):
    today = datetime.now(UTC).date()
    # A dated range of 360 days from today, then a yearly range that goes on for two more
    # months: the window stays shut longer than the search allows.
    dated = f"{today:%Y-%m-%d}..{today + timedelta(days=360):%Y-%m-%d}"
    yearly = f"{today + timedelta(days=361):%m-%d}..{today + timedelta(days=60):%m-%d}"
    with pytest.raises(SettingsError, match="MAILER_DRIP_QUIET_DATES: "):
        settings(tmp_path, MAILER_DRIP_QUIET_DATES=f"{dated},{yearly}")
    settings(tmp_path, MAILER_DRIP_QUIET_DATES=dated)  # shut for 361 days, then open: allowed
