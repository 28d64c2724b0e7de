"""Writes each message to standard output: for trying things out."""

import sys

from mailer.delivery.transports import Envelope, Transport


class ConsoleTransport(Transport):
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def send_messages(self, messages: list[Envelope]) -> int:
        for envelope in messages:
            self.stream.write(envelope.data.decode("utf-8", "replace"))
            self.stream.write("\n" + "-" * 72 + "\n")
        self.stream.flush()
        return len(messages)
