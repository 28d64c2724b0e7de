"""One drip tick on a big list against the same tick on a small one: does cost follow what is due?

What it measures
    Two databases per backend, each migrated with ``mailer db upgrade``'s migrations:
    small   SMALL confirmed leads with marketing consent, each enrolled in the mini-guide
            sequence, and every one of them due (next_due_at one minute ago);
    big     BIG such leads and enrollments, of which SMALL are due (every BIG/SMALL-th id,
            so the due rows are spread through the table), the rest due somewhere in the
            next 30 days.
    A tick is one ``services.drip.run(db, now)`` (the periodic job's body: window check,
    pause check, then batches of ``MAILER_DRIP_BATCH_SIZE`` (500) due enrollments, each
    batch one transaction that reads the batch's leads, their earlier drip steps,
    downloads and clicks, inserts SMALL outbox rows in all and moves the enrollments on),
    at a fixed moment inside the send window. Both ticks queue exactly SMALL mails; the
    script checks that. Between runs the due enrollments are put back and the outbox
    emptied (PostgreSQL: then VACUUM ANALYZE), outside the timing.

    The baseline is the small tick, measured in the same run; the figure is big/small.
    Each run times both ticks (order alternating); medians of RUNS runs are reported.
    The scheduler's job store is also built on both databases and its job count printed:
    it does not depend on the number of leads.

How to run it (from the project root, with the dev extra installed)
    .venv/bin/python bench/drip_tick.py [--big 1000000] [--small 10000] [--runs 3]
        [--backends sqlite,postgres] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

    SQLite files live in a temporary directory that is removed; on PostgreSQL the script
    creates two scratch databases and drops them afterwards. Filling the big databases
    takes most of the time (about a minute each on a 2-core machine).

Target (issue 4, "Speed")
    big/small < 1.5 on SQLite and on PostgreSQL. Exit status 1 if a tick did not queue
    exactly SMALL mails; 0 otherwise, whether or not the target is met.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch import arguments, postgres_database, sqlalchemy_url  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from mailer.clock import SettableClock  # noqa: E402
from mailer.scheduler import build_scheduler, periodic_jobs  # noqa: E402
from mailer.services import build_services  # noqa: E402
from mailer.settings import Settings  # noqa: E402
from mailer.store.migrate import upgrade  # noqa: E402

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)  # a Tuesday, 11:00 in Amsterdam
ANCHOR = NOW - timedelta(days=2, minutes=1)  # due: the first step (day 2) fell due a minute ago
DUE = ANCHOR + timedelta(days=2)


def stamp(moment: datetime) -> str:
    """How SQLAlchemy stores a UTCDateTime: naive UTC."""
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def fill(url: str, leads: int, due: int) -> None:
    """`leads` confirmed leads, each enrolled; every (leads/due)-th one due now."""
    every = leads // due
    params = {"n": leads, "every": every, "t": stamp(ANCHOR), "due": stamp(DUE), "later": stamp(NOW)}
    engine = create_engine(url)
    with engine.begin() as conn:
        if url.startswith("sqlite"):
            series = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
            conn.execute(text(series + """
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@example.nl', 'Lead', 'confirmed', 'mini-guide', 1, :t, :t, :t FROM s"""),
                params)
            conn.execute(text(series + """
                INSERT INTO enrollments (id, lead_id, sequence, status, anchor_at, position, next_due_at,
                                         created_at, updated_at)
                SELECT i, i, 'mini-guide', 'active', :t, -1,
                       CASE WHEN i % :every = 0 THEN :due
                            ELSE strftime('%Y-%m-%d %H:%M:%f', :later, '+' || (i % 43200) || ' minutes') END,
                       :t, :t FROM s"""), params)
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.execute(text("""
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@example.nl', 'Lead', 'confirmed', 'mini-guide', true,
                       CAST(:t AS timestamp), CAST(:t AS timestamp), CAST(:t AS timestamp)
                FROM generate_series(1, :n) AS i"""), params)
            conn.execute(text("""
                INSERT INTO enrollments (id, lead_id, sequence, status, anchor_at, position, next_due_at,
                                         created_at, updated_at)
                SELECT i, i, 'mini-guide', 'active', CAST(:t AS timestamp), -1,
                       CASE WHEN i % :every = 0 THEN CAST(:due AS timestamp)
                            ELSE CAST(:later AS timestamp) + (i % 43200) * interval '1 minute' END,
                       CAST(:t AS timestamp), CAST(:t AS timestamp)
                FROM generate_series(1, :n) AS i"""), params)
            for table in ("leads", "enrollments"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), params)
    _vacuum(engine)
    engine.dispose()


def reset(url: str, leads: int, due: int) -> None:
    """Put the due enrollments back and empty the outbox, as before the tick."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM outbox")
        conn.execute(text("UPDATE enrollments SET position = -1, last_sent_at = NULL, next_due_at = :due "
                          "WHERE id % :every = 0"), {"due": stamp(DUE), "every": leads // due})
    _vacuum(engine)
    engine.dispose()


def _vacuum(engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


def services_for(url: str, workdir: Path):
    env = {
        "MAILER_DATABASE_URL": url, "MAILER_INSTANCE_PATH": str(workdir / "instance"),
        "MAILER_SECRET_KEY": "bench-secret-key-0123456789", "MAILER_BASE_URL": "https://guide.example.nl",
        "MAILER_MAIL_URL": "memory:",
    }
    return build_services(Settings.from_env(env, dotenv=workdir / "absent.env"), clock=SettableClock(NOW))


def tick(url: str, workdir: Path, expected: int) -> float:
    services = services_for(url, workdir)
    started = time.perf_counter()
    report = services.drip.run(services.db, NOW)
    elapsed = time.perf_counter() - started
    services.db.dispose()
    if report.enqueued != expected:
        sys.exit(f"the tick on {url} queued {report.enqueued} mails, expected {expected}")
    return elapsed


def job_count(url: str, workdir: Path) -> int:
    services = services_for(url, workdir)
    count = len(build_scheduler(periodic_jobs(services, services.senders())).get_jobs())
    services.db.dispose()
    return count


def measure(backend: str, args, workdir: Path) -> tuple[list[float], list[float], int, int]:
    cleanups = []
    urls = {}
    try:
        for size in ("small", "big"):
            if backend == "sqlite":
                urls[size] = f"sqlite:///{workdir / f'{size}.db'}"
            else:
                plain, drop = postgres_database(args.postgres_url)
                urls[size] = sqlalchemy_url(plain)
                cleanups.append(drop)
            upgrade(urls[size])
            leads = args.small if size == "small" else args.big
            started = time.perf_counter()
            fill(urls[size], leads, args.small)
            print(f"  {backend}: filled {size} ({leads:,} enrollments, {args.small:,} due) "
                  f"in {time.perf_counter() - started:.0f} s", flush=True)
        jobs = (job_count(urls["small"], workdir), job_count(urls["big"], workdir))
        small, big = [], []
        for run in range(args.runs):
            order = ("small", "big") if run % 2 == 0 else ("big", "small")
            for size in order:
                seconds = tick(urls[size], workdir, args.small)
                (small if size == "small" else big).append(seconds)
                reset(urls[size], args.small if size == "small" else args.big, args.small)
            print(f"  {backend} run {run + 1}: small {small[-1] * 1000:.0f} ms, big {big[-1] * 1000:.0f} ms, "
                  f"ratio {big[-1] / small[-1]:.2f}", flush=True)
        return small, big, *jobs
    finally:
        for drop in cleanups:
            drop()


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mailer-drip-bench-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = measure(backend, args, Path(tmp))
    print(f"\nOne drip tick queuing {args.small:,} mails; medians of {args.runs} runs")
    print(f"{'backend':<10} {'small tick':>11} {'big tick':>10} {'big/small':>10}  jobs (small, big)")
    for backend, (small, big, jobs_small, jobs_big) in results.items():
        s, b = statistics.median(small), statistics.median(big)
        print(f"{backend:<10} {s * 1000:>8.0f} ms {b * 1000:>7.0f} ms {b / s:>10.2f}  {jobs_small}, {jobs_big}")
    print(f"\nsmall: {args.small:,} enrollments, all due; big: {args.big:,} enrollments, {args.small:,} due. "
          "Target: big/small < 1.5.")


if __name__ == "__main__":
    main()
