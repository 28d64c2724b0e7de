"""Reading the bounce mailbox (MAILER_BOUNCE_MAILBOX) over IMAP: each message is handed to the
intake, and deleted only once the intake has committed it.

A message is fetched with BODY.PEEK[] (nothing is marked read before it is handled), handled
in its own transaction by `Intake.handle`, and then deleted (UID STORE +FLAGS (\\Deleted), then
UID EXPUNGE when the server has UIDPLUS, else EXPUNGE). A run that dies between the two leaves
the message in the mailbox; the next run hands it over again, the intake recognises it by its
Message-ID (stored once) and it is deleted then: nothing is lost and nothing counts twice.
When the database cannot be reached the run stops at that message and leaves it and the rest
where they are, for the next run.
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from dataclasses import dataclass, field
from imaplib import IMAP4, IMAP4_SSL
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.errors import MailerError

log = logging.getLogger("mailer.bounces")

SETTING = "MAILER_BOUNCE_MAILBOX"
TIMEOUT_SECONDS = 30.0  # per socket operation: a server that stops answering does not hang the job
SOURCE = "imap"  # bounce_reports.source of what the mailbox brought


@dataclass
class MailboxReport:
    """What one run did: reports handed over (new ones, by kind; those handled before), the
    messages still in the mailbox after it, and why it stopped early, if it did."""

    handled: int = 0  # new reports stored (by_kind adds up to this)
    duplicates: int = 0  # handled in an earlier run that did not get to delete them; deleted now
    by_kind: Counter = field(default_factory=Counter)
    left: int = 0  # messages still in the mailbox: over the limit, or after a stop
    stopped: str | None = None  # the database could not be reached: this run stopped there

    @property
    def did_anything(self) -> bool:
        return bool(self.handled or self.duplicates or self.left or self.stopped)

    def line(self) -> str:
        """One line for the log and `mailer tick`; "" when the mailbox was empty."""
        if not self.did_anything:
            return ""
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.by_kind.items()))
        parts = [f"{self.handled} report(s) taken in" + (f" ({kinds})" if kinds else "")]
        if self.duplicates:
            parts.append(f"{self.duplicates} handled before, now deleted")
        if self.stopped:
            parts.append(f"stopped: {self.stopped}")
        if self.left:
            parts.append(f"{self.left} left in the mailbox for the next run")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Mailbox:
    secure: bool
    host: str
    port: int
    user: str
    password: str
    folder: str

    def __str__(self) -> str:  # never the password
        return f"{'imaps' if self.secure else 'imap'}://{self.user}@{self.host}:{self.port}/{self.folder}"


def read_mailbox(intake, url: str, *, limit: int = 500) -> MailboxReport:
    """Hand up to `limit` messages of the mailbox at `url` to `intake`, oldest first, deleting
    each once handled. Raises MailerError (naming MAILER_BOUNCE_MAILBOX, never the password)
    when the server cannot be reached, refuses the login or the folder, or breaks off midway;
    a database that cannot be reached stops the run and is in the report, not raised."""
    mailbox = _parse(url)
    report = MailboxReport()
    conn = _connect(mailbox)
    try:
        try:
            uids = _select(conn, mailbox)
            uidplus = _has_uidplus(conn)
            batch, report.left = uids[:limit], max(0, len(uids) - limit)
            for position, uid in enumerate(batch):
                raw = _fetch(conn, uid)
                if raw is None:  # gone meanwhile (another reader took it)
                    continue
                try:
                    handled = intake.handle(raw, source=SOURCE)  # the parser reads Delivered-To itself
                except (OperationalError, InterfaceError) as exc:
                    report.stopped = f"the database could not be reached ({type(exc).__name__})"
                    report.left += len(batch) - position
                    log.warning("%s: %s; %d message(s) left for the next run", SETTING, report.stopped,
                                report.left)
                    return report
                except Exception:  # this one message (a database that refuses it, say): keep it, go on
                    log.exception("%s: message %s not taken in; left in the mailbox", SETTING, uid.decode())
                    report.left += 1
                    continue
                _delete(conn, uid, uidplus)
                if handled.duplicate:
                    report.duplicates += 1
                else:
                    report.handled += 1
                    report.by_kind[handled.kind] += 1
        except (IMAP4.error, OSError) as exc:
            done = f"; {report.handled + report.duplicates} message(s) handled and deleted before that" \
                if report.handled or report.duplicates else ""
            raise MailerError(f"{SETTING}: the mailbox {mailbox} broke off: {_describe(exc)}{done}") from None
        return report
    finally:
        _logout(conn)


def _parse(url: str) -> _Mailbox:
    parts = urlsplit(url)
    secure = parts.scheme == "imaps"
    if parts.scheme not in ("imap", "imaps") or not parts.hostname:
        raise MailerError(f"{SETTING} must be like imaps://user:password@imap.example.nl/INBOX")
    try:
        port = parts.port or (993 if secure else 143)
    except ValueError:
        raise MailerError(f"{SETTING} has a port that is not a number") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return _Mailbox(secure, parts.hostname, port, unquote(parts.username or ""), unquote(parts.password or ""),
                    folder)


def _connect(mailbox: _Mailbox) -> IMAP4:
    try:
        if mailbox.secure:
            # a context that checks the server's certificate and name (imaplib's own default does not)
            conn = IMAP4_SSL(mailbox.host, mailbox.port, ssl_context=ssl.create_default_context(),
                             timeout=TIMEOUT_SECONDS)
        else:
            conn = IMAP4(mailbox.host, mailbox.port, timeout=TIMEOUT_SECONDS)
    except (IMAP4.error, OSError) as exc:
        raise MailerError(f"{SETTING}: cannot connect to {mailbox}: {_describe(exc)}") from None
    try:
        conn.login(mailbox.user, mailbox.password)
    except (IMAP4.abort, OSError) as exc:  # the connection broke: not a verdict on the password
        _logout(conn)
        raise MailerError(f"{SETTING}: the connection to {mailbox} broke off during the login: "
                          f"{_describe(exc)}") from None
    except IMAP4.error as exc:
        _logout(conn)
        raise MailerError(f"{SETTING}: the login to {mailbox} was refused (check the user and password): "
                          f"{_describe(exc)}") from None
    return conn


def _select(conn: IMAP4, mailbox: _Mailbox) -> list[bytes]:
    """Open the folder for writing; the UIDs of its messages, oldest first."""
    status, data = conn.select(_quoted(mailbox.folder))
    if status != "OK":
        raise MailerError(f"{SETTING}: the folder {mailbox.folder!r} of {mailbox} cannot be opened: "
                          f"{_text(data)}")
    status, data = conn.uid("SEARCH", None, "ALL")
    if status != "OK":
        raise MailerError(f"{SETTING}: cannot list the messages of {mailbox}: {_text(data)}")
    return sorted((uid for line in data if line for uid in line.split()), key=int)


def _fetch(conn: IMAP4, uid: bytes) -> bytes | None:
    status, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
    if status != "OK":
        raise IMAP4.error(f"FETCH {uid.decode()}: {_text(data)}")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            return item[1]
    return None


def _delete(conn: IMAP4, uid: bytes, uidplus: bool) -> None:
    status, data = conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
    if status != "OK":
        raise IMAP4.error(f"STORE {uid.decode()}: {_text(data)}")
    if uidplus:
        status, data = conn.uid("EXPUNGE", uid)
    else:  # expunges every message marked \Deleted, ours and any another client marked
        status, data = conn.expunge()
    if status != "OK":
        raise IMAP4.error(f"EXPUNGE {uid.decode()}: {_text(data)}")


def _has_uidplus(conn: IMAP4) -> bool:
    """Whether the server offers UID EXPUNGE (RFC 4315). Asked after the login: servers
    announce more capabilities then than in their greeting (imaplib keeps the greeting's)."""
    status, data = conn.capability()
    return status == "OK" and b"UIDPLUS" in b" ".join(d for d in data if isinstance(d, bytes)).upper().split()


def _quoted(folder: str) -> str:
    if folder.startswith('"') or not any(c in folder for c in ' "\\(){%*'):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data) -> str:
    return " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data or () if d)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _logout(conn: IMAP4) -> None:
    try:
        conn.logout()
    except (IMAP4.error, OSError):
        pass
