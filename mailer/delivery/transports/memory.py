"""Keeps messages in a list: for tests that need no server at all."""

from email import message_from_bytes, policy
from email.message import EmailMessage

from . import Envelope


class MemoryTransport:
    def __init__(self):
        self.outbox: list[Envelope] = []

    def open(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def send_messages(self, messages: list[Envelope]) -> int:
        for envelope in messages:
            # Parse now, so a malformed message fails here as it would at a real server.
            message_from_bytes(envelope.data, policy=policy.SMTP)
            self.outbox.append(envelope)
        return len(messages)

    def parsed(self) -> list[EmailMessage]:
        return [message_from_bytes(e.data, policy=policy.default) for e in self.outbox]
