"""One contract for every transport; the SMTP one against a real aiosmtpd server."""

from __future__ import annotations

import io
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from mailer.delivery.transports import Envelope, Transport, make_transport
from mailer.delivery.transports.console import ConsoleTransport
from mailer.delivery.transports.file import FileTransport, eml_name
from mailer.delivery.transports.memory import MemoryTransport
from mailer.errors import DeliveryError
from mailer.settings import MailURL


def envelope(n: int) -> Envelope:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "guide@example.nl"
    message["To"] = f"lezer{n}@example.nl"
    message["Subject"] = f"Bericht {n} – één"
    message["Message-ID"] = f"<m{n}@example.nl>"
    message.set_content(f"Tekst {n}\n")
    return Envelope("guide@example.nl", (f"lezer{n}@example.nl",), message.as_bytes(), f"<m{n}@example.nl>")


class TransportContract:
    """Mixed into one test class per transport; `delivered()` reads back what arrived."""

    def test_send_messages_hands_over_every_message_and_counts_them(self, transport):
        assert transport.send_messages([envelope(1), envelope(2)]) == 2
        subjects = sorted(m["Subject"] for m in self.delivered(transport))
        assert subjects == ["Bericht 1 – één", "Bericht 2 – één"]

    def test_a_connection_opened_by_the_caller_is_reused_and_closed_by_it(self, transport):
        transport.open()
        transport.send_messages([envelope(1)])
        transport.send_messages([envelope(2)])
        transport.close()
        transport.close()  # closing twice is harmless
        assert len(self.delivered(transport)) == 2

    def test_an_empty_batch_sends_nothing(self, transport):
        assert transport.send_messages([]) == 0
        assert self.delivered(transport) == []

    def test_as_a_context_manager_it_opens_once_and_closes_at_the_end(self, transport):
        calls = []
        for name in ("open", "close"):
            method = getattr(transport, name)
            setattr(transport, name, lambda method=method, name=name: (calls.append(name), method())[1])
        with transport as held:
            assert held is transport
            assert calls == ["open"]
            transport.send_messages([envelope(1)])
            transport.send_messages([envelope(2)])
            assert "close" not in calls  # held across both batches (the file one re-checks its folder)
        assert calls[0] == "open" and calls[-1] == "close" and calls.count("close") == 1
        subjects = sorted(m["Subject"] for m in self.delivered(transport))
        assert subjects == ["Bericht 1 – één", "Bericht 2 – één"]

    def test_the_context_manager_closes_also_when_a_send_fails(self, transport):
        closed = []
        close = transport.close
        transport.close = lambda: (closed.append(True), close())[1]
        with pytest.raises(DeliveryError):
            with transport:
                transport.send_messages([envelope(1)])
                raise DeliveryError(None, "the caller gives up")
        assert closed == [True]

    def test_last_reply_is_the_answer_to_the_last_message_handed_over(self, transport):
        transport.send_messages([envelope(1), envelope(2)])
        code, text = transport.last_reply
        assert isinstance(code, int) and isinstance(text, str)
        assert (code, text) == self.reply

    def test_discard_removes_the_copies_it_keeps_and_counts_them(self, transport):
        transport.send_messages([envelope(1), envelope(2), envelope(3)])
        gone = (m for m in ["<m1@example.nl>", "<m3@example.nl>", "<m9@example.nl>"])  # any iterable
        removed = transport.discard(gone)
        subjects = sorted(m["Subject"] for m in self.delivered(transport))
        if self.keeps_copies:
            assert removed == 2
            assert subjects == ["Bericht 2 – één"]
        else:  # nothing kept here, so nothing to remove; what went out stays out
            assert removed == 0
            assert subjects == ["Bericht 1 – één", "Bericht 2 – één", "Bericht 3 – één"]
        assert transport.discard([]) == 0


class TestMemory(TransportContract):
    reply = (250, "accepted")
    keeps_copies = True

    @pytest.fixture
    def transport(self):
        return MemoryTransport()

    def delivered(self, transport):
        return transport.parsed()


class TestFile(TransportContract):
    reply = (250, "accepted")
    keeps_copies = True

    @pytest.fixture
    def transport(self, tmp_path):
        return FileTransport(tmp_path / "mail")

    def delivered(self, transport):
        if not transport.folder.exists():
            return []
        return [message_from_bytes(p.read_bytes(), policy=policy.default)
                for p in sorted(transport.folder.glob("*.eml"))]

    def test_a_retried_message_replaces_its_file(self, transport):
        transport.send_messages([envelope(1), envelope(1)])
        assert len(list(transport.folder.iterdir())) == 1

    def test_the_context_manager_makes_the_folder(self, transport):
        with transport:
            assert transport.folder.is_dir()

    def test_discard_deletes_the_eml_files_and_any_half_written_one(self, transport):
        transport.send_messages([envelope(1), envelope(2)])
        leftover = transport.folder / f".{eml_name('<m1@example.nl>')}.tmp"
        leftover.write_bytes(b"half a message")
        assert transport.discard(["<m1@example.nl>"]) == 1
        assert sorted(p.name for p in transport.folder.iterdir()) == [eml_name("<m2@example.nl>")]
        assert transport.discard(["<m1@example.nl>"]) == 0  # already gone is fine

    def test_discard_before_anything_was_written_removes_nothing(self, transport):
        assert transport.discard(["<m1@example.nl>"]) == 0


class TestConsole(TransportContract):
    reply = (250, "accepted")
    keeps_copies = False

    @pytest.fixture
    def transport(self):
        return ConsoleTransport(io.StringIO())

    def delivered(self, transport):
        chunks = [c for c in transport.stream.getvalue().split("\n" + "-" * 72 + "\n") if c.strip()]
        return [message_from_bytes(c.encode(), policy=policy.default) for c in chunks]


def test_every_transport_is_a_transport_and_the_base_defaults_hold(tmp_path, smtp_server):
    made = [make_transport(MailURL("smtp", host=smtp_server.host, port=smtp_server.port, timeout=5)),
            FileTransport(tmp_path / "mail"), ConsoleTransport(io.StringIO()), MemoryTransport()]
    assert all(isinstance(t, Transport) for t in made)

    class Bare(Transport):
        pass

    bare = Bare()
    assert bare.open() is False and bare.close() is None
    assert bare.last_reply == (250, "accepted") and bare.discard(["<m1@example.nl>"]) == 0
    with pytest.raises(NotImplementedError):
        bare.send_messages([envelope(1)])


class TestSMTP(TransportContract):
    reply = (250, "Message accepted")  # the words of the aiosmtpd server in conftest, not a default
    keeps_copies = False

    @pytest.fixture
    def transport(self, smtp_server):
        self.server = smtp_server
        return make_transport(MailURL("smtp", host=smtp_server.host, port=smtp_server.port, timeout=5))

    def delivered(self, transport):
        return [message_from_bytes(e.content, policy=policy.default) for e in self.server.messages]

    def test_one_connection_carries_a_whole_batch(self, transport):
        transport.send_messages([envelope(n) for n in range(5)])
        assert len(set(self.server.peers)) == 1

    def test_the_context_manager_holds_one_connection_for_several_batches(self, transport):
        with transport:
            assert transport.connection is not None
            transport.send_messages([envelope(1)])
            transport.send_messages([envelope(2)])
        assert transport.connection is None
        assert len(self.server.messages) == 2 and len(set(self.server.peers)) == 1

    def test_last_reply_follows_the_server_message_by_message(self, transport):
        queued = iter(range(1, 100))

        async def handle_DATA(server, session, smtp_envelope):  # a relay that names its queue ids
            self.server.messages.append(smtp_envelope)
            self.server.peers.append(session.peer)
            return f"250 2.0.0 Ok: queued as Q{next(queued)}"

        self.server.handle_DATA = handle_DATA
        with transport:
            transport.send_messages([envelope(1)])
            assert transport.last_reply == (250, "2.0.0 Ok: queued as Q1")
            transport.send_messages([envelope(2), envelope(3)])
            assert transport.last_reply == (250, "2.0.0 Ok: queued as Q3")
        assert len(set(self.server.peers)) == 1

    def test_a_refused_recipient_raises_with_the_server_reply(self, transport):
        self.server.replies["lezer1@example.nl"] = "550 5.1.1 No such user"
        with pytest.raises(DeliveryError) as caught:
            transport.send_messages([envelope(1)])
        assert caught.value.code == 550 and "No such user" in caught.value.text

    def test_an_unreachable_server_raises_a_delivery_error_without_a_code(self):
        from conftest import free_port

        transport = make_transport(MailURL("smtp", host="127.0.0.1", port=free_port(), timeout=2))
        with pytest.raises(DeliveryError) as caught:
            transport.send_messages([envelope(1)])
        assert caught.value.code is None


# --- TLS and authentication, against aiosmtpd with a certificate made for the test ----------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl is part of every Debian system)."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "key.pem"),
         "-out", str(folder / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return folder / "cert.pem", folder / "key.pem"


def _server_context(certificate):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def _authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"relay-user" and auth_data.password == b"relay-pass"
    return AuthResult(success=ok)


def test_starttls_with_authentication_delivers(certificate):
    from aiosmtpd.controller import Controller
    from conftest import SMTPSink, free_port

    port = free_port()
    sink = SMTPSink("127.0.0.1", port)
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=_server_context(certificate),
                            require_starttls=True, authenticator=_authenticator, auth_require_tls=True)
    controller.start()
    try:
        good = MailURL("smtp+starttls", host="127.0.0.1", port=port, username="relay-user",
                       password="relay-pass", timeout=5, cafile=certificate[0])
        assert make_transport(good).send_messages([envelope(1)]) == 1
        assert len(sink.messages) == 1

        untrusted = MailURL("smtp+starttls", host="127.0.0.1", port=port, timeout=5)
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            make_transport(untrusted).send_messages([envelope(3)])
    finally:
        controller.stop()


def test_implicit_tls_delivers(certificate):
    import smtplib
    import ssl

    from aiosmtpd.controller import Controller
    from conftest import SMTPSink, free_port

    class TLSController(Controller):
        def _trigger_server(self):  # the readiness probe must speak TLS and trust our certificate
            context = ssl.create_default_context(cafile=str(certificate[0]))
            with smtplib.SMTP_SSL(self.hostname, self.port, context=context, timeout=5) as probe:
                probe.noop()

    port = free_port()
    sink = SMTPSink("127.0.0.1", port)
    controller = TLSController(sink, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate))
    controller.start()
    try:
        mail = MailURL("smtps", host="127.0.0.1", port=port, timeout=5, cafile=certificate[0])
        assert make_transport(mail).send_messages([envelope(1), envelope(2)]) == 2
        assert len(sink.messages) == 2
    finally:
        controller.stop()


def test_a_relay_that_offers_pipelining_gets_mail_rcpt_and_data_in_one_write():
    from aiosmtpd.controller import Controller
    from conftest import SMTPSink, free_port

    class PipeliningSink(SMTPSink):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

    port = free_port()
    sink = PipeliningSink("127.0.0.1", port)
    sink.replies["lezer2@example.nl"] = "550 5.1.1 No such user"
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        transport = make_transport(MailURL("smtp", host="127.0.0.1", port=port, timeout=5))
        transport.open()
        assert transport.connection.has_extn("pipelining")
        transport.send_messages([envelope(1)])
        with pytest.raises(DeliveryError) as caught:
            transport.send_messages([envelope(2)])
        assert caught.value.code == 550 and not caught.value.unknown
        transport.send_messages([envelope(3)])  # the same connection carries on after the refusal
        transport.close()
    finally:
        controller.stop()
    assert [e.rcpt_tos for e in sink.messages] == [["lezer1@example.nl"], ["lezer3@example.nl"]]
    assert len(set(sink.peers)) == 1
