"""Keeps messages in a list: for tests that need no server at all."""

from collections.abc import Iterable
from email import message_from_bytes, policy
from email.message import EmailMessage

from mailer.delivery.transports import Envelope, Transport


class MemoryTransport(Transport):
    def __init__(self):
        self.outbox: list[Envelope] = []

    def send_messages(self, messages: list[Envelope]) -> int:
        for envelope in messages:
            # Parse now, so a malformed message fails here as it would at a real server.
            message_from_bytes(envelope.data, policy=policy.SMTP)
            self.outbox.append(envelope)
        return len(messages)

    def discard(self, message_ids: Iterable[str]) -> int:
        wanted = set(message_ids)
        kept = [e for e in self.outbox if e.message_id not in wanted]
        removed = len(self.outbox) - len(kept)
        self.outbox[:] = kept  # the same list: a test holding it sees the removal
        return removed

    def parsed(self) -> list[EmailMessage]:
        return [message_from_bytes(e.data, policy=policy.default) for e in self.outbox]
