"""What every command module shares: building the services, dates and times from options,
and writing a file safely. (Errors become one line in mailer/cli/__init__.py.)"""

from __future__ import annotations

import logging
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import click

from mailer.clock import utcnow
from mailer.errors import MailerError

log = logging.getLogger("mailer")


def services(clock=None, defaults: dict[str, str] | None = None, check: bool = True):
    """The services from the environment. `check=False` for commands that only read and write
    the database (export, stats, lead ...): they start without the mail templates."""
    from mailer.services import Services
    from mailer.settings import Settings

    try:
        built = Services(Settings.from_env(defaults=defaults), clock)
        return built.check() if check else built
    except MailerError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def parse_time(_ctx=None, _param=None, value: str | None = None) -> datetime:
    """An option's ISO 8601 time (UTC when it names no zone); the current time when absent."""
    if value is None:
        return utcnow()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def day_option(_ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-12-01", param=param) from None


class Output:
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


def write_mail(mail, output: Path) -> None:
    """A rendered mail to a file (the text part for .txt, else the HTML), and its headers."""
    output.write_text(mail.text if output.suffix == ".txt" else mail.html, encoding="utf-8")
    click.echo(f"Subject: {mail.subject}")
    for name, value in mail.headers:
        click.echo(f"{name}: {value}")
    click.echo(f"written to {output}")
