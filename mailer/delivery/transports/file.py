"""Writes each message as an .eml file in a folder: the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

from . import Envelope


class FileTransport:
    def __init__(self, folder: Path):
        self.folder = folder

    def open(self) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        return False

    def close(self) -> None:
        pass

    def send_messages(self, messages: list[Envelope]) -> int:
        self.open()
        for envelope in messages:
            self._write(envelope)
        return len(messages)

    def _write(self, envelope: Envelope) -> None:
        # Named after the Message-ID, so a retried message overwrites itself instead of doubling.
        final = self.folder / eml_name(envelope.message_id)
        partial = self.folder / f".{final.name}.tmp"
        with open(partial, "wb") as handle:
            handle.write(envelope.data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)  # readers never see half a message


def eml_name(message_id: str) -> str:
    """The file a message is written to, from its Message-ID (erasure finds it again)."""
    return message_id.strip("<>").replace("/", "_").replace("@", "_at_") + ".eml"
