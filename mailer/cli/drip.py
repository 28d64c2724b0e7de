"""`mailer drip plan|preview|render` and `mailer send-test`: seeing what a sequence will do."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailer.cli.common import parse_time, services, write_mail


@click.group(help="Drip sequences: what a change to a sequence file will do, and what a lead will get.")
def drip() -> None:
    pass


@drip.command("plan", help="Compare the sequence files with the enrollments in the database and show what "
                           "a change will do once the service restarts with it.\n\nExample: mailer drip plan")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--now", "now", default=None, callback=parse_time,
              help="ISO 8601 time to plan as of (default: the current time).")
def drip_plan(as_json: bool, now) -> None:
    from mailer.drip.plan import plan_sequences

    built = services(check=False)
    window = built.settings.drip_window
    plans = plan_sequences(built.db, built.content, window, now)
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


@drip.command("preview", help="The timeline of drip mails with their send dates, after the send window "
                              "(holidays and quiet dates included: a mail they move says so).\n\n"
                              "Examples: mailer drip preview; mailer drip preview --lead anne@example.nl --days 30")
@click.option("--lead", "email", help="A lead's address (default: someone who confirms now).")
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 3650), help="How far ahead.")
@click.option("--sequence", "slug", help="The sequence (default: the one of the lead's, or the default, magnet).")
@click.option("--now", "now", default=None, callback=parse_time,
              help="ISO 8601 time to look from (default: the current time).")
def drip_preview(email: str | None, days: int, slug: str | None, now) -> None:
    from mailer.drip.plan import preview_timeline

    built = services(check=False)
    window = built.drip.window
    view = preview_timeline(built.db, built.content, window, built.drip.gap, now, days, email=email, slug=slug)
    click.echo(f"{view.sequence.slug} for {view.who}: {view.status} (window {window.describe_rules()})")
    for mail in view.mails:
        when = window.describe(mail.at) if mail.at else "-" * 24
        click.echo(f"  {when:<26} day {mail.day:<4g} {mail.step.key:<28} {mail.note:<22} {mail.step.subject}")
    if not view.mails:
        click.echo("  no mails in this period")


@drip.command("render", help="Write one drip mail as the recipient sees it (.html, or .txt for the text "
                             "part).\n\nExample: mailer drip render lef-en-eigenheid --output lef.html")
@click.argument("step")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lead", "email", help="Use this lead's name (links never name a real lead).")
def drip_render(step: str, output: Path, email: str | None) -> None:
    from mailer.operator.sending import render_step

    built = services()
    write_mail(render_step(built.db, built.renderer, built.content, step, email), output)


@click.command("send-test", help="Send one drip mail now, straight through the configured transport, with "
                                 "[TEST] before its subject; no lead or outbox row changes.\n\n"
                                 "Example: mailer send-test lef-en-eigenheid --to me@example.nl")
@click.argument("step")
@click.option("--to", "address", required=True, help="Where to send it.")
@click.option("--lead", "email", help="Use this lead's name (links never name a real lead).")
def send_test(step: str, address: str, email: str | None) -> None:
    from mailer.errors import DeliveryError
    from mailer.operator.sending import send_test as send

    built = services()
    try:
        sent = send(built.db, built.composer, built.transport(), built.content, step, address, email)
    except DeliveryError as exc:
        raise click.ClickException(f"not sent: {exc}") from None
    code, text = sent.reply
    click.echo(f"sent {sent.ref.sequence}/{sent.ref.step} to {sent.address}: {code} {text}")
