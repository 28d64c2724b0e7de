"""Adding a kind of mail touches the kind table and its templates, nothing else: a new entry in
KINDS and two template files in the operator's template folder, and the mail is queued with
the entry's priority, rendered from its template and delivered by the sender as the entry says."""

from __future__ import annotations

import re

import pytest
from conftest import Visitor
from sqlalchemy import select
from test_funnel import confirm, deliver

from mailer.delivery import kinds
from mailer.delivery.enqueue import enqueue
from mailer.delivery.kinds import Kind, MailRef, Words
from mailer.delivery.transports.memory import MemoryTransport
from mailer.store.tables import MARKETING_PRIORITY, Lead, Outbox
from mailer.web import create_app

NOTICE_PRIORITY = 3  # neither of the shipped priorities, so the row shows where it came from

NOTICE_HTML = """{% extends "_layout.html" %}
{% block body %}
<h1>Hallo {{ name }},</h1>
<p>Onze kantoren zijn {{ closed }} gesloten. De mini guide &lsquo;{{ magnet.title }}&rsquo; blijft beschikbaar.</p>
<p><a class="button" href="{{ link }}">Download de guide opnieuw</a></p>
{% endblock %}
{% block reason %}Je ontvangt dit bericht omdat je de mini guide aanvroeg.{% endblock %}
"""
NOTICE_TXT = """{% extends "_layout.txt" %}
{% block body %}
Hallo {{ name }},

Onze kantoren zijn {{ closed }} gesloten. De mini guide '{{ magnet.title }}' blijft beschikbaar.

Download de guide opnieuw:
{{ link }}
{% endblock %}
{% block reason %}Je ontvangt dit bericht omdat je de mini guide aanvroeg.{% endblock %}
"""

NEWS_HTML = """{% extends "drip/_layout.html" %}
{% block body %}<h1>Hallo {{ name }},</h1><p>Het nieuws van deze maand.</p>{% endblock %}
"""
NEWS_TXT = """{% extends "drip/_layout.txt" %}
{% block body %}
Hallo {{ name }},

Het nieuws van deze maand.
{% endblock %}
"""


def _notice_words(content, ref: MailRef, tools) -> Words:
    magnet = content.magnets[ref.magnet]
    return Words("notice", f"Kantoor gesloten: {magnet.title}",
                 {"magnet": magnet, "link": tools.main_link, "closed": "tussen kerst en oud en nieuw"})


def _news_words(content, ref: MailRef, tools) -> Words:
    return Words("nieuwsbrief", "Nieuws van het trainingsbureau",
                 {"magnet": content.magnets[ref.magnet], "unsubscribe": tools.unsubscribe})


NOTICE = Kind("notice", "a notice", marketing=False, priority=NOTICE_PRIORITY, retry="transactional", words=_notice_words,
              main_link="download", refs=lambda content: (MailRef("notice", slug) for slug in content.magnets))
NEWSLETTER = Kind("nieuwsbrief", "a newsletter", marketing=True, priority=MARKETING_PRIORITY, retry="marketing",
                  words=_news_words, main_link="download",
                  refs=lambda content: (MailRef("nieuwsbrief", slug) for slug in content.magnets),
                  list_id=lambda content, ref: ("Nieuwsbrief trainingsbureau", "nieuwsbrief"))


@pytest.fixture
def with_new_kinds(tmp_path, monkeypatch):
    """The two new kinds in the table and their templates in MAILER_TEMPLATES_PATH (the shipped
    templates, _layout.html among them, remain the fallback)."""
    folder = tmp_path / "templates"
    (folder / "mail").mkdir(parents=True)
    for name, text in (("notice.html", NOTICE_HTML), ("notice.txt", NOTICE_TXT),
                       ("nieuwsbrief.html", NEWS_HTML), ("nieuwsbrief.txt", NEWS_TXT)):
        (folder / "mail" / name).write_text(text, encoding="utf-8")
    monkeypatch.setitem(kinds.KINDS, "notice", NOTICE)
    monkeypatch.setitem(kinds.KINDS, "nieuwsbrief", NEWSLETTER)
    return folder


def signed_up(services, clock, email: str) -> tuple:
    """A confirmed lead whose confirmation and guide went out; the web client."""
    client = create_app(services=services).test_client()
    Visitor(client, clock).sign_up(email, first_name="Anne", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)
    with services.db.read_only() as session:
        return session.scalar(select(Lead).where(Lead.email == email)), client


def queue(services, clock, lead, kind: str) -> Outbox:
    with services.db.transaction() as session:
        enqueue(session, kind=kind, lead_id=lead.id, recipient=lead.email, magnet=lead.magnet, now=clock.now(),
                domain=services.settings.mail_domain)
    with services.db.read_only() as session:
        return session.scalar(select(Outbox).where(Outbox.kind == kind))


def test_a_new_transactional_kind_is_queued_rendered_and_sent_by_its_entry(
        with_new_kinds, make_services, database_url, clock):
    services = make_services(database_url, MAILER_TEMPLATES_PATH=str(with_new_kinds))
    lead, client = signed_up(services, clock, "anne@gemeente.nl")

    row = queue(services, clock, lead, "notice")
    assert (row.status, row.priority) == ("queued", NOTICE_PRIORITY)

    transport = MemoryTransport()
    report = services.sender(transport, worker="test").dispatch_all()
    assert report.sent == 1
    [mail] = transport.parsed()
    title = services.content.magnets[lead.magnet].title
    assert mail["Subject"] == f"Kantoor gesloten: {title}"
    assert mail["From"].addresses[0].addr_spec == "guide@example.nl"
    assert mail["List-Unsubscribe"] is None  # transactional: no list headers
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Hallo Anne," in text and "tussen kerst en oud en nieuw gesloten" in text
    assert "tussen kerst en oud en nieuw gesloten" in html
    assert "Trainingsbureau" in html or services.content.organisation.name in html  # the shipped layout
    # Its main link is the entry's: a working download link for this lead.
    [link] = re.findall(r"https://guide\.example\.nl(/download/[\w.\-]+)", text)
    response = client.get(link)
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    with services.db.read_only() as session:
        assert session.get(Outbox, row.id).status == "sent"


def test_a_new_marketing_kind_gets_list_headers_and_the_marketing_sender(
        with_new_kinds, make_services, database_url, clock):
    services = make_services(database_url, MAILER_TEMPLATES_PATH=str(with_new_kinds),
                             MAILER_MARKETING_FROM="Trainingsbureau <nieuws@example.nl>")
    lead, client = signed_up(services, clock, "anne@gemeente.nl")

    row = queue(services, clock, lead, "nieuwsbrief")
    assert row.priority == MARKETING_PRIORITY
    [mail] = deliver(services)

    assert mail["Subject"] == "Nieuws van het trainingsbureau"
    assert mail["From"].addresses[0].addr_spec == "nieuws@example.nl"
    assert mail["List-Id"] == "Nieuwsbrief trainingsbureau <nieuwsbrief.example.nl>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert re.fullmatch(r"https://guide\.example\.nl/afmelden/[\w.\-]+", unsubscribe)
    assert unsubscribe in mail.get_body(("plain",)).get_content()  # the visible link too
    # The one-click link works for this lead.
    assert client.post(unsubscribe.removeprefix("https://guide.example.nl")).status_code == 200
    with services.db.read_only() as session:
        assert session.get(Lead, lead.id).marketing_consent is False


def test_a_new_kind_waits_for_the_marketing_pause_like_drip_mail(with_new_kinds, make_services, database_url, clock):
    from mailer.operator.outbox import resume
    from mailer.store import queries

    services = make_services(database_url, MAILER_TEMPLATES_PATH=str(with_new_kinds))
    lead, _ = signed_up(services, clock, "anne@gemeente.nl")
    with services.db.transaction() as session:
        queries.pause_marketing(session, reason="550 5.7.1 policy", now=clock.now())
    queue(services, clock, lead, "nieuwsbrief")
    queue(services, clock, lead, "notice")

    assert [m["Subject"] for m in deliver(services)] == [
        f"Kantoor gesloten: {services.content.magnets[lead.magnet].title}"]
    assert resume(services.db)
    assert [m["Subject"] for m in deliver(services)] == ["Nieuws van het trainingsbureau"]
