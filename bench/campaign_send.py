"""Newsletter campaign mail per second through the outbox sender, against a naive send loop, into smtp-sink.

What it measures
    Sending MAILS mails of the shipped example newsletter ``content/newsletters/voorbeeld.md``
    (templates ``templates/mail/newsletter.html`` and ``newsletter.txt``), personalised per
    recipient, into one Postfix ``smtp-sink`` on a free port of 127.0.0.1 (it throws mail away
    and counts it), in the ways below, all in the same run:

    naive-newsletter   no database: the newsletter file is loaded with the mailer's own content
                 loading (``mailer.content.files.load_content``); per recipient its Markdown body
                 is rendered (``mailer.content.markdown.render``, markdown-it) with that
                 recipient's links (a fake tracked link of a real link's length for every link,
                 a fake unsubscribe link), then a plain ``jinja2.Environment(FileSystemLoader(
                 templates/mail))`` renders both templates, ``email.message.EmailMessage``
                 (default policy) builds text + HTML alternative with From, To, Subject, Date,
                 Message-ID and List-Unsubscribe(-Post), and ``smtplib.SMTP.send_message`` sends
                 it over ONE connection. No CSS inlining, no click-tracking signatures (the
                 mailer does that work on top). Templates are loaded before the clock starts.
    mailer-sqlite-newsletter   MAILS confirmed leads with marketing consent (magnet mini-guide,
                 first names varied, some non-ASCII) in a fresh SQLite file migrated with the
                 project's migrations (``mailer.store.migrate.upgrade``, what ``mailer db upgrade``
                 runs); a campaign of ``voorbeeld`` is scheduled with
                 ``mailer.operator.campaigns.schedule(..., no_test=True)`` and queued by the
                 start-campaigns job, ``campaigns.start_due`` (the real job), BEFORE the clock
                 starts (the queueing time is printed besides). Then one sender
                 (``build_services(Settings.from_env(...)).senders()``, SMTP to the sink,
                 ``MAILER_SEND_BATCH_SIZE`` 500, ``MAILER_LOG_MAIL`` false, no ``MAILER_SEND_RATE``:
                 no throttle, the send window ``mon-sun 00:00-24:00`` with no holidays or quiet
                 dates, so it is open at the system clock's time whatever the day) runs
                 ``dispatch_all()`` in this process until the queue is empty. Claiming,
                 rendering, signing the links, building, sending and recording each result: the
                 real thing: each row is filled in from the campaign's frozen mail (stored at
                 its start), and its links are signed per recipient.
    mailer-postgres-newsletter   the same on a scratch PostgreSQL database.
    naive-guide, mailer-sqlite-guide, mailer-postgres-guide   for comparison (unless --no-guide):
                 ``bench/send_mail.py``'s naive guide loop, and the same sender and settings
                 delivering MAILS guide mails (mini-guide; one due outbox row per confirmed lead,
                 queued as ``bench/send_mail.py`` does), so "keeps the per-mail speed of the guide
                 mails" can be read off as newsletter/guide.

    Each run measures all of them (fresh databases, order reversed on even runs); the script
    prints every run, then the medians and the ratios. Every mailer queue must end all ``sent``
    (the campaign's: exactly MAILS rows, all of kind ``newsletter``) with exactly one recorded
    attempt per row, and the sink must have counted every message of every measurement;
    otherwise the exit status is 1.

    With ``--profile`` it adds one more mailer-sqlite-newsletter and mailer-sqlite-guide delivery
    under cProfile (not counted in the figures) and prints where the sender's time goes, in µs
    per message, as ``bench/send_mail.py --profile`` does (Markdown gets a category of its own).

How to run it (from the project root; needs Postfix's smtp-sink, PostgreSQL, and the dev extra)
    .venv/bin/python bench/campaign_send.py [--mails 5000] [--runs 3] [--no-guide] [--profile]
        [--backends sqlite,postgres] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
        [--smtp-sink /usr/sbin/smtp-sink]

    The PostgreSQL URL (default: $MAILER_TEST_POSTGRES_URL, else the one above) names a server
    where that user may create databases; each PostgreSQL measurement creates its own scratch
    database there and drops it afterwards. Everything else lives in a temporary directory that
    is removed; smtp-sink is started and stopped by the script; the only traffic is on
    127.0.0.1. With the defaults it takes about four to five minutes on a 2-core machine. Each
    measurement stops after at most max(60 s, MAILS / 25 s).

What it prints
    One line per measurement and run (mails/s, mails, seconds, the sink's count; for the mailer
    also the time schedule + start_due took to queue, outside the clock, and the span from first
    to last recorded attempt), then the medians and these ratios (mails per second):
      mailer-<db>-newsletter / naive-newsletter    the target, issue 11: "Sending campaign mail
                                                   to Postfix's smtp-sink keeps the per-mail speed
                                                   of the guide mails (at least 2x the naive loop)"
      mailer-<db>-newsletter / mailer-<db>-guide   the newsletter's speed against the guide mail's
      mailer-<db>-guide / naive-guide              as bench/send_mail.py reports it
    The exit status is 0 whether or not the targets are met (a measurement, not a test), 1 if a
    check failed.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without the editable install, too
sys.path.insert(0, str(ROOT / "bench"))

import send_mail  # noqa: E402  (the sink, the scratch databases, the guide loop, the checks, the profile)
from send_mail import (  # noqa: E402
    BASE_URL,
    DEFAULT_POSTGRES,
    DEFAULT_SINK,
    HOST,
    MAIL_DOMAIN,
    MAIL_FROM,
    Measurement,
    Postgres,
    Recipient,
    Sink,
    _check_mailer,
    deliver_in_process,
    mailer_env,
    measure_naive,
    outcome,
    print_profile,
    recipients,
    time_limit,
)

SLUG = "voorbeeld"  # the shipped example newsletter
MAILS = 5000
RUNS = 3
BATCH = 500  # MAILER_SEND_BATCH_SIZE
CHUNK = 1000  # leads per inserting transaction
TARGET = 2.0
# Open at any moment of any day, so the marketing claim is never shut by the day the bench runs on.
WINDOW = {"MAILER_DRIP_WINDOW": "mon-sun 00:00-24:00", "MAILER_DRIP_HOLIDAYS": "", "MAILER_DRIP_QUIET_DATES": ""}

NAIVE_NL, NAIVE_GUIDE = "naive-newsletter", "naive-guide"
BACKENDS = ("sqlite", "postgres")


def mailer_name(backend: str, what: str) -> str:
    return f"mailer-{backend}-{what}"


# --- the naive loop -------------------------------------------------------------------------

class NaiveNewsletter:
    """What a developer without the mailer would write: Markdown and Jinja2 per recipient,
    EmailMessage, smtplib."""

    def __init__(self):
        from jinja2 import Environment, FileSystemLoader, StrictUndefined
        from markupsafe import Markup

        from mailer.content import markdown
        from mailer.content.files import load_content

        self.markdown, self.Markup = markdown, Markup
        self.wire_policy = EmailMessage().policy.clone(linesep="\r\n")  # CRLF, as on the wire
        content = load_content(ROOT / "content")
        self.newsletter = newsletter = content.newsletters[SLUG]
        magnets = newsletter.audience.magnets or (content.organisation.default_magnet,)
        # StrictUndefined: a template variable this context lacks fails loudly, not as a blank.
        env = Environment(loader=FileSystemLoader(ROOT / "templates" / "mail"), undefined=StrictUndefined)
        self.html = env.get_template("newsletter.html")
        self.text = env.get_template("newsletter.txt")
        self.sender = newsletter.sender or MAIL_FROM
        self.context = {  # the variables the templates use (the mailer's newsletter kind gives the same)
            "org": content.organisation, "subject": newsletter.subject, "magnet": content.magnets[magnets[0]],
            "newsletter": newsletter, "preheader": newsletter.preheader,
            "browser_link": f"{BASE_URL}/nieuwsbrief/{SLUG}" if newsletter.public else "",
        }
        self._check()

    @staticmethod
    def _link(path: str) -> str:
        # A real link is the base URL, a short path and an itsdangerous token of about 80 characters.
        return f"{BASE_URL}/{path}/{secrets.token_urlsafe(60)}"

    def _check(self) -> None:
        """The personalisation, a tracked link and the unsubscribe link must reach both parts."""
        probe = self.message(Recipient(0, "probe@example.org", "Chloë"))
        for part in (probe.get_body(("plain",)), probe.get_body(("html",))):
            body = part.get_content()
            if "Chloë" not in body or f"{BASE_URL}/k/" not in body or f"{BASE_URL}/afmelden/" not in body:
                raise RuntimeError(f"naive loop: the {part.get_content_subtype()} part lacks the first name, a "
                                   "tracked link or the unsubscribe link; did the templates' variables change?")

    def message(self, to: Recipient) -> EmailMessage:
        links: dict[str, str] = {}

        def rewrite(href: str) -> str:  # every http(s) and link('name') link: this recipient's tracked link
            if self.markdown.named(href) is None and not self.markdown.is_plain(href):
                return href
            if href not in links:
                links[href] = self._link("k")
            return links[href]

        parts, body_text = self.markdown.render(self.newsletter.body, rewrite)
        unsubscribe = self._link("afmelden")
        context = {
            **self.context, "name": to.first_name or "daar", "unsubscribe": unsubscribe,
            "body_parts": [(self.Markup(p.html), p.button) for p in parts], "body_text": body_text,
            "link": lambda name: rewrite(f"link('{name}')"), "guide_link": self._link("download"),
        }
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = Address(display_name=to.first_name, addr_spec=to.email)
        message["Subject"] = self.newsletter.subject
        message["Date"] = format_datetime(datetime.now(timezone.utc))
        message["Message-ID"] = make_msgid(domain=MAIL_DOMAIN)
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(self.text.render(context))
        message.add_alternative(self.html.render(context), subtype="html")
        return message

    def markdown_share(self, count: int = 200) -> float:
        """µs per mail the naive loop spends in the Markdown rendering alone."""
        t0 = time.perf_counter()
        for _ in range(count):
            self.markdown.render(self.newsletter.body, lambda href: href)
        return (time.perf_counter() - t0) / count * 1e6


# --- the mailer -----------------------------------------------------------------------------

def build(workdir: Path, database_url: str, sink: Sink, batch: int):
    """Settings for the sink, the window open, a migrated fresh database; the services (the caller disposes)."""
    from mailer.services import build_services
    from mailer.settings import Settings
    from mailer.store.migrate import upgrade

    workdir.mkdir(parents=True)
    env = {**mailer_env(workdir, database_url, sink, batch), **WINDOW}
    env.pop("MAILER_SEND_RATE", None)  # no throttle
    settings = Settings.from_env(environ=env, dotenv=workdir / "no.env")
    if not settings.drip_window.contains(datetime.now(timezone.utc)):
        raise RuntimeError(f"the send window {settings.drip_window.spec} is shut now")
    if settings.send_rate or settings.log_mail or settings.send_batch_size != batch:
        raise RuntimeError("settings: expected no MAILER_SEND_RATE, MAILER_LOG_MAIL false and the batch size")
    upgrade(settings.database_url)
    quiet = logging.getLogger("mailer")  # the start-up advice (MAILER_REPLY_TO, https) is not for a bench
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return build_services(settings)
    finally:
        quiet.setLevel(level)


def add_leads(services, to: list[Recipient]) -> None:
    """Confirmed leads with marketing consent (magnet mini-guide), CHUNK per transaction."""
    from sqlalchemy import insert

    from mailer.store.tables import Lead, LeadStatus

    now = datetime.now(timezone.utc) - timedelta(days=1)
    for start in range(0, len(to), CHUNK):
        with services.db.transaction() as session:
            session.execute(insert(Lead), [
                {"email": r.email, "first_name": r.first_name, "status": LeadStatus.CONFIRMED.value,
                 "magnet": send_mail.SLUG, "marketing_consent": True, "created_at": now, "confirmed_at": now,
                 "updated_at": now}
                for r in to[start:start + CHUNK]])


def queue_campaign(services, expected: int) -> float:
    """schedule + the start-campaigns job; check the queue holds exactly `expected` newsletter rows.
    The seconds it took (outside the clock)."""
    from sqlalchemy import func, select

    from mailer.operator import campaigns
    from mailer.store.tables import Outbox

    t0 = time.perf_counter()
    now = services.clock.now()
    campaigns.schedule(services.db, services.content, SLUG, now=now, no_test=True)
    # as the scheduler's job calls it
    lines = campaigns.start_due(services.db, services.content, services.renderer, zone=services.settings.drip_window.zone,
                                now=now, domain=services.settings.mail_domain)
    elapsed = time.perf_counter() - t0
    with services.db.read_only() as session:
        rows = {(str(kind), str(status)): n for kind, status, n in session.execute(
            select(Outbox.kind, Outbox.status, func.count()).group_by(Outbox.kind, Outbox.status)).all()}
    if rows != {("newsletter", "queued"): expected}:
        raise RuntimeError(f"the campaign queued {rows} (start_due said {lines}), expected "
                           f"{{('newsletter', 'queued'): {expected}}}")
    return elapsed


def prepare(what: str, workdir: Path, database_url: str, sink: Sink, to: list[Recipient], batch: int):
    services = build(workdir, database_url, sink, batch)
    try:
        if what == "newsletter":
            add_leads(services, to)
            queued_in = queue_campaign(services, len(to))
        else:
            t0 = time.perf_counter()
            send_mail.queue(services, to)  # confirmed leads, one due guide mail each
            queued_in = time.perf_counter() - t0
    except BaseException:
        services.db.dispose()
        raise
    return services, queued_in


def measure_mailer(backend: str, what: str, run: int, workdir: Path, database_url: str, sink: Sink,
                   to: list[Recipient], batch: int, limit: float) -> Measurement:
    services, queued_in = prepare(what, workdir, database_url, sink, to, batch)
    try:
        before = sink.count()
        sent, elapsed = deliver_in_process(services, len(to), limit)
        m = Measurement(mailer_name(backend, what), run, sent, elapsed, sink.count() - before)
        m.queued_in = queued_in
        _check_mailer(m, outcome(services), len(to))
        if sent != len(to):
            m.problems.append(f"dispatch_all reported {sent} sent")
        return m
    finally:
        services.db.dispose()


def profile_mailer(what: str, workdir: Path, database_url: str, sink: Sink, to: list[Recipient], batch: int,
                   limit: float, unprofiled_rate: float | None) -> list[str]:
    services, _ = prepare(what, workdir, database_url, sink, to, batch)
    try:
        profiler = cProfile.Profile()
        sent, elapsed = deliver_in_process(services, len(to), limit, profiler)
        print_profile(mailer_name("sqlite", what), profiler, max(sent, 1), elapsed, unprofiled_rate)
        result = outcome(services)
        return [] if result.counts == {"sent": len(to)} else [f"profile {what}: outbox by status {result.counts}"]
    finally:
        services.db.dispose()


# --- main -----------------------------------------------------------------------------------

def line(m: Measurement) -> str:
    queued = getattr(m, "queued_in", None)
    return m.line() + (f"  (queued in {queued:.2f}s before the clock)" if queued is not None else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=MAILS, help=f"mails per measurement ({MAILS})")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of all measurements ({RUNS}; 0: only --profile)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"MAILER_SEND_BATCH_SIZE ({BATCH})")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgres (both) or one of them")
    parser.add_argument("--no-guide", action="store_true", help="skip the guide mails measured for comparison")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, one mailer-sqlite newsletter (and guide) delivery under cProfile")
    parser.add_argument("--postgres-url", default=os.environ.get("MAILER_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
                        help="a server and user that may create databases (default $MAILER_TEST_POSTGRES_URL "
                             f"or {DEFAULT_POSTGRES})")
    parser.add_argument("--smtp-sink", default=DEFAULT_SINK, help=f"Postfix's smtp-sink ({DEFAULT_SINK})")
    args = parser.parse_args()
    mails = max(1, min(args.mails, 200_000))
    runs = max(0, min(args.runs, 20))
    batch = max(1, min(args.batch, 10_000))
    backends = [b for b in BACKENDS if b in args.backends.split(",")]
    if not backends:
        parser.error(f"--backends: one or more of {','.join(BACKENDS)}")
    kinds = ("newsletter",) if args.no_guide else ("newsletter", "guide")
    names = [NAIVE_NL] + ([] if args.no_guide else [NAIVE_GUIDE]) + [
        mailer_name(b, w) for w in kinds for b in backends]
    limit = time_limit(mails)
    if not Path(args.smtp_sink).is_file():
        print(f"smtp-sink not found at {args.smtp_sink} (Debian: apt-get install postfix)", file=sys.stderr)
        return 1

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mailer-campaign-send-bench-"))
    sink: Sink | None = None
    postgres: Postgres | None = None
    results: list[Measurement] = []
    problems: list[str] = []
    to = recipients(mails)
    try:
        sink = Sink(args.smtp_sink, tmp)
        if "postgres" in backends:
            postgres = Postgres(args.postgres_url)
        naive = NaiveNewsletter()
        print(f"{mails} mails per measurement, {runs} runs (fresh databases each), batch {batch}, at most "
              f"{limit:.0f}s per measurement; newsletter {SLUG!r}; smtp-sink on {HOST}:{sink.port}; "
              + (f"PostgreSQL {urlsplit(args.postgres_url)._replace(path='').geturl()}; " if postgres else "")
              + f"{os.cpu_count()} CPUs; work dir {tmp}", flush=True)
        print(f"naive loop: its Markdown rendering alone costs {naive.markdown_share():.0f} µs a mail", flush=True)
        for run in range(1, runs + 1):
            order = names if run % 2 else names[::-1]
            for name in order:
                where = tmp / f"run{run}-{name}"
                if name == NAIVE_NL:
                    m = measure_naive(run, sink, to, limit, NaiveNewsletter(), NAIVE_NL)
                elif name == NAIVE_GUIDE:
                    m = measure_naive(run, sink, to, limit, name=NAIVE_GUIDE)
                else:
                    _, backend, what = name.split("-")
                    db = None
                    if backend == "sqlite":
                        url = f"sqlite:///{where / 'instance' / 'mailer.db'}"
                    else:
                        db, url = postgres.create(f"r{run}_{what[0]}")
                    try:
                        m = measure_mailer(backend, what, run, where, url, sink, to, batch, limit)
                    finally:
                        if db:
                            postgres.drop(db)
                results.append(m)
                problems += [f"run {run} {name}: {p}" for p in m.problems]
                print(line(m), flush=True)
                shutil.rmtree(where, ignore_errors=True)

        def median(name: str, attr: str = "rate") -> float | None:
            values = [getattr(m, attr) for m in results if m.name == name and getattr(m, attr, None) is not None]
            return statistics.median(values) if values else None

        if args.profile:
            # Markdown is not among bench/send_mail.py's categories: give it its own (last: first match wins).
            send_mail.CATEGORIES = (*send_mail.CATEGORIES, ("Markdown (markdown-it)", ("/markdown_it/", "/mdurl/")))
            for what in kinds:
                where = tmp / f"profile-{what}"
                problems += profile_mailer(what, where, f"sqlite:///{where / 'instance' / 'mailer.db'}", sink, to,
                                           batch, limit, median(mailer_name("sqlite", what)))
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if sink is not None:
            sink.stop()
        if postgres is not None:
            postgres.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.perf_counter() - began
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    print()
    print(f"command: {python} bench/campaign_send.py --mails {mails} --runs {runs} --batch {batch} "
          f"--backends {','.join(backends)}{' --no-guide' if args.no_guide else ''}"
          f"{' --profile' if args.profile else ''}")
    if results:
        print(f"summary (medians over {runs} runs, {mails} mails each):")
        for name in names:
            extra = ""
            if median(name, "span_rate") is not None:
                extra += f"   first to last attempt {median(name, 'span_rate'):7.1f} mails/s"
            if median(name, "queued_in") is not None:
                extra += f"   queued in {median(name, 'queued_in'):.2f}s"
            if median(name, "size") is not None:
                extra += f"   {median(name, 'size') / 1024:.1f} KiB/message"
            print(f"  {name:<28} {median(name):7.1f} mails/s{extra}")

        def ratio(a: str, b: str) -> float:
            return median(a) / median(b)

        for backend in backends:
            name = mailer_name(backend, "newsletter")
            r = ratio(name, NAIVE_NL)
            print(f"  ratio {f'{name}/{NAIVE_NL}':<53} {r:5.2f}   (target >= {TARGET}: "
                  f"{'met' if r >= TARGET else 'NOT met'})")
        if not args.no_guide:
            for backend in backends:
                nl, guide = mailer_name(backend, "newsletter"), mailer_name(backend, "guide")
                print(f"  ratio {f'{nl}/{guide}':<53} {ratio(nl, guide):5.2f}   (newsletter against "
                      "guide mail, same sender)")
            for backend in backends:
                guide = mailer_name(backend, "guide")
                print(f"  ratio {f'{guide}/{NAIVE_GUIDE}':<53} {ratio(guide, NAIVE_GUIDE):5.2f}   "
                      "(as bench/send_mail.py reports it)")
            print(f"  ratio {f'{NAIVE_NL}/{NAIVE_GUIDE}':<53} {ratio(NAIVE_NL, NAIVE_GUIDE):5.2f}")
    print(f"  checks: {'all mail delivered once, every row sent' if not problems else f'{len(problems)} problem(s)'}")
    for problem in problems:
        print(f"    {problem}")
    print(f"  took {elapsed:.1f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
