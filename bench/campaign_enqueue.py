"""Queueing a newsletter campaign for LEADS leads against one INSERT … SELECT of the same rows.

What it measures
    One database per backend, migrated with ``mailer db upgrade``'s migrations, holding LEADS
    confirmed leads with marketing consent (magnet mini-guide), filled with one INSERT … SELECT.
    enqueue   the real path: ``campaigns.schedule`` of the shipped example newsletter
              ``voorbeeld`` (its audience: magnet mini-guide, i.e. every lead), then the
              start-campaigns job (``campaigns.start_due``: it freezes the rendered mail, then
              queues) run to completion. Both are timed; the renderer is built before, as a
              worker builds it at its start.
    baseline  one ``INSERT INTO outbox (…) SELECT … FROM leads WHERE <the same audience>``
              making the same rows (key, Message-ID and magnet computed in SQL, each pointing at
              a frozen campaign mail stored before the clock starts, as the real rows do).
    Each is run in a fresh process (so its peak RSS is its own), on the same database, in the
    same run; between runs the outbox and campaigns are emptied (PostgreSQL: VACUUM ANALYZE),
    outside the timing, so each run starts from the same state. The script checks that both
    queue exactly LEADS rows. Medians of RUNS runs; the figure is enqueue/baseline, plus the
    enqueue process's peak RSS (ru_maxrss; includes the interpreter and imports).

How to run it (from the project root, with the dev extra installed)
    .venv/bin/python bench/campaign_enqueue.py [--leads 1000000] [--runs 3]
        [--backends sqlite,postgres] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

Target (issue 11)
    enqueue/baseline at most 1.5 on PostgreSQL and on SQLite; peak memory under 150 MB.
    Exit status 1 if a run did not queue exactly LEADS rows; 0 otherwise.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drip_tick import NOW, _vacuum, services_for, stamp
from scratch import arguments, postgres_database, sqlalchemy_url
from sqlalchemy import create_engine, text

from mailer.store.migrate import upgrade

SLUG = "voorbeeld"


def fill(url: str, leads: int) -> None:
    params = {"n": leads, "t": stamp(NOW)}
    engine = create_engine(url)
    with engine.begin() as conn:
        if url.startswith("sqlite"):
            conn.execute(text("""
                WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@example.nl', 'Lead', 'confirmed', 'mini-guide', 1, :t, :t, :t FROM s"""),
                params)
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.execute(text("""
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@example.nl', 'Lead', 'confirmed', 'mini-guide', true,
                       CAST(:t AS timestamp), CAST(:t AS timestamp), CAST(:t AS timestamp)
                FROM generate_series(1, :n) AS i"""), params)
            conn.execute(text("SELECT setval(pg_get_serial_sequence('leads', 'id'), :n)"), params)
    _vacuum(engine)
    engine.dispose()


def reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM outbox")
        conn.exec_driver_sql("DELETE FROM campaign_mails")
        conn.exec_driver_sql("DELETE FROM campaigns")
    _vacuum(engine)
    engine.dispose()


def count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    engine.dispose()
    return n


def _enqueue(url: str, workdir: str) -> float:
    from mailer.operator import campaigns

    services = services_for(url, Path(workdir))
    services.renderer  # a worker builds (and checks) its renderer at start, not per campaign
    started = time.perf_counter()
    campaigns.schedule(services.db, services.content, SLUG, now=NOW, no_test=True)
    campaigns.start_due(services.db, services.content, services.renderer, zone=services.settings.drip_window.zone, now=NOW,
                        domain=services.settings.mail_domain)
    elapsed = time.perf_counter() - started
    services.db.dispose()
    return elapsed


def _baseline(url: str, workdir: str) -> float:
    sqlite = url.startswith("sqlite")
    engine = create_engine(url)
    consent = "1" if sqlite else "true"
    t = ":t" if sqlite else "CAST(:t AS timestamp)"
    statement = text(f"""
        INSERT INTO outbox (kind, lead_id, recipient, magnet, idempotency_key, message_id, priority, status,
                            attempts, unknown_outcomes, created_at, queued_at, next_attempt_at, sequence, step,
                            campaign_mail_id)
        SELECT 'newsletter', leads.id, leads.email,
               CASE WHEN leads.magnet IN ('mini-guide') THEN leads.magnet ELSE 'mini-guide' END,
               'newsletter:0:' || leads.id, '<n0.' || leads.id || '.0123456789abcdef@example.nl>', 10, 'queued',
               0, 0, {t}, {t}, {t}, 'newsletter:{SLUG}', '{SLUG}', :mail
        FROM leads
        WHERE leads.status = 'confirmed' AND leads.marketing_consent = {consent}
          AND leads.newsletter_ended_at IS NULL AND leads.magnet IN ('mini-guide')
        ON CONFLICT (idempotency_key) DO NOTHING""")
    with engine.connect() as conn:  # connect outside the timing, as the enqueue's services do
        with conn.begin():  # the frozen mail the rows point at (its foreign key is part of the row)
            campaign = conn.execute(text(
                f"INSERT INTO campaigns (slug, status, start_at, content_hash, filters, checkpoint, queued, created_at, "
                f"updated_at) VALUES ('{SLUG}', 'done', {t}, 'x', '{{}}', 0, 0, {t}, {t}) RETURNING id"),
                {"t": stamp(NOW)}).scalar_one()
            mail = conn.execute(text(
                f"INSERT INTO campaign_mails (campaign_id, variant, magnet, subject, text, html, links, sha256, "
                f"created_at) VALUES (:campaign, 'A', 'mini-guide', 's', 't', 'h', '[]', 'x', {t}) RETURNING id"),
                {"campaign": campaign, "t": stamp(NOW)}).scalar_one()
        started = time.perf_counter()
        with conn.begin():
            conn.execute(statement, {"t": stamp(NOW), "mail": mail})
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def _child(which: str, url: str, workdir: str, queue) -> None:
    seconds = (_enqueue if which == "enqueue" else _baseline)(url, workdir)
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def in_process(which: str, url: str, workdir: Path) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(which, url, str(workdir), queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not process.is_alive():
                sys.exit(f"{which} on {url} failed")
    process.join()
    return result


def measure(backend: str, args, workdir: Path):
    drop = None
    try:
        if backend == "sqlite":
            url = f"sqlite:///{workdir / 'campaign.db'}"
        else:
            plain, drop = postgres_database(args.postgres_url)
            url = sqlalchemy_url(plain)
        upgrade(url)
        started = time.perf_counter()
        fill(url, args.leads)
        print(f"  {backend}: filled {args.leads:,} leads in {time.perf_counter() - started:.0f} s", flush=True)
        enqueue, baseline, memory = [], [], []
        for run in range(args.runs):
            order = ("enqueue", "baseline") if run % 2 == 0 else ("baseline", "enqueue")
            for which in order:
                seconds, rss = in_process(which, url, workdir)
                queued = count(url)
                if queued != args.leads:
                    sys.exit(f"{which} on {backend} queued {queued} rows, expected {args.leads}")
                if which == "enqueue":
                    enqueue.append(seconds)
                    memory.append(rss)
                else:
                    baseline.append(seconds)
                reset(url)
            print(f"  {backend} run {run + 1}: enqueue {enqueue[-1]:.2f} s ({memory[-1]:.0f} MB), "
                  f"baseline {baseline[-1]:.2f} s, ratio {enqueue[-1] / baseline[-1]:.2f}", flush=True)
        return enqueue, baseline, memory
    finally:
        if drop:
            drop()


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mailer-campaign-bench-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = measure(backend, args, Path(tmp))
    print(f"\nQueueing a campaign for {args.leads:,} leads; medians of {args.runs} runs")
    print(f"{'backend':<10} {'enqueue':>9} {'baseline':>9} {'ratio':>6} {'peak RSS':>9}")
    for backend, (enqueue, baseline, memory) in results.items():
        e, b = statistics.median(enqueue), statistics.median(baseline)
        print(f"{backend:<10} {e:>7.2f} s {b:>7.2f} s {e / b:>6.2f} {max(memory):>6.0f} MB")
    print("\nTarget: enqueue/baseline at most 1.5, peak memory under 150 MB.")


if __name__ == "__main__":
    main()
