"""DKIM signing that a receiver can verify, and a separate From for marketing mail."""

from __future__ import annotations

import shutil
import subprocess
from email import message_from_bytes, policy

import pytest
from conftest import Visitor, as_marketing

from mailer.delivery.transports.memory import MemoryTransport
from mailer.errors import SettingsError
from mailer.web import create_app


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test key")
    folder = tmp_path_factory.mktemp("dkim")
    subprocess.run(["openssl", "genrsa", "-out", str(folder / "key.pem"), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(folder / "key.pem"), "-pubout"], check=True,
                            capture_output=True, text=True).stdout
    record = "v=DKIM1; k=rsa; p=" + "".join(line for line in public.splitlines() if "-----" not in line)
    return folder / "key.pem", record.encode()


def test_mail_is_signed_and_the_signature_verifies(make_services, sqlite_url, clock, dkim_key):
    import dkim

    key_file, record = dkim_key
    services = make_services(sqlite_url, MAILER_DKIM_SELECTOR="mail2026", MAILER_DKIM_KEY_FILE=str(key_file))
    Visitor(create_app(services=services).test_client(), clock).sign_up("dkim@example.nl")
    transport = MemoryTransport()
    services.sender(transport).dispatch()
    [envelope] = transport.outbox
    assert envelope.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert b"d=example.nl" in envelope.data.split(b"\r\n\r\n")[0] and b"s=mail2026" in envelope.data

    def dns(name, timeout=5):
        assert name == b"mail2026._domainkey.example.nl."
        return record

    assert dkim.verify(envelope.data, dnsfunc=dns)
    tampered = envelope.data.replace(b"Bevestig je aanvraag", b"Bevestig je aanvraaG")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_settings_go_together_and_name_themselves(make_services, sqlite_url, tmp_path):
    with pytest.raises(SettingsError, match="MAILER_DKIM_SELECTOR and MAILER_DKIM_KEY_FILE go together"):
        make_services(sqlite_url, MAILER_DKIM_SELECTOR="s1")
    for text in ("hello", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"):
        (tmp_path / "not-a-key.pem").write_text(text)
        with pytest.raises(SettingsError, match="MAILER_DKIM_KEY_FILE: .* cannot sign"):
            make_services(sqlite_url, MAILER_DKIM_SELECTOR="s1", MAILER_DKIM_KEY_FILE=str(tmp_path / "not-a-key.pem"))
    with pytest.raises(SettingsError, match="MAILER_DKIM_KEY_FILE: cannot read"):
        make_services(sqlite_url, MAILER_DKIM_SELECTOR="s1", MAILER_DKIM_KEY_FILE=str(tmp_path / "missing.pem"))


def test_marketing_mail_can_come_from_its_own_address(make_services, sqlite_url, clock):
    services = make_services(sqlite_url, MAILER_MARKETING_FROM="Trainingen <nieuws@example.nl>")
    visitor = Visitor(create_app(services=services).test_client(), clock)
    visitor.sign_up("transactioneel@example.nl")
    visitor.sign_up("marketing@example.nl")
    as_marketing(services, "marketing@example.nl")
    transport = MemoryTransport()
    services.sender(transport).dispatch()
    senders = {e.recipients[0]: (e.sender, message_from_bytes(e.data, policy=policy.default)["From"])
               for e in transport.outbox}
    assert senders["transactioneel@example.nl"] == ("guide@example.nl", "Trainingsbureau <guide@example.nl>")
    assert senders["marketing@example.nl"] == ("nieuws@example.nl", "Trainingen <nieuws@example.nl>")
