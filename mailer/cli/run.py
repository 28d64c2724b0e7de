"""The `mailer` command: thin click commands that parse, call one function, and report."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime, timezone

import click

from .errors import MailerError

log = logging.getLogger("mailer")


def _services(clock=None, defaults=None):
    from .services import build_services

    try:
        return build_services(clock=clock, defaults=defaults)
    except MailerError as exc:
        raise click.ClickException(str(exc)) from None


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class _Main(click.Group):
    """Database errors end as one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

        try:
            return super().invoke(ctx)
        except DBAPIError as exc:
            reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            hint = " (is MAILER_DATABASE_URL right, and has `mailer db upgrade` run?)" \
                if isinstance(exc, (OperationalError, ProgrammingError)) else ""
            raise click.ClickException(f"database: {reason}{hint}") from None


@click.group(cls=_Main, help="Self-hosted lead-magnet mailer. Settings come from MAILER_* variables (see README).")
def main() -> None:
    pass


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply the migrations to MAILER_DATABASE_URL.\n\nExample: mailer db upgrade")
def db_upgrade() -> None:
    from .migrate import upgrade

    services = _services()
    upgrade(services.settings.database_url)
    click.echo(f"database is up to date ({services.db.engine.url.render_as_string(hide_password=True)})")


@main.group(invoke_without_command=True,
            help="Look at and act on the outbox. Without a subcommand: counts by status.\n\n"
                 "Examples: mailer outbox; mailer outbox list --status failed; mailer outbox retry --all-failed")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from .outbox_admin import overview

    services = _services()
    with services.db.read_only() as session:
        view = overview(session)
    pause = view.marketing_paused
    if as_json:
        paused = {"since": pause.since.isoformat(), "reason": pause.reason} if pause else None
        click.echo(json.dumps({"counts": view.counts, "marketing_paused": paused}))
        return
    for status in ("queued", "sending", "deferred", "sent", "failed", "cancelled"):
        click.echo(f"{status:<10} {view.counts.get(status, 0):>8}")
    if pause:
        click.echo(f"\nmarketing mail is PAUSED since {pause.since:%Y-%m-%d %H:%M} UTC: {pause.reason}\n"
                   "fix the cause, then: mailer outbox resume")


@outbox.command("list", help="Rows in a status, newest first, with the last reply.\n\n"
                             "Example: mailer outbox list --status deferred --status failed")
@click.option("--status", "statuses", multiple=True, default=("deferred", "failed"), show_default=True,
              type=click.Choice(["queued", "sending", "deferred", "sent", "failed", "cancelled"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outbox_list(statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    from .outbox_admin import rows

    services = _services()
    with services.db.read_only() as session:
        found = rows(session, list(statuses), limit)
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
        click.echo(f"no rows in {', '.join(statuses)}", err=True)


@outbox.command("retry", help="Put failed (or, by id, cancelled) mail back in the queue.\n\n"
                              "Examples: mailer outbox retry 12 15; mailer outbox retry --all-failed")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Every failed row (cancelled rows only by id; never an undeliverable address).")
def outbox_retry(ids: tuple[int, ...], all_failed: bool) -> None:
    from .clock import utcnow
    from .outbox_admin import requeue

    if bool(ids) == all_failed:
        raise click.UsageError("give row ids, or --all-failed")
    services = _services()
    with services.db.transaction() as session:
        count = requeue(session, None if all_failed else list(ids), utcnow())
    click.echo(f"{count} row(s) queued again")
    if ids and count < len(ids):
        raise click.ClickException(f"{len(ids) - count} of the ids are not failed or cancelled rows")


@outbox.command("cancel", help="Cancel mail that has not gone out.\n\nExample: mailer outbox cancel 12 15")
@click.argument("ids", nargs=-1, type=int, required=True)
def outbox_cancel(ids: tuple[int, ...]) -> None:
    from .outbox_admin import cancel

    services = _services()
    with services.db.transaction() as session:
        count = cancel(session, list(ids), "cancelled by an operator")
    click.echo(f"{count} row(s) cancelled")
    if count < len(ids):
        raise click.ClickException(f"{len(ids) - count} of the ids are not queued, deferred or failed")


@outbox.command("resume", help="Lift the marketing pause set by a relay's policy refusal (5.7.x).")
def outbox_resume() -> None:
    from .queries import resume_marketing

    services = _services()
    with services.db.transaction() as session:
        lifted = resume_marketing(session)
    click.echo("marketing mail resumed" if lifted else "marketing mail was not paused")


@main.command(help="Run everything in one process: web, scheduler and sender.\n\nExample: mailer serve --port 8000")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int, help="Web request threads.")
def serve(host: str, port: int, threads: int) -> None:
    import waitress

    from . import create_app
    from .migrate import upgrade

    _logging()
    # Without MAILER_BASE_URL, links in mails point at this server (on the embedded default).
    visible_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    services = _services(defaults={"MAILER_BASE_URL": f"http://{visible_host}:{port}"})
    if services.settings.embedded:
        upgrade(services.settings.database_url)
    app = create_app(services=services)
    server = waitress.create_server(app, host=host, port=port, threads=threads, ident="mailer")
    background = _Background(services)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = services.settings
    where = settings.mail.path if settings.mail.scheme == "file" else settings.mail.scheme
    click.echo(f"mailer is running: open {settings.base_url}/  (mail goes to {where}; Ctrl+C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        background.stop()


@main.command(help="Run the scheduler and the sender without the web part (safe to run several).\n\n"
                   "Example: MAILER_DATABASE_URL=postgresql://mailer@db/mailer mailer worker")
def worker() -> None:
    _logging()
    services = _services()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before any mail is claimed
        signal.signal(signum, lambda *_: stop.set())
    background = _Background(services)
    log.info("worker started with %d sender(s); SIGTERM stops it", len(background.senders))
    stop.wait()
    background.stop()


@main.command(help="One synchronous pass of all periodic work, as of --now, printing what it did.\n\n"
                   "Example: mailer tick --now 2026-12-01T09:00:00+01:00")
@click.option("--now", "now", default=None, help="ISO 8601 time to act as of (default: the current time).")
def tick(now: str | None) -> None:
    from .clock import SettableClock, utcnow
    from .scheduler import periodic_jobs

    moment = _parse_time(now) if now else utcnow()
    services = _services(clock=SettableClock(moment))
    for job in periodic_jobs(services, services.senders()):
        click.echo(f"{job.name}: {job.run() or 'nothing to do'}")


def _register_more() -> None:
    from .cli_drip import drip, send_test
    from .cli_leads import COMMANDS

    for command in (drip, send_test, *COMMANDS):
        main.add_command(command)


_register_more()


def _exit_cleanly(*_) -> None:
    raise SystemExit(0)  # unwinds serve()'s finally: the scheduler finishes its current pass


class _Background:
    """The scheduler and the sender it drives, stopped together."""

    def __init__(self, services):
        from .scheduler import build_scheduler, periodic_jobs

        self.senders = services.senders()
        self.scheduler = build_scheduler(periodic_jobs(services, self.senders))
        self.scheduler.start()

    def stop(self) -> None:
        log.info("stopping: finishing the mail in flight, giving the rest of the claim back")
        for sender in self.senders:
            sender.stop()
        self.scheduler.shutdown(wait=True)



def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


if __name__ == "__main__":
    sys.exit(main())
