"""The `mailer` command: thin click commands that parse, call one function, and report."""

from __future__ import annotations

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


@click.group(help="Self-hosted lead-magnet mailer. Settings come from MAILER_* variables (see README).")
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
    background = _Background(services)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("worker %s started; SIGTERM stops it", background.sender.worker)
    stop.wait()
    background.stop()


@main.command(help="One synchronous pass of all periodic work, as of --now, printing what it did.\n\n"
                   "Example: mailer tick --now 2026-12-01T09:00:00+01:00")
@click.option("--now", "now", default=None, help="ISO 8601 time to act as of (default: the current time).")
def tick(now: str | None) -> None:
    from .clock import SettableClock, utcnow
    from .outbox import Sender
    from .scheduler import periodic_jobs

    moment = _parse_time(now) if now else utcnow()
    services = _services(clock=SettableClock(moment))
    for job in periodic_jobs(services, Sender(services, services.transport())):
        click.echo(f"{job.name}: {job.run() or 'nothing to do'}")


def _exit_cleanly(*_) -> None:
    raise SystemExit(0)  # unwinds serve()'s finally: the scheduler finishes its current pass


class _Background:
    """The scheduler and the sender it drives, stopped together."""

    def __init__(self, services):
        from .outbox import Sender
        from .scheduler import build_scheduler, periodic_jobs

        self.sender = Sender(services, services.transport())
        self.scheduler = build_scheduler(periodic_jobs(services, self.sender))
        self.scheduler.start()

    def stop(self) -> None:
        log.info("stopping: finishing the mail in flight, giving the rest of the claim back")
        self.sender.stop()
        self.scheduler.shutdown(wait=True)



def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


if __name__ == "__main__":
    sys.exit(main())
