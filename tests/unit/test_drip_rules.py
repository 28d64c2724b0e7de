"""Drip sequences, the pure parts: the send window, a lead's next move, sequence file checks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import broken_sequence

from mailer.content.files import load_content
from mailer.drip.job import Facts, advance
from mailer.errors import ContentError
from mailer.resources import shipped
from mailer.timing import SendWindow, WindowError

UTC = timezone.utc
WINDOW = SendWindow.parse("mon-fri 09:00-17:00", "Europe/Amsterdam")
SEQUENCE = load_content(shipped("content")).sequences["mini-guide"]
ANCHOR = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Amsterdam
DAY = timedelta(days=1)


# --- the send window ---------------------------------------------------------------------

@pytest.mark.parametrize("moment, opening", [
    (datetime(2026, 12, 1, 8, 0, tzinfo=UTC), datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),    # Tue 09:00: open
    (datetime(2026, 12, 1, 15, 59, tzinfo=UTC), datetime(2026, 12, 1, 15, 59, tzinfo=UTC)),  # 16:59: open
    (datetime(2026, 12, 1, 16, 0, tzinfo=UTC), datetime(2026, 12, 2, 8, 0, tzinfo=UTC)),   # 17:00: tomorrow
    (datetime(2026, 12, 1, 7, 59, tzinfo=UTC), datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),   # 08:59: at nine
    (datetime(2026, 12, 4, 16, 30, tzinfo=UTC), datetime(2026, 12, 7, 8, 0, tzinfo=UTC)),  # Friday evening
    (datetime(2026, 12, 5, 12, 0, tzinfo=UTC), datetime(2026, 12, 7, 8, 0, tzinfo=UTC)),   # Saturday
    # Summer time: 09:00 in Amsterdam is 07:00 UTC (the clocks went forward on 28 March 2027).
    (datetime(2027, 3, 27, 12, 0, tzinfo=UTC), datetime(2027, 3, 29, 7, 0, tzinfo=UTC)),
])
def test_the_window_opens_at_local_nine_on_weekdays(moment, opening):
    assert WINDOW.next_opening(moment) == opening


@pytest.mark.parametrize("spec, zone, problem", [
    ("mon-fri 9-17", "Europe/Amsterdam", "is not like"),
    ("mon-fry 09:00-17:00", "Europe/Amsterdam", "is not a day"),
    ("mon-fri 17:00-09:00", "Europe/Amsterdam", "must end after it starts"),
    ("mon-fri 09:00-25:00", "Europe/Amsterdam", "is not a time of day"),
    ("mon-fri 09:00-17:00", "Europe/Amsterdum", "unknown time zone"),
])
def test_a_bad_window_says_what_is_wrong(spec, zone, problem):
    with pytest.raises(WindowError, match=problem):
        SendWindow.parse(spec, zone)


def test_a_bad_window_setting_names_its_variable(tmp_path):
    from conftest import make_env

    from mailer.errors import SettingsError
    from mailer.settings import Settings

    with pytest.raises(SettingsError, match="MAILER_DRIP_WINDOW"):
        Settings.from_env(make_env(tmp_path, MAILER_DRIP_WINDOW="weekdays"), dotenv=tmp_path / "none")
    with pytest.raises(SettingsError, match="MAILER_DRIP_TIMEZONE"):
        Settings.from_env(make_env(tmp_path, MAILER_DRIP_TIMEZONE="Mars/Olympus"), dotenv=tmp_path / "none")


def test_a_weekend_window_wraps_around_sunday():
    weekend = SendWindow.parse("sat-sun 10:00-24:00", "UTC")
    assert weekend.contains(datetime(2026, 12, 6, 23, 59, tzinfo=UTC))
    assert weekend.next_opening(datetime(2026, 12, 7, 0, 0, tzinfo=UTC)) == datetime(2026, 12, 12, 10, tzinfo=UTC)


# --- one enrollment's next move ------------------------------------------------------------

def move(now, position=-1, last_sent=None, done=frozenset(), facts=Facts()):
    return advance(SEQUENCE, anchor=ANCHOR, position=position, last_sent=last_sent, now=now, gap=DAY,
                   done=done, facts=facts)


def test_nothing_is_sent_before_the_first_step_is_due():
    early = move(ANCHOR + DAY)
    assert early.step is None and early.next_due_at == ANCHOR + 2 * DAY


def test_the_due_step_is_sent_and_the_next_one_scheduled():
    first = move(ANCHOR + 2 * DAY)
    assert first.step.key == "gids-in-de-praktijk"
    assert first.next_due_at == ANCHOR + 4 * DAY


def test_a_step_whose_condition_holds_is_skipped_and_the_next_is_sent_when_due():
    at_day_6 = ANCHOR + 6 * DAY
    sent = move(at_day_6, position=2 * 86400, last_sent=ANCHOR + 2 * DAY, facts=Facts(downloaded=True))
    assert sent.skipped == ("nog-niet-gelezen",) and sent.step.key == "lef-en-eigenheid"
    kept = move(at_day_6, position=2 * 86400, last_sent=ANCHOR + 2 * DAY, facts=Facts(downloaded=False))
    assert kept.step.key == "nog-niet-gelezen"


def test_overdue_steps_go_out_one_a_day_never_together():
    late = ANCHOR + 30 * DAY
    first = move(late, position=2 * 86400, last_sent=ANCHOR + 2 * DAY)
    assert first.step.key == "nog-niet-gelezen" and first.next_due_at == late + DAY
    same_day = move(late + timedelta(hours=3), position=first.position, last_sent=late)
    assert same_day.step is None and same_day.next_due_at == late + DAY


def test_a_step_the_lead_already_got_is_passed_over():
    again = move(ANCHOR + 6 * DAY, position=4 * 86400, done={"lef-en-eigenheid"})
    assert again.step is None and again.skipped == ("lef-en-eigenheid",)
    assert (again.position, again.next_due_at) == (6 * 86400, ANCHOR + 10 * DAY)


def test_after_the_last_step_nothing_is_due():
    finished = move(ANCHOR + 40 * DAY, position=25 * 86400, last_sent=ANCHOR + 25 * DAY)
    assert finished.step is None and finished.next_due_at is None


# --- sequence files are checked at start-up ----------------------------------------------

@pytest.mark.parametrize("old, new, message", [
    ('key = "lef-en-eigenheid"', 'key = "gids-in-de-praktijk"', r"steps\[3\] \(gids-in-de-praktijk\).key' is used"),
    ("days = 6", "days = 3", r"steps\[3\] \(lef-en-eigenheid\).days' and hours must come after the step before"),
    ('\nskip_if = "downloaded"', '\nskip_if = "opened"', r"steps\[2\] \(nog-niet-gelezen\).skip_if' must be one of"),
    ('magnet = "mini-guide"', 'magnet = "ebook"', r"field 'magnet' names 'ebook'"),
    ('subject = "Waarom', '# subject = "Waarom', r"steps\[3\] \(lef-en-eigenheid\).subject' must be a non-empty"),
    ("days = 6", "dayz = 6", r"steps\[3\] \(lef-en-eigenheid\).dayz' is not a known field"),
])
def test_a_bad_sequence_file_names_file_step_and_field(tmp_path, old, new, message):
    content = broken_sequence(tmp_path, old, new)
    with pytest.raises(ContentError, match=message) as error:
        load_content(content)
    assert "sequences/mini-guide.toml" in str(error.value)


