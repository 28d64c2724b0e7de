"""`mailer bounces ingest|list|show`: the mail that comes back (bounces and complaints)."""

from __future__ import annotations

import json
import sys

import click

from mailer.cli.common import services

EX_TEMPFAIL = 75  # sysexits.h: the MTA keeps the message and tries again later


@click.group(help="Bounces and complaints: reports that come back (see docs/bounces.md).")
def bounces() -> None:
    pass


@bounces.command("ingest", help="Handle one report read from standard input, as an MTA pipe or alias delivers "
                                "it. Exit status 0 when it was handled or ignored, 75 (EX_TEMPFAIL) when the "
                                "database cannot be reached or a setting is wrong, so the MTA keeps it and "
                                "tries again. The command needs the same MAILER_* settings as the worker.\n\n"
                                "Example (Postfix master.cf): flags=Rq user=mailer argv=/srv/mailer/.venv/bin/mailer "
                                "bounces ingest --to ${recipient}")
@click.option("--to", "envelope_to", help="The address the report was delivered to (the envelope recipient: "
                                          "bounce+TOKEN@...), when the MTA can pass it.")
def bounces_ingest(envelope_to: str | None) -> None:
    from sqlalchemy.exc import DBAPIError

    raw = sys.stdin.buffer.read()
    try:
        built = services(check=False)
        intake = built.intake
    except click.ClickException as exc:  # a setting is wrong: the MTA keeps the report until it is fixed
        click.echo(f"not taken in, try again later: {exc.message}", err=True)
        sys.exit(EX_TEMPFAIL)
    try:
        handled = intake.handle(raw, source="ingest", envelope_to=envelope_to)
    except DBAPIError as exc:  # unreachable, or not upgraded yet (`mailer db upgrade`): keep it for later
        click.echo(f"database: {type(exc.orig).__name__}; not taken in, try again later", err=True)
        sys.exit(EX_TEMPFAIL)
    if handled.duplicate:
        click.echo("already handled: nothing done again")
    else:
        click.echo(f"report {handled.report_id}: {handled.kind}" + (f"; {handled.note}" if handled.note else ""))


@bounces.command("list", help="The newest reports: kind (hard, soft, complaint, unmatched, ignored), "
                              "the lead's address, the status and when.\n\nExample: mailer bounces list --kind hard")
@click.option("--kind", help="Only this kind.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per report (kind, email, status, "
                                                      "received_at, ...), in a list.")
def bounces_list(kind: str | None, limit: int, as_json: bool) -> None:
    from mailer.operator.bounces import reports

    found = reports(services(check=False).db, kind, limit)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no reports")
    for shown in found:
        click.echo(f"{shown['id']:>6}  {shown['received_at'][:19]}  {shown['kind']:<9}  {shown['status'] or '-':<7}  "
                   f"{shown['email'] or shown['recipient'] or '-'}  {shown['note']}")


@bounces.command("show", help="One report whole, with the report as received.\n\nExample: mailer bounces show 12")
@click.argument("report_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True)
def bounces_show(report_id: int, as_json: bool) -> None:
    from mailer.operator.bounces import report

    shown = report(services(check=False).db, report_id)
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    for name in ("id", "kind", "received_at", "source", "format", "email", "recipient", "action", "status",
                 "diagnostic", "matched_by", "outbox_id", "note", "raw_size"):
        click.echo(f"{name:<12} {shown[name] if shown[name] is not None else '-'}")
    click.echo("")
    click.echo(shown["raw"])
