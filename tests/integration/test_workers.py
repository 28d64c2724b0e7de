"""Several `mailer worker` processes on one PostgreSQL outbox: no duplicates, nothing lost.

Each test fills the outbox directly (bulk INSERTs, rows already due on the real clock),
starts real worker processes against a real SMTP server, and waits for the outcome by
polling the database or the server with a deadline; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest
from conftest import POSTGRES_URL, make_env, unavailable
from smtp_faults import FaultySMTPServer
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.store.tables import DeliveryAttempt, Lead, Outbox

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent
MAIL_DOMAIN = "example.nl"  # the domain of make_env's MAILER_FROM, which names Message-IDs


# --- the outbox --------------------------------------------------------------------------

@pytest.fixture
def engine(postgres_url):
    """The test's own view of the database; pre-ping so it survives a server restart."""
    engine = create_engine(postgres_url, pool_pre_ping=True, connect_args={"connect_timeout": 3})
    yield engine
    engine.dispose()


def queue_mail(engine, count: int) -> dict[int, str]:
    """Insert `count` pending leads with one due confirmation each; return {outbox id: Message-ID}.

    Straight into the tables, the row shape `queries.insert_outbox` writes, dated a minute
    ago so every row is due at once for workers on the real clock.
    """
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    with engine.begin() as conn:
        leads = conn.execute(
            insert(Lead).returning(Lead.id, Lead.email, sort_by_parameter_order=True),
            [{"email": f"lead{n}@example.org", "first_name": f"Lead{n}", "status": "pending",
              "magnet": "mini-guide", "marketing_consent": False, "created_at": now, "updated_at": now}
             for n in range(count)],
        ).all()
        rows = conn.execute(
            insert(Outbox).returning(Outbox.id, Outbox.message_id, sort_by_parameter_order=True),
            [{"kind": "confirm", "lead_id": lead.id, "recipient": lead.email, "magnet": "mini-guide",
              "message_id": make_msgid(domain=MAIL_DOMAIN), "priority": 0, "status": "queued",
              "attempts": 0, "unknown_outcomes": 0, "created_at": now, "queued_at": now,
              "next_attempt_at": now}
             for lead in leads],
        ).all()
    return {row.id: row.message_id for row in rows}


def status_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all())


def outbox_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).order_by(Outbox.id)).all()


def attempts_by_worker(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(
            select(DeliveryAttempt.worker, func.count()).group_by(DeliveryAttempt.worker)).all()))


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> float:
    """Poll `condition` until it holds; return the seconds it took, or fail saying `what()` is.

    A database that is restarting counts as "not yet".
    """
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (OperationalError, InterfaceError):
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {what()}")
        time.sleep(0.2)


def all_sent(engine, count: int) -> Callable[[], bool]:
    return lambda: status_counts(engine).get("sent", 0) == count


def duplicates(message_ids: list[str]) -> int:
    """How many received copies are extra (a Message-ID received three times counts 2)."""
    return sum(n - 1 for n in Counter(message_ids).values())


# --- worker processes --------------------------------------------------------------------

class Worker:
    """One `mailer worker` process, with its own log file."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path):
        self.name = name
        self.log = (cwd / f"{name}.log").open("w+")
        self.process = subprocess.Popen([str(BIN / "mailer"), "worker"], env={**os.environ, **env}, cwd=cwd,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def owns(self, worker_column: str | None) -> bool:
        """Whether a claimed_by / delivery_attempts.worker value ("host:pid" or "host:pid/n") is ours."""
        return bool(worker_column) and worker_column.rpartition(":")[2].split("/")[0] == str(self.pid)

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def terminate(self, timeout: float = 20) -> int | None:
        """SIGTERM, then the exit code, or None if it did not exit within `timeout` seconds."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path, postgres_url):
    """Start `mailer worker` processes on the test database; any still running are stopped after."""
    started: list[Worker] = []
    database = "postgresql://" + postgres_url.split("://", 1)[1]  # the form an operator writes

    def start(mail_url: str, **settings: str) -> Worker:
        env = make_env(tmp_path, MAILER_DATABASE_URL=database, MAILER_MAIL_URL=mail_url, **settings)
        worker = Worker(f"worker{len(started) + 1}", env, tmp_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.terminate(timeout=20) is None:
            worker.kill()
        worker.log.close()


def logs(*workers: Worker) -> str:
    return "\n".join(f"--- {w.name} (pid {w.pid}, exit {w.process.poll()}) ---\n{w.output()[-3000:]}"
                     for w in workers)


# --- a slow relay --------------------------------------------------------------------------

class SlowRelay(FaultySMTPServer):
    """Takes every message in (recorded on arrival), then replies 250 only after `delay` seconds.

    A worker spends most of a batch waiting for that reply, so a signal or a kill lands
    mid-message: the relay has the message, the worker has not recorded it yet.
    """

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        self._record(envelope)
        await asyncio.sleep(self.delay)  # other connections are served meanwhile
        return "250 OK: queued"


@pytest.fixture
def slow_relay():
    relays: list[SlowRelay] = []

    def start(delay: float) -> SlowRelay:
        relay = SlowRelay(delay).start()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.stop()


def sink_message_ids(sink) -> list[str]:
    """Message-IDs of what the conftest SMTPSink received, in arrival order."""
    parser = BytesHeaderParser()
    return [str(parser.parsebytes(envelope.original_content or envelope.content)["Message-ID"]).strip()
            for envelope in list(sink.messages)]


# --- the tests ---------------------------------------------------------------------------

def test_three_workers_send_two_thousand_rows_each_exactly_once(start_worker, engine, smtp_server):
    queued = queue_mail(engine, 2000)
    workers = [start_worker(smtp_server.url, MAILER_SEND_BATCH_SIZE="50") for _ in range(3)]

    started = time.monotonic()
    assert smtp_server.wait(2000, timeout=60), \
        f"{len(smtp_server.messages)} of 2000 messages arrived, {status_counts(engine)}\n{logs(*workers)}"
    wait_until(all_sent(engine, 2000), 10, lambda: f"{status_counts(engine)}\n{logs(*workers)}")
    elapsed = time.monotonic() - started

    received = sink_message_ids(smtp_server)
    extra = len(received) - len(set(received))
    assert extra == 0, f"{extra} duplicate copies among {len(received)} messages"
    assert Counter(received) == Counter(queued.values()), "not every queued Message-ID arrived exactly once"
    by_worker = attempts_by_worker(engine)
    assert sum(by_worker.values()) == 2000, f"attempts per worker: {by_worker}"
    assert len(by_worker) > 1, f"one worker did all the work: {by_worker}"
    assert all(any(w.owns(name) for w in workers) for name in by_worker), by_worker

    codes = [w.terminate() for w in workers]
    assert codes == [0, 0, 0], logs(*workers)
    print(f"2000 mails by 3 workers in {elapsed:.1f} s; attempts per worker: {sorted(by_worker.values())}")


def test_kill_9_mid_batch_loses_nothing_and_duplicates_at_most_the_message_in_flight(
        start_worker, engine, slow_relay):
    relay = slow_relay(0.05)
    queued = queue_mail(engine, 200)
    settings = {"MAILER_SEND_BATCH_SIZE": "100", "MAILER_LEASE_SECONDS": "10"}
    first = start_worker(relay.url, **settings)
    assert relay.wait_for(20, timeout=30), f"{len(relay.received)} arrived\n{logs(first)}"
    first.kill()

    # What the dead worker still holds: claimed, unsent, under a lease that has to run out.
    stranded = {row.id for row in outbox_rows(engine) if row.status == "sending" and first.owns(row.claimed_by)}
    assert stranded, "the killed worker held no claim: it was not mid-batch"
    arrived_at_kill = len(relay.received)

    second = start_worker(relay.url, **settings)
    took = wait_until(all_sent(engine, 200), 60, lambda: f"{status_counts(engine)}\n{logs(first, second)}")

    received = relay.message_ids()
    extra = duplicates(received)
    figures = (f"{len(received)} received for 200 rows, {extra} duplicate copies, "
               f"{arrived_at_kill} arrived before the kill, {len(stranded)} rows stranded under its lease")
    assert set(received) == set(queued.values()), f"a queued Message-ID never arrived: {figures}"
    assert extra <= 1, figures
    rows = {row.id: row for row in outbox_rows(engine)}
    assert all(rows[i].status == "sent" for i in queued), figures
    with engine.connect() as conn:
        takers = {worker for (row_id, worker) in conn.execute(
            select(DeliveryAttempt.outbox_id, DeliveryAttempt.worker)) if row_id in stranded}
    assert takers and all(second.owns(name) for name in takers), \
        f"stranded rows were not taken over by the second worker: {takers}"
    copied = {message_id for message_id, n in Counter(received).items() if n > 1}
    assert copied <= {queued[i] for i in stranded}, "a copy of a mail the killed worker had recorded as sent"
    assert second.terminate() == 0, logs(second)
    print(f"kill -9: {figures}; the second worker finished in {took:.1f} s")


def test_sigterm_mid_batch_finishes_the_message_in_flight_and_gives_the_rest_back(
        start_worker, engine, slow_relay):
    relay = slow_relay(0.05)
    queued = queue_mail(engine, 100)
    first = start_worker(relay.url, MAILER_SEND_BATCH_SIZE="100")
    assert relay.wait_for(20, timeout=30), f"{len(relay.received)} arrived\n{logs(first)}"

    asked = time.monotonic()
    code = first.terminate(timeout=10)
    stopped_in = time.monotonic() - asked
    assert code == 0, f"exit {code} after SIGTERM\n{logs(first)}"

    rows = outbox_rows(engine)
    counts = Counter(row.status for row in rows)
    assert counts["sending"] == 0, f"rows left claimed: {counts}"
    assert all(row.claimed_by is None and row.claimed_until is None for row in rows if row.status != "sent"), \
        "an unsent row still names a worker"
    assert counts["sent"] == len(relay.received), \
        f"{counts['sent']} recorded as sent, {len(relay.received)} arrived: the message in flight was not finished"
    assert counts["queued"] == 100 - counts["sent"] > 0, f"nothing was given back: {counts}"

    second = start_worker(relay.url, MAILER_SEND_BATCH_SIZE="100")
    wait_until(all_sent(engine, 100), 30, lambda: f"{status_counts(engine)}\n{logs(second)}")
    received = relay.message_ids()
    assert duplicates(received) == 0, f"{duplicates(received)} duplicate copies"
    assert Counter(received) == Counter(queued.values())
    assert second.terminate() == 0, logs(second)
    print(f"SIGTERM: exit 0 in {stopped_in:.2f} s after {counts['sent']} sent, {counts['queued']} given back")


# --- a database restart --------------------------------------------------------------------

def local_cluster() -> tuple[str, str]:
    """(version, name) of the Debian PostgreSQL cluster serving the test database, or skip."""
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not shutil.which("pg_lsclusters"):
        unavailable("postgres", "restarting the server needs root and Debian's pg_ctlcluster")
    url = urlsplit(POSTGRES_URL)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        unavailable("postgres", f"the test server {url.hostname} is not a local cluster to restart")
    port = str(url.port or 5432)
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30)
    for line in listing.stdout.splitlines():
        version, name, cluster_port, status, *_ = line.split()
        if cluster_port == port and status == "online":
            return version, name
    unavailable("postgres", f"no online cluster on port {port} in pg_lsclusters:\n{listing.stdout}")


def pg_ctl(version: str, name: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                   check=True, capture_output=True, timeout=60)


def pg_ready() -> bool:
    url = urlsplit(POSTGRES_URL)
    return subprocess.run(["pg_isready", "-q", "-h", url.hostname, "-p", str(url.port or 5432)],
                          timeout=30).returncode == 0


def test_workers_ride_out_a_postgres_restart_without_losing_or_failing_mail(start_worker, engine, slow_relay):
    version, name = local_cluster()
    relay = slow_relay(0.05)
    queued = queue_mail(engine, 300)
    # A lease shorter than the default 300 s only bounds the wait should a claim's commit be
    # lost with the connection; it is far above the few seconds a restart takes.
    settings = {"MAILER_SEND_BATCH_SIZE": "50", "MAILER_LEASE_SECONDS": "30"}
    workers = [start_worker(relay.url, **settings) for _ in range(2)]
    try:
        assert relay.wait_for(30, timeout=30), f"{len(relay.received)} arrived\n{logs(*workers)}"
        restart = time.monotonic()
        pg_ctl(version, name, "restart")
        restarted_in = time.monotonic() - restart
        arrived_at_restart = len(relay.received)
        assert arrived_at_restart < 300, "all mail went out before the restart: nothing was tested"
        took = wait_until(all_sent(engine, 300), 90, lambda: f"{status_counts(engine)}\n{logs(*workers)}")
    finally:
        if not pg_ready():
            pg_ctl(version, name, "start")

    counts = status_counts(engine)
    received = relay.message_ids()
    extra = duplicates(received)
    figures = (f"{len(received)} received for 300 rows, {extra} duplicate copies; restart took "
               f"{restarted_in:.1f} s after {arrived_at_restart} arrived; all sent {took:.1f} s later")
    assert counts == {"sent": 300}, f"{counts}: {figures}"
    assert set(received) == set(queued.values()), f"a queued Message-ID never arrived: {figures}"
    assert extra <= len(workers), figures
    assert all(w.running() for w in workers), f"a worker died with the database\n{logs(*workers)}"
    assert [w.terminate() for w in workers] == [0, 0], logs(*workers)
    print(f"PostgreSQL restart: {figures}")
