"""Politeness and throughput: a sending rate shared by all workers, several senders per worker."""

from __future__ import annotations

import threading
import time
import uuid

from conftest import Visitor, as_marketing
from sqlalchemy import select

from mailer.delivery.throttle import SendThrottle
from mailer.delivery.transports.memory import MemoryTransport
from mailer.store.tables import Outbox
from mailer.web import create_app


def queue(services, clock, emails, marketing=False):
    visitor = Visitor(create_app(services=services).test_client(), clock)
    for email in emails:
        assert visitor.sign_up(email).status_code == 303
    if marketing:
        as_marketing(services, *emails)


def test_the_sending_rate_holds_across_workers_through_redis(make_services, sqlite_url, clock, redis_url):
    services = make_services(sqlite_url, MAILER_SIGNUP_RATE_LIMIT="1000 per minute")
    queue(services, clock, [f"r{n}@example.nl" for n in range(12)])
    relay = f"relay-{uuid.uuid4().hex}"
    # Two senders with their own throttle objects stand for two worker processes.
    transports = [MemoryTransport(), MemoryTransport()]
    senders = [services.sender(t, worker=f"w{n}", throttle=SendThrottle("4 per second", redis_url, relay))
               for n, t in enumerate(transports)]
    began = time.monotonic()
    threads = [threading.Thread(target=s.dispatch, kwargs={"limit": 6}) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - began
    assert sum(len(t.outbox) for t in transports) == 12
    assert elapsed >= 2.0, f"12 messages at 4 per second took only {elapsed:.2f} s"


def test_marketing_gives_way_to_transactional_mail_when_the_rate_is_reached(make_services, sqlite_url, clock):
    services = make_services(sqlite_url, MAILER_SIGNUP_RATE_LIMIT="1000 per minute")
    queue(services, clock, [f"m{n}@example.nl" for n in range(5)], marketing=True)
    transport = MemoryTransport()
    sender = services.sender(transport, throttle=SendThrottle("3 per second", "memory://", "relay"))
    report = sender.dispatch()
    assert (report.sent, report.released) == (3, 2)  # marketing does not sit on its claim waiting

    queue(services, clock, ["bevestig@example.nl"])  # a confirmation arrives meanwhile
    sender.dispatch_all()
    order = [e.recipients[0] for e in transport.outbox]
    assert order[:4] == ["m0@example.nl", "m1@example.nl", "m2@example.nl", "bevestig@example.nl"]
    # The rest went out after it (if the rate window passed meanwhile) or waits, unclaimed.
    assert set(order[4:]) <= {"m3@example.nl", "m4@example.nl"}
    with services.db.read_only() as session:
        waiting = session.execute(select(Outbox.status, Outbox.claimed_by).where(Outbox.status != "sent")).all()
    assert waiting == [("queued", None)] * (6 - len(order))


def test_several_senders_in_one_worker_each_use_their_own_connection(make_services, sqlite_url, clock,
                                                                      smtp_server):
    services = make_services(sqlite_url, MAILER_MAIL_URL=smtp_server.url, MAILER_SEND_CONCURRENCY="3",
                             MAILER_SIGNUP_RATE_LIMIT="1000 per minute",
                             MAILER_SEND_BATCH_SIZE="10")
    queue(services, clock, [f"c{n}@example.nl" for n in range(60)])
    senders = services.senders()
    assert len({s.worker for s in senders}) == 3
    threads = [threading.Thread(target=s.dispatch_all) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert smtp_server.wait(60, timeout=10)
    ids = [e.content.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0] for e in smtp_server.messages]
    assert len(ids) == len(set(ids)) == 60
    assert len(set(smtp_server.peers)) >= 2  # the work really was shared over connections
    with services.db.read_only() as session:
        assert set(session.scalars(select(Outbox.status))) == {"sent"}
