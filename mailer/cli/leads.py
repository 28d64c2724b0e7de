"""The operator's commands: export, stats, lead show|export|erase|unsubscribe, purge, import.

Tables for people, JSON for scripts; errors on stderr with exit status 1 (2 for usage);
progress on stderr only when it is a terminal.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import click

from .cli_drip import _services
from .clock import utcnow


def _data():
    """Settings, database and content only: what export and stats need, without the mail
    templates and the rest (a quicker start for commands that scripts call often)."""
    from .content import load_content
    from .db import Database
    from .errors import MailerError
    from .settings import Settings

    try:
        settings = Settings.from_env()
        content = load_content(settings.content_path)
    except MailerError as exc:
        raise click.ClickException(str(exc)) from None
    return settings, Database(settings.database_url, settings.sqlite_busy_timeout_ms), content


def _day(_ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-12-01", param=param) from None


def _start(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(0), timezone.utc)


class _Output:
    """stdout, or a new file with mode 0600 that appears whole (written beside it, then renamed)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.partial = None if path is None else path.with_name(f".{path.name}.partial")

    def __enter__(self):
        if self.path is None:
            return sys.stdout.buffer
        try:
            self.partial.unlink(missing_ok=True)  # a leftover of an interrupted export
            # O_EXCL | O_NOFOLLOW: a file (or link) someone put there meanwhile is not written through.
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise click.ClickException(f"cannot write {self.path}: {exc.strerror}") from None
        os.fchmod(fd, 0o600)  # whatever the umask
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, kind, *_):
        if self.path is None:
            sys.stdout.flush()
            return
        self.handle.close()
        if kind is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


STATUSES = ("pending", "confirmed", "unsubscribed", "undeliverable")


@click.command("export", help="""Stream leads as CSV (default) or JSON Lines, oldest first.

\b
Examples:
  mailer export --output leads.csv
  mailer export --status confirmed --marketing-consent yes --excel --output nieuwsbrief.csv
  mailer export --format jsonl --since 2026-12-01 --fields email,first_name,signed_up_at

Dates are UTC days; --until is inclusive. Times in the file are UTC. Cells that a spreadsheet
would run as a formula get a leading apostrophe. Erased leads never appear.""")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="A file (mode 0600); default stdout.")
@click.option("--format", "kind", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--excel", is_flag=True, help="CSV as Dutch Excel opens it: semicolons and a byte order mark.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES), help="Repeat for several.")
@click.option("--magnet", help="One lead magnet (slug).")
@click.option("--marketing-consent", "consent", type=click.Choice(["yes", "no"]))
@click.option("--since", callback=_day, help="Signed up on or after this day (YYYY-MM-DD).")
@click.option("--until", callback=_day, help="Signed up on or before this day.")
@click.option("--fields", help="Comma-separated, in this order; default all.")
def export_command(output, kind, excel, statuses, magnet, consent, since, until, fields) -> None:
    from .exporting import FIELDS, Filters, Format, export

    if excel and kind != "csv":
        raise click.UsageError("--excel applies to CSV only")
    chosen = tuple(f.strip() for f in fields.split(",")) if fields else FIELDS
    unknown = [f for f in chosen if f not in FIELDS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown field(s) {', '.join(unknown)}; fields: {','.join(FIELDS)}",
                                 param_hint="--fields")
    _settings, db, content = _data()
    if magnet and magnet not in content.magnets:
        raise click.BadParameter(f"{magnet!r} is not one of {', '.join(content.magnets)}", param_hint="--magnet")
    filters = Filters(statuses, magnet, None if consent is None else consent == "yes", _start(since),
                      _start(until + timedelta(days=1)) if until else None)
    bar = None
    if sys.stderr.isatty():
        bar = click.progressbar(length=1, label="exporting", file=sys.stderr)

    def progress(step: int, total: int) -> None:
        if bar is not None:
            bar.length = total
            bar.update(step)

    # A read transaction: on SQLite, writers (signups, workers) go on during a long export.
    with _Output(output) as out, db.engine.execution_options(mailer_read_only=True).connect() as connection:
        count = export(connection, filters, Format(kind, chosen, excel), out, progress)
    if bar is not None:
        bar.render_finish()
    if output is not None:
        click.echo(f"{count} lead(s) written to {output}", err=True)


@click.command("stats", help="""The funnel per lead magnet for the leads who signed up in a period.

\b
Examples:
  mailer stats
  mailer stats --magnet mini-guide --since 2026-12-01 --until 2026-12-31
  mailer stats --json""")
@click.option("--magnet")
@click.option("--since", callback=_day, help="Signed up on or after this day (UTC, YYYY-MM-DD).")
@click.option("--until", callback=_day, help="Signed up on or before this day.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(magnet, since, until, as_json) -> None:
    from .stats import funnel

    _settings, db, content = _data()
    if magnet and magnet not in content.magnets:
        raise click.BadParameter(f"{magnet!r} is not one of {', '.join(content.magnets)}", param_hint="--magnet")
    order = [f"{s.slug}/{step.key}" for s in content.sequences.values() for step in s.steps]
    with db.read_only() as session:
        figures = funnel(session, magnet=magnet, since=since, until=until, step_order=order)
    if as_json:
        click.echo(json.dumps({"since": since and since.isoformat(), "until": until and until.isoformat(),
                               "magnets": [f.as_dict() for f in figures]}, indent=2))
        return
    period = f"{since or 'the start'} to {until or 'today'}"
    if not figures:
        click.echo(f"no signups from {period}")
    for f in figures:
        rate = f"  {f.confirm_rate:.0%} of signups" if f.confirm_rate is not None else ""
        click.echo(f"{f.magnet}: signed up from {period}")
        for label, value, note in (("signups", f.signups, ""), ("confirmed", f.confirmed, rate),
                                   ("downloaded", f.downloaded, ""), ("marketing consent", f.marketing, ""),
                                   ("unsubscribed", f.unsubscribed, ""), ("undeliverable", f.undeliverable, "")):
            click.echo(f"  {label:<20}{value:>8}{note}")
        if f.steps:
            click.echo(f"  {'drip step':<44}{'sent':>7}{'clicked':>9}")
            for step, values in f.steps.items():
                click.echo(f"  {step:<44}{values['sent']:>7}{values['clicked']:>9}")


@click.group("lead", help="One person's data: show, export (access and portability), erase, unsubscribe.")
def lead() -> None:
    pass


def _the_lead(session, email: str, lock: str | None = None):
    from .privacy import find_lead

    found = find_lead(session, email, lock=lock)
    if found is None:
        raise click.ClickException(f"no lead with the address {email}")
    return found


@lead.command("show", help="Status, consent evidence, mails and their outcomes, downloads and clicks.\n\n"
                           "Example: mailer lead show anne@gemeente.nl")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON (same as `lead export`).")
def lead_show(email: str, as_json: bool) -> None:
    from .privacy import lead_record

    services = _services()
    with services.db.read_only() as session:
        record = lead_record(session, _the_lead(session, email))
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    click.echo(f"{record['email']}  {record['first_name'] or '-'}  {record['status']}  magnet {record['magnet']}  "
               f"marketing consent {'yes' if record['marketing_consent'] else 'no'}")
    click.echo(f"signed up {record['signed_up_at']}, confirmed {record['confirmed_at'] or '-'}")
    click.echo("consent evidence:")
    for e in record["consent_events"]:
        notice = f"notice {e['notice']['version']}" if e["notice"] else "no notice"
        click.echo(f"  {e['at']}  {e['kind']:<12} marketing {'yes' if e['marketing_consent'] else 'no ':<3} "
                   f"{e['form']:<22} {e['ip'] or '-':<15} {notice}")
    click.echo("mails:")
    for m in record["mails"]:
        what = f"{m['kind']}" + (f" {m['sequence']}/{m['step']}" if m["step"] else "")
        last = m["attempts"][-1] if m["attempts"] else None
        reply = f"{last['code'] or '-'} {last['reply'][:60]}" if last else ""
        click.echo(f"  {m['queued_at']}  {what:<40} {m['status']:<9} {len(m['attempts'])} attempt(s)  {reply}")
    click.echo(f"downloads: {len(record['downloads'])}" + "".join(f"\n  {d['at']}  {d['magnet']}"
                                                                  for d in record["downloads"]))
    click.echo(f"clicks: {len(record['clicks'])}" + "".join(f"\n  {c['at']}  {c['sequence']}/{c['step']} {c['link']}"
                                                            for c in record["clicks"]))
    for e in record["enrollments"]:
        click.echo(f"sequence {e['sequence']}: {e['status']}, next {e['next_due_at'] or '-'}")


@lead.command("export", help="Everything held about one person, as JSON (right of access and portability).\n\n"
                             "Example: mailer lead export anne@gemeente.nl --output anne.json")
@click.argument("email")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="A file (mode 0600); default stdout.")
def lead_export(email: str, output: Path | None) -> None:
    from .privacy import lead_record

    services = _services()
    with services.db.read_only() as session:
        record = lead_record(session, _the_lead(session, email))
    with _Output(output) as out:
        out.write((json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())


@lead.command("erase", help="Remove the person's data everywhere (lead, mails, attempts, clicks, downloads, "
                            "evidence). A keyed hash of the address stays on a suppression list so an import "
                            "cannot bring it back; the figures keep their counts. A new signup starts afresh.\n\n"
                            "Example: mailer lead erase anne@gemeente.nl --yes")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def lead_erase(email: str, yes: bool) -> None:
    from .privacy import BeingSent, erase
    from .transports.file import eml_name

    services = _services()
    if not yes:
        click.confirm(f"Erase everything held about {email}? This cannot be undone", abort=True, err=True)
    try:
        with services.db.transaction() as session:
            sent = erase(session, _the_lead(session, email, lock="erase"), services.settings.secret_keys[0],
                         utcnow())
    except BeingSent:
        raise click.ClickException(f"a mail to {email} is being sent right now; try again in a minute") from None
    mail = services.settings.mail
    if mail.scheme == "file":  # the embedded default keeps sent mail as files: those go too
        for message_id in sent:
            (mail.path / eml_name(message_id)).unlink(missing_ok=True)
    click.echo(f"erased {email}")


@lead.command("unsubscribe", help="Unsubscribe someone who asked by phone or mail; a consent event records it.\n\n"
                                  "Example: mailer lead unsubscribe anne@gemeente.nl --via phone")
@click.argument("email")
@click.option("--via", type=click.Choice(["phone", "mail", "letter", "other"]), default="mail", show_default=True,
              help="How the request came in.")
def lead_unsubscribe(email: str, via: str) -> None:
    from .signup import Evidence

    services = _services()
    with services.db.transaction() as session:
        found = _the_lead(session, email, lock="change")
        changed = services.funnel.unsubscribe_lead(session, found, found.magnet,
                                                    Evidence(None, None, f"operator:{via}"), utcnow())
    click.echo(f"{email} unsubscribed" if changed else f"{email} was already unsubscribed; nothing changed")


@click.command("purge", help="Erase signups not confirmed within MAILER_PENDING_MAX_AGE_DAYS (default 30) days; "
                             "the worker also does this every hour.\n\nExample: mailer purge --days 14")
@click.option("--days", type=click.IntRange(1), help="Override the setting.")
def purge_command(days: int | None) -> None:
    from .privacy import purge_pending

    services = _services()
    days = days or services.settings.pending_max_age_days
    count = purge_pending(services.db, days, utcnow())
    click.echo(f"erased {count} signup(s) not confirmed within {days} days")


@click.command("import", help="""Bring in leads from an earlier tool (CSV with a header row).

\b
Columns: email (required), first_name, magnet, marketing_consent (yes/no), signed_up_at,
and for marketing consent the evidence: consent_at and consent_source (required),
consent_ip and consent_text (optional). Every row is checked first; with any error
nothing is imported. Erased addresses are refused.

\b
Examples:
  mailer import leads.csv --dry-run
  mailer import leads.csv""")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and report; write nothing.")
def import_command(file: Path, dry_run: bool) -> None:
    from . import importing

    services = _services()
    now = utcnow()
    checked = importing.read(file.read_bytes(), services.content, now)
    with (services.db.read_only() if dry_run else services.db.transaction()) as session:
        if checked.rows:
            importing.check_against_database(session, checked, services.settings.secret_keys)
        if checked.errors:
            for error in checked.errors:
                click.echo(f"{file.name}: {error}", err=True)
            raise click.ClickException(f"{len(checked.errors)} problem(s); nothing imported")
        marketing = sum(row.marketing for row in checked.rows)
        if dry_run:
            click.echo(f"{file.name}: {len(checked.rows)} lead(s) can be imported ({marketing} with marketing "
                       "consent); nothing written (--dry-run)")
            return
        importing.write(session, checked.rows, file.name, now)
    click.echo(f"{file.name}: imported {len(checked.rows)} lead(s) ({marketing} with marketing consent)")


COMMANDS = (export_command, stats_command, lead, purge_command, import_command)
