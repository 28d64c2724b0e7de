"""Provider webhooks: what Amazon SES (through SNS) and Mailgun tell us about our mail, their
signatures checked before a word of it is believed. No Flask here: `mailer/web/hooks.py` reads
the request body, hands it to `Webhooks.receive`, and turns the answer into a status code.

- **Amazon SES, through SNS** (`POST /hooks/ses`). Every SNS message is signed; it counts only
  when the signature checks out against the certificate at `SigningCertURL` (https, on
  `sns.<region>.amazonaws.com[.cn]`, a `.pem`; fetched with a 5 s timeout and kept per URL in
  the process), and when its `TopicArn` is one of MAILER_SES_TOPIC_ARNS. SignatureVersion 1 is
  SHA1withRSA, 2 is SHA256withRSA, over AWS's canonical string ("Key\\nValue\\n" for a fixed
  list of keys). A SubscriptionConfirmation is confirmed by fetching its SubscribeURL (the same
  host rule); an UnsubscribeConfirmation changes nothing. A Notification's Message is SES's
  JSON: one `ProviderEvent` per recipient (event id: the SNS MessageId and the recipient's
  index, so SNS delivering the same message again counts once). Permanent bounces are hard,
  Transient soft; **Undetermined is soft too**: SES could not tell why, so it is counted (the
  soft limit ends mailing an address that keeps failing) but never ends mailing on its own.
  Complaints are complaints; DeliveryDelay is a delay (stored, changes nothing); every other
  notification (Delivery, Send, Open, a test message) is answered 200 and ignored.
- **Mailgun** (`POST /hooks/mailgun`, its JSON "HTTP webhooks"; the legacy form-encoded ones
  are not taken): HMAC-SHA256 of timestamp + token with MAILER_MAILGUN_SIGNING_KEY must equal
  the signature, and the timestamp must be within 15 minutes of our clock. A replayed call
  within those minutes changes nothing: each event is stored once by its `event-data.id`
  (the intake's dedupe). "failed" with severity permanent is hard, temporary soft;
  "complained" is a complaint; everything else is ignored.

What is refused (`Refused`: a missing or bad signature, an unknown topic, a certificate URL
not on AWS, a provider not configured) changes nothing; so does a body that is no JSON object
(`Malformed`). `Unavailable` means we could not reach AWS (its certificate, the SubscribeURL):
the provider should try again. A database outage surfaces as SQLAlchemy's OperationalError or
InterfaceError from the intake, for the same answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import urlsplit

from mailer.bounces.intake import Handled, Intake, ProviderEvent
from mailer.store.tables import BounceKind

log = logging.getLogger("mailer.bounces")

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
FETCH_TIMEOUT = 5.0  # seconds, for the certificate and the SubscribeURL
FETCH_LIMIT = 64 * 1024  # bytes read from either: a certificate is ~2 KB, the confirmation's XML less
MAILGUN_MAX_AGE = 15 * 60  # seconds a Mailgun signature's timestamp may be off our clock

SES_SOURCE = "webhook:ses"
MAILGUN_SOURCE = "webhook:mailgun"

# The keys of the string SNS signs, in its order (AWS: "Verifying the signatures of Amazon SNS messages").
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED_KEYS = {"Notification": _SIGNED_NOTIFICATION, "SubscriptionConfirmation": _SIGNED_CONFIRMATION,
                "UnsubscribeConfirmation": _SIGNED_CONFIRMATION}

_SES_BOUNCE_KINDS = {"Permanent": BounceKind.HARD, "Transient": BounceKind.SOFT, "Undetermined": BounceKind.SOFT}
_MAILGUN_FAILURE_KINDS = {"permanent": BounceKind.HARD, "temporary": BounceKind.SOFT}

Fetch = Callable[[str], bytes]


class Refused(Exception):
    """The call is not the provider's word (unsigned, badly signed, an unknown topic, a
    certificate not on AWS) or the provider is not configured: 401, nothing changed."""


class Malformed(Exception):
    """The body is no JSON object: 400, nothing changed."""


class Unavailable(Exception):
    """We could not reach the provider to check or confirm (its certificate, the
    SubscribeURL): nothing changed; the provider should send it again."""


@dataclass(frozen=True)
class Accepted:
    """What a genuine call did: `what` in a word or two, and the intake's answer per event."""

    what: str
    handled: tuple[Handled, ...] = ()

    def summary(self) -> dict:
        return {"result": self.what,
                "events": [{"kind": h.kind, "report": h.report_id, "duplicate": h.duplicate} for h in self.handled]}


# --- the network edge --------------------------------------------------------------------------

def fetch_url(url: str) -> bytes:
    """GET an https URL (the certificate, the SubscribeURL) within FETCH_TIMEOUT; at most
    FETCH_LIMIT bytes. Raises Unavailable when it cannot."""
    if urlsplit(url).scheme != "https":  # checked by the callers too; never follow anything else
        raise Unavailable(f"not an https URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # https only (checked above)
            return response.read(FETCH_LIMIT)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
        raise Unavailable(f"cannot fetch {url}: {exc}") from exc


class CertificateCache:
    """SNS signing certificates by URL, fetched once per process (AWS rotates them under a new URL)."""

    def __init__(self, fetch: Fetch = fetch_url):
        self._fetch = fetch
        self._certificates: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bytes:
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        pem = self._fetch(url)
        with self._lock:
            if len(self._certificates) >= 32:  # a handful of regions and rotations, never unbounded
                self._certificates.clear()
            self._certificates[url] = pem
        return pem


sns_certificates = CertificateCache()  # the process's cache, the default of every SnsVerifier


# --- Amazon SNS --------------------------------------------------------------------------------

class SnsVerifier:
    """Checks that an SNS message is AWS's, for one of our topics. `fetch_certificate` and
    `host` are the network edge, replaceable in tests."""

    def __init__(self, topic_arns: tuple[str, ...], *, fetch_certificate: Fetch = sns_certificates,
                 host: re.Pattern[str] = SNS_HOST):
        self.topic_arns = frozenset(topic_arns)
        self.fetch_certificate = fetch_certificate
        self.host = host

    def verify(self, message: Mapping) -> None:
        """Raises Refused unless `message` is signed by SNS for one of our topics."""
        if not self.topic_arns:
            raise Refused("no SNS topic is configured (MAILER_SES_TOPIC_ARNS)")
        kind = message.get("Type")
        keys = _SIGNED_KEYS.get(kind) if isinstance(kind, str) else None
        if keys is None:
            raise Refused(f"not an SNS message type we take: {kind!r}")
        if message.get("TopicArn") not in self.topic_arns:
            raise Refused(f"topic {message.get('TopicArn')!r} is not one of MAILER_SES_TOPIC_ARNS")
        version = message.get("SignatureVersion")
        if version not in ("1", "2"):
            raise Refused(f"unknown SignatureVersion {version!r}")
        signature = _signature(message.get("Signature"))
        canonical = _canonical(message, keys)
        cert_url = self.check_url(message.get("SigningCertURL"), "SigningCertURL", suffix=".pem")
        self._check_signature(self.fetch_certificate(cert_url), signature, canonical, version)

    def check_url(self, url, what: str, *, suffix: str = "") -> str:
        """An https URL on SNS's own host (and with the suffix), or Refused."""
        if not isinstance(url, str):
            raise Refused(f"{what} is missing")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused(f"{what} is no URL: {exc}") from exc
        if (parts.scheme != "https" or parts.username is not None or parts.password is not None
                or port not in (None, 443) or not self.host.match(parts.hostname or "")
                or not parts.path.endswith(suffix)):
            raise Refused(f"{what} is not an https URL of Amazon SNS: {url!r}")
        return url

    @staticmethod
    def _check_signature(pem: bytes, signature: bytes, canonical: bytes, version: str) -> None:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as exc:
            raise Refused(f"the signing certificate cannot be read: {exc}") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused("the signing certificate holds no RSA key")
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), hashes.SHA1() if version == "1" else hashes.SHA256())
        except InvalidSignature as exc:
            raise Refused("the SNS signature does not match") from exc


def _signature(value) -> bytes:
    if not isinstance(value, str) or not value:
        raise Refused("the SNS message is not signed")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused("the SNS signature is not base64") from exc


def _canonical(message: Mapping, keys: tuple[str, ...]) -> bytes:
    """The string SNS signs: each key present (Subject only when there is one) and its value,
    each followed by a newline."""
    text = []
    for key in keys:
        value = message.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise Refused(f"the SNS message has no {key}")
        text.append(f"{key}\n{value}\n")
    return "".join(text).encode()


class SesWebhook:
    """SES's notifications, through SNS."""

    def __init__(self, intake: Intake, verifier: SnsVerifier, *, confirm: Fetch = fetch_url):
        self.intake = intake
        self.verifier = verifier
        self.confirm = confirm  # GETs a SubscribeURL (the network edge)

    def receive(self, body: bytes) -> Accepted:
        message = _json_object(body)
        self.verifier.verify(message)
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = self.verifier.check_url(message.get("SubscribeURL"), "SubscribeURL")
            self.confirm(url)
            log.info("SNS subscription to %s confirmed", message["TopicArn"])
            return Accepted("subscription confirmed")
        if kind == "UnsubscribeConfirmation":
            log.warning("SNS says the subscription to %s has ended", message["TopicArn"])
            return Accepted("unsubscribe noted")
        events = ses_events(message, body)
        if not events:
            return Accepted("ignored")
        return Accepted("notification", tuple(self.intake.handle_event(event) for event in events))


def ses_events(notification: Mapping, raw: bytes) -> list[ProviderEvent]:
    """The events of a (verified) SNS notification carrying SES's JSON; none for anything else."""
    try:
        ses = json.loads(notification["Message"])
    except ValueError:
        return []
    if not isinstance(ses, dict):
        return []
    what = ses.get("notificationType") or ses.get("eventType")
    mail = _dict(ses.get("mail"))
    if what == "Bounce":
        bounce = _dict(ses.get("bounce"))
        kind = _SES_BOUNCE_KINDS.get(bounce.get("bounceType"))
        recipients = _list(bounce.get("bouncedRecipients"))
    elif what == "Complaint":
        complaint = _dict(ses.get("complaint"))
        kind, recipients = BounceKind.COMPLAINT, _list(complaint.get("complainedRecipients"))
        feedback = _str(complaint.get("complaintFeedbackType"))
        recipients = [{**_dict(r), "diagnosticCode": _dict(r).get("diagnosticCode") or feedback} for r in recipients]
    elif what == "DeliveryDelay":
        delay = _dict(ses.get("deliveryDelay"))
        kind, recipients = BounceKind.DELAYED, _list(delay.get("delayedRecipients"))
    else:
        return []
    if kind is None:
        return []
    message_id = _ses_message_id(mail)
    envelope_from = _str(mail.get("source"))
    events = []
    for index, recipient in enumerate(recipients):
        recipient = _dict(recipient)
        events.append(ProviderEvent(
            source=SES_SOURCE, event_id=f"{notification['MessageId']}:{index}", kind=kind,
            recipient=_address(recipient.get("emailAddress")), message_id=message_id, envelope_from=envelope_from,
            status=_str(recipient.get("status")), diagnostic=_str(recipient.get("diagnosticCode")), raw=raw))
    return events


def _ses_message_id(mail: dict) -> str | None:
    """Our Message-ID header of the mail: from its headers when SES includes them, else from
    the common headers. (mail.messageId is SES's own id, not ours.)"""
    for header in _list(mail.get("headers")):
        header = _dict(header)
        if _str(header.get("name"), "").lower() == "message-id":
            return _angled(header.get("value"))
    return _angled(_dict(mail.get("commonHeaders")).get("messageId"))


# --- Mailgun -----------------------------------------------------------------------------------

class MailgunWebhook:
    """Mailgun's JSON webhooks, signed with the account's HTTP webhook signing key."""

    def __init__(self, intake: Intake, signing_key: str | None, clock, *, max_age: float = MAILGUN_MAX_AGE):
        self.intake = intake
        self.signing_key = signing_key
        self.clock = clock
        self.max_age = max_age

    def receive(self, body: bytes) -> Accepted:
        payload = _json_object(body)
        self.verify(payload)
        event = mailgun_event(payload, body)
        if event is None:
            return Accepted("ignored")
        return Accepted("event", (self.intake.handle_event(event),))

    def verify(self, payload: Mapping) -> None:
        if not self.signing_key:
            raise Refused("Mailgun is not configured (MAILER_MAILGUN_SIGNING_KEY)")
        signed = _dict(payload.get("signature"))
        timestamp, token, signature = (signed.get(key) for key in ("timestamp", "token", "signature"))
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not all(isinstance(value, str) and value for value in (timestamp, token, signature)):
            raise Refused("the Mailgun call is not signed")
        expected = hmac.new(self.signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
            raise Refused("the Mailgun signature does not match")
        try:
            age = self.clock.now().timestamp() - float(timestamp)
        except ValueError as exc:
            raise Refused("the Mailgun timestamp is no number") from exc
        if not abs(age) <= self.max_age:  # also refuses nan
            raise Refused(f"the Mailgun timestamp is {age:.0f} s off our clock")


def mailgun_event(payload: Mapping, raw: bytes) -> ProviderEvent | None:
    """The event of a (verified) Mailgun call, or None for one we do not act on."""
    data = _dict(payload.get("event-data"))
    what = data.get("event")
    if what == "failed":
        kind = _MAILGUN_FAILURE_KINDS.get(data.get("severity"))
    elif what == "complained":
        kind = BounceKind.COMPLAINT
    else:
        kind = None
    if kind is None:
        return None
    status = _dict(data.get("delivery-status"))
    code = status.get("code")
    text = _str(status.get("message")) or _str(status.get("description"))
    diagnostic = " ".join(str(part) for part in (code, text) if part not in (None, "", 0)) or None
    headers = _dict(_dict(data.get("message")).get("headers"))
    event_id = _str(data.get("id")) or "sha256:" + hashlib.sha256(raw).hexdigest()
    return ProviderEvent(
        source=MAILGUN_SOURCE, event_id=event_id, kind=kind, recipient=_address(data.get("recipient")),
        message_id=_angled(headers.get("message-id")), envelope_from=_str(_dict(data.get("envelope")).get("sender")),
        status=_str(status.get("enhanced-code")), diagnostic=diagnostic, raw=raw)


# --- both --------------------------------------------------------------------------------------

@dataclass
class Webhooks:
    """The provider webhooks the web face serves, by the name in /hooks/<provider>."""

    providers: dict[str, SesWebhook | MailgunWebhook] = field(default_factory=dict)

    @classmethod
    def build(cls, settings, intake: Intake, clock, *, fetch_certificate: Fetch = sns_certificates,
              confirm: Fetch = fetch_url, sns_host: re.Pattern[str] = SNS_HOST) -> Webhooks:
        verifier = SnsVerifier(settings.ses_topic_arns, fetch_certificate=fetch_certificate, host=sns_host)
        return cls({"ses": SesWebhook(intake, verifier, confirm=confirm),
                    "mailgun": MailgunWebhook(intake, settings.mailgun_signing_key, clock)})

    def receive(self, provider: str, body: bytes) -> Accepted:
        """Raises Refused, Malformed or Unavailable (and a database error from the intake)."""
        hook = self.providers.get(provider)
        if hook is None:
            raise Refused(f"no webhook for {provider!r}")
        return hook.receive(body)


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Malformed(f"the body is no JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Malformed("the body is no JSON object")
    return value


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _str(value, default: str | None = None) -> str | None:
    return value if isinstance(value, str) and value else default


def _address(value) -> str | None:
    """The bare address of "Name <addr>" or "addr"."""
    text = _str(value)
    return (parseaddr(text)[1] or text).strip() or None if text else None


def _angled(value) -> str | None:
    """A Message-ID in angle brackets, as we wrote it."""
    text = (_str(value) or "").strip()
    if not text:
        return None
    return text if text.startswith("<") else f"<{text}>"
