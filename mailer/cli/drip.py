"""`mailer drip plan|preview|render` and `mailer send-test`: seeing what a sequence will do."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click

from .clock import utcnow


def _services():
    from .cli import _services as build

    return build()


def _step(services, name: str):
    """STEP as `key` (when only one sequence has it) or `sequence/key`."""
    sequences = services.content.sequences
    slug, _, key = name.rpartition("/")
    found = [(s, s.step(key)) for s in sequences.values() if (not slug or s.slug == slug) and s.step(key)]
    if len(found) != 1:
        known = ", ".join(f"{s.slug}/{step.key}" for s in sequences.values() for step in s.steps)
        problem = "names steps in several sequences; write SEQUENCE/STEP" if found else "is not a step"
        raise click.BadParameter(f"{name!r} {problem}. Steps: {known or 'none (no sequences)'}", param_hint="STEP")
    return found[0]


def _now(value: str | None):
    from .cli import _parse_time

    return _parse_time(value) if value else utcnow()


def _lead(session, email: str | None):
    from .privacy import find_lead

    if email is None:
        return None
    lead = find_lead(session, email)
    if lead is None:
        raise click.ClickException(f"no lead with the address {email}")
    return lead


def _recipient(lead):
    """Who a rendered or test mail is addressed as. Its links always name no lead: a test
    mailbox's one-click unsubscribe (or a shared file) must not unsubscribe a real lead."""
    from .rendering import Recipient

    return Recipient(0, "voorbeeld@example.nl", lead.first_name if lead else "Voorbeeld")


@click.group(help="Drip sequences: what a change to a sequence file will do, and what a lead will get.")
def drip() -> None:
    pass


@drip.command("plan", help="Compare the sequence files with the enrollments in the database and show what "
                           "a change will do once the service restarts with it.\n\nExample: mailer drip plan")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--now", "now", default=None, help="ISO 8601 time to plan as of (default: the current time).")
def drip_plan(as_json: bool, now: str | None) -> None:
    from .drip_admin import plan

    services = _services()
    window, now = services.settings.drip_window, _now(now)
    with services.db.read_only() as session:
        plans = plan(session, services.content, window, now)
    if as_json:
        click.echo(json.dumps([{
            "sequence": p.sequence, "state": p.state, "active_enrollments": p.active,
            "changes": [{**c.__dict__, "first": c.first and c.first.isoformat(), "last": c.last and c.last.isoformat()}
                        for c in p.changes],
        } for p in plans], indent=2))
        return
    if not plans:
        click.echo("no sequences in the content folder")
    for p in plans:
        click.echo(f"sequence {p.sequence} ({p.name}): {p.active} active enrollment(s)")
        if p.state == "new":
            click.echo("  not run yet: the first drip run records these steps; nothing to compare with")
        elif p.state == "unchanged":
            click.echo("  unchanged since the last drip run")
        for c in p.changes:
            click.echo("  " + _change_line(c, window))
    if any(p.state == "changed" for p in plans):
        click.echo("\nThe change takes effect at the first drip run after `mailer serve` / `mailer worker` restart "
                   "with these files.")


def _change_line(c, window) -> str:
    day = lambda seconds: f"day {seconds / 86400:g}"  # noqa: E731
    if c.change == "removed":
        return f"- {c.key} ({day(c.old_delay)}, removed): {c.leads} lead(s) waiting for it will not get it"
    what = "new" if c.change == "added" else f"moved from {day(c.old_delay)}"
    line = f"+ {c.key} ({day(c.new_delay)}, {what}): {c.leads} lead(s) will get it"
    parts = []
    if c.overdue:
        parts.append(f"{c.overdue} at the next send window, its time has passed for them")
    if c.first:
        parts.append(f"{c.leads - c.overdue} from {window.describe(c.first)} to {window.describe(c.last)}")
    return line + (": " + "; ".join(parts) if parts else "")


@drip.command("preview", help="The timeline of drip mails with their send dates, after the send window.\n\n"
                              "Examples: mailer drip preview; mailer drip preview --lead anne@example.nl --days 30")
@click.option("--lead", "email", help="A lead's address (default: someone who confirms now).")
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 3650), help="How far ahead.")
@click.option("--sequence", "slug", help="The sequence (default: the one of the lead's, or the default, magnet).")
@click.option("--now", "now", default=None, help="ISO 8601 time to look from (default: the current time).")
def drip_preview(email: str | None, days: int, slug: str | None, now: str | None) -> None:
    from .drip_admin import preview

    services = _services()
    settings = services.settings
    with services.db.read_only() as session:
        lead = _lead(session, email)
        magnet = lead.magnet if lead else services.content.default_magnet.slug
        sequence = services.content.sequences.get(slug) if slug else services.content.sequence_for(magnet)
        if sequence is None:
            raise click.ClickException(f"no sequence {slug!r}" if slug else f"magnet {magnet!r} has no sequence")
        view = preview(session, sequence, settings.drip_window,
                       timedelta(hours=settings.drip_min_gap_hours), _now(now), days, lead)
    click.echo(f"{sequence.slug} for {view.who}: {view.status} (window {settings.drip_window.spec}, "
               f"{settings.drip_window.zone.key})")
    for mail in view.mails:
        when = settings.drip_window.describe(mail.at) if mail.at else "-" * 24
        click.echo(f"  {when:<26} day {mail.day:<4g} {mail.step.key:<28} {mail.note:<22} {mail.step.subject}")
    if not view.mails:
        click.echo("  no mails in this period")


@drip.command("render", help="Write one drip mail as the recipient sees it (.html, or .txt for the text "
                             "part).\n\nExample: mailer drip render lef-en-eigenheid --output lef.html")
@click.argument("step")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lead", "email", help="Use this lead's name (links never name a real lead).")
def drip_render(step: str, output: Path, email: str | None) -> None:
    services = _services()
    sequence, found = _step(services, step)
    with services.db.read_only() as session:
        recipient = _recipient(_lead(session, email))
    mail = services.renderer.render_step(sequence.slug, found.key, recipient)
    output.write_text(mail.text if output.suffix == ".txt" else mail.html, encoding="utf-8")
    click.echo(f"Subject: {mail.subject}")
    for name, value in mail.headers:
        click.echo(f"{name}: {value}")
    click.echo(f"written to {output}")


@click.command("send-test", help="Send one drip mail now, straight through the configured transport, with "
                                 "[TEST] before its subject; no lead or outbox row changes.\n\n"
                                 "Example: mailer send-test lef-en-eigenheid --to me@example.nl")
@click.argument("step")
@click.option("--to", "address", required=True, help="Where to send it.")
@click.option("--lead", "email", help="Use this lead's name (links never name a real lead).")
def send_test(step: str, address: str, email: str | None) -> None:
    from email.utils import make_msgid

    from email_validator import EmailNotValidError, validate_email

    from .errors import DeliveryError
    from .rendering import Recipient, RenderedMail, envelope_sender

    try:
        address = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    services = _services()
    settings = services.settings
    sequence, found = _step(services, step)
    with services.db.read_only() as session:
        shown = _recipient(_lead(session, email))
    mail = services.renderer.render_step(sequence.slug, found.key, shown)
    mail = RenderedMail(f"[TEST] {mail.subject}", mail.text, mail.html, mail.headers)
    domain = envelope_sender(settings.marketing_from or settings.mail_from).rpartition("@")[2]
    envelope = services.envelope(Recipient(shown.lead_id, address, shown.first_name), mail,
                                 make_msgid(domain=domain), marketing=True)
    transport = services.transport()
    try:
        transport.open()
        transport.send_messages([envelope])
    except DeliveryError as exc:
        raise click.ClickException(f"not sent: {exc}") from None
    finally:
        transport.close()
    code, text = getattr(transport, "last_reply", None) or (250, "accepted")
    click.echo(f"sent {sequence.slug}/{found.key} to {address}: {code} {text}")
