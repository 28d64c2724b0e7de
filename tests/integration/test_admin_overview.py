"""/beheer/: the overview's figures are what happened, per day and period, drawn as accessible SVG."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, time, timedelta

import pytest
from conftest import Visitor
from sqlalchemy import insert, select, update
from test_funnel import deliver, link_in

from mailer.delivery.transports.memory import MemoryTransport
from mailer.operator import figures
from mailer.operator.imports import import_leads
from mailer.operator.outbox import pause
from mailer.operator.people import unsubscribe_person
from mailer.resources import shipped
from mailer.store.tables import BounceReport, DailyFigureDay, Lead, Outbox


def figure(html: str, metric: str) -> int:
    found = re.search(rf'data-figure="{metric}">([\d.]+)<', html)
    assert found, f"no figure {metric} on the page"
    return int(found.group(1).replace(".", ""))


def report(services, lead_email: str, kind: str, number: int) -> None:
    """A bounce report as intake stores it (the overview counts them by kind and day)."""
    with services.db.transaction() as session:
        lead_id = session.query(Lead.id).filter(Lead.email == lead_email).scalar()
        session.add(BounceReport(dedupe_key=f"<report-{number}@example.nl>", received_at=services.clock.now(),
                                 source="ingest", kind=kind, format="dsn", recipient=lead_email, lead_id=lead_id,
                                 note="", raw="", raw_size=0))


def test_the_overview_shows_the_funnel_the_charts_and_the_outbox(services, client, dashboard):
    visitor = Visitor(client, services.clock)
    for email in ("anne@example.nl", "bram@example.nl", "cor@example.nl"):
        visitor.sign_up(email, marketing=True)
    confirms = {m["To"].addresses[0].addr_spec: m for m in deliver(services)}
    for email in ("anne@example.nl", "bram@example.nl"):
        assert client.post(link_in(confirms[email], "/bevestig/")).status_code in (200, 302, 303)
    guide = next(m for m in deliver(services) if m["To"].addresses[0].addr_spec == "anne@example.nl")
    assert client.get(link_in(guide, "/download/")).status_code == 200
    unsubscribe_person(services.db, services.funnel, "bram@example.nl", "phone", services.clock.now())
    report(services, "cor@example.nl", "hard", 1)
    report(services, "bram@example.nl", "complaint", 2)
    with services.db.transaction() as session:  # one mail stuck, and marketing held back
        session.execute(update(Outbox).where(Outbox.recipient == "cor@example.nl").values(status="failed"))
    pause(services.db, "550 5.7.1 beleid van de relay", services.clock.now())

    page = dashboard("viewer").get("/beheer/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert {metric: figure(html, metric) for metric in
            ("signups", "confirmed", "downloads", "marketing", "unsubscribed", "bounces", "complaints")} == {
        "signups": 3, "confirmed": 2, "downloads": 1, "marketing": 2, "unsubscribed": 1, "bounces": 1, "complaints": 1}
    assert "66,7% van de aanmeldingen" in html  # 2 of 3 confirmed
    assert 'data-outbox="failed">1<' in html and "Gepauzeerd" in html and "5.7.1 beleid van de relay" in html
    assert 'href="/beheer/outbox"' in html
    assert "laatste 30 dagen" in html.lower() and "UTC" in html
    # Seven charts, each an image with a title and a description, and a table with the same figures.
    charts = re.findall(r'<svg viewBox="0 0 \d+ \d+" role="img" aria-labelledby="(grafiek-\w+)-t \1-d"', html)
    assert len(charts) == 7
    today = services.clock.now().strftime("%d-%m-%Y")
    assert "Aanmeldingen per dag van" in html and f"het meest op {today} (3)" in html
    assert html.count("<summary>Tabel:") == 7 and f'<th scope="row">{today}</th>' in html
    assert "style=" not in html and "<script>" not in html  # the CSP allows neither


def test_a_period_switch_changes_the_numbers(services, client, dashboard):
    visitor = Visitor(client, services.clock)
    first_day = services.clock.now().date()
    visitor.sign_up("oud@example.nl")
    services.clock.advance(days=10)
    visitor.sign_up("nieuw1@example.nl")
    visitor.sign_up("nieuw2@example.nl")
    owner = dashboard("owner")

    assert figure(owner.get("/beheer/").get_data(as_text=True), "signups") == 3  # the last 30 days
    assert figure(owner.get("/beheer/?periode=7").get_data(as_text=True), "signups") == 2
    day = first_day.isoformat()
    html = owner.get(f"/beheer/?periode=eigen&van={day}&tot={day}").get_data(as_text=True)
    assert figure(html, "signups") == 1 and 'value="' + day + '"' in html
    html = owner.get("/beheer/?periode=90&magneet=mini-guide").get_data(as_text=True)
    assert figure(html, "signups") == 3
    later = (first_day + timedelta(days=40)).isoformat()
    assert figure(owner.get(f"/beheer/?periode=eigen&van={later}&tot={later}").get_data(as_text=True),
                  "signups") == 0


def test_bad_input_gets_a_dutch_message_and_the_default_period(services, client, dashboard):
    Visitor(client, services.clock).sign_up("een@example.nl")
    owner = dashboard("owner")
    for query, message in (
        ("periode=eigen&van=gisteren&tot=2026-12-01", "Vul een geldige begin- en einddatum in"),
        ("periode=eigen&van=2026-12-05&tot=2026-12-01", "De einddatum ligt voor de begindatum"),
        ("periode=eigen&van=2020-01-01&tot=2026-12-01", "hoogstens 366 dagen"),
        ("periode=eigen&van=9999-12-31&tot=9999-12-31", "Vul een geldige begin- en einddatum in"),
        ("periode=eigen&van=0001-01-01&tot=0001-01-01", "Vul een geldige begin- en einddatum in"),
        ("periode=eigen&van=9998-12-31&tot=9999-12-31", "Vul een geldige begin- en einddatum in"),
        ("periode=365", "Deze periode kennen we niet"),
        ("magneet=bestaat-niet", "Deze gids bestaat niet"),
    ):
        page = owner.get(f"/beheer/?{query}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200, query
        assert message in html and figure(html, "signups") == 1, query
        assert "(30 dagen, UTC)" in html, query


def test_an_erased_person_still_counts_as_a_signup(services, client, dashboard):
    from mailer.operator.people import erase_person

    visitor = Visitor(client, services.clock)
    visitor.sign_up("blijft@example.nl")
    visitor.sign_up("weg@example.nl")
    erase_person(services.db, MemoryTransport(), "weg@example.nl", services.settings.secret_keys[0],
                 services.clock.now())
    assert figure(dashboard("viewer").get("/beheer/").get_data(as_text=True), "signups") == 2


def test_a_signup_late_in_the_evening_counts_on_its_utc_day(services, client, dashboard):
    """23:30 UTC is already the next day in the Netherlands; the overview counts UTC days (as
    `mailer stats` does, and as the page says), so the signup is on the first day."""
    day = services.clock.now().date()
    services.clock.set(datetime.combine(day, time(23, 30), UTC))
    Visitor(client, services.clock).sign_up("laat@example.nl")
    owner = dashboard("owner")
    following = day + timedelta(days=1)
    assert figure(owner.get(f"/beheer/?periode=eigen&van={day}&tot={day}").get_data(as_text=True), "signups") == 1
    assert figure(owner.get(f"/beheer/?periode=eigen&van={following}&tot={following}").get_data(as_text=True),
                  "signups") == 0
    html = owner.get("/beheer/?periode=7").get_data(as_text=True)  # "today" is the UTC day: it has the signup
    assert figure(html, "signups") == 1 and "Van (UTC)" in html and "Tot en met (UTC)" in html


# --- finished days are counted once and stored (figures.daily, migration 0012) ---------------

SHOWN_FIGURES = ("signups", "confirmed", "downloads", "marketing", "unsubscribed", "bounces", "complaints")


@pytest.fixture
def services(make_services, database_url, tmp_path, request):
    """The shipped content; with indirect parameter "two magnets", plus a second lead magnet
    (checklist, a copy of the mini guide's file)."""
    if getattr(request, "param", None) != "two magnets":
        return make_services(database_url)
    content = tmp_path / "content-two"
    shutil.copytree(shipped("content"), content)
    (content / "magnets" / "checklist.toml").write_text(
        (content / "magnets" / "mini-guide.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return make_services(database_url, MAILER_CONTENT_PATH=str(content))


def shown(dashboard, query: str) -> dict[str, int]:
    """The overview's figures for a query, seen by a freshly logged-in viewer (the clock moves
    between views, past any session's idle limit)."""
    shown.views = getattr(shown, "views", 0) + 1
    html = dashboard("viewer", email=f"kijker{shown.views}@trainingsbureau.nl").get(f"/beheer/?{query}")
    assert html.status_code == 200
    text = html.get_data(as_text=True)
    return {metric: figure(text, metric) for metric in SHOWN_FIGURES}


def stored_days(services) -> set[str]:
    with services.db.read_only() as session:
        return set(session.scalars(select(DailyFigureDay.day)))


def a_busy_day(services, client) -> None:
    """On the clock's day: signups for two magnets, a confirmation with a download, an
    unsubscribe, a hard bounce and a complaint through leads, and a hard bounce that matched
    no lead (it counts for every magnet together, not for one)."""
    visitor = Visitor(client, services.clock)
    visitor.sign_up("anne@example.nl", marketing=True)
    visitor.sign_up("bram@example.nl", marketing=True)
    visitor.sign_up("cor@example.nl", slug="checklist")
    visitor.sign_up("dirk@example.nl", slug="checklist", marketing=True)
    confirms = {m["To"].addresses[0].addr_spec: m for m in deliver(services)}
    for email in ("anne@example.nl", "dirk@example.nl"):
        assert client.post(link_in(confirms[email], "/bevestig/")).status_code in (200, 302, 303)
    guide = next(m for m in deliver(services) if m["To"].addresses[0].addr_spec == "dirk@example.nl")
    assert client.get(link_in(guide, "/download/")).status_code == 200
    unsubscribe_person(services.db, services.funnel, "anne@example.nl", "phone", services.clock.now())
    report(services, "cor@example.nl", "hard", 1)
    report(services, "bram@example.nl", "complaint", 2)
    report(services, "vreemd@example.com", "hard", 3)


@pytest.mark.parametrize("services", ["two magnets"], indirect=True)
def test_a_stored_day_shows_what_the_live_count_showed_and_the_magnets_add_up(services, client, dashboard):
    day = services.clock.now().date()
    a_busy_day(services, client)
    queries = {name: f"periode=eigen&van={day}&tot={day}" + (f"&magneet={name}" if name else "")
               for name in ("", "mini-guide", "checklist")}
    live = {name: shown(dashboard, query) for name, query in queries.items()}
    assert stored_days(services) == set()  # the day is not over: counted live
    assert live[""] == {"signups": 4, "confirmed": 2, "downloads": 1, "marketing": 2, "unsubscribed": 1,
                        "bounces": 2, "complaints": 1}
    for metric in SHOWN_FIGURES:  # the unmatched bounce counts only for every magnet together
        assert live[""][metric] == live["mini-guide"][metric] + live["checklist"][metric] + (metric == "bounces")

    midnight = datetime.combine(day + timedelta(days=1), time(0), UTC)
    services.clock.set(midnight + figures.GRACE - timedelta(seconds=1))  # a late commit may still come
    assert {name: shown(dashboard, query) for name, query in queries.items()} == live
    assert stored_days(services) == set()
    services.clock.set(midnight + figures.GRACE + timedelta(seconds=1))
    assert {name: shown(dashboard, query) for name, query in queries.items()} == live
    assert stored_days(services) == {day.isoformat()}
    week = shown(dashboard, "periode=7&magneet=checklist")  # today live (nothing yet), the rest stored
    assert week == live["checklist"]


def test_a_stored_day_is_read_from_the_store_and_an_import_dated_on_it_counts_it_again(services, client,
                                                                                      dashboard):
    day = services.clock.now().date()
    Visitor(client, services.clock).sign_up("eerste@example.nl")
    services.clock.set(datetime.combine(day + timedelta(days=1), time(1), UTC))
    period = f"periode=eigen&van={day}&tot={day + timedelta(days=1)}"
    assert shown(dashboard, period)["signups"] == 1
    assert day.isoformat() in stored_days(services)

    moment = datetime.combine(day, time(12), UTC)
    with services.db.transaction() as session:  # written behind the store's back: not seen
        session.execute(insert(Lead).values(email="stil@example.nl", first_name="Stil", status="confirmed",
                                            magnet="mini-guide", marketing_consent=False, created_at=moment,
                                            confirmed_at=moment, updated_at=moment))
    assert shown(dashboard, period)["signups"] == 1

    data = (b"email;first_name;marketing_consent;signed_up_at;consent_at;consent_source\n"
            + f"oud@example.nl;Oud;ja;{day}T12:00:00+00:00;{day}T12:00:00+00:00;oude site\n".encode())
    import_leads(services.db, services.content, data, "oud.csv", services.settings.secret_keys,
                 services.clock.now())
    assert day.isoformat() not in stored_days(services)  # the import forgot the day ...
    after = shown(dashboard, period)  # ... so it is counted again: with the import, and the row above
    assert (after["signups"], after["confirmed"], after["marketing"]) == (3, 2, 1)
    assert day.isoformat() in stored_days(services)


def test_todays_signups_show_at_once_beside_the_stored_days(services, client, dashboard):
    day = services.clock.now().date()
    visitor = Visitor(client, services.clock)
    visitor.sign_up("gisteren@example.nl")
    services.clock.set(datetime.combine(day + timedelta(days=1), time(8), UTC))
    assert shown(dashboard, "periode=7")["signups"] == 1
    assert day.isoformat() in stored_days(services)
    visitor.sign_up("vandaag1@example.nl")
    assert shown(dashboard, "periode=7")["signups"] == 2
    visitor.sign_up("vandaag2@example.nl")
    assert shown(dashboard, "periode=7")["signups"] == 3
    today = (day + timedelta(days=1)).isoformat()
    assert figure(dashboard("owner").get(f"/beheer/?periode=eigen&van={today}&tot={today}").get_data(as_text=True),
                  "signups") == 2
    assert today not in stored_days(services)
