"""Drip sequences on real databases: the job, sequence changes, templates checked at start-up."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timedelta, timezone

import pytest
from conftest import broken_sequence
from sqlalchemy import func, select

from mailer.errors import ContentError
from mailer.resources import shipped
from mailer.scheduler import build_scheduler, periodic_jobs
from mailer.store.tables import Enrollment, Outbox

UTC = timezone.utc
ANCHOR = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Amsterdam
DAY = timedelta(days=1)


@pytest.mark.parametrize("old, new, message", [
    ('template = "mini-guide/03-lef-en-eigenheid"', 'template = "mini-guide/03-bestaat-niet"',
     r"drip/mini-guide/03-bestaat-niet.html or .txt \(sequence mini-guide, step lef-en-eigenheid\)"),
    ('template = "mini-guide/03-lef-en-eigenheid"', 'template = "../guide"', r"must be a path inside"),
])
def test_a_missing_template_stops_the_start_with_its_name(tmp_path, make_services, sqlite_url, old, new, message):
    content = broken_sequence(tmp_path, old, new)
    with pytest.raises(ContentError, match=message):
        make_services(sqlite_url, MAILER_CONTENT_PATH=str(content))


def test_a_link_name_missing_from_the_organisation_stops_the_start(tmp_path, make_services, sqlite_url):
    content = tmp_path / "content"
    shutil.copytree(shipped("content"), content)
    organisation = content / "organisation.toml"
    organisation.write_text(organisation.read_text(encoding="utf-8").replace("\nvisie = ", "\nvisie-oud = "),
                            encoding="utf-8")
    with pytest.raises(ContentError, match=r"step lef-en-eigenheid\): link\('visie'\) is not one of the \[links\]"):
        make_services(sqlite_url, MAILER_CONTENT_PATH=str(content))


# --- the job on a real database ----------------------------------------------------------

def enrol(services, count: int, anchor: datetime) -> None:
    """`count` confirmed leads with marketing consent, enrolled at `anchor` (bulk, for speed)."""
    from mailer.store.tables import Lead

    with services.db.transaction() as session:
        session.execute(Lead.__table__.insert(), [
            {"email": f"lead{n}@example.nl", "first_name": "", "status": "confirmed", "magnet": "mini-guide",
             "marketing_consent": True, "created_at": anchor, "confirmed_at": anchor, "updated_at": anchor}
            for n in range(count)
        ])
        ids = session.scalars(select(Lead.id)).all()
        session.execute(Enrollment.__table__.insert(), [
            {"lead_id": i, "sequence": "mini-guide", "status": "active", "anchor_at": anchor, "position": -1,
             "next_due_at": anchor + 2 * DAY, "created_at": anchor, "updated_at": anchor}
            for i in ids
        ])


def test_a_run_queues_each_due_step_once_in_batches(make_services, database_url, clock):
    services = make_services(database_url, MAILER_DRIP_BATCH_SIZE="7")
    enrol(services, 30, ANCHOR)
    report = services.drip.run(services.db, ANCHOR + 2 * DAY)
    assert report.enqueued == 30
    again = services.drip.run(services.db, ANCHOR + 2 * DAY + timedelta(minutes=1))
    assert again.enqueued == 0 and not again.did_anything
    with services.db.read_only() as session:
        assert session.scalar(select(func.count(func.distinct(Outbox.idempotency_key)))) == 30
        assert set(session.scalars(select(Outbox.priority))) == {10}  # marketing: after transactional mail
        assert set(session.scalars(select(Enrollment.next_due_at))) == {ANCHOR + 4 * DAY}


def test_nothing_is_queued_outside_the_window_or_while_marketing_is_paused(services):
    from mailer.store import queries

    enrol(services, 3, ANCHOR)
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert services.drip.run(services.db, saturday).note.startswith("outside the send window")
    with services.db.transaction() as session:
        queries.pause_marketing(session, reason="554 5.7.1 blocked", now=ANCHOR)
    assert "paused" in services.drip.run(services.db, ANCHOR + 2 * DAY).note
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0


def test_leads_without_consent_are_stopped_not_mailed(services):
    from mailer.store.tables import Lead

    enrol(services, 2, ANCHOR)
    with services.db.transaction() as session:
        session.execute(Lead.__table__.update().where(Lead.email == "lead0@example.nl")
                        .values(status="undeliverable"))
    report = services.drip.run(services.db, ANCHOR + 2 * DAY)
    assert (report.enqueued, report.stopped) == (1, 1)


def test_the_scheduler_holds_the_same_jobs_whatever_the_number_of_leads(services):
    def job_count():
        scheduler = build_scheduler(periodic_jobs(services, services.senders()))
        return len(scheduler.get_jobs())

    empty = job_count()
    enrol(services, 500, ANCHOR)
    assert job_count() == empty == 4  # drip, purge, campaigns and one dispatch job


# --- sequence changes and several processes ---------------------------------------------------

def test_a_newer_process_applies_a_change_once_and_an_older_one_leaves_it_alone(
        make_services, database_url, clock, tmp_path):
    from test_drip_walk import changed_content

    from mailer.delivery.enqueue import drip_mail
    from mailer.store import queries
    from mailer.store.tables import SequenceState

    old = make_services(database_url)
    enrol(old, 3, ANCHOR)
    assert old.drip.run(old.db, ANCHOR + 2 * DAY).enqueued == 3
    with old.db.transaction() as session:  # a mail of the step about to be removed, still queued
        queries.insert_drip_mails(session, [drip_mail(1, "lead0@example.nl", "mini-guide", "mini-guide",
                                                              "kennismaken", ANCHOR, "example.nl")])
    clock.set(ANCHOR + 3 * DAY)
    new = make_services(database_url, MAILER_CONTENT_PATH=changed_content(tmp_path, old))
    new.drip.run(new.db, ANCHOR + 3 * DAY)  # applies: 'vroeg' (day 3) is due now for all three
    old_run = old.drip.run(old.db, ANCHOR + 3 * DAY + timedelta(hours=1))

    assert not old_run.did_anything
    with new.db.read_only() as session:
        steps = [key for key, _ in json.loads(session.get(SequenceState, "mini-guide").steps)]
        removed = session.scalar(select(Outbox).where(Outbox.step == "kennismaken"))
        early = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.step == "vroeg"))
    assert "terugblik" in steps and "kennismaken" not in steps
    assert removed.status == "cancelled" and "removed from the sequence" in removed.last_error
    assert early == 3


def test_two_workers_run_the_drip_job_at_once_and_queue_each_step_once(make_services, postgres_url):
    first, second = make_services(postgres_url, MAILER_DRIP_BATCH_SIZE="25"), \
        make_services(postgres_url, MAILER_DRIP_BATCH_SIZE="25")
    enrol(first, 300, ANCHOR)
    start, reports, errors = threading.Barrier(2), [], []

    def work(services):
        start.wait()
        try:
            reports.append(services.drip.run(services.db, ANCHOR + 2 * DAY))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and sum(r.enqueued for r in reports) == 300
    with first.db.read_only() as session:
        assert session.scalar(select(func.count(func.distinct(Outbox.lead_id)))) == 300
        assert session.scalar(select(func.count()).select_from(Outbox)) == 300


def test_the_drip_job_does_not_wait_for_an_unsubscribe_in_progress(make_services, postgres_url):
    from mailer.funnel.actions import Evidence
    from mailer.funnel.tokens import UNSUBSCRIBE

    services = make_services(postgres_url)
    enrol(services, 1, ANCHOR)
    token = services.links.unsubscribe(1, "mini-guide", "lead0@example.nl").rsplit("/", 1)[1]
    link = services.signer.read_lead_link(UNSUBSCRIBE, token)
    reports = []
    with services.db.transaction() as session:
        services.funnel.lead_for(session, link, lock=True)  # the unsubscribe request holds the lead
        runner = threading.Thread(target=lambda: reports.append(services.drip.run(services.db, ANCHOR + 2 * DAY)))
        runner.start()
        runner.join(timeout=20)
        assert not runner.is_alive(), "the drip job waited for the lead's lock: the two would deadlock"
        services.funnel.unsubscribe(session, link, Evidence(None, None, "test"), ANCHOR + 2 * DAY)
    assert reports[0].enqueued == 1
    with services.db.read_only() as session:
        assert session.scalar(select(Outbox.status)) == "cancelled"  # queued by the job, cancelled by the click


def test_marketing_mail_waits_for_the_window_to_be_sent_too(services, clock):
    from mailer.delivery.transports.memory import MemoryTransport

    enrol(services, 2, ANCHOR)
    friday_late = datetime(2026, 12, 4, 15, 59, tzinfo=UTC)  # 16:59 in Amsterdam: queued
    assert services.drip.run(services.db, friday_late).enqueued == 2
    transport = MemoryTransport()
    clock.set(friday_late + timedelta(minutes=1))  # 17:00: the relay was slow, nothing went yet
    assert services.sender(transport, worker="test").dispatch_all().sent == 0
    clock.set(datetime(2026, 12, 7, 8, 0, tzinfo=UTC))  # Monday 09:00
    assert services.sender(transport, worker="test").dispatch_all().sent == 2
