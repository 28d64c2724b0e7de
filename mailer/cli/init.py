"""`mailer init DIR`: an editable copy of the content and templates, and the two settings for it."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("init", help="Write an editable copy of the shipped content to DIR/content/ and of the mail and "
                            "page templates to DIR/templates/, and print the two settings that make the "
                            "service use them. A file deleted from the copy is taken from the installed "
                            "package again. Refuses if either folder exists and is not empty.\n\n"
                            "Example: mailer init /srv/mailer")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    from mailer.errors import MailerError
    from mailer.operator.setup import copy_for_editing

    try:
        copied = copy_for_editing(directory)
    except (MailerError, OSError) as exc:  # a refusal, or a folder that cannot be written
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {copied.count(copied.content)} files to {copied.content}")
    click.echo(f"wrote {copied.count(copied.templates)} files to {copied.templates}")
    click.echo("\nPut these two settings in .env (or the environment) of `mailer serve` and `mailer worker`:\n")
    for line in copied.settings:
        click.echo(line)
    click.echo("\nThen edit the copies and restart the service; delete any file you leave unchanged to keep "
               "getting the shipped version.")
