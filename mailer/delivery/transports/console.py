"""Writes each message to standard output: for trying things out."""

import sys

from . import Envelope


class ConsoleTransport:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def open(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def send_messages(self, messages: list[Envelope]) -> int:
        for envelope in messages:
            self.stream.write(envelope.data.decode("utf-8", "replace"))
            self.stream.write("\n" + "-" * 72 + "\n")
        self.stream.flush()
        return len(messages)
