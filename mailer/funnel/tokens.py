"""Signed links, one salt per purpose, each with its own maximum age.

Keys rotate: MAILER_SECRET_KEY lists keys newest first; the newest signs, all verify,
so links already sent keep working until they expire.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from mailer.errors import InvalidLink

CONFIRM = "confirm"
DOWNLOAD = "download"
CONSENT = "consent"  # a confirmed lead confirming marketing consent given later
UNSUBSCRIBE = "unsubscribe"  # no maximum age: an unsubscribe link works as long as the mail exists
# A newsletter's unsubscribe link (its own salt: it cannot pass for the link that ends all mail)
NEWSLETTER_UNSUBSCRIBE = "newsletter-unsubscribe"
CLICK = "click"
FORM_TIME = "form-time"
# A form page older than this is shown again: its token cannot be replayed by a bot for ever.
FORM_MAX_AGE_SECONDS = 12 * 3600


@dataclass(frozen=True)
class LeadLink:
    """What a confirm or download link names: a lead, for one magnet, signed at a moment."""

    lead_id: int
    magnet: str
    fingerprint: str
    issued_at: datetime

    def check_age(self, now: datetime, max_age_seconds: int) -> "LeadLink":
        """Return self, or raise InvalidLink('expired') once the link is older than allowed."""
        if (now - self.issued_at).total_seconds() > max_age_seconds:
            raise InvalidLink("expired", magnet=self.magnet)
        return self


@dataclass(frozen=True)
class ClickLink:
    """What a tracked link in a drip mail names: who, in which mail, which named link."""

    lead_id: int
    sequence: str
    step: str
    link: str
    fingerprint: str


def fingerprint(email: str) -> str:
    """A short hash of the address: a link for an erased lead never fits a new lead."""
    return hashlib.blake2s(email.encode(), digest_size=6).hexdigest()


class Signer:
    def __init__(self, secret_keys: tuple[str, ...], clock):
        # itsdangerous signs with the last key of the list and accepts any of them.
        self._keys = list(reversed(secret_keys))
        self._clock = clock
        self._serializers: dict[str, URLSafeTimedSerializer] = {}

        class _ClockSigner(TimestampSigner):
            def get_timestamp(inner) -> int:  # our clock, so a settable clock ages links too
                return int(clock.now().timestamp())

        self._signer_class = _ClockSigner

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        if purpose not in self._serializers:
            self._serializers[purpose] = URLSafeTimedSerializer(
                self._keys, salt=f"mailer.{purpose}", signer=self._signer_class
            )
        return self._serializers[purpose]

    def lead_link(self, purpose: str, lead_id: int, magnet: str, email: str) -> str:
        return self._serializer(purpose).dumps([lead_id, magnet, fingerprint(email)])

    def read_lead_link(self, purpose: str, token: str) -> LeadLink:
        """Return what a genuine token names, or raise InvalidLink (tampered, other purpose, malformed)."""
        payload, signed_at = self._load(purpose, token)
        try:
            lead_id, magnet, print_ = payload
            return LeadLink(int(lead_id), str(magnet), str(print_), signed_at)
        except (TypeError, ValueError):
            raise InvalidLink("malformed") from None

    def click_link(self, lead_id: int, sequence: str, step: str, link: str, email: str) -> str:
        return self._serializer(CLICK).dumps([lead_id, sequence, step, link, fingerprint(email)])

    def read_click_link(self, token: str) -> ClickLink:
        """What a genuine click token names, or InvalidLink. It carries a link *name*: the
        address it leads to is looked up in the content, never taken from the request."""
        payload, _ = self._load(CLICK, token)
        try:
            lead_id, sequence, step, link, print_ = payload
            return ClickLink(int(lead_id), str(sequence), str(step), str(link), str(print_))
        except (TypeError, ValueError):
            raise InvalidLink("malformed") from None

    def form_time(self) -> str:
        """A token that says when a form was shown (to the fraction of a second)."""
        return self._serializer(FORM_TIME).dumps(self._clock.now().timestamp())

    def form_age(self, token: str) -> float:
        """Seconds since the form was shown; InvalidLink if the token is not ours or too old."""
        payload, signed_at = self._load(FORM_TIME, token)
        if (self._clock.now() - signed_at).total_seconds() > FORM_MAX_AGE_SECONDS:
            raise InvalidLink("expired")
        try:
            return self._clock.now().timestamp() - float(payload)
        except (TypeError, ValueError):
            raise InvalidLink("malformed") from None

    def _load(self, purpose: str, token: str):
        try:
            return self._serializer(purpose).loads(token, return_timestamp=True)
        except BadSignature:  # includes a token signed for another purpose (other salt)
            raise InvalidLink("invalid") from None
