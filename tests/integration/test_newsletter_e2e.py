"""Newsletter campaigns end to end: real `mailer` processes (tick, worker, newsletter, and a
process that runs the start-campaigns job), a real SMTP server, and SQLite and PostgreSQL.

- kill -9 of the process that queues a campaign, in the middle of a batch, then the job again:
  every lead of the audience has exactly one mail queued, and gets it once;
- three `mailer worker` processes send a 3,000-lead campaign: each Message-ID arrives once;
- a campaign started after the send window closed waits for the window to open;
- the audience `mailer newsletter audience --json` counts is the audience queued and sent;
- a lead who ends the newsletter (its real link, from a newsletter it got) while a campaign is
  under way gets no more newsletter mail and keeps its follow-up mail.

Time is set with `mailer tick --now`; the workers run on the real clock with a send window that
is always open. Nothing waits on a fixed sleep: processes are polled with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from conftest import make_env
from sqlalchemy import create_engine, func, insert, select, text
from test_workers import (  # noqa: F401  (start_worker and engine are fixtures)
    attempts_by_worker,
    engine,
    logs,
    sink_message_ids,
    start_worker,
    wait_until,
)

from mailer.operator import campaigns
from mailer.resources import shipped
from mailer.store.tables import (
    NOT_STARTED,
    Campaign,
    CampaignStatus,
    ConsentEvent,
    Download,
    Enrollment,
    Lead,
    MailKind,
    Outbox,
)
from mailer.web import create_app

BIN = Path(sys.executable).parent
AMSTERDAM = timezone(timedelta(hours=1))  # December: CET
MONDAY = datetime(2026, 11, 30, 10, 0, tzinfo=AMSTERDAM)  # inside the default window (mon-fri 09-17)
TUESDAY = datetime(2026, 12, 1, 10, 0, tzinfo=AMSTERDAM)
ALWAYS_OPEN = {"MAILER_DRIP_WINDOW": "mon-sun 00:00-24:00", "MAILER_DRIP_HOLIDAYS": ""}

LETTER = '''+++
subject = "{subject}"
preheader = "Wat er deze maand speelt."
public = false
{audience}
+++
Het nieuws van deze maand.

[Plan een kennismaking](link('gesprek'))
'''


@pytest.fixture
def content(tmp_path):
    folder = tmp_path / "content"
    shutil.copytree(shipped("content"), folder)
    letters = folder / "newsletters"
    for slug, subject, audience in (
            ("lente", "Lentenieuws", ""),
            ("zomer", "Zomernieuws", ""),
            ("lezers", "Voor wie de gids nog niet las",
             '[audience]\ndownloaded = false\nsigned_up_after = 2026-06-01\nmagnet = "mini-guide"')):
        (letters / f"{slug}.md").write_text(LETTER.format(subject=subject, audience=audience), encoding="utf-8")
    return folder


@pytest.fixture
def built(make_services, database_url, content):
    return make_services(database_url, MAILER_CONTENT_PATH=str(content))


@pytest.fixture
def mailer(tmp_path, content, smtp_server):
    """Run a `mailer` command as its own process on a database; its stdout, or fail with its output."""

    def run(database_url: str, *args: str, **settings: str) -> str:
        env = make_env(tmp_path, MAILER_DATABASE_URL=database_url, MAILER_CONTENT_PATH=str(content),
                       MAILER_MAIL_URL=smtp_server.url, **settings)
        result = subprocess.run([str(BIN / "mailer"), *args], env={**os.environ, **env}, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"mailer {' '.join(args)}: exit {result.returncode}\n" \
                                       f"{result.stdout}\n{result.stderr}"
        return result.stdout

    return run


def add_leads(db, count: int, *, prefix: str = "lid", created: datetime = MONDAY - timedelta(days=30),
              consent=lambda n: True) -> list[int]:
    """`count` confirmed leads of the mini guide in one bulk INSERT; their ids in order."""
    created = created.astimezone(timezone.utc)
    rows = [{"email": f"{prefix}{n}@example.nl", "first_name": f"Lid{n}", "status": "confirmed",
             "magnet": "mini-guide", "marketing_consent": consent(n), "created_at": created,
             "confirmed_at": created, "updated_at": created} for n in range(count)]
    with db.transaction() as session:
        return list(session.scalars(insert(Lead).returning(Lead.id, sort_by_parameter_order=True), rows))


def newsletter_rows(db, slug: str) -> list:
    with db.read_only() as session:
        return session.execute(select(Outbox.lead_id, Outbox.recipient, Outbox.status, Outbox.message_id)
                               .where(Outbox.kind == MailKind.NEWSLETTER, Outbox.step == slug)
                               .order_by(Outbox.lead_id)).all()


def campaign_of(db, slug: str) -> Campaign:
    with db.read_only() as session:
        return session.scalars(select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc())).first()


def received(sink) -> list[tuple[str, str]]:
    """(recipient, subject) of every message the SMTP server took in, in arrival order."""
    parser, out = BytesHeaderParser(policy=policy.default), []
    for envelope in list(sink.messages):
        subject = str(parser.parsebytes(envelope.original_content or envelope.content)["Subject"])
        out.extend((rcpt, subject) for rcpt in envelope.rcpt_tos)
    return out


def operator_url(database_url: str) -> str:
    """The URL as an operator writes it (postgresql://…); SQLite's stays."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


# --- 1. kill -9 in the middle of the enqueue, then the job again -------------------------------

# The start-campaigns job as the scheduler runs it (mailer/scheduler.py), with small batches.
ENQUEUE = """
import sys
from datetime import datetime
from mailer.clock import SettableClock
from mailer.operator.campaigns import start_due
from mailer.services import build_services

now = datetime.fromisoformat(sys.argv[1])
services = build_services(clock=SettableClock(now))
print(start_due(services.db, services.content, services.renderer, zone=services.settings.drip_window.zone, now=now,
                domain=services.settings.mail_domain, batch_size=int(sys.argv[2])), flush=True)
"""
CRASHING = "mailer-e2e-enqueue"  # PGAPPNAME of the process that is killed


class PostgresBlock:
    """Holds FOR UPDATE on one lead from the test's own connection: the enqueue's INSERT of the
    batch holding that lead needs a KEY SHARE lock on it (the foreign key) and waits, inside its
    batch transaction."""

    def __init__(self, url: str, lead_id: int):
        self.engine = create_engine(url)
        self.conn = self.engine.connect()
        self.conn.execute(text("SELECT id FROM leads WHERE id = :id FOR UPDATE"), {"id": lead_id})
        self.watch = self.engine.connect()

    def _count(self, where: str = "") -> int:
        """Server backends of the enqueue process (a fresh snapshot each time)."""
        self.watch.rollback()
        return self.watch.execute(text(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                       f"'{CRASHING}' {where}")).scalar()

    def holding_up_a_batch(self) -> bool:
        """The enqueue process waits for our lock, i.e. it is inside a batch's transaction."""
        return self._count("AND wait_event_type = 'Lock' AND state = 'active'") == 1

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()
        # The killed process's server backend now gets the lock, finds its client gone and rolls
        # its batch back; wait for it to go, so the rerun starts on a quiet database.
        wait_until(lambda: self._count() == 0, 20,
                   lambda: "the killed enqueue's backend is still there")
        self.watch.close()
        self.engine.dispose()


class SQLiteBlock:
    """A trigger that keeps the enqueue busy (a large cross join) when the batch holding one lead
    is inserted: the process is inside that batch's write transaction until it is killed."""

    def __init__(self, url: str, lead_id: int):
        self.path = url.removeprefix("sqlite:///")
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE e2e_burn (n INTEGER)")
            conn.executemany("INSERT INTO e2e_burn VALUES (?)", [(n,) for n in range(3000)])
            conn.execute(f"CREATE TRIGGER e2e_slow_batch AFTER INSERT ON outbox WHEN NEW.lead_id = {lead_id} "
                         "BEGIN SELECT count(*) FROM e2e_burn a, e2e_burn b, e2e_burn c; END")
        conn.close()

    def holding_up_a_batch(self) -> bool:
        """Someone holds the write lock (the enqueue, inside a batch transaction)."""
        probe = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc), exc
            return True
        else:
            probe.execute("ROLLBACK")
            return False
        finally:
            probe.close()

    def release(self) -> None:
        with sqlite3.connect(self.path, timeout=10) as conn:
            conn.execute("DROP TRIGGER e2e_slow_batch")
            conn.execute("DROP TABLE e2e_burn")
        conn.close()


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path):
    with log.open("w+") as out:
        process = subprocess.Popen(args, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_kill_9_in_the_middle_of_the_enqueue_then_the_job_again_queues_everyone_once(
        built, database_url, tmp_path, content, mailer, smtp_server):
    # 80 leads, every seventh without marketing consent (never queued); batches of 10.
    ids = add_leads(built.db, 80, consent=lambda n: n % 7 != 3)
    audience = [lead_id for n, lead_id in enumerate(ids) if n % 7 != 3]
    campaigns.schedule(built.db, built.content, "zomer", now=TUESDAY, no_test=True)
    held, last_whole = audience[35], audience[29]  # the 4th batch is held up; three are whole

    block = (PostgresBlock if database_url.startswith("postgresql") else SQLiteBlock)(database_url, held)
    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=operator_url(database_url),
                                    MAILER_CONTENT_PATH=str(content)), "PGAPPNAME": CRASHING}
    try:
        with running([sys.executable, "-c", ENQUEUE, TUESDAY.isoformat(), "10"], env, tmp_path / "enqueue.log") \
                as process:
            def mid_batch() -> bool:
                assert process.poll() is None, (tmp_path / "enqueue.log").read_text()
                return campaign_of(built.db, "zomer").checkpoint == last_whole and block.holding_up_a_batch()

            wait_until(mid_batch, 20, lambda: f"checkpoint {campaign_of(built.db, 'zomer').checkpoint}, "
                                              f"expected {last_whole}\n{(tmp_path / 'enqueue.log').read_text()}")
            process.kill()  # SIGKILL, inside the 4th batch's transaction
            assert process.wait(timeout=10) == -9
    finally:
        block.release()

    # What the crash left: three whole batches, the campaign part-way, nothing of the 4th batch.
    campaign = campaign_of(built.db, "zomer")
    assert (campaign.status, campaign.checkpoint, campaign.queued) == (CampaignStatus.SENDING, last_whole, 30)
    assert [row.lead_id for row in newsletter_rows(built.db, "zomer")] == audience[:30]
    assert smtp_server.messages == []

    # The job again, as the periodic work does it: it queues the rest and sends everything.
    output = mailer(database_url, "tick", "--now", TUESDAY.isoformat())
    assert f"campaign {campaign.id} (zomer): queued {len(audience) - 30}" in output, output
    rows = newsletter_rows(built.db, "zomer")
    assert Counter(row.lead_id for row in rows) == Counter(audience), "a lead skipped or queued twice"
    assert {row.status for row in rows} == {"sent"}
    campaign = campaign_of(built.db, "zomer")
    assert (campaign.status, campaign.queued) == (CampaignStatus.DONE, len(audience))
    assert smtp_server.wait(len(audience), timeout=10)
    recipients = Counter(rcpt for rcpt, _ in received(smtp_server))
    assert recipients == Counter(f"lid{n}@example.nl" for n in range(80) if n % 7 != 3)


# --- 2. three workers, 3,000 leads, PostgreSQL ---------------------------------------------------

@pytest.mark.postgres
def test_three_workers_send_a_3000_lead_campaign_each_message_exactly_once(
        make_services, postgres_url, content, engine, start_worker, smtp_server, mailer):  # noqa: F811
    built = make_services(postgres_url, MAILER_CONTENT_PATH=str(content))
    add_leads(built.db, 3000, created=datetime.now(timezone.utc) - timedelta(days=3))
    # Scheduled by the operator's command; the workers' own start-campaigns job queues it.
    scheduled = mailer(postgres_url, "newsletter", "send", "zomer", "--no-test")
    assert "scheduled" in scheduled, scheduled
    workers = [start_worker(smtp_server.url, MAILER_CONTENT_PATH=str(content), MAILER_DRIP_INTERVAL="1",
                            MAILER_SEND_BATCH_SIZE="100", **ALWAYS_OPEN) for _ in range(3)]

    started = time.monotonic()

    def sent() -> int:
        return sum(1 for row in newsletter_rows(built.db, "zomer") if row.status == "sent")

    assert smtp_server.wait(3000, timeout=60), \
        f"{len(smtp_server.messages)} of 3000 arrived, {sent()} sent\n{logs(*workers)}"
    wait_until(lambda: sent() == 3000, 15, lambda: f"{sent()} of 3000 sent\n{logs(*workers)}")
    elapsed = time.monotonic() - started

    rows = newsletter_rows(built.db, "zomer")
    arrived = sink_message_ids(smtp_server)
    assert len(arrived) == 3000, f"{len(arrived) - len(set(arrived))} duplicate copies"
    assert Counter(arrived) == Counter(row.message_id for row in rows), "not each Message-ID exactly once"
    assert Counter(rcpt for rcpt, _ in received(smtp_server)) == Counter(f"lid{n}@example.nl" for n in range(3000))
    campaign = campaign_of(built.db, "zomer")
    assert (campaign.status, campaign.queued) == (CampaignStatus.DONE, 3000)
    by_worker = attempts_by_worker(engine)
    assert sum(by_worker.values()) == 3000 and len(by_worker) > 1, f"attempts per worker: {by_worker}"
    assert [w.terminate() for w in workers] == [0, 0, 0], logs(*workers)
    print(f"3000 newsletters by 3 workers in {elapsed:.1f} s; attempts per worker: {sorted(by_worker.values())}")


# --- 3. the send window ------------------------------------------------------------------------

def test_a_campaign_started_after_the_window_closed_waits_for_it_to_open(built, database_url, mailer, smtp_server):
    add_leads(built.db, 4)
    evening = datetime(2026, 12, 1, 17, 30, tzinfo=AMSTERDAM)  # Tuesday, the window closed at 17:00
    campaigns.schedule(built.db, built.content, "zomer", now=evening, start_at=evening, no_test=True)

    output = mailer(database_url, "tick", "--now", evening.isoformat())
    assert "(zomer): queued 4" in output and "dispatch-outbox: nothing to do" in output, output
    early = mailer(database_url, "tick", "--now", (evening + timedelta(hours=15, minutes=29)).isoformat())  # 08:59
    assert "dispatch-outbox: nothing to do" in early, early
    assert smtp_server.messages == [] and {r.status for r in newsletter_rows(built.db, "zomer")} == {"queued"}

    opened = mailer(database_url, "tick", "--now", "2026-12-02T09:00:00+01:00")  # Wednesday 09:00
    assert "dispatch-outbox: sent 4," in opened, opened
    assert smtp_server.wait(4, timeout=5)
    assert sorted(received(smtp_server)) == [(f"lid{n}@example.nl", "Zomernieuws") for n in range(4)]


# --- 4. the audience counted is the audience sent --------------------------------------------------

def test_the_audience_count_with_its_filters_is_what_the_campaign_queues_and_sends(
        built, database_url, mailer, smtp_server):
    june = datetime(2026, 6, 1, tzinfo=AMSTERDAM)
    new = add_leads(built.db, 12, prefix="nieuw", created=june + timedelta(days=10))
    add_leads(built.db, 5, prefix="oud", created=june - timedelta(days=10))  # signed up before June
    add_leads(built.db, 3, prefix="nee", created=june + timedelta(days=10), consent=lambda n: False)
    with built.db.transaction() as session:
        session.add_all(Download(lead_id=lead_id, magnet="mini-guide", at=june + timedelta(days=11))
                        for lead_id in new[:4])  # they read the guide
        session.get(Lead, new[4]).newsletter_ended_at = june + timedelta(days=20)
        session.get(Lead, new[5]).status = "unsubscribed"
    expected = {f"nieuw{n}@example.nl" for n in range(6, 12)}  # the rest: read it, ended it, unsubscribed

    counted = json.loads(mailer(database_url, "newsletter", "audience", "lezers", "--json", "--sample", "1000"))
    assert counted["filters"], counted
    assert counted["count"] == len(expected) and set(counted["sample"]) == expected
    # the same filters given as options on a newsletter without any count the same leads
    as_options = json.loads(mailer(database_url, "newsletter", "audience", "zomer", "--json", "--not-downloaded",
                                   "--after", "2026-06-01", "--magnet", "mini-guide"))
    assert as_options["count"] == counted["count"]

    campaigns.schedule(built.db, built.content, "lezers", now=TUESDAY, no_test=True)
    output = mailer(database_url, "tick", "--now", TUESDAY.isoformat())
    assert f"(lezers): queued {counted['count']}" in output, output
    assert smtp_server.wait(counted["count"], timeout=5)
    assert sorted(rcpt for rcpt, _ in received(smtp_server)) == sorted(counted["sample"])
    status = json.loads(mailer(database_url, "newsletter", "status", "lezers", "--json"))
    assert (status["audience"], status["queued"], status["sent"]) == (counted["count"],) * 3, status


# --- 5. ending the newsletter during a campaign --------------------------------------------------

def test_a_lead_who_ends_the_newsletter_mid_campaign_gets_no_more_of_it_but_keeps_its_follow_up(
        built, database_url, mailer, smtp_server):
    anne = add_leads(built.db, 4)[0]
    wednesday = datetime(2026, 12, 2, 9, 0, tzinfo=AMSTERDAM)
    with built.db.transaction() as session:  # Anne's first follow-up mail is due on Wednesday
        session.add(Enrollment(lead_id=anne, sequence="mini-guide", status="active",
                               anchor_at=wednesday - timedelta(days=2), position=NOT_STARTED,
                               next_due_at=wednesday, created_at=MONDAY, updated_at=MONDAY))

    # Monday: the spring newsletter reaches everyone.
    campaigns.schedule(built.db, built.content, "lente", now=MONDAY, no_test=True)
    mailer(database_url, "tick", "--now", MONDAY.isoformat())
    assert smtp_server.wait(4, timeout=5)
    [spring] = [message_from_bytes(e.original_content or e.content, policy=policy.default)
                for e in smtp_server.messages if e.rcpt_tos == ["lid0@example.nl"]]
    link = str(spring["List-Unsubscribe"]).strip("<>")
    assert "/afmelden/nieuwsbrief/" in link and link in spring.get_body(("plain",)).get_content()

    # Tuesday evening the summer newsletter is queued; it waits for the window (Wednesday 09:00).
    evening = datetime(2026, 12, 1, 17, 30, tzinfo=AMSTERDAM)
    campaigns.schedule(built.db, built.content, "zomer", now=evening, start_at=evening, no_test=True)
    assert "(zomer): queued 4" in mailer(database_url, "tick", "--now", evening.isoformat())

    # Meanwhile Anne follows the link in her spring newsletter: "Alleen de nieuwsbrief".
    built.clock.set((evening + timedelta(minutes=30)).astimezone(timezone.utc))
    client = create_app(services=built).test_client()
    page = client.get(link.removeprefix("https://guide.example.nl"))
    assert "Alleen de nieuwsbrief" in page.get_data(as_text=True)
    answer = client.post(link.removeprefix("https://guide.example.nl"), data={"keuze": "nieuwsbrief"})
    assert answer.status_code == 200 and "Je ontvangt de nieuwsbrief niet meer" in answer.get_data(as_text=True)

    # Wednesday 09:00: the others get the summer newsletter; Anne gets her follow-up mail only.
    mailer(database_url, "tick", "--now", wednesday.isoformat())
    assert smtp_server.wait(4 + 3 + 1, timeout=5)
    first_step = built.content.sequences["mini-guide"].steps[0].subject
    got = Counter(received(smtp_server))
    assert got == Counter({**{(f"lid{n}@example.nl", "Lentenieuws"): 1 for n in range(4)},
                           **{(f"lid{n}@example.nl", "Zomernieuws"): 1 for n in range(1, 4)},
                           ("lid0@example.nl", first_step): 1})
    with built.db.read_only() as session:
        lead = session.get(Lead, anne)
        assert (lead.status, lead.marketing_consent, lead.newsletter_ended_at is not None) == ("confirmed", True, True)
        assert session.scalar(select(Enrollment.status).where(Enrollment.lead_id == anne)) == "active"
        assert session.scalars(select(ConsentEvent.kind).where(ConsentEvent.lead_id == anne)).all() == ["newsletter-end"]
        assert session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.lead_id == anne, Outbox.step == "zomer", Outbox.status == "cancelled")) == 1
