"""What a mail that came back says: a delivery report, a complaint, an auto-reply, or nothing.

`parse()` turns the raw bytes of one incoming message into plain data and decides nothing:
whether a failure makes a lead undeliverable, and which outbox row it belongs to, is the
caller's business. It never raises, because a bounce mailbox receives whatever strangers send
to it, and one bad message must not stop the next (issue 12, "bad input breaks nothing").

Three kinds of report are understood:

- RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status), read
  field by field from their message/delivery-status part;
- RFC 5965 feedback reports (ARF, report-type=feedback-report): a recipient's "this is spam";
- the non-standard bounces of Exchange, qmail, Exim and friends, recognised by flufl.bounce
  (GNU Mailman's detectors), with the status code taken from the text.

A report is looked for before an auto-reply: MTAs mark their DSNs `Auto-Submitted:
auto-replied` (RFC 3834) too, and a DSN so marked is still a bounce.

The email package's compat32 policy is used: it never raises while parsing and leaves header
values as they came; `policy.default` raises on some malformed headers when they are read.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

# Only the start of a message is read: reports are small, their attached original may not be,
# and a 50 MB attachment sent to the bounce address must not cost 50 MB of parsing.
MAX_BYTES = 1024 * 1024
MAX_DIAGNOSTIC = 1000

KINDS = ("dsn", "arf", "nonstandard", "autoreply", "unknown", "provider")  # provider: a webhook event, not a message


@dataclass(frozen=True)
class Failure:
    """One recipient a report is about."""

    recipient: str | None   # lowercased address; None if the report does not say
    action: str             # DSN Action ("failed", "delayed", ...); non-standard: "failed" or "delayed"
    status: str | None      # "5.1.1", "4.2.2", ...; None when the report gives none
    diagnostic: str | None  # the remote server's words, at most MAX_DIAGNOSTIC characters


@dataclass(frozen=True)
class Parsed:
    """Everything the bounce handling needs from one incoming message."""

    kind: str                        # one of KINDS
    message_id: str | None           # the report's own Message-ID: a report is stored once
    original_message_id: str | None  # Message-ID of the mail the report is about
    failures: tuple[Failure, ...]    # one per recipient; empty for autoreply and unknown
    feedback_type: str | None        # ARF Feedback-Type, lowercased
    addressed_to: tuple[str, ...]    # where the report was delivered (VERP): Delivered-To, X-Original-To, Envelope-To, To
    subject: str                     # decoded, "" if none
    # The Return-Path of the attached original: its envelope sender, bounce+TOKEN@... A
    # feedback loop sends its reports to a registered address, not to the envelope sender, so a
    # complaint carries its signed token only there.
    original_return_path: str | None = None


def parse(raw: bytes) -> Parsed:
    """Read one incoming message; never raises, whatever the bytes are."""
    try:
        return _parse(raw)
    except Exception:  # noqa: BLE001 - the last line of defence; each step below degrades on its own
        return _unknown(None, (), "")


# --- the decision -------------------------------------------------------------------------------

def _parse(raw: bytes) -> Parsed:
    if not isinstance(raw, (bytes, bytearray)):
        return _unknown(None, (), "")
    raw = bytes(raw[:MAX_BYTES])
    if not raw.strip():
        return _unknown(None, (), "")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not msg.keys():
        # Garbage with no header at all: there is nothing to match, or to store it by.
        return _unknown(None, (), "")
    message_id = _message_id(_header(msg, "message-id"))
    addressed_to = _addressed_to(msg)
    subject = _subject(msg)

    def result(kind: str, failures=(), original=None, feedback_type=None) -> Parsed:
        return Parsed(kind, message_id, original, tuple(failures), feedback_type, addressed_to, subject,
                      _attached_return_path(msg) if kind in ("arf", "dsn", "nonstandard") else None)

    feedback = _first_part(msg, "message/feedback-report")
    if feedback is not None or _report_type(msg) == "feedback-report":
        feedback_type, failures = _arf(msg, feedback)
        return result("arf", failures, _attached_message_id(msg), feedback_type)

    statuses = _parts(msg, "message/delivery-status")
    if statuses or _report_type(msg) == "delivery-status":
        failures = [f for part in statuses for f in _dsn_failures(part)]
        return result("dsn", failures, _attached_message_id(msg))

    automatic = _is_autoreply(msg, subject)
    looks_like_bounce = _looks_like_bounce(msg, subject)
    if automatic and not looks_like_bounce:
        # flufl.bounce's loosest detector (LLNL) takes any ", someone@example.com," in a body for a
        # failed address; an out-of-office listing a colleague must not become a hard bounce.
        return result("autoreply")
    text = _notification_text(msg)
    temporary, permanent = _flufl_failures(msg)
    if automatic and not permanent:
        return result("autoreply")
    if temporary or permanent or looks_like_bounce:
        return result("nonstandard", _nonstandard_failures(text, temporary, permanent),
                      _attached_message_id(msg) or _message_id_in_text(msg))
    return result("unknown")


def _unknown(message_id, addressed_to, subject) -> Parsed:
    return Parsed("unknown", message_id, None, (), None, tuple(addressed_to), subject)


# --- standard reports ---------------------------------------------------------------------------

def _dsn_failures(part: Message) -> list[Failure]:
    """One Failure per per-recipient block of a message/delivery-status part."""
    failures = []
    for block in _field_blocks(part):
        final = _header(block, "final-recipient")
        original = _header(block, "original-recipient")
        action = _header(block, "action")
        if not (final or original or action):
            continue  # the per-message block (Reporting-MTA, Arrival-Date, ...)
        status = _status_field(_header(block, "status"))
        recipient = _typed_address(original) or _typed_address(final)
        failures.append(Failure(recipient=recipient, action=_action(action, status), status=status,
                                diagnostic=_clip(_header(block, "diagnostic-code"))))
    return failures


def _arf(msg: Message, feedback: Message | None) -> tuple[str | None, list[Failure]]:
    """The Feedback-Type and the complaining recipient(s) of an RFC 5965 report."""
    fields = _field_blocks(feedback)[:1] if feedback is not None else []
    feedback_type = None
    recipients: list[str] = []
    for block in fields:
        feedback_type = (_header(block, "feedback-type").split(";")[0].strip().lower() or None)
        for value in _headers(block, "original-rcpt-to"):
            recipients.extend(_addresses([_strip_type(value)]))
    if not recipients:
        attached = _attached_headers(msg)
        if attached is not None:
            recipients = _addresses(_headers(attached, "to"))
    recipients = list(dict.fromkeys(recipients)) or [None]
    return feedback_type, [Failure(r, "failed", None, None) for r in recipients]


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status (or feedback-report) part.

    The email package parses message/delivery-status into blocks and other message/* types into
    one message; a part it could not parse (wrong transfer encoding, built by hand) is a string,
    which is read here block by block.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        # A message/feedback-report holds one "message" whose headers are the fields.
        return blocks
    text = _decoded(part)
    return [HeaderParser(policy=email.policy.compat32).parsestr(chunk.strip() + "\n")
            for chunk in re.split(r"\r?\n[ \t]*\r?\n", text) if chunk.strip()]


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").strip().lower()


def _action(value: str, status: str | None) -> str:
    action = re.split(r"[\s;(]", value.strip().lower(), maxsplit=1)[0] if value.strip() else ""
    if action:
        return action
    # A block without Action (non-compliant) is read from its status class.
    return {"4": "delayed", "2": "delivered"}.get((status or "5")[0], "failed")


# --- non-standard bounces -----------------------------------------------------------------------

def _flufl_failures(msg: Message) -> tuple[list[str], list[str]]:
    """The (temporary, permanent) addresses flufl.bounce finds, lowercased and sorted."""
    try:
        from flufl.bounce import all_failures  # only bounces without a report need it

        # A detector that chokes on a strange message (no From, say) is logged by flufl.bounce
        # with its whole traceback: expected for what strangers send, so only its errors show.
        logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector that chokes on a strange message finds nothing
        return [], []

    def clean(found) -> list[str]:
        return sorted({a.decode("ascii", "replace").strip().strip("<>").lower() for a in found} - {""})

    permanent_set = clean(permanent)
    return [a for a in clean(temporary) if a not in permanent_set], permanent_set


def _nonstandard_failures(text: str, temporary: list[str], permanent: list[str]) -> list[Failure]:
    status, line = _status_in_text(text)
    if not temporary and not permanent:
        # A notice flufl.bounce has no detector for: its status line (or the line above it, as
        # Exchange writes them) may name the address; the VERP token names the mail anyway.
        action = "delayed" if (status or "5").startswith("4") else "failed"
        return [Failure(_address_near(text, line), action, status, line)]
    failures = []
    for address in permanent:
        own_status, own_line = _status_in_text(text, address)
        failures.append(Failure(address, "failed", own_status or status, own_line or line))
    for address in temporary:
        own_status, own_line = _status_in_text(text, address)
        failures.append(Failure(address, "delayed", own_status or status, own_line or line))
    return failures


# "550 5.1.1 <x@y>: ...", "550-5.1.1 ...", "#5.1.1", "Status: 5.1.1"; not "192.0.2.1" or "3.5.1".
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
_SMTP_REPLY = re.compile(r"(?<![\w.])([45])\d\d(?=[ -]|$)")


def _status_in_text(text: str, near: str | None = None) -> tuple[str | None, str | None]:
    """The first enhanced status code in the text (and its line), or the line of a bare 4xx/5xx.

    With `near`, only lines that name that address, or the lines right after one, count: a
    notice about two recipients gives each its own code.
    """
    lines = text.splitlines()
    if near:
        wanted = set()
        for i, line in enumerate(lines):
            if near in line.lower():
                wanted.update(range(i, i + 4))
        lines = [lines[i] for i in sorted(wanted) if i < len(lines)]
    for line in lines:
        if found := _ENHANCED.search(line):
            return ".".join(found.groups()), _clip(line.strip())
    for line in lines:
        if _SMTP_REPLY.search(line.strip()):
            return None, _clip(line.strip())
    return None, None


_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def _address_near(text: str, line: str | None) -> str | None:
    """The address on a status line, or the one address on the line before it.

    Exchange writes the address on a line of its own above "#550 5.1.1 ...", MDaemon-style
    notices a "Recipient: <...>" line above the "Reason:" line.
    """
    if not line:
        return None
    if found := _ADDRESS.search(line):
        return found.group(0).lower()
    lines = [x.strip() for x in text.splitlines()]
    for i, candidate in enumerate(lines):
        if candidate and candidate[:MAX_DIAGNOSTIC] == line and i > 0:
            above = _ADDRESS.findall(next((x for x in reversed(lines[:i]) if x), ""))
            return above[0].lower() if len(set(above)) == 1 else None
    return None


_BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|mailer_daemon|mailerdaemon|postmaster|mail-daemon|"
                             r"mdaemon|mail\.delivery\.system|microsoftexchange[0-9a-f]*)@", re.IGNORECASE)
_BOUNCE_SUBJECTS = re.compile(
    r"undeliver|undelivered|delivery status notification|delivery (has )?failed|delivery failure|"
    r"failure notice|mail delivery (failed|failure|system)|returned mail|returning message|"
    r"could not be delivered|non[- ]?delivery|niet (afgeleverd|bezorgd)|onbestelbaar|"
    r"unzustellbar|nicht zustellbar|non remis|mail system error",
    re.IGNORECASE)


def _looks_like_bounce(msg: Message, subject: str) -> bool:
    """Whether the message presents itself as a delivery notice (sender, subject or Exim's header)."""
    if _header(msg, "x-failed-recipients"):
        return True
    senders = _addresses(_headers(msg, "from") + _headers(msg, "sender"))
    if any(_BOUNCE_SENDERS.match(a) for a in senders):
        return True
    return bool(_BOUNCE_SUBJECTS.search(subject))


# --- auto-replies -------------------------------------------------------------------------------

_AUTO_SUBJECTS = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwoord|answer)|auto:|autoreply|out of (the )?office|"
    r"ooo\b|afwezig|automatisch antwoord|niet aanwezig|abwesenheit|automatische antwort|"
    r"r[ée]ponse automatique|absence|risposta automatica|respuesta autom[aá]tica|vacation|"
    r"on vacation|away from)"
    r"|please confirm (you are|that you are) (a )?human|verify (you are|that you are) (a )?human|"
    r"bevestig dat u een mens bent|sender verification|spam ?arrest",
    re.IGNORECASE)
_CHALLENGE_HEADERS = ("x-boxtrapper", "x-spamarrest", "x-challenge", "x-tmda")


def _is_autoreply(msg: Message, subject: str) -> bool:
    """RFC 3834's Auto-Submitted, the older markers, or the usual subjects."""
    auto = re.split(r"[\s;(]", _header(msg, "auto-submitted").strip().lower(), maxsplit=1)[0]
    if auto and auto != "no":
        return True
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response-suppress",
                 *_CHALLENGE_HEADERS):
        value = _header(msg, name).strip().lower()
        if value and value not in ("no", "false", "0"):
            return True
    if _header(msg, "precedence").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECTS.search(subject))


# --- the message the report is about ------------------------------------------------------------

_MESSAGE_ID_LINE = re.compile(r"^[ \t>]*message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _attached_headers(msg: Message) -> Message | None:
    """The headers of the original mail attached to a report (message/rfc822 or text/rfc822-headers)."""
    for part in _walk(msg):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind == "text/rfc822-headers":
            return HeaderParser(policy=email.policy.compat32).parsestr(_decoded(part))
    return None


def _attached_return_path(msg: Message) -> str | None:
    attached = _attached_headers(msg)
    found = _addresses(_headers(attached, "return-path")) if attached is not None else []
    return found[0] if found else None


def _attached_message_id(msg: Message) -> str | None:
    attached = _attached_headers(msg)
    return _message_id(_header(attached, "message-id")) if attached is not None else None


def _message_id_in_text(msg: Message) -> str | None:
    """A "Message-ID:" line in a bounce's text (Exim and qmail quote the original mail inline)."""
    for part in _walk(msg):
        if part.get_content_maintype() == "text":
            if found := _MESSAGE_ID_LINE.search(_decoded(part)):
                return found.group(1)
    return None


def _notification_text(msg: Message) -> str:
    """The human-readable text of a notice (not its attached original), HTML tags removed."""
    texts = []
    for part in _walk(msg):
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html"):
            text = _decoded(part)
            if kind == "text/html":
                text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", text, flags=re.IGNORECASE)
                text = re.sub(r"<[^>]*>", " ", text).replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">")
            texts.append(text)
    return "\n".join(texts)


# --- small readers, each forgiving --------------------------------------------------------------

def _walk(msg: Message):
    """Every part except those inside an attached message: their words are not the report's."""
    yield msg
    if msg.get_content_maintype() == "message":
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _walk(part)


def _parts(msg: Message, content_type: str) -> list[Message]:
    return [p for p in _walk(msg) if p.get_content_type() == content_type]


def _first_part(msg: Message, content_type: str) -> Message | None:
    found = _parts(msg, content_type)
    return found[0] if found else None


def _decoded(part: Message) -> str:
    """A leaf part's text, whatever its transfer encoding and charset claim."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        data = None
    if data is None:
        payload = part.get_payload()
        if not isinstance(payload, str):
            return ""
        data = payload.encode("utf-8", "surrogateescape")
    charset = str(part.get_content_charset("utf-8") or "utf-8")
    try:
        return data.decode(charset)
    except (LookupError, ValueError):
        # An unknown charset ("x-unknown-8"), or bytes the declared one cannot hold (Latin-1 in a
        # part that says UTF-8): guessed, as a person reading it would.
        return _guess(data)


def _guess(data: bytes) -> str:
    """UTF-8 if the bytes are UTF-8, else Windows-1252: what 8-bit mail nearly always is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _clean(value) -> str:
    """A header value as text: unfolded, raw 8-bit bytes read as UTF-8 (or replaced)."""
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # compat32 keeps raw 8-bit header bytes as surrogates.
        try:
            text = _guess(text.encode("ascii", "surrogateescape"))
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\r?\n[ \t]*", " ", text).strip()


def _headers(msg: Message, name: str) -> list[str]:
    try:
        return [_clean(v) for k, v in msg.raw_items() if k.lower() == name]
    except Exception:  # noqa: BLE001
        return []


def _header(msg: Message | None, name: str) -> str:
    if msg is None:
        return ""
    values = _headers(msg, name)
    return values[0] if values else ""


def _subject(msg: Message) -> str:
    value = _header(msg, "subject")
    try:
        return str(make_header(decode_header(value))).strip()
    except Exception:  # noqa: BLE001 - a broken encoded-word: the raw text is better than nothing
        return value


def _message_id(value: str) -> str | None:
    return value.strip() or None


def _addresses(values: list[str]) -> list[str]:
    try:
        found = [a.strip().lower() for _, a in getaddresses(values)]
    except Exception:  # noqa: BLE001
        return []
    return [a for a in found if "@" in a]


def _addressed_to(msg: Message) -> tuple[str, ...]:
    values = []
    for name in ("delivered-to", "x-original-to", "envelope-to", "to"):
        values.extend(_addresses(_headers(msg, name)))
    return tuple(dict.fromkeys(values))


def _strip_type(value: str) -> str:
    """ "rfc822; Jan@Example.com" -> "Jan@Example.com"."""
    head, sep, tail = value.partition(";")
    return tail.strip() if sep and re.fullmatch(r"\s*[\w.-]+\s*", head) else value.strip()


def _typed_address(value: str) -> str | None:
    address = _strip_type(value).strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _status_field(value: str) -> str | None:
    found = _ENHANCED.search(value)
    return ".".join(found.groups()) if found else None


def _clip(value: str | None) -> str | None:
    if not value:
        return None
    return value[:MAX_DIAGNOSTIC]
