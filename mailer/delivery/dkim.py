"""Optional DKIM signing (dkimpy), for a relay that does not sign on our behalf."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import SettingsError

# Signed when present; From is required by RFC 6376, and RFC 8058 wants List-Unsubscribe and
# List-Unsubscribe-Post covered, or receivers ignore the one-click header.
SIGNED_HEADERS = [b"from", b"reply-to", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
                  b"list-id", b"list-unsubscribe", b"list-unsubscribe-post"]


@dataclass(frozen=True)
class DKIMSigner:
    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def from_settings(cls, selector: str, domain: str, key_file: Path) -> "DKIMSigner":
        if importlib.util.find_spec("dkim") is None:  # checked at start-up, not at the first mail
            raise SettingsError("MAILER_DKIM_KEY_FILE needs dkimpy: pip install -e '.[dkim]'")
        try:
            key = key_file.read_bytes()
        except OSError as exc:
            raise SettingsError(f"MAILER_DKIM_KEY_FILE: cannot read {key_file}: {exc.strerror}") from None
        signer = cls(selector, domain, key)
        try:  # a key dkimpy cannot use must stop the start, not fail every mail later
            signer.sign(b"From: a@" + domain.encode() + b"\r\nSubject: test\r\n\r\nbody\r\n")
        except Exception as exc:
            raise SettingsError(f"MAILER_DKIM_KEY_FILE: {key_file} cannot sign: {exc}") from None
        return signer

    def sign(self, message: bytes, domain: str | None = None) -> bytes:
        """The message with a DKIM-Signature header in front, for `domain` (default: ours)."""
        import dkim

        header = dkim.sign(message, self.selector.encode(), (domain or self.domain).encode(), self.private_key,
                           include_headers=[h for h in SIGNED_HEADERS if _has_header(message, h)])
        return header + message


def _has_header(message: bytes, name: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(name + b":") or (b"\r\n" + name + b":") in head
