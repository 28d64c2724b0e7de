"""The `mailer` command: one module per command group, each a thin face over the operator layer."""

from __future__ import annotations

import click

from mailer.cli import bounces, drip, init, leads, newsletter, operators, outbox, run
from mailer.errors import InvalidRequest, MailerError


class _Main(click.Group):
    """The operator layer's errors and database errors end as one line on stderr and exit
    status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

        try:
            return super().invoke(ctx)
        except InvalidRequest as exc:
            raise click.BadParameter(str(exc), param_hint=exc.option) from None
        except MailerError as exc:
            raise click.ClickException(str(exc)) from None
        except DBAPIError as exc:
            reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            hint = " (is MAILER_DATABASE_URL right, and has `mailer db upgrade` run?)" \
                if isinstance(exc, (OperationalError, ProgrammingError)) else ""
            raise click.ClickException(f"database: {reason}{hint}") from None


@click.group(cls=_Main, help="Self-hosted lead-magnet mailer. Settings come from MAILER_* variables (see README).")
def main() -> None:
    pass


COMMANDS = (*run.COMMANDS, outbox.outbox, drip.drip, drip.send_test, *leads.COMMANDS, init.init,
            newsletter.newsletter, bounces.bounces, operators.operator)
for _command in COMMANDS:
    main.add_command(_command)
