"""Mails per second through the outbox sender, against a naive send loop, into Postfix's smtp-sink.

What it measures
    Five ways to deliver MAILS guide mails (the real ``templates/mail/guide.html`` and
    ``guide.txt`` of the ``mini-guide`` magnet, personalised per recipient), all into one
    Postfix ``smtp-sink`` on a free port of 127.0.0.1 (it throws mail away and counts it; it
    takes about 3,000 messages a second from one smtplib connection here, so it is not what
    limits any of them):

    naive        no database: a plain ``jinja2.Environment(FileSystemLoader(templates/mail))``
                 renders both templates with the context the mailer's renderer builds (content
                 from ``mailer.content.files.load_content``, the recipient's first name, a fake download
                 link of a real link's length), ``email.message.EmailMessage`` (default policy)
                 builds text + HTML alternative with From, To, Subject, Date and Message-ID, and
                 ``smtplib.SMTP.send_message`` sends it over ONE connection. No CSS inlining (the
                 mailer does that work on top). Templates are loaded before the clock starts.
    bytes        the same messages, built as bytes before the clock starts, sent with
                 ``sendmail`` over one connection: the physical limit of client + sink.
    mailer-sqlite     MAILS confirmed leads, each with a due outbox row of kind "guide", in a
                 fresh SQLite file (``mailer db upgrade``; leads through SQLAlchemy, rows through
                 ``mailer.delivery.sender.enqueue``, CHUNK rows per transaction, before the clock starts);
                 then one sender (``build_services(Settings.from_env(...)).senders()``, SMTP to the
                 sink, ``MAILER_SEND_BATCH_SIZE`` 500, ``MAILER_LOG_MAIL`` false) runs
                 ``dispatch_all()`` in this process until the queue is empty. Claiming, rendering,
                 building, sending and recording each result: the real thing.
    mailer-postgres   the same on a scratch PostgreSQL database.
    mailer-postgres-2-workers   the same queue on a scratch PostgreSQL database, delivered by
                 two ``mailer worker`` processes with the same settings
                 (``MAILER_DISPATCH_INTERVAL`` 0.1 s), timed from starting them until the
                 database shows every row sent (polled every 50 ms). Reported besides: their
                 start-up (start until the first recorded attempt) and the rate over the span from
                 the first to the last recorded attempt.

    Each run measures all five (fresh databases, order reversed on even runs); the script
    prints every run, then the medians and the ratios. Afterwards every mailer queue must be
    all ``sent`` with exactly one recorded attempt per row, and the sink must have counted
    every message of every measurement; otherwise the exit status is 1.

    With ``--profile`` it adds one more mailer-sqlite and mailer-postgres delivery under
    cProfile (not counted in the figures) and prints where the sender's time goes, in µs per
    message: wall time by where the code lives (templates, CSS inlining, email package, SMTP,
    database, ...; C functions are charged to their Python callers' category), and the
    cumulative time of the mailer's own functions and of a few key library calls. cProfile
    inflates Python call costs, so the table is also scaled to the unprofiled median rate.

How to run it (from the project root; needs Postfix's smtp-sink, PostgreSQL, and the dev extra)
    .venv/bin/python bench/send_mail.py [--mails 5000] [--runs 3] [--profile]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test] [--smtp-sink /usr/sbin/smtp-sink]

    The PostgreSQL URL (default: $MAILER_TEST_POSTGRES_URL, else the one above) names a server
    where that user may create databases; each mailer measurement creates its own scratch
    database there and drops it afterwards. Everything else lives in a temporary directory that
    is removed; smtp-sink and the workers are started and stopped by the script; the only
    traffic is on 127.0.0.1. With the defaults it takes about three to four minutes on a
    2-core machine. Each measurement stops after TIME_LIMIT seconds at most.

Targets (issue 3, "Speed")
    mailer-sqlite/naive >= 2.0 and mailer-postgres/naive >= 2.0 with one worker. Also reported:
    mailer/bytes (the share of the physical limit) and 2-workers/1-worker on PostgreSQL. The
    exit status is 0 whether or not the targets are met (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without the editable install, too

HOST = "127.0.0.1"
SLUG = "mini-guide"
KIND = "guide"
MAILS = 5000
RUNS = 3
BATCH = 500  # MAILER_SEND_BATCH_SIZE
CHUNK = 1000  # leads and outbox rows per queueing transaction
WORKERS = 2
TARGET = 2.0
BASE_URL = "https://guide.example.nl"
MAIL_FROM = "Mini guide <guide@example.nl>"
MAIL_DOMAIN = "example.nl"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
DISPATCH_INTERVAL = "0.1"  # seconds between a worker's passes (the minimum; default 1)
POLL = 0.05  # seconds between database polls while workers run
START_TIMEOUT = 10.0  # seconds for smtp-sink to answer
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_SINK = "/usr/sbin/smtp-sink"
# Dutch first names, some with non-ASCII letters, one empty ("Hallo daar"): personalisation.
FIRST_NAMES = ("Anna", "Bram", "Chloë", "Daan", "Eva", "Fleur", "Sem", "Lotte", "Jan-Willem", "Zoë", "")
NAIVE = "naive"
BYTES = "bytes"
SQLITE = "mailer-sqlite"
POSTGRES = "mailer-postgres"
TWO_WORKERS = f"mailer-postgres-{WORKERS}-workers"
NAMES = (NAIVE, BYTES, SQLITE, POSTGRES, TWO_WORKERS)


def time_limit(mails: int) -> float:
    """Seconds one measurement may take: generous (about 25 mails/s), never under a minute."""
    return max(60.0, mails / 25)


@dataclass(frozen=True)
class Recipient:
    number: int
    email: str
    first_name: str


def recipients(count: int) -> list[Recipient]:
    return [Recipient(n, f"lead{n}@example.org", FIRST_NAMES[n % len(FIRST_NAMES)]) for n in range(count)]


# --- processes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(process: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL its own process group (it was started in a new session)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)
    return process.returncode


class Sink:
    """Postfix's smtp-sink on a free local port; `count()` reads its running message counter."""

    MESSAGES = re.compile(rb"mesg=(\d+)")

    def __init__(self, binary: str, workdir: Path):
        self.port = free_port()
        self.log = workdir / "smtp-sink.log"
        command = [binary, "-c"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u
            command += ["-u", pwd.getpwuid(0).pw_name]
        command += [f"{HOST}:{self.port}", "1000"]
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {self.process.returncode}:\n{_tail(self.log)}")
            try:
                with smtplib.SMTP(HOST, self.port, timeout=2) as probe:
                    probe.noop()
                return
            except (OSError, smtplib.SMTPException):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"smtp-sink did not answer within {START_TIMEOUT:.0f}s:\n{_tail(self.log)}")
                time.sleep(0.05)

    def count(self) -> int:
        """Messages received so far ("." seen), from the last counter line it printed (-c)."""
        found = self.MESSAGES.findall(self.log.read_bytes())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        _stop_process(self.process, grace=5)


class Postgres:
    """Scratch databases on one server, each dropped after its measurement (and in any case at exit)."""

    def __init__(self, url: str):
        import psycopg

        self.url = url
        self.psycopg = psycopg
        self.tag = uuid.uuid4().hex[:8]
        self.live: set[str] = set()
        with self._admin() as conn:
            conn.execute("SELECT 1")

    def _admin(self):
        return self.psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def create(self, label: str) -> tuple[str, str]:
        name = f"mailer_bench_{self.tag}_{label}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.live.add(name)
        return name, urlsplit(self.url)._replace(path=f"/{name}").geturl()

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.live.discard(name)

    def commit_floor(self, count: int = 500) -> str:
        """What one durable one-row INSERT + COMMIT costs from psycopg here: the floor under a
        sender that commits every result on its own."""
        name, url = self.create("calibrate")
        try:
            with self.psycopg.connect(url, connect_timeout=5) as conn:
                settings = dict(conn.execute("SELECT name, setting FROM pg_settings "
                                             "WHERE name IN ('fsync', 'synchronous_commit')").fetchall())
                conn.execute("CREATE TABLE probe (id serial PRIMARY KEY, at timestamptz, reply text)")
                conn.commit()
                t0 = time.perf_counter()
                for _ in range(count):
                    conn.execute("INSERT INTO probe (at, reply) VALUES (now(), %s)", ("250 accepted",))
                    conn.commit()
                each = (time.perf_counter() - t0) / count
        finally:
            self.drop(name)
        return (f"one-row INSERT + COMMIT from psycopg {each * 1e6:.0f} µs (fsync {settings.get('fsync')}, "
                f"synchronous_commit {settings.get('synchronous_commit')})")

    def drop_all(self) -> None:
        for name in list(self.live):
            try:
                self.drop(name)
            except Exception as exc:  # report, keep cleaning up
                print(f"could not drop scratch database {name}: {exc}", file=sys.stderr)


# --- the naive loop and the bytes loop ------------------------------------------------------

class NaiveMail:
    """What a developer without the mailer would write: Jinja2, EmailMessage, smtplib."""

    def __init__(self):
        from jinja2 import Environment, FileSystemLoader, StrictUndefined

        from mailer.content.files import load_content

        content = load_content(ROOT / "content")
        magnet = content.magnets[SLUG]
        # StrictUndefined: a template variable this context lacks fails loudly, not as a blank.
        env = Environment(loader=FileSystemLoader(ROOT / "templates" / "mail"), undefined=StrictUndefined)
        self.html = env.get_template(f"{KIND}.html")
        self.text = env.get_template(f"{KIND}.txt")
        self.subject = magnet.guide_mail.subject
        self.context = {  # the context MailRenderer.render builds for a guide mail
            "org": content.organisation, "magnet": magnet, "mail": magnet.guide_mail,
            "subject": magnet.guide_mail.subject, "link_days": magnet.link_max_age_days,
        }
        self.sender = parseaddr(MAIL_FROM)[1]
        self.wire_policy = EmailMessage().policy.clone(linesep="\r\n")  # CRLF, as on the wire
        self._check()

    def _check(self) -> None:
        """The personalisation and the link must reach both parts (templates change)."""
        probe = self.message(Recipient(0, "probe@example.org", "Chloë"))
        for part in (probe.get_body(("plain",)), probe.get_body(("html",))):
            body = part.get_content()
            if "Chloë" not in body or f"{BASE_URL}/download/" not in body:
                raise RuntimeError(f"naive loop: the {part.get_content_subtype()} part lacks the first name "
                                   "or the link; did the template's variables change?")

    def message(self, to: Recipient) -> EmailMessage:
        # A real link is the base URL, /download/ and an itsdangerous token of about 80 characters.
        link = f"{BASE_URL}/download/{secrets.token_urlsafe(60)}"
        # Both names the templates have used for the greeting: the first name, or "daar" without one.
        context = {**self.context, "first_name": to.first_name, "name": to.first_name or "daar", "link": link}
        message = EmailMessage()
        message["From"] = MAIL_FROM
        message["To"] = Address(display_name=to.first_name, addr_spec=to.email)
        message["Subject"] = self.subject
        message["Date"] = format_datetime(datetime.now(timezone.utc))
        message["Message-ID"] = make_msgid(domain=MAIL_DOMAIN)
        message.set_content(self.text.render(context))
        message.add_alternative(self.html.render(context), subtype="html")
        return message


@dataclass
class Measurement:
    name: str
    run: int
    mails: int  # delivered (by the database's count for the mailer, by the loop for the others)
    seconds: float
    sink: int  # messages smtp-sink counted during the measurement
    problems: list[str] = field(default_factory=list)
    startup: float | None = None  # workers: start until the first recorded attempt
    span: float | None = None  # mailer: first to last recorded attempt
    size: float | None = None  # bytes per message, where known

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds else 0.0

    @property
    def span_rate(self) -> float | None:
        return self.mails / self.span if self.span else None

    def line(self) -> str:
        extra = []
        if self.size:
            extra.append(f"{self.size / 1024:.1f} KiB/message")
        if self.startup is not None:
            extra.append(f"start-up {self.startup:.2f}s")
        if self.span is not None:
            extra.append(f"first to last attempt {self.span:.2f}s = {self.span_rate:.0f} mails/s")
        status = "ok" if not self.problems else "PROBLEMS: " + "; ".join(self.problems)
        return (f"run {self.run}  {self.name:<26} {self.rate:7.1f} mails/s  {self.mails} mails in "
                f"{self.seconds:6.2f}s  sink +{self.sink}{'  ' + ', '.join(extra) if extra else ''}  {status}")


def measure_naive(run: int, sink: Sink, to: list[Recipient], limit: float, naive=None,
                  name: str = NAIVE) -> Measurement:
    """The naive loop: `naive.message(recipient)` (an EmailMessage; default NaiveMail's guide
    mail) sent with smtplib over one connection; bench/campaign_send.py gives its newsletter."""
    naive = naive or NaiveMail()
    before = sink.count()
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + limit
    with smtplib.SMTP(HOST, sink.port, timeout=30) as smtp:
        for recipient in to:
            smtp.send_message(naive.message(recipient))
            sent += 1
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - t0
    m = Measurement(name, run, sent, elapsed, sink.count() - before)
    m.size = len(naive.message(to[0]).as_bytes(policy=naive.wire_policy)) if to else None
    _check_loop(m, len(to))
    return m


def measure_bytes(run: int, sink: Sink, to: list[Recipient], limit: float) -> Measurement:
    naive = NaiveMail()
    prebuilt = [(r.email, naive.message(r).as_bytes(policy=naive.wire_policy)) for r in to]
    before = sink.count()
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + limit
    with smtplib.SMTP(HOST, sink.port, timeout=30) as smtp:
        for address, data in prebuilt:
            smtp.sendmail(naive.sender, [address], data)
            sent += 1
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - t0
    m = Measurement(BYTES, run, sent, elapsed, sink.count() - before)
    m.size = sum(len(d) for _, d in prebuilt) / len(prebuilt) if prebuilt else None
    _check_loop(m, len(to))
    return m


def _check_loop(m: Measurement, expected: int) -> None:
    if m.mails != expected:
        m.problems.append(f"sent {m.mails} of {expected} within the time limit")
    if m.sink != m.mails:
        m.problems.append(f"smtp-sink counted {m.sink}, the loop sent {m.mails}")


# --- the mailer -----------------------------------------------------------------------------

def mailer_env(workdir: Path, database_url: str, sink: Sink, batch: int) -> dict[str, str]:
    env = _clean_env()
    env.update({
        "MAILER_DATABASE_URL": database_url,
        "MAILER_INSTANCE_PATH": str(workdir / "instance"),
        "MAILER_SECRET_KEY": SECRET_KEY,
        "MAILER_BASE_URL": BASE_URL,
        "MAILER_MAIL_URL": f"smtp://{HOST}:{sink.port}?timeout=30",
        "MAILER_FROM": MAIL_FROM,
        "MAILER_SEND_BATCH_SIZE": str(batch),
        "MAILER_LOG_MAIL": "false",
        "MAILER_DISPATCH_INTERVAL": DISPATCH_INTERVAL,
    })
    return env


def _mailer_command() -> list[str]:
    cli = Path(sys.executable).parent / "mailer"
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "mailer.cli"]


def prepare(workdir: Path, env: dict[str, str], to: list[Recipient]):
    """Migrate a fresh database, fill the queue, and return the services (the caller disposes)."""
    from mailer.services import build_services
    from mailer.settings import Settings

    workdir.mkdir(parents=True)
    # cwd = the work dir, so a developer's .env in the project root does not change the setup.
    done = subprocess.run([*_mailer_command(), "db", "upgrade"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"mailer db upgrade failed:\n{done.stdout}{done.stderr}")
    services = build_services(Settings.from_env(environ=env, dotenv=workdir / "no.env"))
    try:
        queue(services, to)
    except BaseException:
        services.db.dispose()
        raise
    return services


def queue(services, to: list[Recipient]) -> None:
    """Confirmed leads and one due guide mail each, CHUNK of them per transaction."""
    from mailer.delivery.enqueue import enqueue
    from mailer.store.tables import Lead, LeadStatus

    now = datetime.now(timezone.utc) - timedelta(minutes=1)  # due at once
    for start in range(0, len(to), CHUNK):
        with services.db.transaction() as session:
            leads = [
                Lead(email=r.email, first_name=r.first_name, status=LeadStatus.CONFIRMED.value, magnet=SLUG,
                     marketing_consent=False, created_at=now, confirmed_at=now, updated_at=now)
                for r in to[start:start + CHUNK]
            ]
            session.add_all(leads)
            session.flush()
            for lead in leads:
                enqueue(session, kind=KIND, lead_id=lead.id, recipient=lead.email, magnet=SLUG, now=now,
                        domain=MAIL_DOMAIN)


@dataclass
class Outcome:
    counts: dict[str, int]
    attempts: int
    attempted_rows: int
    first: datetime | None
    last: datetime | None


def outcome(services) -> Outcome:
    from sqlalchemy import distinct, func, select

    from mailer.store.tables import DeliveryAttempt, Outbox

    with services.db.read_only() as session:
        counts = dict(session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all())
        attempts, rows, first, last = session.execute(select(
            func.count(), func.count(distinct(DeliveryAttempt.outbox_id)),
            func.min(DeliveryAttempt.at), func.max(DeliveryAttempt.at),
        )).one()
    return Outcome({str(k): v for k, v in counts.items()}, attempts, rows, first, last)


def sent_count(services) -> int:
    from sqlalchemy import func, select

    from mailer.store.tables import Outbox, OutboxStatus

    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == OutboxStatus.SENT))


def _check_mailer(m: Measurement, result: Outcome, expected: int) -> None:
    if result.counts != {"sent": expected}:
        m.problems.append(f"outbox by status {result.counts}, expected {{'sent': {expected}}}")
    if result.attempts != expected or result.attempted_rows != expected:
        m.problems.append(f"{result.attempts} attempts on {result.attempted_rows} rows, expected {expected} on "
                          f"{expected}")
    if m.sink != expected:
        m.problems.append(f"smtp-sink counted {m.sink}, expected {expected}")
    if result.first and result.last:
        m.span = (result.last - result.first).total_seconds()


def deliver_in_process(services, expected: int, limit: float, profiler: cProfile.Profile | None = None):
    """One sender, dispatch_all() until the queue is empty; stopped (gracefully) at the time limit."""
    senders = services.senders()
    if len(senders) != 1:
        raise RuntimeError(f"expected one sender (MAILER_SEND_CONCURRENCY 1), got {len(senders)}")
    sender = senders[0]
    timer = threading.Timer(limit, sender.stop)
    timer.daemon = True
    timer.start()
    sent = 0
    t0 = time.perf_counter()
    try:
        if profiler is not None:
            profiler.enable()
        while sent < expected and timer.is_alive():
            report = sender.dispatch_all()
            sent += report.sent
            if report.handled == 0:
                break
        if profiler is not None:
            profiler.disable()
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
    return sent, elapsed


def measure_mailer(name: str, run: int, workdir: Path, database_url: str, sink: Sink, to: list[Recipient],
                   batch: int, limit: float) -> Measurement:
    services = prepare(workdir, mailer_env(workdir, database_url, sink, batch), to)
    try:
        before = sink.count()
        sent, elapsed = deliver_in_process(services, len(to), limit)
        m = Measurement(name, run, sent, elapsed, sink.count() - before)
        _check_mailer(m, outcome(services), len(to))
        if sent != len(to):
            m.problems.append(f"dispatch_all reported {sent} sent")
        return m
    finally:
        services.db.dispose()


def measure_workers(run: int, workdir: Path, database_url: str, sink: Sink, to: list[Recipient], batch: int,
                    limit: float, running: list[subprocess.Popen]) -> Measurement:
    env = mailer_env(workdir, database_url, sink, batch)
    services = prepare(workdir, env, to)
    procs: list[subprocess.Popen] = []
    logs = [workdir / f"worker-{n}.log" for n in range(1, WORKERS + 1)]
    problems: list[str] = []
    try:
        before = sink.count()
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        for log in logs:
            with open(log, "wb") as handle:
                proc = subprocess.Popen([*_mailer_command(), "worker"], cwd=workdir, env=env, stdout=handle,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            procs.append(proc)
            running.append(proc)
        deadline = t0 + limit
        while True:
            sent = sent_count(services)
            if sent >= len(to):
                break
            dead = [(p, log) for p, log in zip(procs, logs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with {dead[0][0].returncode}:\n{_tail(dead[0][1])}")
            if time.perf_counter() > deadline:
                problems.append(f"only {sent} of {len(to)} sent after {limit:.0f}s")
                break
            time.sleep(POLL)
        elapsed = time.perf_counter() - t0
        for proc, log in zip(procs, logs):
            code = _stop_process(proc)
            running.remove(proc)
            if code != 0:
                problems.append(f"a worker exited with {code} on SIGTERM: {_tail(log, 5)}")
        result = outcome(services)
        m = Measurement(TWO_WORKERS, run, result.counts.get("sent", 0), elapsed, sink.count() - before, problems)
        _check_mailer(m, result, len(to))
        if result.first is not None:
            m.startup = (result.first - started).total_seconds()
        return m
    finally:
        for proc in procs:
            if proc in running:
                _stop_process(proc)
                running.remove(proc)
        services.db.dispose()


# --- profile --------------------------------------------------------------------------------

# Where code lives -> what it does; the first match wins. C functions ("~") go to their callers.
CATEGORIES = (
    ("templates (Jinja2)", ("/jinja2/", "/markupsafe/", str(ROOT / "templates") + "/")),
    ("CSS inlining (css_inline)", ("css_inline",)),
    ("MIME building (email package)", ("/email/", "/quopri.py", "/base64.py", "/encodings/")),
    ("SMTP (smtplib, socket)", ("/smtplib.py", "/socket.py", "/ssl.py", "/selectors.py")),
    ("database (SQLAlchemy, driver)", ("/sqlalchemy/", "/psycopg", "/sqlite3/")),
    ("link signing (itsdangerous)", ("/itsdangerous/", "/hmac.py", "/hashlib.py", "/json/")),
)
KEY_CALLS = (  # (label, file ends with, function name or, for C functions, part of it): cumulative
    ("jinja2 Template.render", "jinja2/environment.py", "render"),
    ("CSSInliner.inline", "~", "CSSInliner"),
    ("itsdangerous Serializer.dumps (the signed link)", "itsdangerous/serializer.py", "dumps"),
    ("email EmailMessage.set_content", "email/message.py", "set_content"),
    ("email EmailMessage.add_alternative", "email/message.py", "add_alternative"),
    ("email Generator.flatten", "email/generator.py", "flatten"),
    ("email.header Header.encode", "email/header.py", "encode"),
    ("email.utils formataddr", "email/utils.py", "formataddr"),
    ("email.utils format_datetime", "email/utils.py", "format_datetime"),
    ("binascii.b2a_qp", "~", "b2a_qp"),
    ("smtplib SMTP.mail", "smtplib.py", "mail"),
    ("smtplib SMTP.rcpt", "smtplib.py", "rcpt"),
    ("smtplib SMTP.data", "smtplib.py", "data"),
    ("SQLAlchemy Session.execute", "sqlalchemy/orm/session.py", "execute"),
    ("SQLAlchemy Connection.exec_driver_sql", "sqlalchemy/engine/base.py", "exec_driver_sql"),
    ("SQLAlchemy Session.commit", "sqlalchemy/orm/session.py", "commit"),
    ("SQLAlchemy Session.close", "sqlalchemy/orm/session.py", "close"),
)


def _category(func: tuple, stats: dict, memo: dict, depth: int = 0) -> dict[str, float]:
    """{category: share} for one function's own time."""
    if func in memo:
        return memo[func]
    path, _, name = func
    result: dict[str, float]
    if path == "~":
        if "CSSInliner" in name or "css_inline" in name:
            result = {CATEGORIES[1][0]: 1.0}
        else:
            callers = stats[func][4]
            total = sum(edge[2] for edge in callers.values())
            result = {}
            if depth < 5 and total > 0:
                for caller, edge in callers.items():
                    if caller in stats and caller != func:
                        for cat, share in _category(caller, stats, memo, depth + 1).items():
                            result[cat] = result.get(cat, 0.0) + share * edge[2] / total
            result = result or {"other": 1.0}
    else:
        label = next((label for label, parts in CATEGORIES if any(p in path for p in parts)), None)
        if label is None and path.startswith(str(ROOT / "mailer") + "/"):
            label = f"mailer's own code ({Path(path).relative_to(ROOT)})"
        result = {label or "other Python (stdlib, dataclasses, logging, ...)": 1.0}
    memo[func] = result
    return result


def print_profile(name: str, profiler: cProfile.Profile, mails: int, elapsed: float,
                  unprofiled_rate: float | None) -> None:
    stats = pstats.Stats(profiler).stats
    stats = {f: v for f, v in stats.items() if "_lsprof" not in f[2]}
    memo: dict = {}
    by_category: dict[str, float] = {}
    for func, (_, _, own, _, _) in stats.items():
        for cat, share in _category(func, stats, memo).items():
            by_category[cat] = by_category.get(cat, 0.0) + own * share
    total = sum(by_category.values())
    scale = (1 / unprofiled_rate) / (elapsed / mails) if unprofiled_rate else None
    us = 1e6 / mails
    print(f"\nprofile {name}: {mails} mails in {elapsed:.2f}s under cProfile = {mails / elapsed:.0f} mails/s"
          + (f" (unprofiled median {unprofiled_rate:.0f} mails/s; 'scaled' = profiled x {scale:.2f})"
             if scale else ""))
    print("  wall time by where the code lives (C calls charged to their callers), per message:")
    for cat, seconds in sorted(by_category.items(), key=lambda kv: -kv[1]):
        scaled = f"  scaled {seconds * us * scale:7.0f} µs" if scale else ""
        print(f"    {cat:<56} {seconds * us:7.0f} µs {100 * seconds / total:5.1f} %{scaled}")
    print(f"    {'total':<56} {total * us:7.0f} µs{f'  scaled {total * us * scale:7.0f} µs' if scale else ''}")

    print("  cumulative time of the mailer's functions, per message (nested, so they overlap; a generator such "
          "as a @contextmanager counts a call per resume, two per use):")
    mine = [(f, v) for f, v in stats.items() if f[0].startswith(str(ROOT / "mailer") + "/")]
    for func, (_, calls, _, cumulative, _) in sorted(mine, key=lambda kv: -kv[1][3])[:14]:
        where = f"{Path(func[0]).relative_to(ROOT)}:{func[1]} {func[2]}"
        print(f"    {where:<56} {cumulative * us:7.0f} µs  {calls / mails:6.2f} calls/message")
    print("  cumulative time of key library calls, per message:")
    rare = []
    for label, suffix, fname in KEY_CALLS:
        found = [v for f, v in stats.items()
                 if f[0].endswith(suffix) and (fname in f[2] if suffix == "~" else f[2] == fname)]
        calls = sum(v[1] for v in found)
        if calls < 0.01 * mails:  # cached: once per template or batch, not per message
            rare.append(f"{label} ({calls}x)")
            continue
        cumulative = sum(v[3] for v in found)
        print(f"    {label:<56} {cumulative * us:7.0f} µs  {calls / mails:6.2f} calls/message")
    if rare:
        print(f"    not per message: {', '.join(rare)}")


def profile_mailer(name: str, workdir: Path, database_url: str, sink: Sink, to: list[Recipient], batch: int,
                   limit: float, unprofiled_rate: float | None) -> list[str]:
    services = prepare(workdir, mailer_env(workdir, database_url, sink, batch), to)
    try:
        profiler = cProfile.Profile()
        sent, elapsed = deliver_in_process(services, len(to), limit, profiler)
        print_profile(name, profiler, max(sent, 1), elapsed, unprofiled_rate)
        result = outcome(services)
        return [] if result.counts == {"sent": len(to)} else [f"profile {name}: outbox by status {result.counts}"]
    finally:
        services.db.dispose()


# --- main -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=MAILS, help=f"mails per measurement ({MAILS})")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of all five measurements ({RUNS}; 0: "
                                                               "only --profile)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"MAILER_SEND_BATCH_SIZE ({BATCH})")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, one mailer-sqlite and one mailer-postgres delivery under cProfile: "
                             "where the sender's time goes, in µs per message")
    parser.add_argument("--postgres-url", default=os.environ.get("MAILER_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
                        help="a server and user that may create databases (default $MAILER_TEST_POSTGRES_URL "
                             f"or {DEFAULT_POSTGRES})")
    parser.add_argument("--smtp-sink", default=DEFAULT_SINK, help=f"Postfix's smtp-sink ({DEFAULT_SINK})")
    args = parser.parse_args()
    mails = max(1, min(args.mails, 200_000))
    runs = max(0, min(args.runs, 20))
    batch = max(1, min(args.batch, 10_000))
    limit = time_limit(mails)
    if not Path(args.smtp_sink).is_file():
        print(f"smtp-sink not found at {args.smtp_sink} (Debian: apt-get install postfix)", file=sys.stderr)
        return 1

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mailer-send-bench-"))
    sink: Sink | None = None
    postgres: Postgres | None = None
    running: list[subprocess.Popen] = []
    results: list[Measurement] = []
    problems: list[str] = []
    to = recipients(mails)
    try:
        sink = Sink(args.smtp_sink, tmp)
        postgres = Postgres(args.postgres_url)
        print(f"{mails} guide mails per measurement, {runs} runs (fresh databases each), batch {batch}, "
              f"at most {limit:.0f}s per measurement; smtp-sink on {HOST}:{sink.port}; PostgreSQL "
              f"{urlsplit(args.postgres_url)._replace(path='').geturl()}; {os.cpu_count()} CPUs; "
              f"work dir {tmp}", flush=True)
        print(f"PostgreSQL floor: {postgres.commit_floor()}", flush=True)
        for run in range(1, runs + 1):
            order = NAMES if run % 2 else NAMES[::-1]
            for name in order:
                where = tmp / f"run{run}-{name}"
                if name == NAIVE:
                    m = measure_naive(run, sink, to, limit)
                elif name == BYTES:
                    m = measure_bytes(run, sink, to, limit)
                elif name == SQLITE:
                    m = measure_mailer(name, run, where, f"sqlite:///{where / 'instance' / 'mailer.db'}", sink, to,
                                       batch, limit)
                else:
                    db, url = postgres.create(f"r{run}_{'w' if name == TWO_WORKERS else 's'}")
                    try:
                        if name == POSTGRES:
                            m = measure_mailer(name, run, where, url, sink, to, batch, limit)
                        else:
                            m = measure_workers(run, where, url, sink, to, batch, limit, running)
                    finally:
                        postgres.drop(db)
                results.append(m)
                problems += [f"run {run} {name}: {p}" for p in m.problems]
                print(m.line(), flush=True)
                shutil.rmtree(where, ignore_errors=True)

        def median(name: str, attr: str = "rate") -> float | None:
            values = [getattr(m, attr) for m in results if m.name == name and getattr(m, attr) is not None]
            return statistics.median(values) if values else None

        if args.profile:
            for name in (SQLITE, POSTGRES):
                where = tmp / f"profile-{name}"
                if name == SQLITE:
                    url, db = f"sqlite:///{where / 'instance' / 'mailer.db'}", None
                else:
                    db, url = postgres.create("profile")
                try:
                    problems += profile_mailer(name, where, url, sink, to, batch, limit, median(name))
                finally:
                    if db:
                        postgres.drop(db)
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in running:
            _stop_process(proc)
        if sink is not None:
            sink.stop()
        if postgres is not None:
            postgres.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.perf_counter() - began
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    print()
    print(f"command: {python} bench/send_mail.py --mails {mails} --runs {runs} --batch {batch}"
          f"{' --profile' if args.profile else ''}")
    if results:
        print(f"summary (medians over {runs} runs, {mails} mails each):")
        for name in NAMES:
            extra = ""
            if median(name, "span_rate") is not None:
                extra += f"   first to last attempt {median(name, 'span_rate'):7.1f} mails/s"
            if median(name, "startup") is not None:
                extra += f"   start-up {median(name, 'startup'):.2f}s"
            print(f"  {name:<26} {median(name):7.1f} mails/s{extra}")

        def ratio(a: str, b: str, attr: str = "rate") -> float:
            return median(a, attr) / median(b, attr)

        for name in (SQLITE, POSTGRES):
            r = ratio(name, NAIVE)
            print(f"  ratio {name}/naive {' ' * (16 - len(name))}{r:5.2f}   (target >= {TARGET}: "
                  f"{'met' if r >= TARGET else 'NOT met'})")
        for name in (SQLITE, POSTGRES, NAIVE):
            print(f"  ratio {name}/bytes {' ' * (16 - len(name))}{ratio(name, BYTES):5.2f}   (share of the "
                  "physical limit)")
        print(f"  ratio {WORKERS}-workers/1-worker on PostgreSQL  {ratio(TWO_WORKERS, POSTGRES):5.2f} "
              f"(start to all sent, worker start-up included)   "
              f"{ratio(TWO_WORKERS, POSTGRES, 'span_rate'):5.2f} (first to last recorded attempt)")
    print(f"  checks: {'all mail delivered once, every row sent' if not problems else f'{len(problems)} problem(s)'}")
    for problem in problems:
        print(f"    {problem}")
    print(f"  took {elapsed:.1f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
