"""The dashboard's leads page and overview on 1,000,000 leads against 10,000 leads, under gunicorn.

What it measures
    Two databases of the same shape, SMALL (10,000) and BIG (1,000,000) leads, each served by
    its own ``gunicorn -w 2 mailer.wsgi:app`` started by this script, both running at once on
    the same machine. An owner logs in over HTTP like a browser (GET /beheer/login for the
    cookie and CSRF token, POST address and password), then these pages are fetched:
    overview     GET /beheer/                          (default period: the last 30 days)
    leads        GET /beheer/leads?status=confirmed    (first page)
    leads-deep   the same filter, a page about 90% down the list: the keyset cursor of the
                 lead at that depth is looked up in the database (see deep_path()).
    Every request is a fresh connection (gunicorn's sync workers close it anyway) and is
    timed at the client, from connect to the last byte of the body. Each page is fetched
    WARMUP times unmeasured, then REQUESTS times, interleaved (small, big; page after page)
    so that whatever else the machine does falls on both alike. A request that answers
    anything but 200 (a redirect to the login page, an error) stops the benchmark. Per page
    and database the median is taken; the figure is median(big) / median(small). With
    --runs R the servers are started afresh R times; each run is printed, then the median
    of the runs' medians.

The data (built once, then cached; see "Cache" below)
    Made with INSERT ... SELECT from a generated series (sqlite3 recursive CTE, PostgreSQL
    generate_series), after the real migrations (mailer.store.migrate.upgrade): no model
    code, a million leads in a minute or two. Lead i is created at a time increasing with
    its id over two years ending at the moment of the build, with
      status       old leads 83% confirmed, 10% unsubscribed, 7% undeliverable; among leads
                   of the last 30 days 15% are still pending (older pending signups are
                   purged by the service, so none are older);
      magnet       mini-guide 65%, checklist 25%, webinar 10% (the shipped content plus two
                   copies of its magnet, in a content folder of the cache);
      marketing    ticked on 60% of the signups; the lead's consent holds while it has not
                   unsubscribed (and once confirmed);
    and, as the funnel writes them: a consent event per signup (kind signup, form
    landing:<magnet>), confirmation (confirm, confirm-button) and unsubscribe (unsubscribe,
    one-click), all pointing at one stored notice, in time order; a download for 60% of the
    confirmed; in the outbox a sent confirmation mail per lead and a sent guide mail per
    confirmed lead, plus, among the last 30 days' leads, 0.1% failed and 0.1% deferred guide
    mails; bounce reports: a hard bounce per undeliverable lead, a complaint for 1 in 10 of
    the unsubscribed, a soft bounce for 1% of the confirmed. No delivery attempts, clicks or
    enrolments (no measured page lists them). PostgreSQL gets VACUUM ANALYZE after the build
    (autovacuum would do it); SQLite gets no ANALYZE, as the service never runs one.

    Two models of "a million leads" (--model):
    steady        (default) the last 90 days hold the same number of signups in both
                  databases (as many as the small one has: 1,233); the big one has more
                  history, not more recent traffic: a service that has run longer. The rest
                  of its leads are packed in the 640 days before.
    proportional  every day of the two years has the same number of signups, so
                  the big database also has 100x the signups of the last 30 or 90 days: a
                  busier service. The overview's default period then holds ~4% of the leads
                  in both databases: 410 against 41,000 signups (and their events).
    The requirement compares page times at 10k and 1M leads; run both models. The leads
    pages read one page of rows in both. The overview keeps each finished day's figures
    (operator/figures.py, "Stored days": the warm-up requests store them) and counts live only
    today and the bounce warning's last 7 days of sent mail (from the index on (status,
    sent_at) and the reports' own index): under the steady model it touches the same rows at
    both sizes, under the proportional model today's and the week's 100x more. Which model was
    used is printed with the figures.

Cache
    SQLite files in CACHE (default /tmp/mailer-bench-dashboard), one per size and model;
    PostgreSQL databases mailer_bench_<size>_<model> (e.g. mailer_bench_1m_steady) beside
    the database of --postgres-url. Each holds a table bench_build with the key it was built
    for: a hash of the migration files (so a new or changed migration, e.g. a new index,
    rebuilds), this script's data version, size and model, and the build time. It is
    rebuilt when the key differs, when it is older than MAX_AGE_HOURS (the overview's
    period is relative to now, the data to the build), or with --rebuild. The operator
    bench@example.nl (owner) is added to each database the first time.

How to run it (from the project root, with the dev extra installed, which brings gunicorn)
    .venv/bin/python bench/dashboard.py [--database sqlite|postgres] [--model proportional|steady]
        [--runs 3] [--requests 15] [--small 10000] [--big 1000000] [--rebuild]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
    --postgres-url defaults to MAILER_BENCH_POSTGRES_URL, else MAILER_TEST_POSTGRES_URL,
    else postgresql://postgres@127.0.0.1:5432/test; the user must be allowed to create
    databases. The first build of the big database takes a few minutes; later runs reuse it.

Targets (issue 13, "Tests and speed")
    big/small at most 1.5 for both leads pages and at most 2 for the overview; the absolute
    medians are printed beside the ratios. Exit status 0 whether or not the targets are met
    (it is a measurement); 1 when the setup fails or a page answers anything but 200.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from mailer.store.migrate import upgrade

HOST = "127.0.0.1"
WORKERS = 2
WARMUP = 3  # unmeasured requests per page and database before the measured ones
REQUESTS = 20  # measured requests per page and database per run
RUNS = 3
START_TIMEOUT = 60.0  # seconds for gunicorn to answer /healthz
REQUEST_TIMEOUT = 120.0
MAX_AGE_HOURS = 20  # a cached database older than this is built again (its "last 30 days" drift)
DATA_VERSION = "1"  # change when fill() changes: cached databases are then built again
CACHE = Path(os.environ.get("MAILER_BENCH_CACHE", Path(tempfile.gettempdir()) / "mailer-bench-dashboard"))
DEFAULT_POSTGRES_URL = (os.environ.get("MAILER_BENCH_POSTGRES_URL") or os.environ.get("MAILER_TEST_POSTGRES_URL")
                        or "postgresql://postgres@127.0.0.1:5432/test")

OPERATOR = "bench@example.nl"
PASSWORD = "bench-Wachtwoord-7f3a9c-lang-genoeg"
SECRET_KEY = "bench-secret-key-0123456789abcdef"

DAY = 86400
HISTORY_DAYS = 730
RECENT_DAYS = 90  # the steady model keeps this many days' signups the same in both databases
PENDING_DAYS = 30  # the service purges signups not confirmed within this (pending_max_age_days)
TROUBLE_DAYS = 30  # failed and deferred mail only among leads this young
MAGNETS = ("mini-guide", "checklist", "webinar")

# The pages, and the targets for big/small.
PAGES = ("overview", "leads", "leads-deep")
TARGETS = {"overview": 2.0, "leads": 1.5, "leads-deep": 1.5}
FILTER = {"status": "confirmed"}
DEEP_SHARE = 0.9  # how far down the filtered list the deep page is


def leads_path(query: dict) -> str:
    return "/beheer/leads?" + urlencode(query)


def deep_path(url: str) -> str:
    """The leads page ~90% down the filtered list, as its keyset "next" link names it.

    mailer/operator/leads.page lists newest first by id; the "Volgende" link (rel="next") is
    ``?<filters>&voor=<id>``: the 50 matching leads below that id. The id is the one at 90%
    of the filtered list, looked up here (the page itself never uses OFFSET)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM leads WHERE status = :s"), {"s": FILTER["status"]}).scalar()
            cursor = conn.execute(
                text("SELECT id FROM leads WHERE status = :s ORDER BY id DESC LIMIT 1 OFFSET :k"),
                {"s": FILTER["status"], "k": int(total * DEEP_SHARE)},
            ).scalar()
    finally:
        engine.dispose()
    return leads_path({**FILTER, CURSOR_PARAM: cursor})


CURSOR_PARAM = "voor"  # the leads page's keyset cursor towards older leads (see deep_path)


# --- building the databases -----------------------------------------------------------------

def schema_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "migrations").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def label(size: int) -> str:
    return f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)


@dataclass
class Shape:
    size: int
    model: str
    small: int  # the size the steady model takes its recent signups from

    @property
    def recent(self) -> int:
        """Leads created in the last RECENT_DAYS days."""
        base = self.size if self.model == "proportional" else min(self.size, self.small)
        return max(1, round(base * RECENT_DAYS / HISTORY_DAYS))

    def key(self) -> str:
        return f"{schema_hash()}-data{DATA_VERSION}-{self.size}-{self.model}-{self.recent}"


class Dialect:
    """The bits of SQL that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str):
        self.name = name

    def ts(self, epoch: str) -> str:
        """A unix time (seconds) as the naive-UTC text/timestamp SQLAlchemy stores."""
        if self.name == "sqlite":
            return f"(strftime('%Y-%m-%d %H:%M:%S', {epoch}, 'unixepoch') || '.000000')"
        return f"(to_timestamp({epoch}) AT TIME ZONE 'UTC')"

    def least(self, *args: str) -> str:
        return f"{'min' if self.name == 'sqlite' else 'least'}({', '.join(args)})"

    def greatest(self, *args: str) -> str:
        return f"{'max' if self.name == 'sqlite' else 'greatest'}({', '.join(args)})"

    def series(self, n: int) -> str:
        if self.name == "sqlite":
            return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"
        return f"(SELECT i::bigint AS i FROM generate_series(1, {n}) AS i)"


NAMES = ["Anne", "Bram", "Chloë", "Daan", "Eva", "Fatima", "Gijs", "Hanneke", "Iris", "Jeroen", "Kees", "Lotte",
         "Mohamed", "Noor", "Olga", "Pieter", "Rik", "Sanne", "Tim", "Yara"]


def fill(url: str, shape: Shape, end: int) -> None:
    """Leads and what the funnel writes about them, by SQL (see the module docstring)."""
    n, recent = shape.size, shape.recent
    old = n - recent
    start, recent_from = end - HISTORY_DAYS * DAY, end - RECENT_DAYS * DAY
    d = Dialect("sqlite" if url.startswith("sqlite") else "postgresql")
    engine = create_engine(url)
    names = "CASE i % 20 " + " ".join(f"WHEN {k} THEN '{name}'" for k, name in enumerate(NAMES)) + " END"
    created = (f"CASE WHEN i <= {old} THEN {start} + (i - 1) * {recent_from - start} / {max(old, 1)} "
               f"ELSE {recent_from} + (i - {old} - 1) * {end - 60 - recent_from} / {recent} END")
    with engine.begin() as conn:
        def run(sql: str) -> None:
            # psycopg reads % as a placeholder even without parameters
            conn.exec_driver_sql(sql if d.name == "sqlite" else sql.replace("%", "%%"))

        if d.name == "sqlite":
            run("PRAGMA temp_store = MEMORY")
            run("PRAGMA cache_size = -1000000")
        # g: one row per lead with its times (unix seconds) and dice.
        run(f"""CREATE TEMP TABLE g AS
            SELECT i, c, u1, u2, u3, u4,
                   CASE WHEN u1 < 150 AND c >= {end - PENDING_DAYS * DAY} THEN 'pending'
                        WHEN u1 >= 930 THEN 'undeliverable' WHEN u1 >= 830 THEN 'unsubscribed'
                        ELSE 'confirmed' END AS status,
                   CASE WHEN u3 < 65 THEN '{MAGNETS[0]}' WHEN u3 < 90 THEN '{MAGNETS[1]}'
                        ELSE '{MAGNETS[2]}' END AS magnet
            FROM (SELECT i, {created} AS c, (i * 2654435761) % 1000 AS u1, (i * 40503 + 7) % 100 AS u2,
                         (i * 69069 + 13) % 100 AS u3, (i * 1103515245 + 12345) % 1000 AS u4
                  FROM {d.series(n)} AS s) AS raw""")
        # k: confirmed at (NULL while pending); x: unsubscribed or found undeliverable at.
        run(f"""CREATE TEMP TABLE h AS
            SELECT g.*, CASE WHEN status IN ('unsubscribed', 'undeliverable')
                                THEN {d.least(f'k + {DAY} * (1 + u4 % 60)', str(end - 30))} END AS x
            FROM (SELECT g.*, CASE WHEN status = 'pending' THEN NULL
                                   ELSE {d.least('c + 300 + u4 * 7', str(end - 40))} END AS k FROM g) AS g""")
        run("INSERT INTO consent_notices (id, version, sha256, text, created_at) VALUES "
            f"(1, '2025-01', '{hashlib.sha256(b'bench notice').hexdigest()}', "
            f"'Ja, ik wil e-mails over trainingen ontvangen. Afmelden kan altijd.', {d.ts(str(start - DAY))})")
        marketing = "(u2 < 60)"
        run(f"""INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent, created_at,
                                   confirmed_at, updated_at, newsletter_ended_at)
            SELECT i, 'lead' || i || '@gemeente-' || (i % 300) || '.nl', {names}, status, magnet,
                   {marketing} AND status IN ('confirmed', 'undeliverable'), {d.ts('c')},
                   CASE WHEN k IS NULL THEN NULL ELSE {d.ts('k')} END,
                   {d.ts(d.greatest('c', 'coalesce(k, c)', 'coalesce(x, c)'))}, NULL
            FROM h ORDER BY i""")
        evidence = "'192.0.2.' || (i % 250 + 1) AS ip, 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/133.0' AS ua"
        run(f"""INSERT INTO consent_events (lead_id, kind, at, magnet, marketing_consent, ip, user_agent, form,
                                            notice_id)
            SELECT lead_id, kind, {d.ts('t')}, magnet, m, ip, ua, form, 1 FROM (
                SELECT i AS lead_id, 'signup' AS kind, c AS t, magnet, {marketing} AS m, {evidence},
                       'landing:' || magnet AS form FROM h
                UNION ALL
                SELECT i, 'confirm', k, magnet, {marketing}, {evidence}, 'confirm-button' FROM h WHERE k IS NOT NULL
                UNION ALL
                SELECT i, 'unsubscribe', x, magnet, false, {evidence},
                       'one-click' FROM h WHERE status = 'unsubscribed'
            ) AS e ORDER BY t, lead_id""")
        run(f"""INSERT INTO downloads (lead_id, magnet, at)
            SELECT i, magnet, {d.ts('k + 60 + u4')} FROM h
            WHERE status IN ('confirmed', 'unsubscribed') AND u4 % 10 < 6 ORDER BY k + 60 + u4""")
        trouble = f"(c >= {end - TROUBLE_DAYS * DAY} AND kind = 'guide' AND u4 >= 998)"
        status = f"CASE WHEN {trouble} AND u4 = 999 THEN 'failed' WHEN {trouble} THEN 'deferred' ELSE 'sent' END"
        run(f"""INSERT INTO outbox (kind, lead_id, recipient, magnet, idempotency_key, message_id, priority, status,
                                    attempts, created_at, queued_at, next_attempt_at, claimed_until, claimed_by,
                                    sent_at, last_error, unknown_outcomes)
            SELECT kind, i, 'lead' || i || '@gemeente-' || (i % 300) || '.nl', magnet, NULL,
                   '<bench.' || i || '.' || kind || '@guide.example.nl>', 0, {status},
                   CASE WHEN {trouble} THEN 3 ELSE 1 END, {d.ts('t')}, {d.ts('t')},
                   {d.ts(f'CASE WHEN {trouble} AND u4 = 998 THEN {end + 3600} ELSE t END')}, NULL, NULL,
                   CASE WHEN {trouble} THEN NULL ELSE {d.ts('t + 5')} END,
                   CASE WHEN {trouble} THEN '452 4.2.2 Mailbox full' END, 0
            FROM (SELECT i, 'confirm' AS kind, c AS t, magnet, u4, c FROM h
                  UNION ALL
                  SELECT i, 'guide', k, magnet, u4, c FROM h WHERE k IS NOT NULL) AS o
            ORDER BY t, i""")
        run(f"""INSERT INTO bounce_reports (dedupe_key, received_at, source, kind, format, recipient, action,
                                            status, diagnostic, matched_by, outbox_id, lead_id, note, raw, raw_size)
            SELECT '<report.' || i || '.' || kind || '@mx.example.nl>', {d.ts('t')}, 'ingest', kind, fmt,
                   'lead' || i || '@gemeente-' || (i % 300) || '.nl', act, st, diag, 'verp', NULL, i, note,
                   'Subject: Undelivered Mail Returned to Sender', 44
            FROM (SELECT i, 'hard' AS kind, x AS t, 'dsn' AS fmt, 'failed' AS act, '5.1.1' AS st,
                         '550 5.1.1 User unknown' AS diag, 'the lead is undeliverable now' AS note
                  FROM h WHERE status = 'undeliverable'
                  UNION ALL
                  SELECT i, 'complaint', x, 'arf', NULL, NULL, NULL, 'marketing mail ended'
                  FROM h WHERE status = 'unsubscribed' AND u4 % 10 = 0
                  UNION ALL
                  SELECT i, 'soft', {d.least('k + 7200', str(end - 30))}, 'dsn', 'failed', '4.2.2',
                         '452 4.2.2 Mailbox full', 'counted'
                  FROM h WHERE status = 'confirmed' AND u4 % 100 = 50) AS b
            ORDER BY t, i""")
        run("DROP TABLE h")
        run("DROP TABLE g")
        if d.name == "postgresql":
            for table in ("leads", "consent_events", "downloads", "outbox", "bounce_reports", "consent_notices"):
                run(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    if d.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def add_operator(url: str) -> None:
    from mailer.operator import accounts
    from mailer.store.database import Database

    db = Database(url)
    try:
        accounts.add(db, OPERATOR, PASSWORD, "owner", datetime.now(UTC))
    finally:
        db.dispose()


def _build_record(url: str) -> tuple[str, float] | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT key, built_at FROM bench_build")).first()
            return (row[0], float(row[1])) if row else None
    except SQLAlchemyError:  # no such database or table yet
        return None
    finally:
        engine.dispose()


def database(backend: str, shape: Shape, args) -> tuple[str, str]:
    """The database for `shape` (built now, or the cached one); its SQLAlchemy URL and a note."""
    name = f"mailer_bench_{label(shape.size)}_{shape.model}"
    if backend == "sqlite":
        CACHE.mkdir(parents=True, exist_ok=True)
        file = CACHE / f"{name}.db"
        url = f"sqlite:///{file}"
    else:
        plain = args.postgres_url.rsplit("/", 1)[0] + "/" + name
        url = "postgresql+psycopg://" + plain.split("://", 1)[1]
    key = shape.key()
    found = None if args.rebuild else _build_record(url) if backend == "postgres" or file.exists() else None
    if found and found[0] == key and time.time() - found[1] < MAX_AGE_HOURS * 3600:
        return url, f"cached, built {datetime.fromtimestamp(found[1]):%Y-%m-%d %H:%M}"
    why = "forced" if args.rebuild else "new" if not found else "schema or data changed" if found[0] != key else "too old"
    began = time.perf_counter()
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        with psycopg.connect(args.postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(url)
    end = int(time.time()) // 60 * 60
    fill(url, shape, end)
    add_operator(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bench_build (key VARCHAR(200), built_at FLOAT)")
        conn.execute(text("INSERT INTO bench_build VALUES (:k, :t)"), {"k": key, "t": float(end)})
    engine.dispose()
    return url, f"built now ({why}) in {time.perf_counter() - began:.0f} s"


def counts(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            parts = []
            for table in ("leads", "consent_events", "downloads", "outbox", "bounce_reports"):
                parts.append(f"{conn.execute(text(f'SELECT count(*) FROM {table}')).scalar():,} {table}")
            since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
            if url.startswith("sqlite"):
                since = since.isoformat(sep=" ")
            recent = conn.execute(text("SELECT count(*) FROM leads WHERE created_at >= :s"), {"s": since}).scalar()
            parts.append(f"{recent:,} leads in the last 30 days")
            return ", ".join(parts)
    finally:
        engine.dispose()


def content_folder() -> Path:
    """The shipped content plus two more magnets (copies of the mini guide's file), kept by
    the hash of the shipped content (a change to it makes a new copy)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in (ROOT / "content").rglob("*") if p.is_file()):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    folder = CACHE / f"content-{digest.hexdigest()[:16]}"
    if not folder.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE))
        shutil.copytree(ROOT / "content", staging / "content")
        magnet = (staging / "content" / "magnets" / "mini-guide.toml").read_text()
        for slug in MAGNETS[1:]:
            (staging / "content" / "magnets" / f"{slug}.toml").write_text(magnet)
        (staging / "content").rename(folder)
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# --- the servers --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(name: str, url: str, workdir: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    here = workdir / name
    here.mkdir()
    env.update({
        "MAILER_DATABASE_URL": url,
        "MAILER_INSTANCE_PATH": str(here / "instance"),
        "MAILER_SECRET_KEY": SECRET_KEY,
        "MAILER_BASE_URL": "https://guide.example.nl",
        "MAILER_CONTENT_PATH": str(content_folder()),
    })
    port = free_port()
    log = workdir / f"{name}-gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "sync", "-b", f"{HOST}:{port}",
               "--timeout", str(int(REQUEST_TIMEOUT)), "--log-level", "warning", "mailer.wsgi:app"]
    with open(log, "wb") as handle:
        # cwd: a folder of its own, so a developer's .env in the project root changes nothing.
        process = subprocess.Popen(command, cwd=here, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(name, port, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name}: gunicorn exited with {process.returncode}:\n{_tail(log)}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"{name}: gunicorn did not answer /healthz within {START_TIMEOUT:.0f}s:\n{_tail(log)}")


def stop(server: Server | None) -> None:
    if server is None or server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)  # gunicorn's master stops its own workers
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)  # its own session: master and workers only
        server.process.wait(5)


# --- the browser ----------------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LEAD_LINK = re.compile(r'href="/beheer/leads/(\d+)"')
NEXT_LINK = re.compile(r'href="([^"]*)" rel="next"')


class Browser:
    """One logged-in operator: a cookie jar and a fresh connection per request."""

    def __init__(self, server: Server):
        self.server = server
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, str, float, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())} if self.jar else {}
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.perf_counter()
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            html = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        elapsed = time.perf_counter() - began
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].partition("=")
            self.jar[name.strip()] = value.strip()
        return response.status, html, elapsed, response.headers.get("Location", "")

    def login(self) -> None:
        status, html, _, _ = self.request("GET", "/beheer/login")
        token = CSRF.search(html)
        if status != 200 or not token:
            raise RuntimeError(f"{self.server.name}: login page answered {status}, CSRF token found: {bool(token)}")
        status, html, _, where = self.request("POST", "/beheer/login", {
            "csrf_token": token.group(1), "email": OPERATOR, "password": PASSWORD})
        if status != 302 or "/login" in urlsplit(where).path:
            raise RuntimeError(f"{self.server.name}: login answered {status} to {where!r}:\n{html[:500]}\n"
                               f"{_tail(self.server.log)}")

    def get(self, path: str) -> tuple[float, int]:
        status, html, elapsed, where = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"{self.server.name}: GET {path} answered {status} {where}\n{_tail(self.server.log)}")
        return elapsed, len(html)


# --- one run ----------------------------------------------------------------------------------------

def measure(servers: dict[str, Server], paths: dict[str, dict[str, str]], requests: int,
            warmup: int) -> tuple[dict, dict]:
    """{size: {page: [seconds]}} and {size: {page: body bytes}}; pages interleaved across sizes."""
    browsers = {size: Browser(server) for size, server in servers.items()}
    for browser in browsers.values():
        browser.login()
    times = {size: {page: [] for page in PAGES} for size in servers}
    sizes = {size: {} for size in servers}
    for size, browser in browsers.items():  # the pages show what they should, else the figures mean little
        for page in ("leads", "leads-deep"):
            status, html, _, _ = browser.request("GET", paths[size][page])
            rows = len(set(LEAD_LINK.findall(html)))
            if status != 200 or rows < 50:
                raise RuntimeError(f"{size}: {paths[size][page]} answered {status} with {rows} leads, not 50")
        nxt = NEXT_LINK.search(browser.request("GET", paths[size]["leads"])[1])
        if not nxt or f"{CURSOR_PARAM}=" not in nxt.group(1):
            raise RuntimeError(f"{size}: the first page's next link ({nxt and nxt.group(1)}) has no {CURSOR_PARAM}=: "
                               "adjust CURSOR_PARAM and deep_path()")
    for round_ in range(warmup + requests):
        order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
        for page in PAGES:
            for size in order:
                elapsed, length = browsers[size].get(paths[size][page])
                sizes[size][page] = length
                if round_ >= warmup:
                    times[size][page].append(elapsed)
    return times, sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--model", choices=("proportional", "steady"), default="steady",
                        help="what the big database's last 90 days hold (see the docstring)")
    parser.add_argument("--runs", type=int, default=RUNS, help="fresh servers, measured again")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="measured requests per page, size and run")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true", help="build the databases even if cached")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="a server where this user may create databases")
    args = parser.parse_args()

    shapes = {"small": Shape(args.small, args.model, args.small), "big": Shape(args.big, args.model, args.small)}
    print(f"dashboard benchmark: {args.database}, model {args.model}, {label(args.small)} against "
          f"{label(args.big)} leads, gunicorn -w {WORKERS} (sync) per database, {os.cpu_count()} CPUs; "
          f"{args.warmup} warm-up + {args.requests} measured requests per page, database and run; "
          f"{args.runs} run(s); load average {os.getloadavg()[0]:.1f}", flush=True)
    urls, paths = {}, {}
    for which, shape in shapes.items():
        url, note = database(args.database, shape, args)
        urls[which] = url
        paths[which] = {"overview": "/beheer/", "leads": leads_path(FILTER), "leads-deep": deep_path(url)}
        print(f"  {which} ({label(shape.size)}): {note}; {counts(url)}", flush=True)
        print(f"    deep page: {paths[which]['leads-deep']}", flush=True)

    runs: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="mailer-dashboard-bench-"))
    servers: dict[str, Server] = {}
    try:
        for run in range(1, args.runs + 1):
            where = workdir / f"run{run}"
            where.mkdir()
            servers = {}
            for which in shapes:
                servers[which] = start(which, urls[which], where)
            times, body = measure(servers, paths, args.requests, args.warmup)
            for server in servers.values():
                stop(server)
            servers = {}
            medians = {which: {page: statistics.median(times[which][page]) * 1000 for page in PAGES}
                       for which in shapes}
            runs.append(medians)
            print(f"run {run}: " + "   ".join(
                f"{page} {medians['small'][page]:.1f} / {medians['big'][page]:.1f} ms "
                f"({medians['big'][page] / medians['small'][page]:.2f}x)" for page in PAGES), flush=True)
            if run == 1:
                print("  page sizes (bytes, small / big): " + ", ".join(
                    f"{page} {body['small'][page]:,} / {body['big'][page]:,}" for page in PAGES), flush=True)
    except (RuntimeError, OSError, SQLAlchemyError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            stop(server)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"command: .venv/bin/python bench/dashboard.py --database {args.database} --model {args.model} "
          f"--runs {args.runs} --requests {args.requests} --small {args.small} --big {args.big}")
    print(f"model: {args.model} ({shapes['small'].recent:,} / {shapes['big'].recent:,} leads in the last "
          f"{RECENT_DAYS} days); client-side ms per request: the median over the runs of each run's median; "
          "ratio: the median of the runs' ratios (each run's pair measured side by side)")
    print(f"load average now {os.getloadavg()[0]:.1f} (other work on the machine inflates the absolute times)")
    print(f"{'page':<12} {label(args.small):>9} {label(args.big):>9} {'ratio':>7} {'target':>7}  verdict")
    for page in PAGES:
        small = statistics.median(r["small"][page] for r in runs)
        big = statistics.median(r["big"][page] for r in runs)
        ratio = statistics.median(r["big"][page] / r["small"][page] for r in runs)
        target = TARGETS[page]
        print(f"{page:<12} {small:>6.1f} ms {big:>6.1f} ms {ratio:>6.2f}x {target:>6.1f}x  "
              f"{'met' if ratio <= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
