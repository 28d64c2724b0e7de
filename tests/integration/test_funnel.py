"""The visitor's path through the web app, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import hashlib
import re

from conftest import form_tokens
from sqlalchemy import func, select

from mailer.delivery.transports.memory import MemoryTransport
from mailer.store.tables import ConsentEvent, ConsentNotice, Download, Lead, Outbox

LINK = re.compile(r"https://guide\.example\.nl(/(?:bevestig|download)/[\w.\-]+)")


def deliver(services) -> list:
    """Run the sender once and return the parsed mails it handed over."""
    transport = MemoryTransport()
    services.sender(transport, worker="test").dispatch_all()
    return transport.parsed()


def link_in(message, prefix: str) -> str:
    text = message.get_body(("plain",)).get_content()
    return next(path for path in LINK.findall(text) if path.startswith(prefix))


def count(services, model, *where) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def lead(services, email: str) -> Lead | None:
    with services.db.read_only() as session:
        return session.scalar(select(Lead).where(Lead.email == email))


def confirm(client, message):
    return client.post(link_in(message, "/bevestig/"))


def test_signup_stores_a_pending_lead_with_evidence_and_queues_the_confirmation(services, visitor):
    response = visitor.sign_up("Anne.de.Vries@Gemeente.NL", first_name="Anne", marketing=True,
                               headers={"User-Agent": "TestBrowser/1.0"})

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/gids/mini-guide/bedankt")
    stored = lead(services, "anne.de.vries@gemeente.nl")
    assert stored.status == "pending" and stored.first_name == "Anne"
    assert stored.marketing_consent is False  # only a confirmed address has consent
    with services.db.read_only() as session:
        event = session.scalar(select(ConsentEvent))
        notice = session.get(ConsentNotice, event.notice_id)
    assert (event.kind, event.marketing_consent, event.form) == ("signup", True, "landing:mini-guide")
    assert event.ip == "127.0.0.1"
    assert notice.version == services.content.organisation.notice.version == "2026-12"
    assert notice.sha256 == hashlib.sha256(notice.text.encode()).hexdigest()
    assert "Ja, stuur mij af en toe een e-mail" in notice.text
    mails = deliver(services)
    assert [m["To"].addresses[0].addr_spec for m in mails] == ["anne.de.vries@gemeente.nl"]
    assert mails[0]["Subject"] == "Bevestig je aanvraag voor de mini guide"


def test_opening_the_confirm_link_changes_nothing_and_the_button_confirms(services, visitor, client):
    visitor.sign_up("piet@example.nl", marketing=True)
    [mail] = deliver(services)
    path = link_in(mail, "/bevestig/")

    page = client.get(path)
    head = client.head(path)
    assert page.status_code == 200 and head.status_code == 200
    assert "Ja, ik bevestig mijn aanvraag" in page.get_data(as_text=True)
    assert lead(services, "piet@example.nl").status == "pending"
    assert deliver(services) == []

    done = client.post(path)
    assert done.status_code == 200
    body = done.get_data(as_text=True)
    assert "Download de mini guide" in body and "/download/" in body
    confirmed = lead(services, "piet@example.nl")
    assert confirmed.status == "confirmed" and confirmed.marketing_consent is True
    assert count(services, ConsentEvent, ConsentEvent.kind == "confirm") == 1
    [guide] = deliver(services)
    assert guide["Subject"].startswith("Je mini guide")

    client.post(path)  # a second click: no second guide, no second event
    assert deliver(services) == []
    assert count(services, ConsentEvent, ConsentEvent.kind == "confirm") == 1


def test_the_download_link_serves_the_pdf_and_counts_each_download(services, visitor, client):
    visitor.sign_up("sanne@example.nl")
    confirm(client, deliver(services)[0])
    [guide] = deliver(services)
    path = link_in(guide, "/download/")

    for _ in range(2):
        response = client.get(path)
        assert response.status_code == 200
        assert response.mimetype == "application/pdf"
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.data == services.content.default_magnet.file.read_bytes()
    assert count(services, Download) == 2


def test_marketing_consent_follows_the_unticked_box(services, visitor, client):
    visitor.sign_up("geen-mail@example.nl", marketing=False)
    confirm(client, deliver(services)[0])
    assert lead(services, "geen-mail@example.nl").marketing_consent is False
    # The guide does not depend on the box.
    assert [m["Subject"] for m in deliver(services)] == ["Je mini guide: Met vertrouwen, gezond en fit door de crisis"]


def test_the_answer_is_the_same_whatever_the_address_is_known_as(services, visitor, client):
    def answer(email):
        response = visitor.sign_up(email)
        page = client.get(response.headers["Location"])
        return response.status_code, response.headers["Location"], page.status_code, page.get_data(as_text=True)

    new = answer("nieuw@example.nl")
    pending = answer("nieuw@example.nl")
    visitor.sign_up("bevestigd@example.nl")
    deliver(services)
    with services.db.transaction() as session:
        session.execute(Lead.__table__.update().values(status="confirmed"))
        known = session.scalar(select(Lead).where(Lead.email == "bevestigd@example.nl"))
        for email, status in (("weg@example.nl", "unsubscribed"), ("kapot@example.nl", "undeliverable")):
            session.add(Lead(email=email, first_name="", status=status, magnet="mini-guide",
                             marketing_consent=False, created_at=known.created_at, updated_at=known.created_at))
    confirmed = answer("bevestigd@example.nl")
    unsubscribed = answer("weg@example.nl")
    undeliverable = answer("kapot@example.nl")
    assert new == pending == confirmed == unsubscribed == undeliverable


def test_a_confirmed_lead_who_signs_up_again_gets_the_guide_again_without_a_status_change(services, visitor, client):
    visitor.sign_up("terug@example.nl", first_name="Eva")
    confirm(client, deliver(services)[0])
    deliver(services)
    before = lead(services, "terug@example.nl")

    visitor.sign_up("terug@example.nl", first_name="Anders")
    again = deliver(services)
    after = lead(services, "terug@example.nl")
    assert [m["Subject"] for m in again] == ["Je mini guide: Met vertrouwen, gezond en fit door de crisis"]
    assert (after.status, after.confirmed_at, after.first_name) == ("confirmed", before.confirmed_at, "Eva")


def test_a_pending_lead_gets_the_confirmation_again_at_most_three_times_a_day(services, visitor, clock):
    for _ in range(5):
        visitor.sign_up("vergeetachtig@example.nl")
    assert len(deliver(services)) == 3
    clock.advance(days=1)
    visitor.sign_up("vergeetachtig@example.nl")
    assert len(deliver(services)) == 1


def test_an_expired_download_link_gets_a_friendly_page_and_a_fresh_link_by_mail(services, visitor, client, clock):
    visitor.sign_up("laat@example.nl")
    confirm(client, deliver(services)[0])
    path = link_in(deliver(services)[0], "/download/")

    clock.advance(days=31)
    expired = client.get(path)
    assert expired.status_code == 410
    body = expired.get_data(as_text=True)
    assert "Deze link werkt niet" in body and "Stuur mij een nieuwe link" in body
    assert "Traceback" not in body

    tokens = form_tokens(body)
    fresh = client.post("/gids/mini-guide/nieuwe-link", data={"email": "laat@example.nl", **tokens})
    unknown = client.post("/gids/mini-guide/nieuwe-link", data={"email": "onbekend@example.nl", **tokens})
    assert fresh.status_code == unknown.status_code == 303
    assert fresh.headers["Location"] == unknown.headers["Location"]
    [mail] = deliver(services)
    assert mail["To"].addresses[0].addr_spec == "laat@example.nl"
    assert client.get(link_in(mail, "/download/")).status_code == 200


def test_tampered_and_foreign_tokens_get_the_invalid_link_page(services, visitor, client):
    visitor.sign_up("truc@example.nl")
    confirm_path = link_in(deliver(services)[0], "/bevestig/")
    token = confirm_path.rsplit("/", 1)[1]
    tampered = confirm_path[:-3] + ("aaa" if not confirm_path.endswith("aaa") else "bbb")

    for response in (
        client.get(tampered),
        client.post(tampered),
        client.get(f"/download/{token}"),  # a confirm token is not a download token
        client.get("/download/not-a-token"),
    ):
        assert response.status_code == 400
        assert "Deze link werkt niet" in response.get_data(as_text=True)
    assert lead(services, "truc@example.nl").status == "pending"


def test_an_expired_confirm_link_changes_nothing(services, visitor, client, clock):
    visitor.sign_up("traag@example.nl")
    path = link_in(deliver(services)[0], "/bevestig/")
    clock.advance(days=8)
    assert client.post(path).status_code == 410
    assert lead(services, "traag@example.nl").status == "pending"


def test_links_signed_with_an_older_key_still_work_after_rotation(make_services, database_url, clock):
    from conftest import Visitor

    from mailer.web import create_app

    old = make_services(database_url, MAILER_SECRET_KEY="old-key-0123456789abcdef")
    Visitor(create_app(services=old).test_client(), clock).sign_up("draai@example.nl")
    path = link_in(deliver(old)[0], "/bevestig/")

    rotated = make_services(database_url, MAILER_SECRET_KEY="new-key-0123456789abcdef,old-key-0123456789abcdef")
    assert create_app(services=rotated).test_client().post(path).status_code == 200
    dropped = make_services(database_url, MAILER_SECRET_KEY="new-key-0123456789abcdef")
    assert create_app(services=dropped).test_client().post(path).status_code == 400


def test_the_outbox_row_is_written_in_the_signup_transaction(services, visitor):
    visitor.sign_up("atomair@example.nl")
    with services.db.read_only() as session:
        row = session.scalar(select(Outbox))
        stored = session.scalar(select(Lead))
    assert (row.kind, row.status, row.lead_id, row.recipient) == ("confirm", "queued", stored.id, stored.email)
    assert row.message_id.startswith("<") and row.message_id.endswith("@example.nl>")


def test_an_old_confirm_link_cannot_undo_an_unsubscribe_but_a_new_signup_can(services, visitor, client, clock):
    visitor.sign_up("wisselend@example.nl")
    old_link = link_in(deliver(services)[0], "/bevestig/")
    clock.advance(hours=1)
    with services.db.transaction() as session:
        session.execute(Lead.__table__.update().values(status="unsubscribed", updated_at=clock.now()))
    clock.advance(hours=1)
    assert client.post(old_link).status_code == 400
    assert lead(services, "wisselend@example.nl").status == "unsubscribed"

    visitor.sign_up("wisselend@example.nl")
    new_link = link_in(deliver(services)[0], "/bevestig/")
    assert client.post(new_link).status_code == 200
    assert lead(services, "wisselend@example.nl").status == "confirmed"


def test_a_head_request_on_the_download_link_is_not_counted(services, visitor, client):
    visitor.sign_up("scanner@example.nl")
    confirm(client, deliver(services)[0])
    path = link_in(deliver(services)[0], "/download/")
    assert client.head(path).status_code == 200
    assert count(services, Download) == 0


def test_a_missing_pdf_gets_a_friendly_page_not_a_500(services, visitor, client, tmp_path):
    import dataclasses

    visitor.sign_up("pdf@example.nl")
    confirm(client, deliver(services)[0])
    path = link_in(deliver(services)[0], "/download/")
    magnet = services.content.magnets["mini-guide"]
    services.content.magnets["mini-guide"] = dataclasses.replace(magnet, file=tmp_path / "verdwenen.pdf")
    response = client.get(path)
    assert response.status_code == 503 and "Even niet bereikbaar" in response.get_data(as_text=True)


def test_a_rolled_back_first_signup_does_not_break_the_next(services, visitor, clock):
    from mailer.funnel.actions import Evidence, Signup

    class Abort(Exception):
        pass

    try:
        with services.db.transaction() as session:  # the very first signup stores the notice ...
            services.funnel.subscribe(session, Signup("mini-guide", "eerste@example.nl", "E", False),
                                      Evidence(None, None, "test"), clock.now())
            raise Abort  # ... and then its transaction rolls back
    except Abort:
        pass
    assert visitor.sign_up("tweede@example.nl").status_code == 303
    with services.db.read_only() as session:
        event = session.scalar(select(ConsentEvent))
        assert session.get(ConsentNotice, event.notice_id) is not None
