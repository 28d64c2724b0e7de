"""The outbox sender: claims with a lease, records every attempt, follows the SMTP answer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import as_marketing
from sqlalchemy import select

from mailer.delivery.transports.memory import MemoryTransport
from mailer.store import queries
from mailer.store.tables import DeliveryAttempt, Outbox

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def rows(services):
    with services.db.read_only() as session:
        return session.scalars(select(Outbox).order_by(Outbox.id)).all()


def attempts(services):
    with services.db.read_only() as session:
        return session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()


def test_mail_goes_out_over_smtp_and_each_attempt_is_recorded(make_services, database_url, smtp_server, visitor_on):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor_on(services).sign_up("ontvanger@example.nl")
    report = services.sender(services.transport(), worker="w1").dispatch()

    assert (report.sent, report.failed) == (1, 0)
    [row] = rows(services)
    assert row.status == "sent" and row.attempts == 1 and row.claimed_by is None
    [envelope] = smtp_server.messages
    assert envelope.rcpt_tos == ["ontvanger@example.nl"]
    assert row.message_id.encode() in envelope.content
    [attempt] = attempts(services)
    assert (attempt.worker, attempt.code, attempt.outcome) == ("w1", 250, "sent")


def test_a_refused_mailbox_fails_the_row_with_the_reply(make_services, database_url, smtp_server, visitor_on):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    smtp_server.replies["bestaat-niet@example.nl"] = "550 5.1.1 User unknown"
    visitor_on(services).sign_up("bestaat-niet@example.nl")
    report = services.sender(services.transport()).dispatch()

    assert report.failed == 1
    [row] = rows(services)
    assert row.status == "failed" and "User unknown" in row.last_error
    assert attempts(services)[0].code == 550


def test_a_temporary_refusal_is_retried_later_with_the_same_message_id(
        make_services, database_url, smtp_server, visitor_on, clock):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    smtp_server.replies["druk@example.nl"] = "451 4.3.0 Try again later"
    visitor_on(services).sign_up("druk@example.nl")
    sender = services.sender(services.transport())

    assert sender.dispatch().deferred == 1
    [row] = rows(services)
    assert row.status == "deferred" and row.next_attempt_at == clock.now() + timedelta(seconds=30)
    assert sender.dispatch().handled == 0  # not due yet

    del smtp_server.replies["druk@example.nl"]
    clock.advance(seconds=31)
    assert sender.dispatch().sent == 1
    [row_after] = rows(services)
    assert row_after.message_id == row.message_id and row_after.attempts == 2
    assert row.message_id.encode() in smtp_server.messages[0].content
    assert [a.code for a in attempts(services)] == [451, 250]


def test_an_unreachable_server_gives_the_batch_back_untouched(make_services, database_url, visitor_on):
    from conftest import free_port

    services = make_services(database_url, MAILER_MAIL_URL=f"smtp://127.0.0.1:{free_port()}?timeout=2")
    visitor_on(services).sign_up("wacht@example.nl")
    report = services.sender(services.transport()).dispatch()
    assert report.released == 1
    assert [(r.status, r.attempts, r.claimed_by) for r in rows(services)] == [("queued", 0, None)]


def test_a_row_whose_lease_ran_out_is_claimed_again(make_services, database_url, visitor_on, clock):
    services = make_services(database_url)
    visitor_on(services).sign_up("wees@example.nl")
    with services.db.transaction() as session:  # a worker claims, then dies
        assert len(queries.claim_due(session, now=clock.now(), lease_until=clock.now() + timedelta(minutes=5),
                                     worker="dead", limit=10)) == 1
    transport = MemoryTransport()
    assert services.sender(transport).dispatch().handled == 0  # still leased
    clock.advance(minutes=6)
    assert services.sender(transport).dispatch().sent == 1
    assert len(transport.outbox) == 1


def test_concurrent_claims_on_postgres_never_share_a_row(make_services, postgres_url, visitor_on, clock):
    services = make_services(postgres_url)
    visitor = visitor_on(services)
    for n in range(10):
        visitor.sign_up(f"lezer{n}@example.nl")
    lease = clock.now() + timedelta(minutes=5)
    with services.db.transaction() as first:
        mine = queries.claim_due(first, now=clock.now(), lease_until=lease, worker="a", limit=4)
        # While the first transaction holds its rows, a second worker skips them.
        with services.db.transaction() as second:
            theirs = queries.claim_due(second, now=clock.now(), lease_until=lease, worker="b", limit=10)
    assert len(mine) == 4 and len(theirs) == 6 and not set(mine) & set(theirs)


@pytest.fixture
def visitor_on(clock):
    from conftest import Visitor

    from mailer.web import create_app

    return lambda services: Visitor(create_app(services=services).test_client(), clock)


def test_one_row_that_cannot_be_built_fails_alone_and_the_batch_goes_on(make_services, database_url,
                                                                         visitor_on, clock):
    services = make_services(database_url)
    visitor = visitor_on(services)
    for name in ("a", "b", "c"):
        visitor.sign_up(f"{name}@example.nl")
    with services.db.transaction() as session:  # the operator removed this row's lead magnet
        session.execute(Outbox.__table__.update().where(Outbox.recipient == "b@example.nl").values(magnet="weg"))
    transport = MemoryTransport()
    report = services.sender(transport).dispatch()
    assert (report.sent, report.failed) == (2, 1)
    assert {r.recipient: r.status for r in rows(services)} == {
        "a@example.nl": "sent", "b@example.nl": "failed", "c@example.nl": "sent"}
    assert "KeyError" in [r for r in rows(services) if r.status == "failed"][0].last_error


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_result_of_the_worker_that_took_over(
        make_services, database_url, visitor_on, clock):
    from mailer.errors import DeliveryError

    services = make_services(database_url)
    visitor_on(services).sign_up("traag@example.nl")
    fast = services.sender(MemoryTransport(), worker="fast")

    class StalledTransport(MemoryTransport):
        """Hangs so long that the lease runs out and another worker sends; then fails."""

        def send_messages(self, messages):
            clock.advance(minutes=6)
            assert fast.dispatch().sent == 1
            raise DeliveryError(451, "too late")

    services.sender(StalledTransport(), worker="slow").dispatch()
    [row] = rows(services)
    assert row.status == "sent" and row.claimed_by is None
    assert sorted((a.worker, a.outcome) for a in attempts(services)) == [("fast", "sent"), ("slow", "deferred")]


def lead_status(services, email):
    from mailer.store.tables import Lead

    with services.db.read_only() as session:
        return session.scalar(select(Lead.status).where(Lead.email == email))


def test_an_unknown_mailbox_makes_the_lead_undeliverable_and_cancels_its_other_mail(
        make_services, database_url, smtp_server, visitor_on, clock):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor = visitor_on(services)
    visitor.sign_up("weg@example.nl")
    clock.advance(minutes=1)
    visitor.sign_up("weg@example.nl")  # a second confirmation waits behind the first
    smtp_server.replies["weg@example.nl"] = "550 5.1.1 <weg@example.nl>: Recipient address rejected"
    report = services.sender(services.transport()).dispatch(limit=1)

    assert report.failed == 1
    assert lead_status(services, "weg@example.nl") == "undeliverable"
    assert [r.status for r in rows(services)] == ["failed", "cancelled"]
    assert "address undeliverable" in rows(services)[1].last_error
    visitor.sign_up("weg@example.nl")  # the form answers as always, and queues nothing
    assert services.sender(services.transport()).dispatch().handled == 0


def test_a_policy_refusal_about_the_sender_spares_the_recipient_and_pauses_marketing(
        make_services, database_url, smtp_server, visitor_on, clock):
    from mailer.store import queries
    from mailer.store.tables import Pause

    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor = visitor_on(services)
    visitor.sign_up("streng@example.nl")
    smtp_server.replies["streng@example.nl"] = "550 5.7.1 Sender address rejected: SPF check failed"
    assert services.sender(services.transport()).dispatch().failed == 1
    assert lead_status(services, "streng@example.nl") == "pending"
    with services.db.read_only() as session:
        assert "5.7.1" in session.get(Pause, "marketing").reason

    # While paused, marketing rows wait and transactional mail still goes out.
    visitor.sign_up("nieuw@example.nl")
    visitor.sign_up("reclame@example.nl")
    as_marketing(services, "reclame@example.nl")
    assert services.sender(services.transport()).dispatch().sent == 1
    assert {r.recipient: r.status for r in rows(services)}["reclame@example.nl"] == "queued"
    with services.db.transaction() as session:
        queries.resume_marketing(session)
    assert services.sender(services.transport()).dispatch().sent == 1


def test_a_confirmation_that_would_arrive_after_its_link_expired_is_cancelled(
        make_services, database_url, visitor_on, clock):
    services = make_services(database_url)
    visitor_on(services).sign_up("lang-weg@example.nl")
    clock.advance(days=8)
    transport = MemoryTransport()
    report = services.sender(transport).dispatch()
    assert report.cancelled == 1 and transport.outbox == []
    [row] = rows(services)
    assert row.status == "cancelled" and "older than its link" in row.last_error
    assert attempts(services) == []  # nothing was attempted


def test_a_stopping_sender_finishes_the_message_in_flight_and_gives_the_rest_back(
        make_services, database_url, visitor_on, clock):
    services = make_services(database_url)
    visitor = visitor_on(services)
    for n in range(4):
        visitor.sign_up(f"stop{n}@example.nl")

    class StopAfterFirst(MemoryTransport):
        def send_messages(self, messages):
            sent = super().send_messages(messages)
            sender.stop()  # SIGTERM arrives while the first message is in flight
            return sent

    sender = services.sender(StopAfterFirst(), worker="leaving")
    report = sender.dispatch()
    assert (report.sent, report.released) == (1, 3)
    assert sorted(r.status for r in rows(services)) == ["queued", "queued", "queued", "sent"]
    assert all(r.claimed_by is None for r in rows(services))
    assert services.sender(MemoryTransport()).dispatch().sent == 3  # another worker takes them at once


def test_a_worker_whose_lease_ran_out_skips_the_rows_another_worker_took(make_services, database_url,
                                                                          visitor_on, clock):
    services = make_services(database_url)
    visitor = visitor_on(services)
    for name in ("een", "twee", "drie"):
        visitor.sign_up(f"{name}@example.nl")
    fast_transport = MemoryTransport()
    fast = services.sender(fast_transport, worker="fast")

    class HangsOnce(MemoryTransport):
        """The first message hangs past the lease; meanwhile another worker takes the batch."""

        def send_messages(self, messages):
            if not self.outbox:
                clock.advance(minutes=6)
                assert fast.dispatch().sent == 3
            return super().send_messages(messages)

    slow_transport = HangsOnce()
    services.sender(slow_transport, worker="slow").dispatch()
    assert len(slow_transport.outbox) == 1  # only the message that was already in flight
    assert len(fast_transport.outbox) == 3
    assert {r.status for r in rows(services)} == {"sent"}
