"""The embedded shape in one process (`mailer serve`): the web app under waitress, and the
scheduler and sender beside it. The one place where the web part and the workers meet."""

from __future__ import annotations

import signal
from typing import Callable

from mailer.scheduler import Background
from mailer.services import Services
from mailer.store.migrate import upgrade
from mailer.web import create_app


def serve(services: Services, host: str, port: int, threads: int, announce: Callable[[str], None]) -> None:
    """Run until Ctrl+C or SIGTERM; then finish the mail in flight and give the rest back.
    On SQLite the schema is brought up to date first (one machine, nothing else to run it)."""
    import waitress

    settings = services.settings
    if settings.embedded:
        upgrade(settings.database_url)
    server = waitress.create_server(create_app(services=services), host=host, port=port, threads=threads,
                                    ident="mailer")
    background = Background(services)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    where = settings.mail.path if settings.mail.scheme == "file" else settings.mail.scheme
    announce(f"mailer is running: open {settings.base_url}/  (data in {settings.instance_path}, mail goes to "
             f"{where}; Ctrl+C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        background.stop()


def _exit_cleanly(*_) -> None:
    raise SystemExit(0)  # unwinds serve()'s finally: the scheduler finishes its current pass
