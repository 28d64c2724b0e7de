"""`mailer outbox`: look at the outbox, put failed mail back, cancel, resume marketing."""

from __future__ import annotations

import json

import click

from mailer.cli.common import services
from mailer.store.tables import OutboxStatus

STATUSES = [status.value for status in OutboxStatus]


@click.group(invoke_without_command=True,
             help="Look at and act on the outbox. Without a subcommand: counts by status.\n\n"
                  "Examples: mailer outbox; mailer outbox list --status failed; mailer outbox retry --all-failed")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from mailer.operator.bounces import warnings
    from mailer.operator.outbox import overview

    built = services(check=False)
    view = overview(built.db)
    warned = warnings(built.db, now=built.clock.now())
    pause = view.marketing_paused
    if as_json:
        paused = {"since": pause.since.isoformat(), "reason": pause.reason} if pause else None
        click.echo(json.dumps({"counts": {s.value: n for s, n in view.counts.items() if n}, "marketing_paused": paused,
                               "warnings": warned}))
        return
    for status, count in view.counts.items():
        click.echo(f"{status.value:<10} {count:>8}")
    if pause:
        click.echo(f"\nmarketing mail is PAUSED since {pause.since:%Y-%m-%d %H:%M} UTC: {pause.reason}\n"
                   "fix the cause, then: mailer outbox resume")
    for warning in warned:
        click.echo(f"\nWARNING {warning}")


@outbox.command("list", help="Rows in a status, newest first, with the last reply.\n\n"
                             "Example: mailer outbox list --status deferred --status failed")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Repeat for several. [default: deferred, failed]")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outbox_list(statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    from mailer.operator.outbox import NEEDS_A_LOOK, rows

    chosen = tuple(OutboxStatus(s) for s in statuses) or NEEDS_A_LOOK
    found = rows(services(check=False).db, chosen, limit)
    for row in found:
        if as_json:
            click.echo(json.dumps({
                "id": row.id, "kind": row.kind, "recipient": row.recipient, "status": row.status,
                "attempts": row.attempts, "next_attempt_at": row.next_attempt_at.isoformat(),
                "last_error": row.last_error,
            }))
        else:
            click.echo(f"{row.id:>7}  {row.status:<9} {row.kind:<8} {row.recipient:<32} "
                       f"tries {row.attempts:<2} next {row.next_attempt_at:%Y-%m-%d %H:%M}  {row.last_error or ''}")
    if not found and not as_json:
        click.echo(f"no rows in {', '.join(s.value for s in chosen)}", err=True)


@outbox.command("retry", help="Put failed (or, by id, cancelled) mail back in the queue.\n\n"
                              "Examples: mailer outbox retry 12 15; mailer outbox retry --all-failed")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True,
              help="Every failed row (cancelled rows only by id; never an undeliverable address).")
def outbox_retry(ids: tuple[int, ...], all_failed: bool) -> None:
    from mailer.clock import utcnow
    from mailer.operator.outbox import retry

    if bool(ids) == all_failed:
        raise click.UsageError("give row ids, or --all-failed")
    changed = retry(services(check=False).db, None if all_failed else list(ids), utcnow())
    click.echo(f"{changed.count} row(s) queued again")
    if changed.refused:
        raise click.ClickException(f"{len(changed.refused)} of the ids are not failed or cancelled rows: "
                                   f"{' '.join(map(str, changed.refused))}")


@outbox.command("cancel", help="Cancel mail that has not gone out.\n\nExample: mailer outbox cancel 12 15")
@click.argument("ids", nargs=-1, type=int, required=True)
def outbox_cancel(ids: tuple[int, ...]) -> None:
    from mailer.operator.outbox import cancel

    changed = cancel(services(check=False).db, list(ids))
    click.echo(f"{changed.count} row(s) cancelled")
    if changed.refused:
        raise click.ClickException(f"{len(changed.refused)} of the ids are not queued, deferred or failed: "
                                   f"{' '.join(map(str, changed.refused))}")


@outbox.command("resume", help="Lift the marketing pause set by a relay's policy refusal (5.7.x).")
def outbox_resume() -> None:
    from mailer.operator.outbox import resume

    click.echo("marketing mail resumed" if resume(services(check=False).db) else "marketing mail was not paused")
