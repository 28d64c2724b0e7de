"""Drip mail as the recipient gets it: List-* headers, one-click unsubscribe, tracked links."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy

from sqlalchemy import select
from test_funnel import confirm, count, deliver, lead

from mailer.delivery.transports.memory import MemoryTransport
from mailer.store.tables import Click, ConsentEvent, Enrollment, Lead, Outbox

HOST = "https://guide.example.nl"


def first_drip_mail(services, visitor, client, clock, email="anne@gemeente.nl"):
    """Sign up with marketing consent, confirm, and let two days pass: the first drip mail."""
    visitor.sign_up(email, marketing=True)
    confirm(client, deliver(services)[0])
    guide = deliver(services)
    clock.advance(days=2)
    services.drip.run(services.db, clock.now())
    [mail] = deliver(services)
    return guide[0], mail


def unsubscribe_path(mail) -> str:
    return mail["List-Unsubscribe"].strip("<>").removeprefix(HOST)


def queue_second_step(services, clock) -> None:
    """Day 4 is a Saturday: on Monday the reminder (day 4) is queued."""
    clock.advance(days=4)
    services.drip.run(services.db, clock.now())


def mail_about_lef(services, visitor, client, clock):
    """The third mail (Tuesday, day 7: one a day after Monday's reminder), with the link 'visie'."""
    first_drip_mail(services, visitor, client, clock)
    queue_second_step(services, clock)
    deliver(services)
    clock.advance(days=1)
    services.drip.run(services.db, clock.now())
    [mail] = deliver(services)
    assert mail["Subject"].startswith("Waarom LEF")
    return mail


def test_a_drip_mail_carries_list_headers_and_a_visible_unsubscribe_link(services, visitor, client, clock):
    guide, mail = first_drip_mail(services, visitor, client, clock)

    assert mail["Subject"] == "Een oefening van tien minuten voor deze week"
    assert mail["List-Id"] == '"Mini guide: vervolgmails" <mini-guide.example.nl>'
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(mail.get_all("List-Unsubscribe")) == 1
    assert re.fullmatch(r"<https://guide\.example\.nl/afmelden/[\w.\-]+>", mail["List-Unsubscribe"])
    url = mail["List-Unsubscribe"].strip("<>")
    assert url in mail.get_body(("plain",)).get_content()
    assert f'href="{url}"' in mail.get_body(("html",)).get_content()
    # Transactional mail has no unsubscribe header that would not really work.
    assert guide["List-Unsubscribe"] is None and guide["List-Unsubscribe-Post"] is None


def test_opening_the_unsubscribe_link_changes_nothing(services, visitor, client, clock):
    _, mail = first_drip_mail(services, visitor, client, clock)
    page = client.get(unsubscribe_path(mail))
    assert page.status_code == 200 and "Ja, meld mij af" in page.get_data(as_text=True)
    assert client.head(unsubscribe_path(mail)).status_code == 200
    assert lead(services, "anne@gemeente.nl").status == "confirmed"


def test_one_click_unsubscribes_without_cookies_or_token_and_repeating_is_harmless(services, visitor, app, clock):
    client = app.test_client()
    _, mail = first_drip_mail(services, visitor, client, clock)
    queue_second_step(services, clock)  # queued, not yet sent
    mail_client = app.test_client(use_cookies=False)  # a mail provider's server, not a browser

    for _ in range(2):
        answer = mail_client.post(unsubscribe_path(mail), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200 and "Location" not in answer.headers
        assert "Je bent afgemeld" in answer.get_data(as_text=True)

    gone = lead(services, "anne@gemeente.nl")
    assert (gone.status, gone.marketing_consent) == ("unsubscribed", False)
    with services.db.read_only() as session:
        assert session.scalar(select(Enrollment.status)) == "stopped"
        assert session.scalar(select(Enrollment.next_due_at)) is None
        waiting = session.scalar(select(Outbox).where(Outbox.step == "nog-niet-gelezen"))
        assert waiting.status == "cancelled"
        assert session.scalars(select(ConsentEvent.form).where(ConsentEvent.kind == "unsubscribe")).all() == ["one-click"]
    assert deliver(services) == []


def test_a_multipart_one_click_post_unsubscribes_too(services, visitor, app, clock):
    client = app.test_client()
    _, mail = first_drip_mail(services, visitor, client, clock)
    answer = app.test_client(use_cookies=False).post(
        unsubscribe_path(mail), data={"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data")
    assert answer.status_code == 200
    assert lead(services, "anne@gemeente.nl").status == "unsubscribed"


def test_the_button_on_the_page_unsubscribes_and_is_recorded_as_such(services, visitor, client, clock):
    _, mail = first_drip_mail(services, visitor, client, clock)
    assert client.post(unsubscribe_path(mail)).status_code == 200
    assert count(services, ConsentEvent, ConsentEvent.kind == "unsubscribe", ConsentEvent.form == "unsubscribe-page") == 1


def test_a_tampered_unsubscribe_link_gets_a_friendly_page(services, visitor, client, clock):
    _, mail = first_drip_mail(services, visitor, client, clock)
    broken = unsubscribe_path(mail)[:-3] + "xyz"
    for answer in (client.get(broken), client.post(broken, data={"List-Unsubscribe": "One-Click"})):
        assert answer.status_code == 400
        assert "Deze afmeldlink werkt niet" in answer.get_data(as_text=True)
    assert lead(services, "anne@gemeente.nl").status == "confirmed"


def test_a_step_claimed_before_the_unsubscribe_is_not_sent(services, visitor, app, clock):
    client = app.test_client()
    _, mail = first_drip_mail(services, visitor, client, clock)
    queue_second_step(services, clock)

    class UnsubscribesWhileClaimed(MemoryTransport):
        def open(self):  # the worker has claimed the batch; the lead clicks before it is handed over
            app.test_client().post(unsubscribe_path(mail), data={"List-Unsubscribe": "One-Click"})
            return super().open()

    transport = UnsubscribesWhileClaimed()
    report = services.sender(transport, worker="test").dispatch()
    assert transport.outbox == [] and report.cancelled == 1
    with services.db.read_only() as session:
        assert session.scalar(select(Outbox.status).where(Outbox.step == "nog-niet-gelezen")) == "cancelled"


def test_a_click_is_counted_and_leads_only_to_the_templates_link(services, visitor, client, clock):
    mail = mail_about_lef(services, visitor, client, clock)
    text = mail.get_body(("plain",)).get_content()
    [tracked] = re.findall(r"https://guide\.example\.nl(/k/[\w.\-]+)", text)
    assert "example.nl/visie-lef-en-eigenheid" not in text  # the address is behind the redirect

    assert client.head(tracked).status_code == 302
    answer = client.get(tracked + "?next=https://evil.example.com")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "https://www.example.nl/visie-lef-en-eigenheid"
    with services.db.read_only() as session:
        [click] = session.scalars(select(Click)).all()
        anne = session.scalar(select(Lead).where(Lead.email == "anne@gemeente.nl"))
    assert (click.lead_id, click.sequence, click.step, click.link) == (anne.id, "mini-guide", "lef-en-eigenheid", "visie")
    assert client.get(tracked[:-4] + "abcd").status_code == 404


def test_with_click_tracking_off_links_point_straight_at_their_address(make_services, database_url, clock):
    from conftest import Visitor

    from mailer.web import create_app

    services = make_services(database_url, MAILER_CLICK_TRACKING="false")
    client = create_app(services=services).test_client()
    visitor = Visitor(client, clock)
    text = mail_about_lef(services, visitor, client, clock).get_body(("plain",)).get_content()
    assert "https://www.example.nl/visie-lef-en-eigenheid" in text and "/k/" not in text


def test_drip_mail_uses_the_marketing_sender_and_leaves_transactional_mail_first(make_services, database_url, clock):
    from conftest import Visitor

    from mailer.web import create_app

    services = make_services(database_url, MAILER_MARKETING_FROM="Trainingsbureau <nieuws@example.nl>")
    client = create_app(services=services).test_client()
    visitor = Visitor(client, clock)
    _, mail = first_drip_mail(services, visitor, client, clock)
    assert mail["From"].addresses[0].addr_spec == "nieuws@example.nl"
    queue_second_step(services, clock)
    visitor.sign_up("nieuw@example.nl")  # a confirmation, queued after the drip mail
    transport = MemoryTransport()
    services.sender(transport, worker="test").dispatch(limit=1)
    assert [m["Subject"] for m in transport.parsed()] == ["Bevestig je aanvraag voor de mini guide"]


def test_a_mail_the_relay_accepts_while_the_lead_unsubscribes_is_recorded_as_sent(
        make_services, database_url, clock, faulty_smtp):
    import threading

    from conftest import Visitor

    from mailer.delivery.transports.smtp import SMTPTransport
    from mailer.operator.figures import funnel_figures
    from mailer.store.tables import DeliveryAttempt
    from mailer.web import create_app

    services = make_services(database_url, MAILER_MAIL_URL=faulty_smtp.url)
    app = create_app(services=services)
    client = app.test_client()
    _, mail = first_drip_mail(services, Visitor(client, clock), client, clock)
    queue_second_step(services, clock)
    hold = faulty_smtp.hold_at_rcpt("anne@gemeente.nl")  # the relay takes its time over RCPT
    sender = services.sender(SMTPTransport(services.settings.mail), worker="test")
    reports = []
    worker = threading.Thread(target=lambda: reports.append(sender.dispatch()))
    worker.start()
    assert hold.reached.wait(10), "the sender never reached RCPT"
    # Past the check before sending: the mail is being handed over when the click lands.
    assert client.post(unsubscribe_path(mail), data={"List-Unsubscribe": "One-Click"}).status_code == 200
    hold.release.set()
    worker.join(timeout=30)
    assert reports and reports[0].sent == 1
    assert faulty_smtp.wait_for(1, timeout=5)  # it arrived
    with services.db.read_only() as session:
        row = session.scalar(select(Outbox).where(Outbox.step == "nog-niet-gelezen"))
        assert (row.status, row.attempts) == ("sent", 1)
        [attempt] = session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.outbox_id == row.id)).all()
        assert attempt.code == 250
    assert lead(services, "anne@gemeente.nl").status == "unsubscribed"
    [figures] = funnel_figures(services.db, services.content)
    assert figures.steps["mini-guide/nog-niet-gelezen"]["sent"] == 1  # the figures count it


def test_unsubscribing_stops_an_undeliverable_address_too_without_reviving_it(services, visitor, client, clock):
    _, mail = first_drip_mail(services, visitor, client, clock)
    with services.db.transaction() as session:
        session.execute(Lead.__table__.update().values(status="undeliverable"))
    assert client.post(unsubscribe_path(mail)).status_code == 200
    assert lead(services, "anne@gemeente.nl").status == "undeliverable"
    assert lead(services, "anne@gemeente.nl").marketing_consent is False


def test_signing_up_again_after_unsubscribing_restarts_the_sequence_where_it_stopped(services, visitor, client, clock):
    _, mail = first_drip_mail(services, visitor, client, clock)
    client.post(unsubscribe_path(mail))
    clock.advance(days=1)
    visitor.sign_up("anne@gemeente.nl", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)  # the guide
    services.drip.run(services.db, clock.now() + timedelta(minutes=1))
    clock.advance(days=4)
    services.drip.run(services.db, clock.now())
    subjects = [m["Subject"] for m in deliver(services)]
    # Counting from the new confirmation: day 4 is the reminder, never the day-2 mail again.
    assert subjects == ["Je mini guide staat nog voor je klaar"]


def test_a_mailbox_refused_on_a_drip_mail_stops_the_sequence(make_services, database_url, clock, smtp_server):
    from conftest import Visitor

    from mailer.web import create_app

    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    client = create_app(services=services).test_client()
    Visitor(client, clock).sign_up("weg@gemeente.nl", marketing=True)
    relay = lambda: services.sender(services.transport(), worker="test").dispatch_all()  # noqa: E731
    relay()
    confirm(client, message_from_bytes(smtp_server.messages[0].content, policy=policy.default))
    relay()
    smtp_server.replies["weg@gemeente.nl"] = "550 5.1.1 <weg@gemeente.nl>: Recipient address rejected"
    clock.advance(days=2)
    services.drip.run(services.db, clock.now())
    assert relay().failed == 1
    assert lead(services, "weg@gemeente.nl").status == "undeliverable"
    with services.db.read_only() as session:
        assert (session.scalar(select(Enrollment.status)), session.scalar(select(Enrollment.next_due_at))) == \
            ("stopped", None)
    clock.advance(days=2)
    assert services.drip.run(services.db, clock.now() + timedelta(days=3)).enqueued == 0
