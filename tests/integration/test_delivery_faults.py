"""The real sender against a relay that misbehaves on purpose; a settable clock moves time."""

from __future__ import annotations

from datetime import timedelta

from conftest import Visitor, as_marketing
from sqlalchemy import select

from mailer.store.tables import DeliveryAttempt, Outbox
from mailer.web import create_app


def setup(make_services, database_url, clock, server, *emails, timeout=5):
    services = make_services(database_url, MAILER_MAIL_URL=f"smtp://127.0.0.1:{server.port}?timeout={timeout}")
    visitor = Visitor(create_app(services=services).test_client(), clock)
    for email in emails:
        visitor.sign_up(email)
    return services, services.sender(services.transport(), worker="w")


def state(services):
    with services.db.read_only() as session:
        rows = session.scalars(select(Outbox).order_by(Outbox.id)).all()
        tried = session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()
    return rows, tried


def test_a_421_greeting_gives_the_batch_back_and_a_later_pass_delivers(make_services, database_url, clock,
                                                                       faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "a@example.nl", "b@example.nl")
    faulty_smtp.greet_with("421 4.3.2 Service not available", times=1)
    assert sender.dispatch().released == 2  # the relay's trouble: no attempt counts against the mail
    clock.advance(seconds=31)
    assert sender.dispatch().sent == 2
    rows, tried = state(services)
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]


def test_a_temporary_refusal_after_data_is_retried_with_growing_delays(make_services, database_url, clock,
                                                                       faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "druk@example.nl")
    faulty_smtp.after_data("druk@example.nl", "452 4.3.1 Insufficient system storage", times=2)
    delays = []
    for _ in range(2):
        began = clock.now()
        assert sender.dispatch().deferred == 1
        due = state(services)[0][0].next_attempt_at
        delays.append(due - began)
        clock.set(due)
    assert delays == [timedelta(seconds=30), timedelta(minutes=2)]
    assert sender.dispatch().sent == 1
    assert len(set(faulty_smtp.message_ids())) == 1  # one Message-ID throughout


def test_a_permanent_refusal_after_data_fails_with_the_reply(make_services, database_url, clock, faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "groot@example.nl")
    faulty_smtp.after_data("groot@example.nl", "552 5.3.4 Message size exceeds fixed limit")
    assert sender.dispatch().failed == 1
    rows, tried = state(services)
    assert rows[0].status == "failed" and "5.3.4" in rows[0].last_error
    assert (tried[0].code, tried[0].outcome) == (552, "failed")


def test_a_disconnect_after_data_is_an_unknown_outcome_retried_once(make_services, database_url, clock,
                                                                    faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "twijfel@example.nl")
    faulty_smtp.disconnect_after_data("twijfel@example.nl", times=1)
    assert sender.dispatch().deferred == 1
    clock.advance(minutes=1)
    assert sender.dispatch().sent == 1
    ids = faulty_smtp.message_ids()
    assert len(ids) == 2 and ids[0] == ids[1]  # one extra copy, recognisable as the same message
    rows, tried = state(services)
    assert [t.outcome for t in tried] == ["unknown", "sent"]


def test_two_unknown_outcomes_stop_the_retries_so_copies_stay_at_two(make_services, database_url, clock,
                                                                     faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "stil@example.nl")
    faulty_smtp.disconnect_after_data("stil@example.nl")
    sender.dispatch()
    clock.advance(minutes=1)
    assert sender.dispatch().failed == 1
    clock.advance(hours=1)
    assert sender.dispatch().handled == 0
    assert len(faulty_smtp.message_ids()) == 2
    assert "outcome unknown twice" in state(services)[0][0].last_error


def test_a_reply_slower_than_the_timeout_is_an_unknown_outcome(make_services, database_url, clock, faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "traag@example.nl", timeout=1)
    faulty_smtp.slow_after_data("traag@example.nl", seconds=3, times=1)
    assert sender.dispatch().deferred == 1
    rows, tried = state(services)
    assert tried[0].outcome == "unknown" and rows[0].unknown_outcomes == 1


def test_a_relay_that_refuses_the_connection_fails_no_mail(make_services, database_url, clock, faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "a@example.nl", "b@example.nl")
    faulty_smtp.greet_with("554 5.7.1 Host blocked", times=1)
    report = sender.dispatch()
    assert report.handled == 0 and report.released == 2
    rows, tried = state(services)
    assert [(r.status, r.attempts) for r in rows] == [("queued", 0), ("queued", 0)]
    assert sender.dispatch().handled == 0  # the sender leaves the relay alone for a while
    clock.advance(seconds=31)
    assert sender.dispatch().sent == 2


def test_a_sender_policy_refusal_stops_the_marketing_rest_of_the_batch(make_services, database_url, clock,
                                                                        faulty_smtp):
    emails = [f"m{n}@example.nl" for n in range(4)]
    services, sender = setup(make_services, database_url, clock, faulty_smtp, *emails)
    as_marketing(services)
    faulty_smtp.at_rcpt("m0@example.nl", "554 5.7.1 Sender address rejected: policy")
    report = sender.dispatch()
    assert (report.failed, report.released) == (1, 3)
    rows, _ = state(services)
    assert [r.status for r in rows] == ["failed", "queued", "queued", "queued"]


def test_an_error_outside_delivery_gives_the_rest_of_the_batch_back(make_services, database_url, clock,
                                                                     faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "x@example.nl", "y@example.nl",
                             "z@example.nl")

    class BrokenStore:
        calls = 0

        def try_acquire(self):
            BrokenStore.calls += 1
            if BrokenStore.calls == 2:
                raise ConnectionError("rate-limit store unreachable")
            return 0.0

    sender.throttle = BrokenStore()
    try:
        sender.dispatch()
    except ConnectionError:
        pass
    rows, _ = state(services)
    assert [r.status for r in rows] == ["sent", "sending", "queued"]  # in hand: left to its lease


def test_a_delivered_mail_keeps_the_relays_own_answer(make_services, database_url, clock, faulty_smtp):
    services, sender = setup(make_services, database_url, clock, faulty_smtp, "ok@example.nl")
    assert sender.dispatch().sent == 1
    _, tried = state(services)
    assert tried[0].code == 250 and tried[0].reply != "accepted"  # aiosmtpd's "OK" (a queue id elsewhere)
