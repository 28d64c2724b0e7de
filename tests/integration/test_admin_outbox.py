"""/beheer/outbox: stuck mail with the server's replies, retry and cancel, the marketing pause."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from conftest import Visitor
from sqlalchemy import event, select, update

from mailer.operator.outbox import pause
from mailer.store.tables import AuditEntry, DeliveryAttempt, Outbox, Pause


@pytest.fixture
def stuck(services, client):
    """Four confirmations: one failed (mailbox full), one deferred (greylisted), one queued, one sent."""
    visitor = Visitor(client, services.clock)
    for email in ("vol@example.nl", "grijs@example.nl", "wacht@example.nl", "goed@example.nl"):
        visitor.sign_up(email)
    now = services.clock.now()
    with services.db.transaction() as session:
        ids = dict(session.execute(select(Outbox.recipient, Outbox.id)).all())
        for recipient, status, code, reply in (("vol@example.nl", "failed", 552, "5.2.2 Mailbox full"),
                                               ("grijs@example.nl", "deferred", 451, "4.7.1 Greylisted, try later")):
            session.execute(update(Outbox).where(Outbox.id == ids[recipient]).values(
                status=status, attempts=1, last_error=f"{code} {reply}", next_attempt_at=now + timedelta(minutes=5)))
            session.add(DeliveryAttempt(outbox_id=ids[recipient], at=now, worker="test", code=code, reply=reply,
                                        outcome=status))
        session.execute(update(Outbox).where(Outbox.id == ids["goed@example.nl"]).values(status="sent", sent_at=now))
    return ids


def statuses(services) -> dict[str, str]:
    with services.db.read_only() as session:
        return dict(session.execute(select(Outbox.recipient, Outbox.status)).all())


def audit(services, action: str) -> list[AuditEntry]:
    with services.db.read_only() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def paused(services) -> Pause | None:
    with services.db.read_only() as session:
        return session.get(Pause, "marketing")


def test_the_page_shows_counts_and_stuck_mail_with_the_servers_replies(services, stuck, dashboard):
    owner = dashboard("owner")
    page = owner.get("/beheer/outbox")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'data-outbox="failed">1<' in html and 'data-outbox="deferred">1<' in html
    assert 'data-outbox="queued">1<' in html
    assert 'data-outbox="sent"' not in html  # sent mail, most of the table, is neither counted nor listed
    assert "vol@example.nl" in html and "<code>552</code> 5.2.2 Mailbox full" in html
    assert "grijs@example.nl" in html and "4.7.1 Greylisted" in html
    assert "wacht@example.nl" not in html and "goed@example.nl" not in html  # deferred and failed by default
    assert f'name="id" value="{stuck["vol@example.nl"]}"' in html
    assert "Gekozen mails opnieuw proberen" in html and "Marketingmail pauzeren" in html
    queued = owner.get("/beheer/outbox?status=queued").get_data(as_text=True)
    assert "wacht@example.nl" in queued and "vol@example.nl" not in queued


def test_the_page_counts_only_mail_that_has_not_gone_out(services, stuck, dashboard):
    """Sent mail is most of the table: the page's counts read only the other statuses (ranges of
    the status index), never a count over the whole outbox."""
    viewer = dashboard("viewer")
    counted = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "count(" in statement.lower() and "from outbox" in statement.lower():
            counted.append((statement, parameters))

    event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        assert viewer.get("/beheer/outbox").status_code == 200
    finally:
        event.remove(services.db.engine, "before_cursor_execute", record)
    assert counted
    for statement, parameters in counted:
        assert "WHERE outbox.status IN" in statement
        values = parameters.values() if isinstance(parameters, dict) else parameters
        assert "sent" not in values and "sending" in values


def test_keyset_pages_go_back_by_id(services, stuck, dashboard):
    now = services.clock.now()
    with services.db.transaction() as session:  # 55 more failed mails: two pages of 50 and 7
        session.add_all(Outbox(kind="guide", recipient=f"lezer{n}@example.nl", message_id=f"<{n}@example.nl>",
                               status="failed", created_at=now, queued_at=now, next_attempt_at=now)
                        for n in range(55))
    viewer = dashboard("viewer")
    first = viewer.get("/beheer/outbox?status=failed").get_data(as_text=True)
    assert first.count('data-label="Nr."') == 50
    assert "lezer54@example.nl" in first and "lezer5@example.nl" in first and "lezer4@example.nl" not in first
    older = re.search(r'href="/beheer/outbox\?status=failed&amp;voor=(\d+)">Oudere mails', first)
    assert older, "no link to the older mails"
    second = viewer.get(f"/beheer/outbox?status=failed&voor={older.group(1)}").get_data(as_text=True)
    assert "lezer4@example.nl" in second and "lezer0@example.nl" in second and "vol@example.nl" in second
    assert "lezer5@example.nl" not in second and "Oudere mails" not in second
    assert 'name="id"' not in second  # a viewer gets no boxes to tick


def test_retry_and_cancel_change_the_rows_and_write_audit_rows(services, stuck, dashboard):
    editor = dashboard("editor")
    failed, deferred, sent = stuck["vol@example.nl"], stuck["grijs@example.nl"], stuck["goed@example.nl"]

    answer = editor.post("/beheer/outbox/opnieuw", {"id": [str(failed), str(sent)]}, follow_redirects=True)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "1 mail opnieuw in de wachtrij gezet" in html and "Niet opnieuw geprobeerd" in html and str(sent) in html
    assert statuses(services)["vol@example.nl"] == "queued"
    [entry] = audit(services, "outbox.retry")
    assert (entry.target, entry.outcome, entry.operator_email) == ("outbox (2 rows)", "done", editor.email)
    assert entry.detail.startswith(f"rows {failed} {sent}: 1 changed") and f"refused {sent}" in entry.detail

    answer = editor.post("/beheer/outbox/annuleren", {"id": [str(deferred), str(failed)], "status": "deferred"})
    assert answer.status_code == 302 and "status=deferred" in answer.headers["Location"]
    assert statuses(services)["grijs@example.nl"] == "cancelled" and statuses(services)["vol@example.nl"] == "cancelled"
    [entry] = audit(services, "outbox.cancel")
    assert entry.target == "outbox (2 rows)"
    assert entry.detail.startswith(f"rows {min(deferred, failed)} {max(deferred, failed)}: 2 changed")


def test_a_viewers_retry_is_refused_and_changes_nothing(services, stuck, dashboard):
    viewer = dashboard("viewer")
    before = statuses(services)
    assert viewer.post("/beheer/outbox/opnieuw", {"id": str(stuck["vol@example.nl"])}).status_code == 403
    assert viewer.post("/beheer/outbox/annuleren", {"id": str(stuck["grijs@example.nl"])}).status_code == 403
    assert viewer.post("/beheer/outbox/pauzeren", {"reden": "test"}).status_code == 403
    assert statuses(services) == before and paused(services) is None
    assert [e.outcome for e in audit(services, "outbox.retry")] == ["refused"]


def test_bad_input_gets_a_dutch_message(services, stuck, dashboard):
    editor = dashboard("editor")
    before = statuses(services)
    for data, message in (({}, "Vink eerst een of meer mails aan"),
                          ({"id": "twaalf"}, "Dit formulier klopte niet"),
                          ({"id": "99999"}, "Niet opnieuw geprobeerd")):
        answer = editor.post("/beheer/outbox/opnieuw", data, follow_redirects=True)
        assert answer.status_code == 200 and message in answer.get_data(as_text=True), data
    assert statuses(services) == before
    for query in ("status=verloren&voor=abc", "status=sent", "voor=99999999999999999999"):
        page = editor.get(f"/beheer/outbox?{query}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and "vol@example.nl" in html, query
        assert ("Een gekozen status kun je hier niet bekijken" in html) == query.startswith("status"), query


def test_an_editor_pauses_marketing_but_only_the_owner_resumes_it(services, stuck, dashboard):
    editor, owner = dashboard("editor"), dashboard("owner")
    answer = editor.post("/beheer/outbox/pauzeren", {"reden": "verkeerde link in de nieuwsbrief"},
                         follow_redirects=True)
    assert "Marketingmail is gepauzeerd" in answer.get_data(as_text=True)
    assert paused(services).reason == "verkeerde link in de nieuwsbrief"
    [entry] = audit(services, "outbox.pause")
    assert entry.target == "marketing" and entry.outcome == "done"
    page = editor.get("/beheer/outbox").get_data(as_text=True)
    assert "Gepauzeerd" in page and "Alleen een eigenaar kan marketingmail hervatten" in page
    assert "Marketingmail hervatten</button>" not in page

    assert editor.post("/beheer/outbox/hervatten").status_code == 403
    assert paused(services) is not None
    assert [e.outcome for e in audit(services, "outbox.resume")] == ["refused"]

    answer = owner.post("/beheer/outbox/hervatten", follow_redirects=True)
    assert "Marketingmail wordt weer verstuurd" in answer.get_data(as_text=True)
    assert paused(services) is None
    assert [e.outcome for e in audit(services, "outbox.resume")] == ["refused", "done"]


def test_a_second_pause_keeps_the_first_reason(services, dashboard):
    assert pause(services.db, "550 5.7.1 policy", services.clock.now()) is True
    answer = dashboard("editor").post("/beheer/outbox/pauzeren", {"reden": "nog eens"}, follow_redirects=True)
    assert "Marketingmail was al gepauzeerd" in answer.get_data(as_text=True)
    assert paused(services).reason == "550 5.7.1 policy"
