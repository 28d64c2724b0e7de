"""SMTP: one connection reused across a batch; STARTTLS or SSL, auth, timeouts."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl

from mailer.delivery.transports import Envelope, Transport
from mailer.errors import DeliveryError
from mailer.settings import MailURL


class SMTPTransport(Transport):
    def __init__(self, mail: MailURL):
        self.mail = mail
        self.connection: smtplib.SMTP | None = None
        self.held = False  # opened by the caller: keep (and re-open) it across send_messages calls
        # Built once: loading the CA certificates costs ~40 ms, too much for every connection.
        self.tls = ssl.create_default_context(cafile=mail.cafile) if mail.scheme != "smtp" else None

    def open(self) -> bool:
        """Connect if not connected; return True only when this call opened the connection."""
        self.held = True
        return self._connect_if_needed()

    def _connect_if_needed(self) -> bool:
        if self.connection is not None:
            return False
        try:
            self.connection = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            self.connection = None
            raise _delivery_error(exc) from exc
        return True

    def _connect(self) -> smtplib.SMTP:
        mail = self.mail
        if mail.scheme == "smtps":
            conn = smtplib.SMTP_SSL(mail.host, mail.port, timeout=mail.timeout, context=self.tls)
        else:
            conn = smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout)
        try:
            conn.ehlo()
            if mail.scheme == "smtp+starttls":
                conn.starttls(context=self.tls)
                conn.ehlo()
            if mail.username:
                conn.login(mail.username, mail.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self.held = False
        if self.connection is None:
            return
        try:
            self.connection.quit()
        except (smtplib.SMTPException, OSError):
            self.connection.close()
        finally:
            self.connection = None

    def send_messages(self, messages: list[Envelope]) -> int:
        temporary = not self.held
        self._connect_if_needed()  # also after a broken connection inside a held batch
        try:
            for envelope in messages:
                self._send(envelope)
        finally:
            if temporary:
                self.close()
        return len(messages)

    def _send(self, envelope: Envelope) -> None:
        """MAIL, RCPT and DATA (not sendmail()), to know when an outcome is unknown: a refusal
        or a drop before the server's 354 is a plain failure, a drop after the data is not."""
        conn = self.connection
        assert conn is not None
        try:
            if conn.has_extn("pipelining"):
                self._envelope_pipelined(conn, envelope)
            else:
                self._expect(conn.mail(envelope.sender), (250,))
                for recipient in envelope.recipients:
                    self._expect(conn.rcpt(recipient), (250, 251))
                self._expect(conn.docmd("data"), (354,))
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()  # the connection may be unusable now; the next message gets a fresh one
            raise _delivery_error(exc) from exc
        try:
            conn.send(_dot_stuffed(envelope.data))
            reply = conn.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            # The data went out and the answer never came: the server may have taken it.
            self._drop()
            raise DeliveryError(None, f"no answer after the message data: {exc}", unknown=True) from exc
        self._expect(reply, (250,))
        self.last_reply = (reply[0], _text(reply[1]))  # until the first reply: the class default

    def _envelope_pipelined(self, conn: smtplib.SMTP, envelope: Envelope) -> None:
        """MAIL, RCPT and DATA in one write, then their replies (RFC 2920): two round trips
        fewer per message. Addresses are ASCII (the signup form insists)."""
        commands = [f"MAIL FROM:<{envelope.sender}>", *(f"RCPT TO:<{r}>" for r in envelope.recipients), "DATA"]
        conn.send(("\r\n".join(commands) + "\r\n").encode("ascii"))
        replies = [conn.getreply() for _ in commands]
        expected = [(250,), *([(250, 251)] * len(envelope.recipients)), (354,)]
        for reply, good in zip(replies, expected):
            if reply[0] not in good:
                if replies[-1][0] == 354:  # DATA was taken after all: end it empty, then start over
                    conn.send(b".\r\n")
                    conn.getreply()
                self._expect(reply, good)

    def _expect(self, reply: tuple[int, bytes], good: tuple[int, ...]) -> None:
        code, text = reply
        if code not in good:
            self._reset()
            raise DeliveryError(code, _text(text))

    def _reset(self) -> None:
        """RSET after a refusal, so the connection can carry the next message."""
        try:
            self.connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            finally:
                self.connection = None


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 4.5.2): leading dots doubled, ended by CRLF.CRLF."""
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _text(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _delivery_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(exc.smtp_code, _text(exc.smtp_error))
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return DeliveryError(None, "timeout waiting for the SMTP server")
    return DeliveryError(None, f"{type(exc).__name__}: {exc}")
