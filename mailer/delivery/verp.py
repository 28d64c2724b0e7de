"""The envelope sender that names its mail: bounce+TOKEN@DOMAIN (VERP), with MAILER_BOUNCE_ADDRESS.

A bounce goes back to the envelope sender (Return-Path), so the address it arrives at tells
which outbox row bounced, without trusting anything in the report's body. TOKEN is the row id
and a short HMAC of it with the secret key (`<id in base 36>.<10 hex>`): a stranger cannot make
a token for another row, so a forged bounce cannot mark anyone undeliverable. Older keys
(MAILER_SECRET_KEY is newest first) are still accepted, so a key rotation keeps the tokens of
mail already out readable.
"""

from __future__ import annotations

import hashlib
import hmac
import re

MAC_CHARS = 10  # 40 bits: guessing one row's token takes ~10^12 tries, each a mail to us
_TOKEN = re.compile(r"^([0-9a-z]{1,13})\.([0-9a-f]{%d})$" % MAC_CHARS)


def _mac(key: str, row_id: int) -> str:
    return hmac.new(key.encode(), f"bounce:{row_id}".encode(), hashlib.sha256).hexdigest()[:MAC_CHARS]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


class BounceAddresses:
    """Makes and reads the per-mail envelope senders of one MAILER_BOUNCE_ADDRESS."""

    def __init__(self, base: str, keys: tuple[str, ...]):
        self.local, _, self.domain = base.lower().rpartition("@")
        self.keys = keys

    def for_row(self, row_id: int) -> str:
        return f"{self.local}+{_base36(row_id)}.{_mac(self.keys[0], row_id)}@{self.domain}"

    def row_of(self, address: str) -> int | None:
        """The outbox row an address names, or None: another address, no token, or a token
        whose signature is wrong under every key."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        base, plus, token = local.partition("+")
        if domain != self.domain or base != self.local or not plus:
            return None
        found = _TOKEN.match(token)
        if found is None:
            return None
        row_id = int(found[1], 36)
        if any(hmac.compare_digest(found[2], _mac(key, row_id)) for key in self.keys):
            return row_id
        return None

    def is_ours(self, address: str) -> bool:
        """Whether the address is the bounce address or one of its +TOKEN forms (signed or not)."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        return domain == self.domain and local.partition("+")[0] == self.local
