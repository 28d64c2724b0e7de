"""One transport interface, a base class after Django's BaseEmailBackend: open(), close(),
`with transport:`, send_messages(list) -> int, last_reply, discard(message_ids) -> int.

`send_messages` hands over every message or raises DeliveryError at the first one that
fails, so a caller that wants a result per message (the outbox sender) passes one at a
time inside an opened connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailer.settings import MailURL


@dataclass(frozen=True)
class Envelope:
    """A message ready for the wire: SMTP envelope plus the RFC 5322 bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


class Transport:
    """The base of every transport; subclasses implement send_messages() and override what else
    they need (open/close for a connection, discard() for the copies they keep)."""

    #: The server's answer to the last message handed over; a transport without a server (or
    #: before its first reply) reports this.
    last_reply: tuple[int, str] = (250, "accepted")

    def open(self) -> bool:
        """Open a connection for several send_messages() calls; True only when this call opened
        one. The default has nothing to open."""
        return False

    def close(self) -> None:
        """Close what open() opened; harmless when nothing is open. The default does nothing."""

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    def send_messages(self, messages: list[Envelope]) -> int:
        """Hand over every message and return how many, or raise DeliveryError at the first one
        that fails (those before it have been handed over)."""
        raise NotImplementedError("a Transport subclass must implement send_messages()")

    def discard(self, message_ids: Iterable[str]) -> int:
        """Remove the copies this transport keeps of these messages (by Message-ID), as erasure
        asks; return how many were removed. The default keeps nothing, so removes nothing."""
        return 0


def make_transport(mail: MailURL) -> Transport:
    if mail.is_smtp:
        from mailer.delivery.transports.smtp import SMTPTransport

        return SMTPTransport(mail)
    if mail.scheme == "file":
        from mailer.delivery.transports.file import FileTransport

        return FileTransport(mail.path)
    if mail.scheme == "console":
        from mailer.delivery.transports.console import ConsoleTransport

        return ConsoleTransport()
    from mailer.delivery.transports.memory import MemoryTransport

    return MemoryTransport()
