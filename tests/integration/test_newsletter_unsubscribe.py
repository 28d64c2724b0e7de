"""Ending the newsletter alone, on SQLite and PostgreSQL: its own link and List-Unsubscribe, the
page's two choices, one-click, the evidence, the audience, and what stays as it was (status,
marketing consent, the follow-up sequence, a drip mail's own one-click, an earlier unsubscribe)."""

from __future__ import annotations

from email.utils import make_msgid

import pytest
from sqlalchemy import select
from test_funnel import count, lead
from test_unsubscribe import HOST, first_drip_mail, unsubscribe_path

from mailer.delivery.kinds import newsletter_ref
from mailer.delivery.rendering import Recipient
from mailer.operator.newsletters import audience
from mailer.operator.people import record
from mailer.store.tables import ConsentEvent, Enrollment, Lead, Outbox

ANNE = "anne@gemeente.nl"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def newsletter_link(services, email=ANNE) -> str:
    """The List-Unsubscribe of the newsletter mail this lead gets (its path)."""
    anne = lead(services, email)
    mail = services.renderer.render(newsletter_ref(services.content, "voorbeeld", anne.magnet),
                                    Recipient(anne.id, anne.email, anne.first_name))
    headers = dict(mail.headers)
    url = headers["List-Unsubscribe"].strip("<>")
    assert url in mail.text and url in mail.html  # the visible link is the same
    return url.removeprefix(HOST)


def audience_count(services) -> int:
    return audience(services.db, services.content, "voorbeeld", services.settings.drip_window.zone).count


def newsletter_ends(services) -> list[str]:
    with services.db.read_only() as session:
        return list(session.scalars(select(ConsentEvent.form).where(ConsentEvent.kind == "newsletter-end")
                                    .order_by(ConsentEvent.id)))


@pytest.fixture
def anne(services, visitor, client, clock):
    """Anne: confirmed, marketing consent, in the follow-up sequence; her first drip mail."""
    _, drip_mail = first_drip_mail(services, visitor, client, clock)
    return drip_mail


def assert_still_gets_the_rest(services):
    anne = lead(services, ANNE)
    assert (anne.status, anne.marketing_consent) == ("confirmed", True)
    with services.db.read_only() as session:
        assert session.scalar(select(Enrollment.status)) == "active"
    assert count(services, ConsentEvent, ConsentEvent.kind == "unsubscribe") == 0


def test_a_newsletter_names_its_own_stream_and_unsubscribe_link(services, anne):
    path = newsletter_link(services)
    assert path.startswith("/afmelden/nieuwsbrief/")
    assert path != unsubscribe_path(anne)  # the drip mail keeps the link that ends everything
    anne_lead = lead(services, ANNE)
    mail = services.renderer.render(newsletter_ref(services.content, "voorbeeld", anne_lead.magnet),
                                    Recipient(anne_lead.id, ANNE, "Anne"))
    headers = dict(mail.headers)
    assert headers["List-Id"].endswith("<nieuwsbrief.example.nl>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert anne["List-Id"].endswith("<mini-guide.example.nl>")


def test_opening_the_newsletter_link_offers_both_choices_and_changes_nothing(services, anne, client):
    page = client.get(newsletter_link(services))
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Alleen de nieuwsbrief" in text and "Alle e-mails van ons" in text
    assert client.head(newsletter_link(services)).status_code == 200
    assert lead(services, ANNE).newsletter_ended_at is None and newsletter_ends(services) == []


def test_only_the_newsletter_ends_it_and_leaves_the_rest_alone(services, anne, client, clock):
    before = audience_count(services)
    answer = client.post(newsletter_link(services), data={"keuze": "nieuwsbrief"})
    assert answer.status_code == 200
    assert "Je ontvangt de nieuwsbrief niet meer" in answer.get_data(as_text=True)
    assert lead(services, ANNE).newsletter_ended_at == clock.now()
    assert_still_gets_the_rest(services)
    assert newsletter_ends(services) == ["newsletter-page"]
    with services.db.read_only() as session:
        event = session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "newsletter-end"))
        assert event.marketing_consent is True and event.lead_id == lead(services, ANNE).id
    assert audience_count(services) == before - 1
    assert record(services.db, ANNE)["newsletter_ended_at"] is not None  # the person's own record shows it


def test_ending_the_newsletter_cancels_waiting_newsletter_mail_only(services, anne, client, clock):
    anne_lead = lead(services, ANNE)
    now = clock.now()
    with services.db.transaction() as session:
        for kind, step in (("newsletter", "voorbeeld"), ("drip", "nog-niet-gelezen")):
            session.add(Outbox(kind=kind, lead_id=anne_lead.id, recipient=ANNE, magnet=anne_lead.magnet,
                               sequence="newsletter:voorbeeld" if kind == "newsletter" else "mini-guide", step=step,
                               message_id=make_msgid(domain="example.nl"), priority=10, status="queued",
                               created_at=now, queued_at=now, next_attempt_at=now))
    client.post(newsletter_link(services), data={"keuze": "nieuwsbrief"})
    with services.db.read_only() as session:
        statuses = dict(session.execute(select(Outbox.kind, Outbox.status).where(Outbox.status != "sent")).all())
    assert statuses == {"newsletter": "cancelled", "drip": "queued"}


def test_all_mail_does_what_the_drip_unsubscribe_does(services, anne, client):
    answer = client.post(newsletter_link(services), data={"keuze": "alles"})
    assert answer.status_code == 200 and "Je bent afgemeld" in answer.get_data(as_text=True)
    gone = lead(services, ANNE)
    assert (gone.status, gone.marketing_consent) == ("unsubscribed", False)
    with services.db.read_only() as session:
        assert session.scalar(select(Enrollment.status)) == "stopped"
        assert session.scalars(select(ConsentEvent.form).where(ConsentEvent.kind == "unsubscribe")).all() == [
            "newsletter-page"]
    assert audience_count(services) == 0


def test_the_page_after_ending_the_newsletter_offers_all_mail_too(services, anne, client):
    ended = client.post(newsletter_link(services), data={"keuze": "nieuwsbrief"}).get_data(as_text=True)
    assert 'value="alles"' in ended
    client.post(newsletter_link(services), data={"keuze": "alles"})
    assert lead(services, ANNE).status == "unsubscribed"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_one_click_on_a_newsletter_ends_only_the_newsletter(services, anne, app, content_type):
    before = audience_count(services)
    mail_client = app.test_client(use_cookies=False)  # a mail provider's server, not a browser
    for _ in range(2):  # repeating changes nothing more
        answer = mail_client.post(newsletter_link(services), data=ONE_CLICK, content_type=content_type)
        assert answer.status_code == 200 and "Location" not in answer.headers
    assert lead(services, ANNE).newsletter_ended_at is not None
    assert_still_gets_the_rest(services)
    assert newsletter_ends(services) == ["one-click"]
    assert audience_count(services) == before - 1


def test_one_click_in_a_drip_mail_still_ends_everything(services, anne, app):
    answer = app.test_client(use_cookies=False).post(unsubscribe_path(anne), data=ONE_CLICK)
    assert answer.status_code == 200
    assert lead(services, ANNE).status == "unsubscribed"
    assert newsletter_ends(services) == []


def test_a_tampered_newsletter_link_gets_the_friendly_page(services, anne, client):
    path = newsletter_link(services)
    broken = path[:-3] + "xyz"
    for answer in (client.get(broken), client.post(broken, data=ONE_CLICK),
                   client.post(broken, data={"keuze": "alles"})):
        assert answer.status_code == 400
        assert "Deze afmeldlink werkt niet" in answer.get_data(as_text=True)
    # A drip link does not pass for a newsletter link (its own salt), nor the other way round.
    drip_token = unsubscribe_path(anne).rsplit("/", 1)[1]
    assert client.post(f"/afmelden/nieuwsbrief/{drip_token}", data=ONE_CLICK).status_code == 400
    assert client.post(f"/afmelden/{path.rsplit('/', 1)[1]}", data=ONE_CLICK).status_code == 400
    assert_still_gets_the_rest(services)
    assert lead(services, ANNE).newsletter_ended_at is None


def test_an_unsubscribed_lead_stays_unsubscribed_from_everything(services, anne, app, client):
    path = newsletter_link(services)
    client.post(unsubscribe_path(anne))
    for data in (ONE_CLICK, {"keuze": "nieuwsbrief"}):
        answer = app.test_client(use_cookies=False).post(path, data=data)
        assert answer.status_code == 200 and "Je bent afgemeld" in answer.get_data(as_text=True)
    gone = lead(services, ANNE)
    assert (gone.status, gone.marketing_consent, gone.newsletter_ended_at) == ("unsubscribed", False, None)
    assert newsletter_ends(services) == []
    assert count(services, ConsentEvent, ConsentEvent.kind == "unsubscribe") == 1


def test_repeating_changes_nothing_more(services, anne, client, clock):
    path = newsletter_link(services)
    client.post(path, data={"keuze": "nieuwsbrief"})
    ended = lead(services, ANNE).newsletter_ended_at
    clock.advance(days=1)
    client.post(path, data={"keuze": "nieuwsbrief"})
    client.post(path, data=ONE_CLICK)
    assert lead(services, ANNE).newsletter_ended_at == ended
    assert newsletter_ends(services) == ["newsletter-page"]
    assert_still_gets_the_rest(services)


def test_the_audience_leaves_out_only_who_ended_the_newsletter(services, anne, visitor, client):
    from test_funnel import confirm, deliver

    visitor.sign_up("bert@gemeente.nl", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)
    assert audience_count(services) == 2
    client.post(newsletter_link(services, "bert@gemeente.nl"), data={"keuze": "nieuwsbrief"})
    view = audience(services.db, services.content, "voorbeeld", services.settings.drip_window.zone)
    assert (view.count, view.sample) == (1, (ANNE,))
    with services.db.read_only() as session:
        assert session.scalar(select(Lead.newsletter_ended_at).where(Lead.email == ANNE)) is None
