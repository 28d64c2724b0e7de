"""Marketing consent given after the guide: its own double opt-in, and evidence naming the
notice the person saw. On a SQLite file and on PostgreSQL."""

from __future__ import annotations

import re
import shutil

from conftest import Visitor
from sqlalchemy import select
from test_funnel import confirm, count, deliver, lead

from mailer.resources import shipped
from mailer.store.tables import ConsentEvent, ConsentNotice, Enrollment, Outbox
from mailer.web import create_app

CONSENT_LINK = re.compile(r"https://guide\.example\.nl(/toestemming/[\w.\-]+)")
CONSENT_SUBJECT = "Bevestig dat je e-mails over onze trainingen wilt ontvangen"
GUIDE_SUBJECT = "Je mini guide: Met vertrouwen, gezond en fit door de crisis"


def consent_path(message) -> str:
    return CONSENT_LINK.search(message.get_body(("plain",)).get_content()).group(1)


def guide_without_marketing(services, visitor, client, email="later@example.nl"):
    visitor.sign_up(email, first_name="Sanne")
    confirm(client, deliver(services)[0])
    assert [m["Subject"] for m in deliver(services)] == [GUIDE_SUBJECT]


def events(services, kind: str) -> list[ConsentEvent]:
    with services.db.read_only() as session:
        return list(session.scalars(select(ConsentEvent).where(ConsentEvent.kind == kind).order_by(ConsentEvent.id)))


def test_ticking_the_box_later_asks_to_confirm_that_consent_and_changes_nothing_until_then(
        services, visitor, client, clock):
    guide_without_marketing(services, visitor, client)
    visitor.sign_up("later@example.nl", first_name="Sanne", marketing=True)
    [mail] = deliver(services)
    assert mail["Subject"] == CONSENT_SUBJECT  # not the guide again
    assert lead(services, "later@example.nl").marketing_consent is False
    assert count(services, Enrollment) == 0

    path = consent_path(mail)
    assert client.get(path).status_code == 200  # a mail scanner opening the link changes nothing
    assert lead(services, "later@example.nl").marketing_consent is False

    page = client.post(path)
    assert page.status_code == 200 and "Je toestemming is bevestigd" in page.get_data(as_text=True)
    assert lead(services, "later@example.nl").marketing_consent is True
    with services.db.read_only() as session:
        enrollment = session.scalar(select(Enrollment))
    assert enrollment.status == "active" and enrollment.anchor_at == clock.now()  # from that day
    signup, confirmation = events(services, "signup")[-1], events(services, "confirm")[-1]
    assert confirmation.marketing_consent and confirmation.form == "consent-button"
    assert confirmation.notice_id == signup.notice_id

    client.post(path)  # a second click
    assert len(events(services, "confirm")) == 2  # the first confirmation and this one, no third

    clock.advance(days=2)
    services.drip.run(services.db, clock.now())
    assert count(services, Outbox, Outbox.kind == "drip") == 1  # the sequence runs from that day


def test_the_answer_to_a_later_consent_is_the_same_as_to_anyone(services, visitor, client):
    guide_without_marketing(services, visitor, client)

    def answer(email, marketing):
        response = visitor.sign_up(email, first_name="Sanne", marketing=marketing)
        page = client.get(response.headers["Location"])
        return response.status_code, response.headers["Location"], page.get_data(as_text=True)

    assert answer("later@example.nl", True) == answer("nieuw@example.nl", True)


def test_a_consent_link_from_before_an_unsubscribe_does_nothing(services, visitor, client):
    guide_without_marketing(services, visitor, client)
    visitor.sign_up("later@example.nl", marketing=True)
    path = consent_path(deliver(services)[0])
    found = lead(services, "later@example.nl")
    unsubscribe = services.links.unsubscribe(found.id, found.magnet, found.email)
    assert client.post(unsubscribe.removeprefix("https://guide.example.nl")).status_code == 200
    assert client.post(path).status_code == 400
    assert lead(services, "later@example.nl").marketing_consent is False
    assert count(services, Enrollment) == 0


def test_a_confirmation_records_the_notice_shown_at_signup_not_the_one_in_force(
        make_services, database_url, clock, tmp_path):
    before = make_services(database_url)
    visitor = Visitor(create_app(services=before).test_client(), clock)
    visitor.sign_up("vroeg@example.nl", marketing=True)
    [confirmation_mail] = deliver(before)

    content = tmp_path / "changed-notice"
    shutil.copytree(shipped("content"), content)
    organisation = content / "organisation.toml"
    text = organisation.read_text(encoding="utf-8")
    shown_before = before.content.organisation.notice
    organisation.write_text(text.replace(f'version = "{shown_before.version}"', 'version = "2099-01"')
                            .replace("het vakje", "het vakje hiernaast"), encoding="utf-8")
    after = make_services(database_url, MAILER_CONTENT_PATH=str(content))
    clock.advance(hours=1)
    confirm(create_app(services=after).test_client(), confirmation_mail)

    signup, confirmation = events(after, "signup")[-1], events(after, "confirm")[-1]
    assert confirmation.notice_id == signup.notice_id
    with after.db.read_only() as session:
        shown = session.get(ConsentNotice, confirmation.notice_id)
    assert (shown.version, shown.text) == (shown_before.version, shown_before.full_text)
    assert after.content.organisation.notice.full_text != shown_before.full_text  # it did change


def test_a_lead_with_consent_who_signs_up_again_gets_the_guide_again(services, visitor, client, clock):
    visitor.sign_up("al@example.nl", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)
    visitor.sign_up("al@example.nl", marketing=True)
    assert [m["Subject"] for m in deliver(services)] == [GUIDE_SUBJECT]


def test_asking_for_a_new_link_after_the_consent_link_expired_sends_the_consent_mail_again(
        services, visitor, client, clock):
    from conftest import form_tokens

    guide_without_marketing(services, visitor, client)
    visitor.sign_up("later@example.nl", marketing=True)
    path = consent_path(deliver(services)[0])
    clock.advance(days=services.settings.confirm_max_age_days + 1)
    expired = client.get(path)
    assert expired.status_code == 410  # the friendly page with a form for a new link
    response = client.post("/gids/mini-guide/nieuwe-link",
                           data={"email": "later@example.nl", **form_tokens(expired.get_data(as_text=True))})
    assert response.status_code == 303
    assert [m["Subject"] for m in deliver(services)] == [CONSENT_SUBJECT]  # not the guide
