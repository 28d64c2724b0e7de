"""`mailer export` of 1,000,000 leads to CSV, against the database's own CSV export, in one run.

What it measures
    A database with LEADS leads (varied Dutch names, some with commas, quotes or accents,
    1 in 100 starting with '=' so the formula guard has work; three statuses; a quarter
    never confirmed), filled by SQL before any clock starts. Then, RUNS times, in
    alternating order:
    mailer     ``mailer export --output FILE`` as a real process (its start-up included),
               every lead, all fields; its peak memory (ru_maxrss of the process) is recorded.
    baseline   SQLite: the sqlite3 command-line tool, ``sqlite3 -csv -header DB "SELECT
               id, email, first_name, status, magnet, marketing_consent, created_at,
               confirmed_at FROM leads" > FILE``.
               PostgreSQL: ``psql URL -c "COPY (SELECT the same columns FROM leads ORDER BY id)
               TO STDOUT WITH CSV HEADER" > FILE``.
    Both files must hold LEADS rows (checked by counting records with the csv module on
    the last run). Medians of RUNS; the figure is mailer/baseline.

How to run it (from the project root, with the dev extra installed; needs the sqlite3 and
psql command-line tools)
    .venv/bin/python bench/export_leads.py [--leads 1000000] [--runs 3] [--backends sqlite,postgres]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

    Files live in a temporary directory that is removed; on PostgreSQL a scratch database
    is created and dropped.

Targets (issue 5, "Speed")
    SQLite: mailer/sqlite3 <= 2.5 and peak memory under 150 MB; PostgreSQL: mailer/psql <= 2.
    Exit status 1 if an export's row count is wrong; 0 otherwise, whether or not the
    targets are met.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch import arguments, postgres_database, sqlalchemy_url  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from mailer.store.migrate import upgrade  # noqa: E402

COLUMNS = "id, email, first_name, status, magnet, marketing_consent, created_at, confirmed_at"
NAMES = ["Anne", "Bram", "Chloë", "Daan", "Eva", "Fatima", "Gijs", "Hanneke", "Jansen, Piet", 'Mo "de baas"']


def fill(url: str, leads: int) -> None:
    names = "CASE i % 10 " + " ".join(f"WHEN {n} THEN '{name.replace(chr(39), chr(39) * 2)}'"
                                      for n, name in enumerate(NAMES)) + " END"
    first_name = f"CASE WHEN i % 100 = 7 THEN '=' || {names} ELSE {names} END"
    status = "CASE WHEN i % 4 = 0 THEN 'pending' WHEN i % 17 = 0 THEN 'unsubscribed' ELSE 'confirmed' END"
    engine = create_engine(url)
    with engine.begin() as conn:
        if url.startswith("sqlite"):
            conn.execute(text(f"""
                WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@gemeente-' || (i % 300) || '.nl', {first_name}, {status}, 'mini-guide',
                       i % 3 = 0,
                       strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (i * 31) || ' seconds'),
                       CASE WHEN i % 4 = 0 THEN NULL
                            ELSE strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (i * 31 + 600) || ' seconds') END,
                       '2026-11-01 00:00:00.000000'
                FROM s"""), {"n": leads})
        else:
            conn.execute(text(f"""
                INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                                   created_at, confirmed_at, updated_at)
                SELECT i, 'lead' || i || '@gemeente-' || (i % 300) || '.nl', {first_name}, {status}, 'mini-guide',
                       i % 3 = 0, timestamp '2026-01-01' + i * interval '31 seconds',
                       CASE WHEN i % 4 = 0 THEN NULL ELSE timestamp '2026-01-01' + (i * 31 + 600) * interval '1 second' END,
                       timestamp '2026-11-01'
                FROM generate_series(1, :n) AS i"""), {"n": leads})
            conn.execute(text("SELECT setval(pg_get_serial_sequence('leads', 'id'), :n)"), {"n": leads})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE leads")
    engine.dispose()


def timed(command: list[str], out: Path, env: dict | None = None) -> tuple[float, int]:
    """Seconds and peak memory (KiB) of one process writing to `out` (or its own --output)."""
    with open(out, "wb") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.PIPE, env=env, cwd=out.parent)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
    if status != 0:
        sys.exit(f"{command[0]} failed: {process.stderr.read().decode()[-500:]}")
    return elapsed, usage.ru_maxrss


def records(path: Path, delimiter: str = ",") -> int:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return sum(1 for _ in csv.reader(handle, delimiter=delimiter)) - 1


def measure(backend: str, args, workdir: Path) -> dict:
    drop = None
    if backend == "sqlite":
        db = workdir / "leads.db"
        url = f"sqlite:///{db}"
        baseline = ["sqlite3", "-csv", "-header", str(db), f"SELECT {COLUMNS} FROM leads"]
    else:
        plain, drop = postgres_database(args.postgres_url)
        url = sqlalchemy_url(plain)
        baseline = ["psql", "-X", "-q", plain, "-c",
                    f"COPY (SELECT {COLUMNS} FROM leads ORDER BY id) TO STDOUT WITH CSV HEADER"]
    try:
        upgrade(url)
        started = time.perf_counter()
        fill(url, args.leads)
        print(f"  {backend}: filled {args.leads:,} leads in {time.perf_counter() - started:.0f} s", flush=True)
        env = {**os.environ, "MAILER_DATABASE_URL": url, "MAILER_INSTANCE_PATH": str(workdir / "instance"),
               "MAILER_SECRET_KEY": "bench-secret-key-0123456789", "MAILER_BASE_URL": "https://guide.example.nl"}
        mailer_file, base_file = workdir / f"{backend}-mailer.csv", workdir / f"{backend}-base.csv"
        ours = [sys.executable, "-m", "mailer.cli", "export", "--output", str(mailer_file)]
        result = {"mailer": [], "baseline": [], "rss": []}
        for run in range(args.runs):
            order = ("mailer", "baseline") if run % 2 == 0 else ("baseline", "mailer")
            for way in order:
                if way == "mailer":
                    seconds, rss = timed(ours, workdir / "stdout.txt", env)
                    result["rss"].append(rss)
                else:
                    seconds, _ = timed(baseline, base_file)
                result[way].append(seconds)
            print(f"  {backend} run {run + 1}: mailer {result['mailer'][-1]:.2f} s "
                  f"({result['rss'][-1] / 1024:.0f} MB), baseline {result['baseline'][-1]:.2f} s, "
                  f"ratio {result['mailer'][-1] / result['baseline'][-1]:.2f}", flush=True)
        counted = records(mailer_file), records(base_file)
        if counted != (args.leads, args.leads):
            sys.exit(f"{backend}: rows exported (mailer, baseline) = {counted}, expected {args.leads}")
        return result
    finally:
        if drop:
            drop()


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mailer-export-bench-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = measure(backend, args, Path(tmp))
    print(f"\nExport of {args.leads:,} leads to CSV; medians of {args.runs} runs")
    print(f"{'backend':<10} {'mailer':>8} {'baseline':>9} {'ratio':>6} {'peak memory':>12}  target")
    for backend, r in results.items():
        m, b = statistics.median(r["mailer"]), statistics.median(r["baseline"])
        target = "<= 2.5, < 150 MB" if backend == "sqlite" else "<= 2"
        print(f"{backend:<10} {m:>6.2f} s {b:>7.2f} s {m / b:>6.2f} {max(r['rss']) / 1024:>9.0f} MB  {target}")
    print("baseline: the sqlite3 tool's CSV output (SQLite), psql's COPY ... TO STDOUT WITH CSV (PostgreSQL)")


if __name__ == "__main__":
    main()
