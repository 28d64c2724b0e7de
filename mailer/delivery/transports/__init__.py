"""One transport interface: open(), close(), send_messages(list) -> int.

`send_messages` hands over every message or raises DeliveryError at the first one that
fails, so a caller that wants a result per message (the outbox sender) passes one at a
time inside an opened connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..settings import MailURL


@dataclass(frozen=True)
class Envelope:
    """A message ready for the wire: SMTP envelope plus the RFC 5322 bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


class Transport(Protocol):
    def open(self) -> bool: ...

    def close(self) -> None: ...

    def send_messages(self, messages: list[Envelope]) -> int: ...


def make_transport(mail: MailURL) -> Transport:
    if mail.is_smtp:
        from .smtp import SMTPTransport

        return SMTPTransport(mail)
    if mail.scheme == "file":
        from .file import FileTransport

        return FileTransport(mail.path)
    if mail.scheme == "console":
        from .console import ConsoleTransport

        return ConsoleTransport()
    from .memory import MemoryTransport

    return MemoryTransport()
