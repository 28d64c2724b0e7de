"""The dashboard's leads: the list (search, filters, keyset pages, the CSV download) and a lead's
page with its actions (unsubscribe, resend the guide, the JSON export, erasure)."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import parse_qsl

import pytest
from markupsafe import escape
from sqlalchemy import func, select
from test_funnel import confirm, deliver

from mailer.operator import people as people_ops
from mailer.operator.export import Filters, Format, export_leads
from mailer.store.tables import AuditEntry, ConsentEvent, Lead, Outbox

LEAD_LINK = re.compile(r'href="/beheer/leads/(\d+)"')
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')
PREV = re.compile(r'<a href="([^"]+)" rel="prev">')


@pytest.fixture
def people(services, visitor, client):
    """Anne confirmed with marketing consent, Bram confirmed without, and a pending signup whose
    name looks like a formula. Returns their lead ids by first name."""
    visitor.sign_up("anne@gemeente.nl", first_name="Anne", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)  # the guide
    visitor.sign_up("bram@provincie.nl", first_name="Bram")
    confirm(client, deliver(services)[0])
    deliver(services)
    visitor.sign_up("cmd@example.nl", first_name="=cmd")
    deliver(services)
    with services.db.read_only() as session:
        return {lead.first_name: lead.id for lead in session.scalars(select(Lead))}



def form(query: str) -> dict:
    """The download form's fields, as the list's query string names them."""
    return dict(parse_qsl(query))


def bulk(services, count: int, start_day: date = date(2026, 10, 1)) -> None:
    """`count` leads inserted directly, one an hour from `start_day`, statuses and magnets mixed."""
    statuses = ("confirmed", "pending", "confirmed", "unsubscribed")
    moment = services.clock.now().replace(year=start_day.year, month=start_day.month, day=start_day.day)
    with services.db.transaction() as session:
        session.add_all(Lead(email=f"lead{n:04d}@voorbeeld.nl", first_name=f"Naam{n}", status=statuses[n % 4],
                             magnet="mini-guide", marketing_consent=n % 3 == 0,
                             created_at=moment + timedelta(hours=n), updated_at=moment + timedelta(hours=n))
                        for n in range(count))


def lead_ids(page) -> list[int]:
    return [int(found) for found in LEAD_LINK.findall(page.get_data(as_text=True))]


def audit(services, action: str) -> list[AuditEntry]:
    with services.db.read_only() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def held(services, lead_id: int) -> Lead | None:
    with services.db.read_only() as session:
        return session.get(Lead, lead_id)


def exported(services, filters: Filters, fmt: Format | None = None) -> bytes:
    out = io.BytesIO()
    export_leads(services.db, services.content, filters, fmt or Format(), out)
    return out.getvalue()


# --- the list -------------------------------------------------------------------------------

def test_the_list_shows_every_lead_newest_first_with_status_in_words(dashboard, people):
    page = dashboard("viewer").get("/beheer/leads")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert lead_ids(page) == [people["=cmd"], people["Bram"], people["Anne"]]
    assert "3 leads gevonden" in body
    assert 'class="badge ok">bevestigd<' in body and 'class="badge warn">wacht op bevestiging<' in body
    assert "anne<wbr>@gemeente.nl" in body and "=cmd" in body
    assert "Download als CSV" not in body  # a viewer may not export


def test_search_finds_an_address_or_a_name_by_its_start_in_any_case(dashboard, people):
    viewer = dashboard("viewer")
    assert lead_ids(viewer.get("/beheer/leads?q=anne@gemeente.nl")) == [people["Anne"]]
    assert lead_ids(viewer.get("/beheer/leads?q=ANNE@GEM")) == [people["Anne"]]
    assert lead_ids(viewer.get("/beheer/leads?q=bra")) == [people["Bram"]]  # name and address
    assert lead_ids(viewer.get("/beheer/leads?q=%3Dcm")) == [people["=cmd"]]  # the name "=cmd"
    assert lead_ids(viewer.get("/beheer/leads?q=provincie")) == []  # not the middle of an address
    nothing = viewer.get("/beheer/leads?q=zzz")
    assert lead_ids(nothing) == [] and "Geen leads gevonden met deze zoekterm of filters" in nothing.get_data(as_text=True)


def test_filters_narrow_the_list_like_the_export_does(dashboard, people, services):
    viewer = dashboard("viewer")
    assert lead_ids(viewer.get("/beheer/leads?status=confirmed")) == [people["Bram"], people["Anne"]]
    assert lead_ids(viewer.get("/beheer/leads?status=pending")) == [people["=cmd"]]
    assert lead_ids(viewer.get("/beheer/leads?toestemming=ja")) == [people["Anne"]]
    assert lead_ids(viewer.get("/beheer/leads?toestemming=nee&status=confirmed")) == [people["Bram"]]
    assert len(lead_ids(viewer.get("/beheer/leads?magneet=mini-guide"))) == 3
    today = services.clock.now().date()
    assert len(lead_ids(viewer.get(f"/beheer/leads?vanaf={today}&tot={today}"))) == 3
    assert lead_ids(viewer.get(f"/beheer/leads?vanaf={today + timedelta(days=1)}")) == []
    assert lead_ids(viewer.get(f"/beheer/leads?tot={today - timedelta(days=1)}")) == []


@pytest.mark.parametrize("query", ["", "status=confirmed", "q=lead00", "toestemming=ja&magneet=mini-guide"])
def test_pages_walk_every_matching_lead_once_forwards_and_back(dashboard, services, query):
    bulk(services, 230)
    viewer = dashboard("viewer")
    where = {"": [], "status=confirmed": [Lead.status == "confirmed"], "q=lead00": [Lead.email.startswith("lead00")],
             "toestemming=ja&magneet=mini-guide": [Lead.marketing_consent.is_(True), Lead.magnet == "mini-guide"]}
    with services.db.read_only() as session:
        expected = list(session.scalars(select(Lead.id).where(*where[query]).order_by(Lead.id.desc())))
    pages, url = [], f"/beheer/leads?{query}"
    while url:
        page = viewer.get(html.unescape(url))
        assert page.status_code == 200
        pages.append(lead_ids(page))
        assert len(pages[-1]) == min(50, len(expected) - 50 * (len(pages) - 1))
        found = NEXT.search(page.get_data(as_text=True))
        url = found and found.group(1)
    assert [lead for ids in pages for lead in ids] == expected
    # and back again from the last page, through the same pages
    back = []
    found = PREV.search(page.get_data(as_text=True))
    while found:
        page = viewer.get(html.unescape(found.group(1)))
        back.append(lead_ids(page))
        found = PREV.search(page.get_data(as_text=True))
    assert back == pages[-2::-1]
    assert f"{len(expected)} leads gevonden" in page.get_data(as_text=True)


def test_a_big_list_says_more_than_instead_of_counting_everything(dashboard, services):
    bulk(services, 1005)
    body = dashboard("viewer").get("/beheer/leads").get_data(as_text=True)
    assert "Meer dan 1.000 leads gevonden" in body


@pytest.mark.parametrize("query, message", [
    ("status=bestaat-niet", "Kies een status uit de lijst."),
    ("toestemming=misschien", "Kies bij toestemming"),
    ("vanaf=2026-13-01", "geen geldige datum"),
    ("vanaf=2026-12-02&tot=2026-12-01", "ligt voor de datum"),
    ("magneet=bestaat-niet", "Er is geen gids met de naam &#39;bestaat-niet&#39;"),
])
def test_bad_filters_get_a_dutch_answer(dashboard, people, query, message):
    page = dashboard("viewer").get(f"/beheer/leads?{query}")
    assert page.status_code == 400
    assert message in page.get_data(as_text=True)


@pytest.mark.parametrize("query", ["vanaf=0001-01-01", "tot=9999-12-31", "vanaf=0001-01-01&tot=0001-01-01",
                                   "vanaf=9999-12-31&tot=9999-12-31", "vanaf=1969-12-31", "tot=99999-01-01"])
def test_dates_outside_the_calendar_get_a_dutch_answer_on_the_list_and_the_csv(dashboard, people, query):
    owner = dashboard("owner")
    page = owner.get(f"/beheer/leads?{query}")
    assert page.status_code == 400 and "geen geldige datum (jjjj-mm-dd)" in page.get_data(as_text=True)
    csv = owner.post("/beheer/leads.csv", data=form(f"{query}"))
    assert csv.status_code == 302
    assert "geen geldige datum (jjjj-mm-dd)" in owner.get(csv.headers["Location"]).get_data(as_text=True)


def test_odd_cursors_and_search_text_and_unknown_leads_get_a_friendly_answer(dashboard, people):
    viewer = dashboard("viewer")
    everyone = [people["=cmd"], people["Bram"], people["Anne"]]
    assert lead_ids(viewer.get("/beheer/leads?voor=abc")) == everyone
    assert lead_ids(viewer.get("/beheer/leads?voor=99999999999999999999999")) == everyone
    assert lead_ids(viewer.get("/beheer/leads?na=99999999999999999999999")) == everyone
    assert lead_ids(viewer.get("/beheer/leads?voor=-99999999999999999999999")) == everyone
    assert lead_ids(viewer.get("/beheer/leads?q=an%00ne")) == [people["Anne"]]
    for path in ("/beheer/leads/999999", "/beheer/leads/99999999999999999999999"):
        missing = viewer.get(path)
        assert missing.status_code == 404 and "Lead niet gevonden" in missing.get_data(as_text=True)


# --- the CSV download ---------------------------------------------------------------------

def test_the_csv_is_the_export_of_the_same_filters_and_is_audited(dashboard, people, services):
    owner = dashboard("owner")
    assert "Download als CSV" in owner.get("/beheer/leads").get_data(as_text=True)
    everyone = owner.post("/beheer/leads.csv", data=form(""))
    assert everyone.status_code == 200 and everyone.mimetype == "text/csv"
    assert "attachment" in everyone.headers["Content-Disposition"]
    assert everyone.get_data() == exported(services, Filters())
    assert b"'=cmd" in everyone.get_data()  # a formula comes out as text
    confirmed = owner.post("/beheer/leads.csv", data=form("status=confirmed&toestemming=nee&excel=1"))
    assert confirmed.get_data() == exported(services, Filters(("confirmed",), marketing_consent=False),
                                             Format(excel=True))
    assert b"bram@provincie.nl" in confirmed.get_data() and b"anne@" not in confirmed.get_data()
    today = services.clock.now().date()
    dated = owner.post("/beheer/leads.csv", data=form(f"vanaf={today}&tot={today}"))
    assert dated.get_data() == exported(services, Filters.for_days(since=today, until=today))
    searched = owner.post("/beheer/leads.csv", data=form("q=anne@gemeente.nl"))
    assert searched.get_data() == exported(services, Filters(search="anne@gemeente.nl"))
    assert searched.get_data().count(b"\r\n") == 2  # the header and Anne
    rows = audit(services, "leads.export")
    assert [row.outcome for row in rows] == ["done"] * 4
    assert "status=confirmed" in rows[1].detail and "toestemming=nee" in rows[1].detail and "excel" in rows[1].detail
    assert "anne" not in rows[3].detail and "search term" in rows[3].detail  # the audit log names no one


def late_signup(services, day: date) -> int:
    """A lead who signed up at 23:30 UTC on `day`: 00:30 or 01:30 the next day in the Netherlands."""
    moment = datetime.combine(day, time(23, 30), UTC)
    with services.db.transaction() as session:
        lead = Lead(email="laat@voorbeeld.nl", first_name="Laat", status="confirmed", magnet="mini-guide",
                    marketing_consent=True, created_at=moment, updated_at=moment)
        session.add(lead)
        session.flush()
        return lead.id


def test_the_list_and_the_csv_cut_days_in_utc_as_mailer_export_does(dashboard, people, services):
    """Dates pick the same leads as `mailer export --since D --until D` (UTC days), also for a
    signup late in the evening, which falls on the next day in the Netherlands."""
    owner = dashboard("owner")
    day = services.clock.now().date()
    late = late_signup(services, day)
    following = day + timedelta(days=1)
    for on, included in ((day, True), (following, False)):
        csv = owner.post("/beheer/leads.csv", data=form(f"vanaf={on}&tot={on}")).get_data()
        assert csv == exported(services, Filters.for_days(since=on, until=on))  # what the CLI builds
        assert (b"laat@voorbeeld.nl" in csv) is included
        assert (late in lead_ids(owner.get(f"/beheer/leads?vanaf={on}&tot={on}"))) is included
    page = owner.get("/beheer/leads").get_data(as_text=True)
    assert "Aangemeld vanaf (UTC)" in page and "Aangemeld tot en met (UTC)" in page


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_only_an_owner_may_download_the_csv(dashboard, people, services, role):
    refused = dashboard(role).post("/beheer/leads.csv", data=form(""))
    assert refused.status_code == 403 and b"anne@" not in refused.get_data()
    [row] = audit(services, "leads.export")
    assert row.outcome == "refused"


def test_a_bad_filter_on_the_csv_goes_back_to_the_list_with_a_message(dashboard, people):
    owner = dashboard("owner")
    answer = owner.post("/beheer/leads.csv", data=form("magneet=bestaat-niet"))
    assert answer.status_code == 302
    assert "Er is geen gids" in owner.get(answer.headers["Location"]).get_data(as_text=True)


# --- a lead's page ------------------------------------------------------------------------

def test_a_leads_page_shows_its_record_with_the_exact_notice_text(dashboard, people, services):
    record = people_ops.record(services.db, "anne@gemeente.nl")
    page = dashboard("viewer").get(f"/beheer/leads/{people['Anne']}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "anne@gemeente.nl" in body and "bevestigd" in body
    notice = record["consent_events"][0]["notice"]
    assert f"<pre class=\"notice-text\">{escape(notice['text'])}</pre>" in body
    assert "Versie " + notice["version"] in body
    assert "aanmelding via formulier" in body and "bevestiging" in body
    assert "gids" in body and "afgeleverd" in body  # the guide, and its attempt
    assert "Lead afmelden" not in body and "Lead definitief wissen" not in body and "Gegevens downloaden" not in body


def test_an_editor_unsubscribes_a_lead_with_evidence_and_an_audit_row(dashboard, people, services):
    editor = dashboard("editor")
    page = editor.get(f"/beheer/leads/{people['Anne']}").get_data(as_text=True)
    assert "Lead afmelden" in page and "Lead definitief wissen" not in page
    answer = editor.post(f"/beheer/leads/{people['Anne']}/afmelden", {"via": "phone"})
    assert answer.status_code == 302
    assert "is afgemeld" in editor.get(answer.headers["Location"]).get_data(as_text=True)
    anne = held(services, people["Anne"])
    assert anne.status == "unsubscribed" and anne.marketing_consent is False
    with services.db.read_only() as session:
        event = session.scalars(select(ConsentEvent).where(ConsentEvent.lead_id == anne.id)
                                .order_by(ConsentEvent.id.desc())).first()
    assert event.kind == "unsubscribe" and event.form == "operator:phone"
    [row] = audit(services, "lead.unsubscribe")
    assert row.target == f"lead {anne.id}" and row.outcome == "done" and "anne" not in row.detail
    again = editor.post(f"/beheer/leads/{people['Anne']}/afmelden", {"via": "phone"})
    assert "was al afgemeld" in editor.get(again.headers["Location"]).get_data(as_text=True)


def test_a_viewer_cannot_unsubscribe(dashboard, people, services):
    answer = dashboard("viewer").post(f"/beheer/leads/{people['Anne']}/afmelden", {"via": "phone"})
    assert answer.status_code == 403
    assert held(services, people["Anne"]).status == "confirmed"


def _guides(services, lead_id: int) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(Outbox)
                              .where(Outbox.lead_id == lead_id, Outbox.kind == "guide"))


def test_an_editor_resends_the_guide_to_a_confirmed_lead_only(dashboard, people, services, clock):
    clock.advance(days=2)  # past the day's cap of the signup's own guide
    editor = dashboard("editor")
    before = _guides(services, people["Bram"])
    answer = editor.post(f"/beheer/leads/{people['Bram']}/gids")
    assert answer.status_code == 302
    assert "gaat zo opnieuw" in editor.get(answer.headers["Location"]).get_data(as_text=True)
    assert _guides(services, people["Bram"]) == before + 1
    with services.db.read_only() as session:
        queued = session.scalars(select(Outbox).where(Outbox.lead_id == people["Bram"], Outbox.kind == "guide")
                                 .order_by(Outbox.id.desc())).first()
    assert queued.status == "queued" and queued.recipient == "bram@provincie.nl"
    refused = editor.post(f"/beheer/leads/{people['=cmd']}/gids")
    assert "nog niet bevestigd" in editor.get(refused.headers["Location"]).get_data(as_text=True)
    assert _guides(services, people["=cmd"]) == 0
    rows = audit(services, "lead.resend")
    assert [(r.target, r.outcome, r.detail) for r in rows] == [
        (f"lead {people['Bram']}", "done", "queued"), (f"lead {people['=cmd']}", "refused", "pending")]


def test_resending_respects_the_daily_cap_of_guide_mails(dashboard, people, services):
    editor = dashboard("editor")
    for _ in range(services.settings.confirm_mails_per_day + 1):
        last = editor.post(f"/beheer/leads/{people['Anne']}/gids")
    assert "maximum aantal gidsen" in editor.get(last.headers["Location"]).get_data(as_text=True)
    assert _guides(services, people["Anne"]) == services.settings.confirm_mails_per_day


def test_an_owner_downloads_the_leads_record_as_json(dashboard, people, services):
    answer = dashboard("owner").post(f"/beheer/leads/{people['Anne']}/export")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="lead-{people["Anne"]}.json"'
    assert json.loads(answer.get_data()) == people_ops.record(services.db, "anne@gemeente.nl")
    [row] = audit(services, "lead.export")
    assert row.target == f"lead {people['Anne']}" and row.outcome == "done"
    # What operators did about the lead is in the audit log, never in the person's own export.
    again = dashboard("owner", email="tweede@trainingsbureau.nl").post(f"/beheer/leads/{people['Anne']}/export")
    exported = again.get_data(as_text=True)
    assert "trainingsbureau.nl" not in exported and "lead.export" not in exported


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_only_an_owner_may_export_or_erase_a_lead(dashboard, people, services, role):
    browser = dashboard(role)
    assert browser.post(f"/beheer/leads/{people['Anne']}/export").status_code == 403
    erase = browser.post(f"/beheer/leads/{people['Anne']}/wissen", {"email": "anne@gemeente.nl"})
    assert erase.status_code == 403
    assert held(services, people["Anne"]) is not None
    assert [r.outcome for r in audit(services, "lead.erase")] == ["refused"]


def test_erasing_needs_the_leads_address_typed(dashboard, people, services):
    owner = dashboard("owner")
    wrong = owner.post(f"/beheer/leads/{people['Anne']}/wissen", {"email": "bram@provincie.nl"})
    assert wrong.status_code == 302
    assert "Er is niets gewist" in owner.get(wrong.headers["Location"]).get_data(as_text=True)
    assert held(services, people["Anne"]) is not None
    empty = owner.post(f"/beheer/leads/{people['Anne']}/wissen", {"email": ""})
    assert empty.status_code == 302 and held(services, people["Anne"]) is not None
    rows = audit(services, "lead.erase")
    assert [r.outcome for r in rows] == ["failed", "failed"]
    assert all("@" not in r.detail + r.target for r in rows)


def test_an_owner_erases_a_lead_and_the_audit_row_names_only_its_id(dashboard, people, services):
    owner = dashboard("owner")
    page = owner.get(f"/beheer/leads/{people['Anne']}").get_data(as_text=True)
    assert "Lead definitief wissen" in page
    answer = owner.post(f"/beheer/leads/{people['Anne']}/wissen", {"email": "  Anne@Gemeente.nl "})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/beheer/leads")
    listing = owner.get(answer.headers["Location"]).get_data(as_text=True)
    assert f"Lead {people['Anne']} is gewist" in listing and "anne@gemeente.nl" not in listing
    assert held(services, people["Anne"]) is None
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(ConsentEvent)
                              .where(ConsentEvent.lead_id == people["Anne"])) == 0
    [row] = audit(services, "lead.erase")
    assert row.outcome == "done" and row.target == f"lead {people['Anne']}"
    assert "anne" not in (row.detail + row.target).lower()
    assert owner.get(f"/beheer/leads/{people['Anne']}").status_code == 404
    assert owner.post(f"/beheer/leads/{people['Anne']}/wissen", {"email": "anne@gemeente.nl"}).status_code == 404
