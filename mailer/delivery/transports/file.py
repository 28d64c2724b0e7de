"""Writes each message as an .eml file in a folder: the embedded default."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mailer.delivery.transports import Envelope, Transport


class FileTransport(Transport):
    def __init__(self, folder: Path):
        self.folder = folder

    def open(self) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        return False

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

    def discard(self, message_ids: Iterable[str]) -> int:
        """Delete the .eml files of these messages (and any half-written leftover); a file
        already gone is fine. Returns how many .eml files were deleted."""
        removed = 0
        for message_id in set(message_ids):
            final = self.folder / eml_name(message_id)
            (self.folder / f".{final.name}.tmp").unlink(missing_ok=True)
            try:
                final.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed


def eml_name(message_id: str) -> str:
    """The file a message is written to, from its Message-ID (erasure finds it again)."""
    return message_id.strip("<>").replace("/", "_").replace("@", "_at_") + ".eml"
