"""The embedded shape in one process (`mailer serve`): the web app under waitress, and the
scheduler and sender beside it. The one place where the web part and the workers meet."""

from __future__ import annotations

import errno
import signal
from typing import Callable

from mailer.errors import MailerError
from mailer.operator.accounts import has_operators
from mailer.scheduler import Background
from mailer.services import Services
from mailer.store.migrate import upgrade
from mailer.web import create_app


def serve(services: Services, host: str, port: int, threads: int, announce: Callable[[str], None]) -> None:
    """Run until Ctrl+C or SIGTERM; then finish the mail in flight and give the rest back.
    On SQLite the schema is brought up to date before anything runs (one machine, nothing else
    to run it). A port that cannot be had is a MailerError (one line, naming --port)."""
    import waitress

    settings = services.settings
    try:
        # The socket first: a port in use stops the start before anything else happens (the
        # schema upgrade, the scheduler and the sender). The app does not touch the database
        # until a request comes, and none is served before server.run().
        server = waitress.create_server(create_app(services=services), host=host, port=port, threads=threads,
                                        ident="mailer")
    except OSError as exc:
        raise MailerError(_cannot_listen(host, port, exc)) from None
    except ValueError:  # waitress: a host name it cannot resolve
        raise MailerError(f"cannot listen on {host!r}: not an address of this machine; "
                          "choose one with --host") from None
    try:
        if settings.embedded:
            upgrade(settings.database_url)
        background = Background(services)
    except BaseException:
        server.close()
        raise
    signal.signal(signal.SIGTERM, _exit_cleanly)
    where = settings.mail.path if settings.mail.scheme == "file" else settings.mail.scheme
    announce(f"mailer is running: open {settings.base_url}/  (data in {settings.instance_path}, mail goes to "
             f"{where}; Ctrl+C stops)")
    announce(f"the dashboard is at {settings.base_url}/beheer/" + (
        "" if has_operators(services.db) else "; create its first account: mailer operator add EMAIL --role owner"))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        background.stop()


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line for `mailer serve` that says what to change."""
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another mailer, or another program?): "
                f"stop that, or choose a free port with --port")
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges this user lacks: choose a port above 1023 with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine; choose one with --host"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}; choose another with --port or --host"


def _exit_cleanly(*_) -> None:
    raise SystemExit(0)  # unwinds serve()'s finally: the scheduler finishes its current pass
