"""The fault-injecting SMTP server does what a misbehaving relay does, as plain smtplib sees it."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest
from smtp_faults import FaultySMTPServer

SENDER = "guide@example.nl"


def message(to: str, message_id: str = "<m1@example.nl>") -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = "Je gids"
    msg["Message-ID"] = message_id
    msg.set_content("Hallo\n.\nmet een regel die met een punt begint\n")
    return msg.as_bytes(policy=SMTP_POLICY)  # CRLF line ends, as on the wire


def connect(server: FaultySMTPServer, timeout: float = 5) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def send(server: FaultySMTPServer, to: str | list[str], message_id: str = "<m1@example.nl>",
         timeout: float = 5) -> dict:
    recipients = [to] if isinstance(to, str) else to
    with connect(server, timeout) as conn:
        return conn.sendmail(SENDER, recipients, message(recipients[0], message_id))


def test_unprogrammed_mail_is_accepted_and_recorded(faulty_smtp):
    assert send(faulty_smtp, "x@example.nl") == {}
    assert faulty_smtp.wait_for(1, timeout=5)
    (recipients, data), = faulty_smtp.received
    assert recipients == ("x@example.nl",)
    assert data == message("x@example.nl")  # byte for byte, dot-stuffing undone
    assert faulty_smtp.message_ids() == ["<m1@example.nl>"]
    assert faulty_smtp.url == f"smtp://127.0.0.1:{faulty_smtp.port}?timeout=5"


def test_rcpt_temporary_failure_once_then_accepted(faulty_smtp):
    faulty_smtp.at_rcpt("A@example.nl", "451 4.3.0 Try again later", times=1)

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(faulty_smtp, "a@example.nl")
    assert refused.value.recipients == {"a@example.nl": (451, b"4.3.0 Try again later")}
    assert faulty_smtp.received == []
    assert faulty_smtp.pending() == []

    assert send(faulty_smtp, "a@example.nl") == {}
    assert faulty_smtp.wait_for(1, timeout=5)


@pytest.mark.parametrize("reply", [
    "550 5.1.1 <a@example.nl>: Recipient address rejected: User unknown",
    "550 5.7.1 Sender address rejected: not authorised",
])
def test_rcpt_permanent_refusal_every_time(faulty_smtp, reply):
    faulty_smtp.at_rcpt("a@example.nl", reply)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(faulty_smtp, "a@example.nl")
        assert refused.value.recipients == {"a@example.nl": (550, reply[4:].encode())}
    assert faulty_smtp.received == []


def test_rcpt_refusal_of_one_recipient_still_delivers_to_the_others(faulty_smtp):
    faulty_smtp.at_rcpt("a@example.nl", "550 5.1.1 User unknown")
    refused = send(faulty_smtp, ["a@example.nl", "b@example.nl"])
    assert refused == {"a@example.nl": (550, b"5.1.1 User unknown")}
    assert faulty_smtp.wait_for(1, timeout=5)
    assert faulty_smtp.received[0].recipients == ("b@example.nl",)


def test_rcpt_421_closes_the_connection(faulty_smtp):
    faulty_smtp.at_rcpt("a@example.nl", "421 4.7.0 Too many errors, closing", times=1)
    conn = connect(faulty_smtp)
    conn.ehlo()
    conn.mail(SENDER)
    assert conn.rcpt("a@example.nl") == (421, b"4.7.0 Too many errors, closing")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        conn.noop()


def test_after_data_permanent_rejection(faulty_smtp):
    faulty_smtp.after_data("b@example.nl", "554 5.7.1 Rejected by policy")
    with pytest.raises(smtplib.SMTPDataError) as rejected:
        send(faulty_smtp, "b@example.nl")
    assert (rejected.value.smtp_code, rejected.value.smtp_error) == (554, b"5.7.1 Rejected by policy")
    assert faulty_smtp.received == []


def test_after_data_temporary_failure_once_then_accepted_on_the_same_connection(faulty_smtp):
    faulty_smtp.after_data("b@example.nl", "451 4.3.0 Local error in processing", times=1)
    with connect(faulty_smtp) as conn:
        with pytest.raises(smtplib.SMTPDataError) as rejected:
            conn.sendmail(SENDER, ["b@example.nl"], message("b@example.nl"))
        assert rejected.value.smtp_code == 451
        assert conn.sendmail(SENDER, ["b@example.nl"], message("b@example.nl")) == {}
    assert faulty_smtp.wait_for(1, timeout=5)
    assert faulty_smtp.message_ids() == ["<m1@example.nl>"]


def test_disconnect_after_data_records_the_message_but_never_answers(faulty_smtp):
    faulty_smtp.disconnect_after_data("c@example.nl", times=1)

    with pytest.raises(smtplib.SMTPServerDisconnected) as dropped:
        send(faulty_smtp, "c@example.nl")
    assert str(dropped.value) == "Connection unexpectedly closed"
    assert faulty_smtp.wait_for(1, timeout=5)

    # The client cannot know, retries, and the relay now holds two copies.
    assert send(faulty_smtp, "c@example.nl") == {}
    assert faulty_smtp.wait_for(2, timeout=5)
    assert faulty_smtp.message_ids() == ["<m1@example.nl>", "<m1@example.nl>"]


def test_greeting_421_twice_then_normal(faulty_smtp):
    faulty_smtp.greet_with("421 4.3.2 Service not available", times=2)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPConnectError) as greeted:
            connect(faulty_smtp)
        assert (greeted.value.smtp_code, greeted.value.smtp_error) == (421, b"4.3.2 Service not available")
    assert send(faulty_smtp, "x@example.nl") == {}
    assert faulty_smtp.pending() == []


def test_slow_reply_times_out_the_client_while_the_server_keeps_serving(faulty_smtp):
    faulty_smtp.slow_after_data("d@example.nl", seconds=3)

    slow = connect(faulty_smtp, timeout=1)
    slow.ehlo()
    slow.mail(SENDER)
    slow.rcpt("d@example.nl")
    assert slow.docmd("DATA")[0] == 354
    slow.send(message("d@example.nl", "<slow@example.nl>").replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert faulty_smtp.wait_for(1, timeout=5)  # received and recorded; the 250 is being held back

    started = time.monotonic()
    assert send(faulty_smtp, "x@example.nl", "<fast@example.nl>") == {}
    # Were the server's loop blocked, this would wait for the slow reply (2+ s more).
    assert time.monotonic() - started < 1.5, "the slow reply blocked the server's event loop"

    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected) as timed_out:
        slow.getreply()  # what sendmail() does after the final "."
    assert 0.8 < time.monotonic() - started < 2.5  # the client's 1 s, not the server's 3 s
    # smtplib turns the socket timeout into SMTPServerDisconnected; the timeout is its context.
    assert isinstance(timed_out.value.__context__, TimeoutError)
    assert "timed out" in str(timed_out.value)
    assert faulty_smtp.message_ids() == ["<slow@example.nl>", "<fast@example.nl>"]


def test_slow_reply_within_the_client_timeout_is_accepted(faulty_smtp):
    faulty_smtp.slow_after_data("d@example.nl", seconds=0.3, times=1)
    started = time.monotonic()
    assert send(faulty_smtp, "d@example.nl") == {}
    assert time.monotonic() - started >= 0.3
    assert faulty_smtp.pending() == []  # used up: the next one is answered at once
    assert send(faulty_smtp, "d@example.nl") == {}
    assert faulty_smtp.message_ids() == ["<m1@example.nl>", "<m1@example.nl>"]


def test_programming_mistakes_are_refused():
    server = FaultySMTPServer()  # not started: programming needs no running server
    with pytest.raises(ValueError):
        server.at_rcpt("a@example.nl", "250 OK")
    with pytest.raises(ValueError):
        server.after_data("a@example.nl", "try again")
    with pytest.raises(ValueError):
        server.greet_with("421 4.3.2 Busy", times=0)
    server.at_rcpt("a@example.nl", "451 4.3.0 Later", times=2)
    assert server.pending() == ["RCPT a@example.nl: '451 4.3.0 Later', 2 time(s) left"]
