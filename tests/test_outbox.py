"""The outbox sender: claims with a lease, records every attempt, follows the SMTP answer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from mailer import queries, retry
from mailer.models import DeliveryAttempt, Outbox
from mailer.outbox import Sender
from mailer.transports.memory import MemoryTransport

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("code, attempts, age, expected", [
    (550, 1, timedelta(0), None),                        # permanent
    (421, 1, timedelta(0), timedelta(seconds=30)),       # temporary: soon
    (None, 3, timedelta(0), timedelta(minutes=10)),      # broken connection: later
    (451, 9, timedelta(hours=1), timedelta(hours=1)),    # the last delay repeats
    (451, 9, timedelta(days=2), None),                   # too old: give up
])
def test_retry_policy(code, attempts, age, expected):
    decision = retry.decide(code, attempts, T0 - age, T0, retry.TRANSACTIONAL)
    assert decision.retry_at == (None if expected is None else T0 + expected)


def rows(services):
    with services.db.read_only() as session:
        return session.scalars(select(Outbox).order_by(Outbox.id)).all()


def attempts(services):
    with services.db.read_only() as session:
        return session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()


def test_mail_goes_out_over_smtp_and_each_attempt_is_recorded(make_services, database_url, smtp_server, visitor_on):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor_on(services).sign_up("ontvanger@example.nl")
    report = Sender(services, services.transport(), worker="w1").dispatch()

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
    report = Sender(services, services.transport()).dispatch()

    assert report.failed == 1
    [row] = rows(services)
    assert row.status == "failed" and "User unknown" in row.last_error
    assert attempts(services)[0].code == 550


def test_a_temporary_refusal_is_retried_later_with_the_same_message_id(
        make_services, database_url, smtp_server, visitor_on, clock):
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    smtp_server.replies["druk@example.nl"] = "451 4.3.0 Try again later"
    visitor_on(services).sign_up("druk@example.nl")
    sender = Sender(services, services.transport())

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


def test_an_unreachable_server_defers_the_batch(make_services, database_url, visitor_on):
    from conftest import free_port

    services = make_services(database_url, MAILER_MAIL_URL=f"smtp://127.0.0.1:{free_port()}?timeout=2")
    visitor_on(services).sign_up("wacht@example.nl")
    report = Sender(services, services.transport()).dispatch()
    assert report.deferred == 1 and rows(services)[0].status == "deferred"


def test_a_row_whose_lease_ran_out_is_claimed_again(make_services, database_url, visitor_on, clock):
    services = make_services(database_url)
    visitor_on(services).sign_up("wees@example.nl")
    with services.db.transaction() as session:  # a worker claims, then dies
        assert len(queries.claim_due(session, now=clock.now(), lease_until=clock.now() + timedelta(minutes=5),
                                     worker="dead", limit=10)) == 1
    transport = MemoryTransport()
    assert Sender(services, transport).dispatch().handled == 0  # still leased
    clock.advance(minutes=6)
    assert Sender(services, transport).dispatch().sent == 1
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
    from mailer import create_app
    from conftest import Visitor

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
    report = Sender(services, transport).dispatch()
    assert (report.sent, report.failed) == (2, 1)
    assert {r.recipient: r.status for r in rows(services)} == {
        "a@example.nl": "sent", "b@example.nl": "failed", "c@example.nl": "sent"}
    assert "KeyError" in [r for r in rows(services) if r.status == "failed"][0].last_error


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_result_of_the_worker_that_took_over(
        make_services, database_url, visitor_on, clock):
    from mailer.errors import DeliveryError

    services = make_services(database_url)
    visitor_on(services).sign_up("traag@example.nl")
    fast = Sender(services, MemoryTransport(), worker="fast")

    class StalledTransport(MemoryTransport):
        """Hangs so long that the lease runs out and another worker sends; then fails."""

        def send_messages(self, messages):
            clock.advance(minutes=6)
            assert fast.dispatch().sent == 1
            raise DeliveryError(451, "too late")

    Sender(services, StalledTransport(), worker="slow").dispatch()
    [row] = rows(services)
    assert row.status == "sent" and row.claimed_by is None
    assert sorted((a.worker, a.outcome) for a in attempts(services)) == [("fast", "sent"), ("slow", "deferred")]
