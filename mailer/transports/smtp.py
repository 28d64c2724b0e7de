"""SMTP: one connection reused across a batch; STARTTLS or SSL, auth, timeouts."""

from __future__ import annotations

import smtplib
import socket
import ssl

from ..errors import DeliveryError
from ..settings import MailURL
from . import Envelope


class SMTPTransport:
    def __init__(self, mail: MailURL):
        self.mail = mail
        self.connection: smtplib.SMTP | None = None

    def open(self) -> bool:
        """Connect if not connected; return True only when this call opened the connection."""
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
        context = ssl.create_default_context(cafile=mail.cafile)
        if mail.scheme == "smtps":
            conn = smtplib.SMTP_SSL(mail.host, mail.port, timeout=mail.timeout, context=context)
        else:
            conn = smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout)
        try:
            conn.ehlo()
            if mail.scheme == "smtp+starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if mail.username:
                conn.login(mail.username, mail.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self.connection is None:
            return
        try:
            self.connection.quit()
        except (smtplib.SMTPException, OSError):
            self.connection.close()
        finally:
            self.connection = None

    def send_messages(self, messages: list[Envelope]) -> int:
        opened = self.open()
        try:
            for envelope in messages:
                self._send(envelope)
        finally:
            if opened:
                self.close()
        return len(messages)

    def _send(self, envelope: Envelope) -> None:
        assert self.connection is not None
        try:
            refused = self.connection.sendmail(envelope.sender, list(envelope.recipients), envelope.data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise DeliveryError(code, _text(text)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # The connection may be unusable now; the next message gets a fresh one.
            self._drop()
            raise _delivery_error(exc) from exc
        if refused:
            code, text = next(iter(refused.values()))
            raise DeliveryError(code, _text(text))

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            finally:
                self.connection = None


def _text(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _delivery_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(exc.smtp_code, _text(exc.smtp_error))
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return DeliveryError(None, "timeout waiting for the SMTP server")
    return DeliveryError(None, f"{type(exc).__name__}: {exc}")
