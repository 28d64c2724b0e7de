"""Holidays and quiet dates on a real database: the drip job, the sender's claim of marketing
mail and `mailer drip preview` all keep them (Christmas 2026: Friday 25 and Saturday 26 December)."""

from __future__ import annotations

from datetime import datetime, timezone

from test_drip import enrol
from test_drip_cli import cli  # noqa: F401  (a fixture)

from mailer.delivery.transports.memory import MemoryTransport

UTC = timezone.utc


def at(day: int, hour: int) -> datetime:
    """December 2026, UTC (Amsterdam is an hour ahead)."""
    return datetime(2026, 12, day, hour, 0, tzinfo=UTC)


MONDAY = at(21, 9)  # confirmed Monday 21 December at 10:00: day 4 of the sequence is Christmas Day


def test_nothing_is_queued_or_sent_on_christmas_day(services, clock):
    enrol(services, 1, MONDAY)
    assert services.drip.run(services.db, at(23, 9)).enqueued == 1  # day 2, Wednesday: queued, not yet sent
    transport = MemoryTransport()

    clock.set(at(25, 9))  # Eerste kerstdag, 10:00 on a Friday
    assert services.drip.run(services.db, clock.now()).note.startswith("outside the send window")
    services.sender(transport, worker="christmas").dispatch_all()
    assert transport.outbox == []  # the sender does not claim marketing mail on a holiday either

    clock.set(at(28, 8))  # Monday 09:00: the waiting mail goes, and day 4's step is queued
    assert services.drip.run(services.db, clock.now()).enqueued == 1
    services.sender(transport, worker="monday").dispatch_all()
    subjects = [m["Subject"] for m in transport.parsed()]
    assert subjects == ["Een oefening van tien minuten voor deze week", "Je mini guide staat nog voor je klaar"]


def test_preview_shows_the_dates_holidays_move(services, cli):
    enrol(services, 1, MONDAY)
    result = cli("drip", "preview", "--lead", "lead0@example.nl", "--now", "2026-12-21T09:00:00+00:00",
                 "--days", "10")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "(window mon-fri 09:00-17:00, Europe/Amsterdam, not on NL holidays)" in lines[0]
    planned = {line.split()[6]: line for line in lines[1:]}
    assert "Wed 2026-12-23 10:00 CET" in planned["gids-in-de-praktijk"]
    assert "moved" not in planned["gids-in-de-praktijk"]
    # Day 4 is Friday 25 December; the 26th is a Saturday: Monday 28 December at nine.
    assert "Mon 2026-12-28 09:00 CET" in planned["nog-niet-gelezen"]
    assert "moved from Fri 25 Dec: Eerste kerstdag" in planned["nog-niet-gelezen"]
    # Day 6 (Sunday 27th) comes one a day after it.
    assert "Tue 2026-12-29 09:00 CET" in planned["lef-en-eigenheid"]
    assert "moved: the mail before it moved" in planned["lef-en-eigenheid"]

    plain = cli("drip", "preview", "--lead", "lead0@example.nl", "--now", "2026-12-21T09:00:00+00:00",
                "--days", "10", MAILER_DRIP_HOLIDAYS="")
    assert "(window mon-fri 09:00-17:00, Europe/Amsterdam)" in plain.output
    assert "Fri 2026-12-25 10:00 CET" in plain.output and "moved" not in plain.output


def test_preview_shows_quiet_dates_over_the_new_year(cli):
    result = cli("drip", "preview", "--now", "2026-12-21T09:00:00+00:00", "--days", "20",
                 MAILER_DRIP_QUIET_DATES="12-24..01-01")
    assert result.exit_code == 0, result.output
    planned = {line.split()[6]: line for line in result.output.splitlines()[1:]}
    assert "Wed 2026-12-23 10:00 CET" in planned["gids-in-de-praktijk"]
    assert "Mon 2027-01-04 09:00 CET" in planned["nog-niet-gelezen"]  # past the whole quiet range
    assert "moved from Mon 28 Dec: quiet date 12-24..01-01" in planned["lef-en-eigenheid"]
    assert "Tue 2027-01-05 09:00 CET" in planned["lef-en-eigenheid"]
