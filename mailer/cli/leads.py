"""The operator's commands about leads: export, stats, lead show|export|erase|unsubscribe, purge,
import. Tables for people, JSON for scripts; errors on stderr with exit status 1 (2 for usage);
progress on stderr only when it is a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mailer.cli.common import Output, day_option, services
from mailer.clock import utcnow
from mailer.store.tables import LeadStatus

STATUSES = [status.value for status in LeadStatus]


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
@click.option("--since", callback=day_option, help="Signed up on or after this day (YYYY-MM-DD).")
@click.option("--until", callback=day_option, help="Signed up on or before this day.")
@click.option("--fields", help="Comma-separated, in this order; default all.")
def export_command(output, kind, excel, statuses, magnet, consent, since, until, fields) -> None:
    from mailer.operator.export import FIELDS, Filters, Format, export_leads

    chosen = tuple(f.strip() for f in fields.split(",")) if fields else FIELDS
    filters = Filters.for_days(statuses, magnet, None if consent is None else consent == "yes", since, until)
    bar = click.progressbar(length=1, label="exporting", file=sys.stderr) if sys.stderr.isatty() else None

    def progress(step: int, total: int) -> None:
        if bar is not None:
            bar.length = total
            bar.update(step)

    built = services(check=False)
    with Output(output) as out:
        count = export_leads(built.db, built.content, filters, Format(kind, chosen, excel), out, progress)
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
@click.option("--since", callback=day_option, help="Signed up on or after this day (UTC, YYYY-MM-DD).")
@click.option("--until", callback=day_option, help="Signed up on or before this day.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(magnet, since, until, as_json) -> None:
    from mailer.operator.bounces import rates
    from mailer.operator.campaigns import all_figures
    from mailer.operator.figures import funnel_figures

    built = services(check=False)
    figures = funnel_figures(built.db, built.content, magnet=magnet, since=since, until=until)
    campaigns = all_figures(built.db, zone=built.settings.drip_window.zone)
    deliverability = rates(built.db)
    if as_json:
        click.echo(json.dumps({"since": since and since.isoformat(), "until": until and until.isoformat(),
                               "magnets": [f.as_dict() for f in figures],
                               "campaigns": [c.as_dict() for c in campaigns],
                               "bounces": [r.as_dict() for r in deliverability]}, indent=2))
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
    if campaigns:
        click.echo("newsletter campaigns (all, whatever the period):")
        click.echo(f"  {'slug':<24}{'status':<11}{'audience':>9}{'sent':>7}{'failed':>7}{'clicks':>8}{'unsubs':>7}")
        for c in campaigns:
            clicked = sum(c.clicks.values())
            click.echo(f"  {c.slug:<24}{c.status:<11}{c.audience:>9}{c.sent:>7}{c.failed:>7}{clicked:>8}"
                       f"{c.unsubscribes:>7}")
    if deliverability[0].sent:
        click.echo("bounces and complaints of the mail sent (all, whatever the period):")
        click.echo(f"  {'stream':<44}{'sent':>7}{'hard':>6}{'%':>7}{'soft':>6}{'compl.':>8}{'%':>7}")
        for r in deliverability:
            hard, complaints = r.rate(r.hard) or 0, r.rate(r.complaints) or 0
            click.echo(f"  {r.stream[:43]:<44}{r.sent:>7}{r.hard:>6}{hard:>7.2%}{r.soft:>6}{r.complaints:>8}"
                       f"{complaints:>7.2%}")


@click.group("lead", help="One person's data: show, export (access and portability), erase, unsubscribe.")
def lead() -> None:
    pass


@lead.command("show", help="Status, consent evidence, mails and their outcomes, downloads and clicks.\n\n"
                           "Example: mailer lead show anne@gemeente.nl")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON (same as `lead export`).")
def lead_show(email: str, as_json: bool) -> None:
    from mailer.operator.people import record as lead_record

    record = lead_record(services(check=False).db, email)
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
    from mailer.operator.people import record

    found = record(services(check=False).db, email)
    with Output(output) as out:
        out.write((json.dumps(found, indent=2, ensure_ascii=False) + "\n").encode())


@lead.command("erase", help="Remove the person's data everywhere (lead, mails, attempts, clicks, downloads, "
                            "evidence). A keyed hash of the address stays on a suppression list so an import "
                            "cannot bring it back; the figures keep their counts. A new signup starts afresh.\n\n"
                            "Example: mailer lead erase anne@gemeente.nl --yes")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def lead_erase(email: str, yes: bool) -> None:
    from mailer.operator.people import erase_person

    if not yes:
        click.confirm(f"Erase everything held about {email}? This cannot be undone", abort=True, err=True)
    built = services(check=False)
    erase_person(built.db, built.transport(), email, built.settings.secret_keys[0], utcnow())
    click.echo(f"erased {email}")


@lead.command("unsubscribe", help="Unsubscribe someone who asked by phone or mail; a consent event records it.\n\n"
                                  "Example: mailer lead unsubscribe anne@gemeente.nl --via phone")
@click.argument("email")
@click.option("--via", type=click.Choice(["phone", "mail", "letter", "other"]), default="mail", show_default=True,
              help="How the request came in.")
def lead_unsubscribe(email: str, via: str) -> None:
    from mailer.operator.people import unsubscribe_person

    built = services(check=False)
    changed = unsubscribe_person(built.db, built.funnel, email, via, utcnow())
    click.echo(f"{email} unsubscribed" if changed else f"{email} was already unsubscribed; nothing changed")


@click.command("purge", help="Erase signups not confirmed within MAILER_PENDING_MAX_AGE_DAYS (default 30) days; "
                             "the worker also does this every hour.\n\nExample: mailer purge --days 14")
@click.option("--days", type=click.IntRange(1), help="Override the setting.")
def purge_command(days: int | None) -> None:
    from mailer.operator.people import purge_pending

    built = services(check=False)
    days = days or built.settings.pending_max_age_days
    count = purge_pending(built.db, days, utcnow())
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
    from mailer.operator.imports import ImportRefused, import_leads

    built = services(check=False)
    try:
        checked = import_leads(built.db, built.content, file.read_bytes(), file.name, built.settings.secret_keys,
                               utcnow(), dry_run=dry_run)
    except ImportRefused as refused:
        for error in refused.errors:
            click.echo(f"{file.name}: {error}", err=True)
        raise click.ClickException(str(refused)) from None
    if dry_run:
        click.echo(f"{file.name}: {len(checked.rows)} lead(s) can be imported ({checked.marketing} with marketing "
                   "consent); nothing written (--dry-run)")
    else:
        click.echo(f"{file.name}: imported {len(checked.rows)} lead(s) ({checked.marketing} with marketing consent)")


COMMANDS = (export_command, stats_command, lead, purge_command, import_command)
