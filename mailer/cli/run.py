"""`mailer serve`, `mailer worker`, `mailer tick` and `mailer db upgrade`: running the service."""

from __future__ import annotations

import logging
import signal
import threading

import click

from mailer.cli.common import parse_time, services, setup_logging

log = logging.getLogger("mailer")


@click.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply the migrations to MAILER_DATABASE_URL.\n\nExample: mailer db upgrade")
def db_upgrade() -> None:
    from mailer.store.migrate import upgrade

    where = upgrade(services(check=False).settings.database_url)
    click.echo(f"database is up to date ({where})")


@click.command(help="Run everything in one process: web, scheduler and sender.\n\nExample: mailer serve --port 8000")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int, help="Web request threads.")
def serve(host: str, port: int, threads: int) -> None:
    from mailer.embedded import serve as run

    setup_logging()
    # Without MAILER_BASE_URL, links in mails point at this server (on the embedded default).
    visible_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    run(services(defaults={"MAILER_BASE_URL": f"http://{visible_host}:{port}"}), host, port, threads, click.echo)


@click.command(help="Run the scheduler and the sender without the web part (safe to run several).\n\n"
                    "Example: MAILER_DATABASE_URL=postgresql://mailer@db/mailer mailer worker")
def worker() -> None:
    from mailer.scheduler import Background

    setup_logging()
    built = services()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before any mail is claimed
        signal.signal(signum, lambda *_: stop.set())
    background = Background(built)
    log.info("worker started with %d sender(s); SIGTERM stops it", len(background.senders))
    stop.wait()
    background.stop()


@click.command(help="One synchronous pass of all periodic work, as of --now, printing what it did.\n\n"
                    "Example: mailer tick --now 2026-12-01T09:00:00+01:00")
@click.option("--now", "now", default=None, callback=parse_time, help="ISO 8601 time to act as of (default: now).")
def tick(now) -> None:
    from mailer.clock import SettableClock
    from mailer.scheduler import run_once

    for name, result in run_once(services(clock=SettableClock(now))):
        click.echo(f"{name}: {result or 'nothing to do'}")


COMMANDS = (serve, worker, tick, db)
