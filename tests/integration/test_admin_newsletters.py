"""The dashboard's newsletters pages (/beheer/nieuwsbrieven), on SQLite and PostgreSQL, with the
shipped example newsletter `voorbeeld` (audience: leads of the mini guide): the list, the
audience with narrowing filters, the preview in sandboxed frames, a test send, scheduling (the
test-first rule, a start time in Dutch time, a subject test), pause, resume and cancel, the
figures per campaign and per subject, and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from conftest import OPERATOR_PASSWORD, START, Dashboard
from sqlalchemy import func, select

from mailer.delivery.transports.memory import MemoryTransport
from mailer.errors import SettingsError
from mailer.operator import campaigns
from mailer.operator.accounts import add
from mailer.store.tables import (
    AuditEntry,
    Campaign,
    Download,
    Lead,
    LeadStatus,
    TestSend,
)

PAGE = "/beheer/nieuwsbrieven/voorbeeld"
SUBJECT = "Nieuws van het trainingsbureau: programma voor het voorjaar"


@pytest.fixture
def transport(services, monkeypatch):
    """The memory transport the views get from services.transport() (a new one per call otherwise)."""
    kept = MemoryTransport()
    monkeypatch.setattr(services, "transport", lambda: kept)
    return kept


def _leads(services, count: int, magnet: str = "mini-guide") -> list[int]:
    with services.db.transaction() as session:
        rows = [Lead(email=f"lid{n}@example.nl", first_name="Lid", status=LeadStatus.CONFIRMED.value, magnet=magnet,
                     marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
                for n in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _campaigns(services) -> list[Campaign]:
    with services.db.read_only() as session:
        return list(session.scalars(select(Campaign).order_by(Campaign.id)))


def _audit(services, action: str) -> list[AuditEntry]:
    with services.db.read_only() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _text(answer) -> str:
    return answer.get_data(as_text=True)


def _start_and_send(services) -> None:
    """The start-campaigns job, then the sender, as the scheduler runs them."""
    campaigns.start_due(services.db, services.content, services.renderer, zone=services.settings.drip_window.zone,
                        now=services.clock.now(), domain=services.settings.mail_domain)
    services.sender(MemoryTransport(), worker="test").dispatch_all()


# --- reading -----------------------------------------------------------------------------------------

def test_the_list_names_each_newsletter_and_its_campaign(services, dashboard):
    viewer = dashboard("viewer")
    html = _text(viewer.get("/beheer/nieuwsbrieven"))
    assert f'href="{PAGE}"' in html and SUBJECT in html and "nog niet verstuurd" in html
    assert "Er is nog geen campagne geweest" in html
    campaigns.schedule(services.db, services.content, "voorbeeld", now=services.clock.now(), no_test=True)
    answer = viewer.get("/beheer/nieuwsbrieven")
    assert answer.status_code == 200
    assert '<span class="badge ">gepland</span>' in _text(answer)


def test_the_page_shows_the_audience_and_narrows_it_with_the_commands_filters(services, dashboard):
    ids = _leads(services, 3)
    _outsider(services, "anders@example.nl")
    with services.db.transaction() as session:
        session.add(Download(lead_id=ids[0], magnet="mini-guide", at=START))
    viewer = dashboard("viewer")
    page = viewer.get(PAGE)
    html = _text(page)
    assert page.status_code == 200
    assert "aangemeld voor ‘Met vertrouwen, gezond en fit door de crisis’" in html  # the file's filter
    assert '<span class="value">3</span> leads nu' in html
    assert "lid0@example.nl" in html and "anders@example.nl" not in html
    narrowed = _text(viewer.get(f"{PAGE}?gedownload=ja"))
    assert '<span class="value">1</span> lead nu (met je extra filters)' in narrowed
    assert "heeft de gids gedownload" in narrowed
    never = _text(viewer.get(f"{PAGE}?gedownload=nee&na=2026-12-01&reeks="))
    assert '<span class="value">2</span> leads nu' in never
    later = _text(viewer.get(f"{PAGE}?na=2026-12-02"))
    assert '<span class="value">0</span> leads nu' in later


def _outsider(services, email: str) -> None:
    """A confirmed lead with consent who came through no guide the file names (outside its audience)."""
    with services.db.transaction() as session:
        lead = Lead(email=email, first_name="Ander", status=LeadStatus.CONFIRMED.value, magnet="ander",
                    marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
        session.add(lead)


def test_bad_filters_get_a_dutch_answer(dashboard):
    viewer = dashboard("viewer")
    answer = viewer.get(f"{PAGE}?na=gisteren&gids=bestaat-niet&geklikt=nergens")
    html = _text(answer)
    assert answer.status_code == 400
    assert "Aangemeld op of na: ‘gisteren’ is geen geldige datum (gebruik jjjj-mm-dd)." in html
    assert "Onbekende gids in het filter" in html and "Onbekende link in het filter" in html
    assert "leads nu" in html  # counted without them


@pytest.mark.parametrize("query", ["voor=0001-01-01", "na=0001-01-01", "voor=9999-12-31", "na=9999-12-31",
                                   "na=1969-12-31&voor=10000-01-01"])
def test_audience_dates_outside_the_calendar_get_a_dutch_answer(dashboard, query):
    answer = dashboard("viewer").get(f"{PAGE}?{query}")
    html = _text(answer)
    assert answer.status_code == 400
    assert "is geen geldige datum (gebruik jjjj-mm-dd)." in html and "leads nu" in html


def test_an_unknown_newsletter_is_a_dutch_404(dashboard):
    owner = dashboard("owner")
    for path in ("/beheer/nieuwsbrieven/bestaat-niet", "/beheer/nieuwsbrieven/bestaat-niet/voorbeeld"):
        answer = owner.get(path)
        assert answer.status_code == 404 and "Nieuwsbrief niet gevonden" in _text(answer)
    answer = owner.post("/beheer/nieuwsbrieven/bestaat-niet/plannen", {"no_test": "1"})
    assert answer.status_code == 404


def test_the_preview_is_the_mail_in_sandboxed_frames(dashboard):
    viewer = dashboard("viewer")
    html = _text(viewer.get(PAGE))
    src = f"{PAGE}/voorbeeld"
    assert html.count(f'<iframe sandbox src="{src}"') == 2 and "srcdoc" not in html
    preview = viewer.get(src)
    assert preview.status_code == 200
    csp = preview.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    mail = _text(preview)
    assert "Hallo Voorbeeld," in mail and "Uit de praktijk" in mail


# --- the test send --------------------------------------------------------------------------------

def test_a_test_send_reaches_the_transport_is_recorded_and_allows_scheduling(services, dashboard, transport):
    editor = dashboard("editor")
    assert "niet getest" in _text(editor.get(PAGE))
    answer = editor.post(f"{PAGE}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True)
    html = _text(answer)
    assert "De testmail is verstuurd naar ik@trainingsbureau.nl" in html
    assert "getest</span> laatste testmail van deze inhoud: 01-12-2026 10:00" in html
    [envelope] = transport.outbox
    assert message_from_bytes(envelope.data, policy=policy.default)["Subject"] == f"[TEST] {SUBJECT}"
    [entry] = _audit(services, "newsletter.test")
    assert (entry.target, entry.outcome, entry.operator_email) == ("newsletter voorbeeld", "done",
                                                                  "editor@trainingsbureau.nl")
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(TestSend)) == 1

    b_test = editor.post(f"{PAGE}/test", {"to": "ik@trainingsbureau.nl", "ab_subject": "Drie nieuwe groepen"},
                         follow_redirects=True)
    assert "met het B-onderwerp" in _text(b_test)
    assert message_from_bytes(transport.outbox[1].data, policy=policy.default)["Subject"] == \
        "[TEST] Drie nieuwe groepen"


def test_a_test_to_a_bad_address_is_refused_in_dutch(services, dashboard, transport):
    answer = dashboard("editor").post(f"{PAGE}/test", {"to": "geen adres"}, follow_redirects=True)
    assert "Dit is geen geldig e-mailadres" in _text(answer)
    assert transport.outbox == []
    [entry] = _audit(services, "newsletter.test")
    assert entry.outcome == "failed" and entry.detail == "not sent: not a valid address"


def test_a_test_that_fails_before_the_relay_says_why_and_is_audited(services, dashboard, monkeypatch):
    def misconfigured():
        raise SettingsError("MAILER_MAIL_URL: unknown scheme 'smtpx'")

    monkeypatch.setattr(services, "transport", misconfigured)
    html = _text(dashboard("editor").post(f"{PAGE}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True))
    assert "Dat lukte niet; er is niets veranderd. De reden (in het Engels):" in html and "unknown scheme" in html
    [entry] = _audit(services, "newsletter.test")
    assert entry.outcome == "failed" and "unknown scheme" in entry.detail and "ik@" not in entry.detail
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(TestSend)) == 0


def test_a_refusing_relay_is_told_in_dutch_with_its_reply(make_services, database_url, faulty_smtp):
    from mailer.web import create_app

    relayed = make_services(database_url, MAILER_MAIL_URL=faulty_smtp.url)
    faulty_smtp.at_rcpt("ik@trainingsbureau.nl", "550 5.1.1 No such user here")
    add(relayed.db, "editor@trainingsbureau.nl", OPERATOR_PASSWORD, "editor", relayed.clock.now())
    app = create_app(services=relayed)
    app.config["TESTING"] = True
    editor = Dashboard(app, "editor@trainingsbureau.nl")
    assert editor.log_in().status_code == 302
    html = _text(editor.post(f"{PAGE}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True))
    assert "De testmail is niet verstuurd: de mailserver weigerde hem" in html
    assert 'class="flash flash-reden"' in html and "550" in html and "No such user here" in html
    [entry] = _audit(relayed, "newsletter.test")
    assert entry.outcome == "failed" and "550" in entry.detail
    with relayed.db.read_only() as session:  # not a test that counts for scheduling
        assert session.scalar(select(func.count()).select_from(TestSend)) == 0


def test_a_viewer_may_not_send_a_test(services, dashboard, transport):
    assert dashboard("viewer").post(f"{PAGE}/test", {"to": "ik@example.nl"}).status_code == 403
    assert transport.outbox == []
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(TestSend)) == 0


# --- scheduling ------------------------------------------------------------------------------------

def test_scheduling_is_refused_in_dutch_until_this_content_was_tested(services, dashboard, transport):
    editor = dashboard("editor")
    refused = editor.post(f"{PAGE}/plannen", {"start": ""}, follow_redirects=True)
    assert "Er is nog geen testmail verstuurd van precies deze inhoud" in _text(refused)
    assert _campaigns(services) == [] and _audit(services, "newsletter.schedule") == []

    editor.post(f"{PAGE}/test", {"to": "ik@trainingsbureau.nl"})
    answer = editor.post(f"{PAGE}/plannen", {"start": "2026-12-02T09:00"}, follow_redirects=True)
    html = _text(answer)
    assert "De nieuwsbrief is ingepland voor 02-12-2026 09:00" in html
    assert "Campagne #" in html and "gepland" in html
    [campaign] = _campaigns(services)
    assert campaign.status == "scheduled"
    assert campaign.start_at == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # 09:00 in Amsterdam
    [entry] = _audit(services, "newsletter.schedule")
    assert entry.target == "newsletter voorbeeld" and f"campaign {campaign.id}" in entry.detail

    again = editor.post(f"{PAGE}/plannen", {"no_test": "1"}, follow_redirects=True)
    assert "heeft al een campagne die gepland is of loopt" in _text(again)
    assert len(_campaigns(services)) == 1


def test_the_no_test_box_schedules_at_once_and_bad_times_are_refused(services, dashboard):
    editor = dashboard("editor")
    for start in ("morgen", "0001-01-01T00:00", "9999-12-31T23:59", "1969-12-31T23:00", "2026-12-02T09:00+99:00"):
        bad = editor.post(f"{PAGE}/plannen", {"start": start, "no_test": "1"}, follow_redirects=True)
        assert bad.status_code == 200, start
        assert "De starttijd is geen geldige datum en tijd" in _text(bad) and _campaigns(services) == [], start
    answer = editor.post(f"{PAGE}/plannen", {"no_test": "1"}, follow_redirects=True)
    assert answer.status_code == 200
    [campaign] = _campaigns(services)
    assert campaign.start_at == START and campaign.ab_subject is None
    assert "without a test send" in _audit(services, "newsletter.schedule")[0].detail


def test_a_subject_test_is_checked_and_scheduled(services, dashboard):
    editor = dashboard("editor")
    half = editor.post(f"{PAGE}/plannen", {"no_test": "1", "ab_share": "30"}, follow_redirects=True)
    assert "Deel en duur horen bij een onderwerptest" in _text(half)
    share = editor.post(f"{PAGE}/plannen", {"no_test": "1", "ab_subject": "B", "ab_share": "1"},
                        follow_redirects=True)
    assert "moet een heel getal van 2 tot en met 100" in _text(share)
    words = editor.post(f"{PAGE}/plannen", {"no_test": "1", "ab_subject": "B", "ab_hours": "veel"},
                        follow_redirects=True)
    assert "moeten getallen zijn" in _text(words)
    hours = editor.post(f"{PAGE}/plannen", {"no_test": "1", "ab_subject": "B", "ab_hours": "500"},
                        follow_redirects=True)
    assert "De onderwerptest moet langer dan 0 en hooguit 336 uur duren" in _text(hours)
    untested = editor.post(f"{PAGE}/plannen", {"ab_subject": "Drie nieuwe groepen"}, follow_redirects=True)
    assert "Er is nog geen testmail verstuurd" in _text(untested)
    assert _campaigns(services) == []
    editor.post(f"{PAGE}/plannen", {"no_test": "1", "ab_subject": "Drie nieuwe groepen", "ab_share": "40",
                                    "ab_hours": "2,5"})
    [campaign] = _campaigns(services)
    assert (campaign.ab_subject, campaign.ab_share, campaign.ab_hours) == ("Drie nieuwe groepen", 40, 2.5)


def test_a_viewer_may_not_schedule_and_no_campaign_is_made(services, dashboard):
    viewer = dashboard("viewer")
    assert "Nieuwsbrief inplannen" not in _text(viewer.get(PAGE))
    answer = viewer.post(f"{PAGE}/plannen", {"no_test": "1"})
    assert answer.status_code == 403 and "Geen toegang" in _text(answer)
    assert _campaigns(services) == []
    [entry] = _audit(services, "newsletter.schedule")
    assert entry.outcome == "refused"


# --- pause, resume, cancel ------------------------------------------------------------------------------

def test_pause_resume_and_cancel_change_the_campaign_and_are_audited(services, dashboard):
    campaigns.schedule(services.db, services.content, "voorbeeld", now=services.clock.now(), no_test=True)
    editor = dashboard("editor")
    paused = editor.post(f"{PAGE}/pauzeren", follow_redirects=True)
    assert "De campagne is gepauzeerd" in _text(paused) and "Campagne hervatten" in _text(paused)
    assert _campaigns(services)[0].status == "paused"
    resumed = editor.post(f"{PAGE}/hervatten", follow_redirects=True)
    assert "De campagne gaat verder" in _text(resumed)
    assert _campaigns(services)[0].status == "scheduled"
    again = editor.post(f"{PAGE}/hervatten", follow_redirects=True)
    assert "De campagne is niet gepauzeerd" in _text(again)
    cancelled = editor.post(f"{PAGE}/annuleren", follow_redirects=True)
    assert "De campagne is geannuleerd" in _text(cancelled)
    assert _campaigns(services)[0].status == "cancelled"
    assert "Nieuwsbrief inplannen" in _text(cancelled)  # a cancelled campaign is not live: schedule again
    for action in ("pause", "resume", "cancel"):
        [entry] = _audit(services, f"newsletter.{action}")
        assert entry.target == "newsletter voorbeeld" and entry.outcome == "done"
    nothing = editor.post(f"{PAGE}/pauzeren", follow_redirects=True)
    assert "heeft geen campagne om te pauzeren" in _text(nothing)


def test_a_viewer_may_not_pause_or_cancel(services, dashboard):
    campaigns.schedule(services.db, services.content, "voorbeeld", now=services.clock.now(), no_test=True)
    viewer = dashboard("viewer")
    assert "Campagne annuleren" not in _text(viewer.get(PAGE))
    assert viewer.post(f"{PAGE}/pauzeren").status_code == 403
    assert viewer.post(f"{PAGE}/annuleren").status_code == 403
    assert _campaigns(services)[0].status == "scheduled"


# --- figures ----------------------------------------------------------------------------------------------

def test_figures_show_the_mail_sent_by_the_campaign(services, dashboard):
    _leads(services, 4)
    campaigns.schedule(services.db, services.content, "voorbeeld", now=services.clock.now(), no_test=True)
    _start_and_send(services)
    owner = dashboard("owner")
    html = _text(owner.get(PAGE))
    assert '<span class="value">4</span> verstuurd' in html
    assert '<span class="value">4</span> in de wachtrij gezet' in html
    assert '<span class="badge ok">verstuurd</span>' in html
    listing = _text(owner.get("/beheer/nieuwsbrieven"))
    row = listing[listing.index("Alle campagnes"):]
    assert '<td class="num">4</td>' in row


def test_figures_per_subject_variant(services, dashboard):
    _leads(services, 6)
    campaigns.schedule(services.db, services.content, "voorbeeld", now=services.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Drie nieuwe groepen", share=100, hours=4))
    _start_and_send(services)
    html = _text(dashboard("viewer").get(PAGE))
    assert "Onderwerptest" in html and "100% van het publiek" in html
    table = html[html.index("Cijfers per onderwerp"):]
    assert "Drie nieuwe groepen" in table and SUBJECT in table
    sent = [int(cell) for cell in _cells(table, 3)]
    assert sum(sent) == 6  # every lead in the test group, each got one of the two subjects
    assert "De winnaar wordt gekozen op" in html


def _cells(table: str, column: int) -> list[str]:
    """The `column`th cell (1-based, after the row header) of each body row of the first table."""
    import re

    body = table[table.index("<tbody>"):table.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)[column - 1] for row in rows]
