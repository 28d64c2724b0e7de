"""`mailer operator`: the accounts that log in to the dashboard (/beheer/)."""

from __future__ import annotations

import sys

import click

from mailer.cli.common import services
from mailer.clock import utcnow

ROLES = ["owner", "editor", "viewer"]


def _password(confirm: bool = True) -> str:
    """Asked twice (hidden) on a terminal; one line of standard input otherwise, for scripts."""
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise click.UsageError("no password on standard input (one line)")
    return line.rstrip("\r\n")


def _audit(db, action: str, email: str, detail: str) -> None:
    """Managing operators from the command line is an audit row too, as in the dashboard."""
    from mailer.operator.audit import command_line, record

    record(db, command_line(), action, utcnow(), target=f"operator {email}", detail=detail)


@click.group("operator", help="""Who may log in to the dashboard (/beheer/), and as what.

\b
Roles: viewer (reads), editor (also retries, cancels, sends tests, schedules newsletters),
owner (also erases people, exports leads, manages operators, resumes paused marketing).

\b
Examples:
  mailer operator add anne@trainingsbureau.nl --role owner
  echo "$PASSWORD" | mailer operator add bot@trainingsbureau.nl --role viewer
  mailer operator passwd anne@trainingsbureau.nl
  mailer operator list""")
def operator() -> None:
    pass


@operator.command("add", help="Add an operator; the password is asked twice (or read as one line from stdin).")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
def operator_add(email: str, role: str) -> None:
    from mailer.operator.accounts import add

    db = services(check=False).db
    added = add(db, email, _password(), role, utcnow())
    _audit(db, "operators.add", added.email, f"role {added.role}")
    click.echo(f"{added.email} added as {added.role}")


@operator.command("passwd", help="Set a new password; every session of the operator ends.")
@click.argument("email")
def operator_passwd(email: str) -> None:
    from mailer.operator.accounts import set_password

    db = services(check=False).db
    ended = set_password(db, email, _password(), utcnow())
    _audit(db, "operators.passwd", email, f"{ended} session(s) ended")
    click.echo(f"password changed; {ended} session(s) ended")


@operator.command("remove", help="Remove an operator and end their sessions (not the last owner).")
@click.argument("email")
def operator_remove(email: str) -> None:
    from mailer.operator.accounts import remove

    db = services(check=False).db
    removed = remove(db, email)
    _audit(db, "operators.remove", removed.email, "their sessions ended")
    click.echo(f"{removed.email} removed")


@operator.command("reset-2fa", help="Switch off the second factor of an operator who lost the app and the "
                                    "recovery codes; their sessions end.")
@click.argument("email")
def operator_reset_2fa(email: str) -> None:
    from mailer.operator.accounts import reset_second_factor

    db = services(check=False).db
    reset = reset_second_factor(db, email)
    _audit(db, "operators.reset_2fa", reset.email, "their sessions ended")
    click.echo(f"second factor of {reset.email} switched off; they can set it up again after logging in")


@operator.command("list", help="Every operator: role, second factor, last login, open sessions.")
def operator_list() -> None:
    from datetime import timedelta

    from mailer.operator.accounts import operators

    built = services(check=False)
    settings = built.settings
    found = operators(built.db, utcnow(), timedelta(minutes=settings.admin_idle_minutes),
                      timedelta(hours=settings.admin_session_hours))
    if not found:
        click.echo("no operators yet: mailer operator add EMAIL --role owner", err=True)
    for o in found:
        last = f"{o.last_login_at:%Y-%m-%d %H:%M}" if o.last_login_at else "never"
        click.echo(f"{o.email:<40} {o.role:<7} 2fa {'on ' if o.totp else 'off'}  last login {last:<16}  "
                   f"sessions {o.sessions}")
