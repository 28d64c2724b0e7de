"""Taking in REPORTS mixed bounce reports through the handler, against only parsing them with the email package.

What it measures
    One database per backend (a SQLite file; a scratch PostgreSQL database), migrated with
    ``mailer db upgrade``'s migrations, holding LEADS confirmed leads with marketing consent,
    each with one sent guide mail (an outbox row of kind "guide", status "sent"). The services
    are built as ``mailer bounces ingest`` builds them, with ``MAILER_BOUNCE_ADDRESS``
    bounce@mail.example.nl, so every report comes to a row's signed address
    (``services.bounce_addresses.for_row(row_id)``, the envelope sender that row's mail went
    out from). Before the clock starts, REPORTS reports are built, report i about row
    (i mod LEADS) + 1, each with its own Message-ID, in this mix (of 10,000):

      40 %  4,000  DSN (RFC 3464, as Postfix writes one), 5.1.1 failed        -> hard
      20 %  2,000  DSN, 4.2.2 failed (mailbox full)                           -> soft
      10 %  1,000  DSN, 4.4.1 delayed                                         -> ignored (a delay notice)
       5 %    500  ARF complaint (RFC 5965, Feedback-Type: abuse)             -> complaint
      10 %  1,000  auto-replies: the corpus's out-of-office, X-Autoreply vacation and
                   challenge-response mails, in turn                         -> ignored
      10 %  1,000  non-standard bounces from the corpus (tests/data/bounces: Exchange
                   plain-text NDR, Exim, qmail, a plain "Mail System Error"), in turn,
                   read by flufl.bounce                                      -> hard
       3 %    300  vendor DSNs from the corpus (Gmail, Exchange, a DSN marked
                   auto-replied, broken MIME, a wrong charset, Yahoo mailbox full), in turn
                                                                             -> hard, soft (Yahoo)
       2 %    200  garbage: binary noise, or a header with nothing in it (no Message-ID:
                   each unique by its bytes, stored by their hash)           -> ignored

    Corpus files get the row's signed address in place of their made-up bounce+TOKEN address
    and a unique Message-ID in place of theirs (only in the report's own header, not in the
    quoted original).

    handler   ``services.intake.handle(raw, source="ingest", envelope_to=<the row's address>)``
              on each report in turn: each its own transaction (look up the dedupe key, parse,
              match the signed token, act: mark undeliverable, count soft bounces, unsubscribe
              with consent evidence; store the report), as ``mailer bounces ingest`` and the
              mailbox job do.
    baseline  ``email.message_from_bytes(raw, policy=email.policy.default)`` and
              ``for part in msg.walk(): part.get_content_type()`` on the same messages.

    Both in this process, in the same run (order alternating between runs); before the first
    run flufl.bounce is imported and a few reports parsed, as a long-running worker would have.
    Between runs the bounce reports are deleted, the leads put back to confirmed with consent
    and the outbox rows to sent (PostgreSQL: then VACUUM ANALYZE), outside the timing. The
    consent events the complaints record stay (the database refuses deleting them), 500 more
    per run. After each handler pass the script checks that every report was stored exactly once
    (one bounce_reports row per report, none a duplicate), that the kinds are the expected
    counts above, and (with LEADS >= REPORTS) that exactly the hard-bounced leads are
    undeliverable and the complainers unsubscribed. Medians of RUNS runs; the figure is
    handler/baseline.

    With ``--profile`` one more handler pass on each backend runs under cProfile (not counted)
    and the functions with the most cumulative and own time are printed.

How to run it (from the project root, with the dev extra installed)
    .venv/bin/python bench/bounce_ingest.py [--reports 10000] [--leads 10000] [--runs 3]
        [--backends sqlite,postgres] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
        [--profile]

    The SQLite file lives in a temporary directory that is removed; on PostgreSQL the script
    creates a scratch database and drops it afterwards.

What it prints
    Per run and backend: handler seconds (and reports/s), baseline seconds, their ratio. Then
    the medians per backend, the ratio, and the target.

Target (issue 12, "Tests and speed")
    handler/baseline at most 3.0. Exit status 1 if a check fails (a report not stored exactly
    once, or other kind counts than expected); 0 otherwise, whether or not the target is met.
"""

from __future__ import annotations

import cProfile
import email
import email.policy
import io
import logging
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drip_tick import NOW, _vacuum, stamp
from scratch import arguments, postgres_database, sqlalchemy_url
from sqlalchemy import create_engine, text

from mailer.clock import SettableClock
from mailer.services import build_services
from mailer.settings import Settings
from mailer.store.migrate import upgrade

BOUNCE = "bounce@mail.example.nl"
CORPUS = ROOT / "tests" / "data" / "bounces"
SENT = NOW - timedelta(days=1)  # the guide mails went out a day before the reports come in
TARGET = 3.0

# The mix, per 10,000 reports (the last share takes what rounding leaves).
MIX = (("hard", 4000), ("soft", 2000), ("delayed", 1000), ("complaint", 500), ("autoreply", 1000),
       ("nonstandard", 1000), ("vendor", 300), ("garbage", 200))
AUTOREPLIES = ("autoreply-ooo.eml", "autoreply-vacation-xautoreply.eml", "challenge-response.eml")
NONSTANDARD = ("exchange-ndr-plain.eml", "exim-hard.eml", "qmail-hard.eml", "plain-undeliverable.eml")
VENDOR = {"gmail-hard.eml": "hard", "exchange-ndr.eml": "hard", "dsn-marked-auto-replied.eml": "hard",
          "malformed-mime.eml": "hard", "wrong-charset.eml": "hard", "yahoo-soft-mailbox-full.eml": "soft"}
EXPECTED_KIND = {"hard": "hard", "soft": "soft", "delayed": "ignored", "complaint": "complaint",
                 "autoreply": "ignored", "nonstandard": "hard", "garbage": "ignored"}

_CORPUS_ADDRESS = re.compile(rb"bounce\+[0-9A-Za-z]+\.[0-9A-Za-z]+@mail\.example\.nl")
_MESSAGE_ID = re.compile(rb"(?im)^(message-id:[ \t]*)<[^>\r\n]*>")


# --- the reports ------------------------------------------------------------------------------

def dsn(to: str, recipient: str, own_id: str, original_id: str, *, status: str, action: str,
        diagnostic: str) -> bytes:
    """An RFC 3464 report as Postfix writes one (the shape tests/integration/test_bounces.py uses)."""
    return f"""Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: {own_id}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic}

--B
Content-Type: text/rfc822-headers

From: Trainingsbureau <nieuws@example.nl>
To: {recipient}
Subject: Je mini guide
Message-ID: {original_id}

--B--
""".replace("\n", "\r\n").encode()


def arf(to: str, recipient: str, own_id: str, original_id: str) -> bytes:
    return f"""Delivered-To: {to}
From: feedback@fbl.example.org
To: {to}
Subject: Complaint about message from 192.0.2.1
Message-ID: {own_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: {recipient}

--F
Content-Type: message/rfc822

From: Trainingsbureau <nieuws@example.nl>
To: {recipient}
Subject: Je mini guide
Message-ID: {original_id}

Hallo.
--F--
""".replace("\n", "\r\n").encode()


def from_corpus(raw: bytes, to: str, own_id: str) -> bytes:
    """A corpus report sent to `to`, with `own_id` as its own Message-ID (the header's, not the quoted one's)."""
    raw = _CORPUS_ADDRESS.sub(to.encode(), raw)
    end = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[:end.start()], raw[end.start():]) if end else (raw, b"")
    head, found = _MESSAGE_ID.subn(lambda m: m.group(1) + own_id.encode(), head, count=1)
    if not found:
        newline = b"\r\n" if b"\r\n" in head else b"\n"
        head += newline + b"Message-ID: " + own_id.encode()
    return head + body


def shares(reports: int) -> list[tuple[str, int]]:
    counts = [(name, reports * per // 10_000) for name, per in MIX]
    counts[-1] = (counts[-1][0], reports - sum(n for _, n in counts[:-1]))
    return counts


def build_reports(reports: int, leads: int, addresses) -> tuple[list[tuple[bytes, str]], Counter, set, set]:
    """(raw, envelope_to) per report, interleaved; the expected kind counts; the rows hard-bounced
    and complained about."""
    corpus = {path.name: path.read_bytes() for path in CORPUS.glob("*.eml")}
    missing = [name for name in (*AUTOREPLIES, *NONSTANDARD, *VENDOR) if name not in corpus]
    if missing:
        sys.exit(f"the corpus in {CORPUS} lacks {', '.join(missing)}")
    categories = [name for name, count in shares(reports) for _ in range(count)]
    # Spread the categories through the list (a mailbox does not get them in blocks).
    order = sorted(range(reports), key=lambda i: (i * 7919) % reports)
    built, expected, hard_rows, complained_rows = [], Counter(), set(), set()
    turn = Counter()
    items = [None] * reports
    for position, category in zip(order, categories):
        items[position] = category
    for i, category in enumerate(items):
        row = i % leads + 1
        to = addresses.for_row(row)
        recipient = f"lead{row}@example.nl"
        original = f"<g.{row}@example.nl>"
        own = f"<report.{i}.{category}@mx.example.org>"
        k = turn[category]
        turn[category] += 1
        if category == "hard":
            raw = dsn(to, recipient, own, original, status="5.1.1", action="failed",
                      diagnostic=f"smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown")
        elif category == "soft":
            raw = dsn(to, recipient, own, original, status="4.2.2", action="failed",
                      diagnostic=f"smtp; 452 4.2.2 <{recipient}>: Mailbox full")
        elif category == "delayed":
            raw = dsn(to, recipient, own, original, status="4.4.1", action="delayed",
                      diagnostic="smtp; 421 4.4.1 connection timed out")
        elif category == "complaint":
            raw = arf(to, recipient, own, original)
        elif category == "autoreply":
            raw = from_corpus(corpus[AUTOREPLIES[k % len(AUTOREPLIES)]], to, own)
        elif category == "nonstandard":
            raw = from_corpus(corpus[NONSTANDARD[k % len(NONSTANDARD)]], to, own)
        elif category == "vendor":
            name = list(VENDOR)[k % len(VENDOR)]
            raw = from_corpus(corpus[name], to, own)
        else:  # garbage: no Message-ID, unique by its bytes
            raw = (b"\x00\xff garbage %d \x80\x81" % i if k % 2 == 0
                   else b"Subject: hi %d\r\n\r\nnothing to see" % i)
        kind = VENDOR[name] if category == "vendor" else EXPECTED_KIND[category]
        expected[kind] += 1
        if kind == "hard":
            hard_rows.add(row)
        elif kind == "complaint":
            complained_rows.add(row)
        built.append((raw, to))
    return built, expected, hard_rows, complained_rows


# --- the database ----------------------------------------------------------------------------

def fill(url: str, leads: int) -> None:
    """`leads` confirmed leads with consent, lead i with outbox row i: its guide mail, sent."""
    params = {"n": leads, "t": stamp(SENT)}
    engine = create_engine(url)
    sqlite = url.startswith("sqlite")
    t = ":t" if sqlite else "CAST(:t AS timestamp)"
    series = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) " if sqlite else "")
    source = "FROM s" if sqlite else "FROM generate_series(1, :n) AS i"
    with engine.begin() as conn:
        conn.execute(text(series + f"""
            INSERT INTO leads (id, email, first_name, status, magnet, marketing_consent,
                               created_at, confirmed_at, updated_at)
            SELECT i, 'lead' || i || '@example.nl', 'Lead', 'confirmed', 'mini-guide', {'1' if sqlite else 'true'},
                   {t}, {t}, {t} {source}"""), params)
        conn.execute(text(series + f"""
            INSERT INTO outbox (id, kind, lead_id, recipient, magnet, idempotency_key, message_id, priority, status,
                                attempts, unknown_outcomes, created_at, queued_at, next_attempt_at, sent_at)
            SELECT i, 'guide', i, 'lead' || i || '@example.nl', 'mini-guide', 'guide:' || i,
                   '<g.' || i || '@example.nl>', 0, 'sent', 1, 0, {t}, {t}, {t}, {t} {source}"""), params)
        if sqlite:
            conn.exec_driver_sql("ANALYZE")
        else:
            for table in ("leads", "outbox"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), params)
    _vacuum(engine)
    engine.dispose()


def reset(url: str) -> None:
    """As before the handler: no reports, every lead confirmed with consent, every row sent."""
    engine = create_engine(url)
    consent = "1" if url.startswith("sqlite") else "true"
    t = ":t" if url.startswith("sqlite") else "CAST(:t AS timestamp)"
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM bounce_reports")
        conn.execute(text(f"UPDATE leads SET status = 'confirmed', marketing_consent = {consent}, updated_at = {t} "
                          f"WHERE status <> 'confirmed' OR marketing_consent <> {consent}"), {"t": stamp(SENT)})
        conn.exec_driver_sql("UPDATE outbox SET status = 'sent', last_error = NULL "
                             "WHERE status <> 'sent' OR last_error IS NOT NULL")
    _vacuum(engine)
    engine.dispose()


def check(url: str, handled, reports: int, expected: Counter, leads: int, hard_rows: set, complained_rows: set,
          backend: str) -> list[str]:
    """What is wrong after one handler pass (empty: nothing)."""
    problems = []
    duplicates = sum(1 for h in handled if h.duplicate or h.report_id is None)
    if duplicates:
        problems.append(f"{duplicates} reports were taken for duplicates or not stored")
    ids = {h.report_id for h in handled}
    if len(ids) != reports:
        problems.append(f"{len(ids)} distinct report ids for {reports} reports")
    got = Counter(h.kind for h in handled)
    engine = create_engine(url)
    with engine.connect() as conn:
        stored, keys = conn.execute(text("SELECT count(*), count(DISTINCT dedupe_key) FROM bounce_reports")).one()
        kinds = Counter(dict(conn.execute(text("SELECT kind, count(*) FROM bounce_reports GROUP BY kind")).all()))
        statuses = Counter(dict(conn.execute(text("SELECT status, count(*) FROM leads GROUP BY status")).all()))
    engine.dispose()
    if (stored, keys) != (reports, reports):
        problems.append(f"{stored} reports stored ({keys} distinct keys), expected {reports}")
    if got != expected or kinds != expected:
        problems.append(f"kinds handled {dict(got)}, stored {dict(kinds)}; expected {dict(expected)}")
    if leads >= reports:
        want = Counter({"undeliverable": len(hard_rows), "unsubscribed": len(complained_rows - hard_rows)})
        want["confirmed"] = leads - sum(want.values())
        if statuses != +want:
            problems.append(f"lead statuses {dict(statuses)}, expected {dict(+want)}")
    return [f"{backend}: {p}" for p in problems]


# --- the measurements -----------------------------------------------------------------------------

def services_for(url: str, workdir: Path):
    env = {
        "MAILER_DATABASE_URL": url, "MAILER_INSTANCE_PATH": str(workdir / "instance"),
        "MAILER_SECRET_KEY": "bench-secret-key-0123456789", "MAILER_BASE_URL": "https://guide.example.nl",
        "MAILER_MAIL_URL": "memory:", "MAILER_BOUNCE_ADDRESS": BOUNCE,
    }
    return build_services(Settings.from_env(env, dotenv=workdir / "absent.env"), clock=SettableClock(NOW))


def run_handler(intake, messages) -> tuple[float, list]:
    handle = intake.handle
    handled = []
    started = time.perf_counter()
    for raw, to in messages:
        handled.append(handle(raw, source="ingest", envelope_to=to))
    return time.perf_counter() - started, handled


def run_baseline(messages) -> float:
    parse, policy = email.message_from_bytes, email.policy.default
    started = time.perf_counter()
    for raw, _ in messages:
        msg = parse(raw, policy=policy)
        for part in msg.walk():
            part.get_content_type()
    return time.perf_counter() - started


def profile(intake, messages, backend: str, median: float) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = run_handler(intake, messages)
    profiler.disable()
    n = len(messages)
    print(f"\n--- {backend}: one handler pass under cProfile: {seconds:.2f} s "
          f"(unprofiled median {median:.2f} s); {n:,} reports")
    for order, limit in (("cumulative", 45), ("tottime", 30)):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(order).print_stats(limit)
        text_ = out.getvalue()
        print(text_[text_.find("   ncalls"):].rstrip() if "   ncalls" in text_ else text_)
        print()


def measure(backend: str, args, workdir: Path, problems: list[str]):
    drop = None
    try:
        if backend == "sqlite":
            url = f"sqlite:///{workdir / 'bounces.db'}"
        else:
            plain, drop = postgres_database(args.postgres_url)
            url = sqlalchemy_url(plain)
        upgrade(url)
        started = time.perf_counter()
        fill(url, args.leads)
        services = services_for(url, workdir)
        messages, expected, hard_rows, complained_rows = build_reports(args.reports, args.leads,
                                                                       services.bounce_addresses)
        print(f"  {backend}: {args.leads:,} leads and {len(messages):,} reports "
              f"({sum(len(m) for m, _ in messages) / len(messages):,.0f} bytes on average) ready in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        intake = services.intake
        from mailer.bounces.parse import parse
        for raw, _ in messages[:50]:  # imports (flufl.bounce) and regexes, as a running worker has them
            parse(raw)
        handler, baseline = [], []
        for run in range(args.runs):
            order = ("handler", "baseline") if run % 2 == 0 else ("baseline", "handler")
            for which in order:
                if which == "baseline":
                    baseline.append(run_baseline(messages))
                    continue
                seconds, handled = run_handler(intake, messages)
                handler.append(seconds)
                found = check(url, handled, len(messages), expected, args.leads, hard_rows, complained_rows, backend)
                if found:
                    problems.extend(f"run {run + 1}: {p}" for p in found)
                reset(url)
            print(f"  {backend} run {run + 1}: handler {handler[-1]:.2f} s "
                  f"({len(messages) / handler[-1]:,.0f}/s), baseline {baseline[-1]:.2f} s "
                  f"({len(messages) / baseline[-1]:,.0f}/s), ratio {handler[-1] / baseline[-1]:.2f}", flush=True)
        if args.profile:
            profile(intake, messages, backend, statistics.median(handler))
            reset(url)
        services.db.dispose()
        return handler, baseline, expected
    finally:
        if drop:
            drop()


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="one more handler pass per backend under cProfile")
    args = parser.parse_args()
    logging.getLogger("mailer").setLevel(logging.WARNING)
    # flufl.bounce logs a traceback whenever one of its detectors raises (its Yale detector on a
    # message without a From: the garbage here); the report is still handled. Not timed output.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    results, problems = {}, []
    with tempfile.TemporaryDirectory(prefix="mailer-bounce-bench-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = measure(backend, args, Path(tmp), problems)
    expected = next(iter(results.values()))[2]
    print(f"\nTaking in {args.reports:,} reports ({', '.join(f'{k} {v:,}' for k, v in sorted(expected.items()))}) "
          f"about {args.leads:,} leads; medians of {args.runs} runs")
    print(f"{'backend':<10} {'handler':>9} {'per report':>11} {'baseline':>9} {'per report':>11} {'ratio':>6}")
    for backend, (handler, baseline, _) in results.items():
        h, b = statistics.median(handler), statistics.median(baseline)
        print(f"{backend:<10} {h:>7.2f} s {h / args.reports * 1e6:>8.0f} µs {b:>7.2f} s "
              f"{b / args.reports * 1e6:>8.0f} µs {h / b:>6.2f}")
    print(f"\nTarget: handler/baseline at most {TARGET:.1f}.")
    if problems:
        print("\nChecks failed:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("Checks: every report stored exactly once, with the expected kinds, in every run.")


if __name__ == "__main__":
    main()
