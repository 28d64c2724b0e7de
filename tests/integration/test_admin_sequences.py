"""The dashboard's sequences pages (/beheer/reeksen), on SQLite and PostgreSQL: each step with its
delay, sends and clicks; what `mailer drip plan` says about a changed file; a step's mail in
sandboxed frames; a test send, and who may do it."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from conftest import OPERATOR_PASSWORD, Dashboard, free_port
from sqlalchemy import func, select
from test_drip import ANCHOR, DAY, enrol
from test_drip_walk import changed_content

from mailer.delivery.transports.memory import MemoryTransport
from mailer.errors import SettingsError
from mailer.operator.accounts import add
from mailer.store.tables import AuditEntry, Click, Lead
from mailer.web import create_app

STEP = "/beheer/reeksen/mini-guide/gids-in-de-praktijk"


@pytest.fixture
def transport(services, monkeypatch):
    """The memory transport the views get from services.transport() (a new one per call otherwise)."""
    kept = MemoryTransport()
    monkeypatch.setattr(services, "transport", lambda: kept)
    return kept


def _audit(services, action: str) -> list[AuditEntry]:
    with services.db.read_only() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _text(answer) -> str:
    return answer.get_data(as_text=True)


# --- the list -------------------------------------------------------------------------------------

def test_the_page_shows_every_step_with_its_day_and_its_sends_and_clicks(services, clock, dashboard):
    enrol(services, 3, ANCHOR)
    clock.set(ANCHOR + 2 * DAY)  # Thursday 10:00 in Amsterdam: the first step is due and may go
    assert services.drip.run(services.db, clock.now()).enqueued == 3
    assert services.sender(MemoryTransport(), worker="test").dispatch_all().sent == 3
    with services.db.transaction() as session:
        lead = session.scalar(select(Lead.id).order_by(Lead.id).limit(1))
        session.add(Click(lead_id=lead, sequence="mini-guide", step="gids-in-de-praktijk", link="guide",
                          at=clock.now()))

    page = dashboard("viewer").get("/beheer/reeksen")
    html = _text(page)
    assert page.status_code == 200
    assert html.count('href="/beheer/reeksen/mini-guide/') == 7  # the shipped sequence's seven steps
    first = html[html.index("gids-in-de-praktijk</code>"):html.index("nog-niet-gelezen</code>")]
    assert "Een oefening van tien minuten voor deze week" in first and "dag 2" in first
    assert '<td class="num">3</td>' in first and '<td class="num">1</td>' in first  # sent, clicked
    assert "33,3%" in first
    assert "dag 25" in html and "Overgeslagen als de lead de gids al downloadde" in html
    assert "3 leads zitten nu in deze reeks" in html
    assert "Geen wijzigingen sinds de laatste drip-run" in html  # the run recorded the steps


def test_an_erased_leads_send_and_click_still_count(services, clock, dashboard):
    from mailer.operator.people import erase_person

    enrol(services, 3, ANCHOR)
    clock.set(ANCHOR + 2 * DAY)
    services.drip.run(services.db, clock.now())
    assert services.sender(MemoryTransport(), worker="test").dispatch_all().sent == 3
    with services.db.transaction() as session:
        lead = session.scalar(select(Lead).order_by(Lead.id).limit(1))
        session.add(Click(lead_id=lead.id, sequence="mini-guide", step="gids-in-de-praktijk", link="guide",
                          at=clock.now()))
        email = lead.email
    erase_person(services.db, MemoryTransport(), email, services.settings.secret_keys[0], clock.now())
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 2  # gone, with its mail and click

    html = _text(dashboard("viewer").get("/beheer/reeksen"))
    first = html[html.index("gids-in-de-praktijk</code>"):html.index("nog-niet-gelezen</code>")]
    assert '<td class="num">3</td>' in first and '<td class="num">1</td>' in first  # sent, clicked


def test_before_any_drip_run_the_plan_says_there_is_nothing_to_compare(dashboard):
    html = _text(dashboard("owner").get("/beheer/reeksen"))
    assert "Nog niet gestart" in html and "0 leads zitten nu in deze reeks" in html


def test_changes_waiting_in_the_file_are_shown_as_drip_plan_shows_them(services, make_services, database_url,
                                                                        clock, tmp_path):
    enrol(services, 12, ANCHOR)
    services.drip.run(services.db, ANCHOR + 2 * DAY)  # records the steps the enrollments follow
    clock.set(ANCHOR + 5 * DAY + DAY / 8)  # 2026-12-06 12:00 UTC, as the CLI's test
    edited = make_services(database_url, MAILER_CONTENT_PATH=changed_content(tmp_path, services))
    add(edited.db, "owner@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", clock.now())
    app = create_app(services=edited)
    app.config["TESTING"] = True
    owner = Dashboard(app, "owner@trainingsbureau.nl")
    assert owner.log_in().status_code == 302

    html = _text(owner.get("/beheer/reeksen"))
    assert "gewijzigd</span>" in html and "opnieuw is gestart" in html
    changes = html[html.index('class="plan-changes"'):]
    added_early = changes[changes.index("<code>vroeg</code>"):]
    assert "(dag 3)" in added_early[:40] and "12 leads krijgen deze mail" in added_early
    assert "12 bij het volgende verzendvenster" in added_early[:400]
    later = changes[changes.index("<code>terugblik</code>"):]
    assert "(dag 21)" in later[:40] and "tussen 22-12-2026 10:00 en 22-12-2026 10:00" in later[:400]
    removed = changes[changes.index("<code>kennismaken</code>"):]
    assert "(dag 25)" in removed[:40] and "12 leads die erop wachten krijgen deze mail niet" in removed[:300]


# --- a step ---------------------------------------------------------------------------------------

def test_a_step_shows_its_mail_in_sandboxed_frames_at_two_widths(dashboard):
    viewer = dashboard("viewer")
    page = viewer.get(STEP)
    html = _text(page)
    assert page.status_code == 200
    assert "Een oefening van tien minuten voor deze week" in html and "dag 2 na de bevestiging" in html
    src = f"{STEP}/voorbeeld"
    assert html.count(f'<iframe sandbox src="{src}"') == 2
    assert 'class="preview desktop"' in html and 'class="preview phone"' in html
    assert "srcdoc" not in html
    assert "Hallo Voorbeeld," in html  # the text part
    assert "Testmail versturen" not in html and "vanaf de rol redacteur" in html  # a viewer has no button

    preview = viewer.get(src)
    assert preview.status_code == 200
    csp = preview.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"
    mail = _text(preview)
    assert mail.lstrip().lower().startswith("<!doctype html") and "Hallo Voorbeeld," in mail
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]  # the page itself is not framed


@pytest.mark.parametrize("path", ["/beheer/reeksen/mini-guide/bestaat-niet", "/beheer/reeksen/geen/gids-in-de-praktijk",
                                  "/beheer/reeksen/mini-guide/bestaat-niet/voorbeeld"])
def test_an_unknown_step_is_a_dutch_404(dashboard, path):
    answer = dashboard("owner").get(path)
    assert answer.status_code == 404 and "Stap niet gevonden" in _text(answer)


# --- the test send ---------------------------------------------------------------------------------

def test_an_editor_sends_a_step_as_a_test_and_it_is_in_the_audit_log(services, dashboard, transport):
    editor = dashboard("editor")
    assert "Testmail versturen" in _text(editor.get(STEP))
    answer = editor.post(f"{STEP}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True)
    assert answer.status_code == 200
    assert "De testmail van ‘gids-in-de-praktijk’ is verstuurd naar ik@trainingsbureau.nl" in _text(answer)
    [envelope] = transport.outbox
    message = message_from_bytes(envelope.data, policy=policy.default)
    assert envelope.recipients == ("ik@trainingsbureau.nl",)
    assert message["Subject"] == "[TEST] Een oefening van tien minuten voor deze week"
    [entry] = _audit(services, "sequence.test")
    assert (entry.operator_email, entry.target, entry.outcome) == (
        "editor@trainingsbureau.nl", "step mini-guide/gids-in-de-praktijk", "done")
    assert "ik@trainingsbureau.nl" not in entry.detail and "trainingsbureau.nl" in entry.detail
    with services.db.read_only() as session:  # nothing queued, no lead made
        assert session.scalar(select(func.count()).select_from(Lead)) == 0


def test_a_viewer_may_not_send_a_test(services, dashboard, transport):
    answer = dashboard("viewer").post(f"{STEP}/test", {"to": "ik@trainingsbureau.nl"})
    assert answer.status_code == 403 and "Geen toegang" in _text(answer)
    assert transport.outbox == []
    [entry] = _audit(services, "sequence.test")
    assert entry.outcome == "refused"


def test_a_bad_address_gets_a_dutch_answer_and_nothing_is_sent(services, dashboard, transport):
    answer = dashboard("editor").post(f"{STEP}/test", {"to": "geen-adres"}, follow_redirects=True)
    assert answer.status_code == 200 and "Dit is geen geldig e-mailadres" in _text(answer)
    assert transport.outbox == []
    [entry] = _audit(services, "sequence.test")
    assert entry.outcome == "failed" and entry.detail == "not sent: not a valid address"


def test_a_test_that_fails_before_the_relay_says_why_and_is_audited(services, dashboard, monkeypatch):
    def misconfigured():
        raise SettingsError("MAILER_MAIL_URL: unknown scheme 'smtpx'")

    monkeypatch.setattr(services, "transport", misconfigured)
    html = _text(dashboard("editor").post(f"{STEP}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True))
    assert "Dat lukte niet; er is niets veranderd. De reden (in het Engels):" in html
    assert 'class="flash flash-reden"' in html and "unknown scheme" in html
    [entry] = _audit(services, "sequence.test")
    assert entry.outcome == "failed" and "unknown scheme" in entry.detail and "ik@" not in entry.detail


def test_a_relay_that_does_not_answer_is_told_in_dutch(make_services, database_url):
    unreachable = make_services(database_url, MAILER_MAIL_URL=f"smtp://127.0.0.1:{free_port()}?timeout=5")
    add(unreachable.db, "editor@trainingsbureau.nl", OPERATOR_PASSWORD, "editor", unreachable.clock.now())
    app = create_app(services=unreachable)
    app.config["TESTING"] = True
    editor = Dashboard(app, "editor@trainingsbureau.nl")
    assert editor.log_in().status_code == 302
    html = _text(editor.post(f"{STEP}/test", {"to": "ik@trainingsbureau.nl"}, follow_redirects=True))
    assert "De testmail is niet verstuurd" in html
    assert "Antwoord van de mailserver: geen antwoord:" in html and "no reply" not in html
    [entry] = _audit(unreachable, "sequence.test")
    assert entry.outcome == "failed"


def test_a_test_of_an_unknown_step_is_a_404(dashboard, transport):
    answer = dashboard("editor").post("/beheer/reeksen/mini-guide/bestaat-niet/test", {"to": "ik@example.nl"})
    assert answer.status_code == 404 and transport.outbox == []
