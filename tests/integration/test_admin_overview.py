"""/beheer/: the overview's figures are what happened, per day and period, drawn as accessible SVG."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

from conftest import Visitor
from sqlalchemy import update

from mailer.delivery.transports.memory import MemoryTransport
from mailer.operator.outbox import pause
from mailer.operator.people import unsubscribe_person
from mailer.store.tables import BounceReport, Lead, Outbox

LINK = re.compile(r"https://guide\.example\.nl(/(?:bevestig|download)/[\w.\-]+)")


def deliver(services) -> list:
    transport = MemoryTransport()
    services.sender(transport, worker="test").dispatch_all()
    return transport.parsed()


def link_in(message, prefix: str) -> str:
    text = message.get_body(("plain",)).get_content()
    return next(path for path in LINK.findall(text) if path.startswith(prefix))


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
