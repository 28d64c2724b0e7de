"""The provider webhooks, on SQLite and PostgreSQL: Amazon SES through SNS (messages signed in
the test exactly as SNS signs them, with a key and certificate made here; only the
certificate download, the network edge, is replaced) and Mailgun (HMAC with its signing key).
What each event does, the subscription confirmation, and that anything unsigned, badly signed
or for another topic gets 401 and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from email.utils import make_msgid

import pytest
from conftest import START
from sqlalchemy import select

from mailer.bounces.providers import Webhooks
from mailer.store.tables import BounceReport, ConsentEvent, Lead, LeadStatus, MailKind, Outbox, OutboxStatus
from mailer.web import create_app
from mailer.web.hooks import EXTENSION

BOUNCE = "bounce@mail.example.nl"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
                 + TOPIC + "&Token=2336412f37")
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"


# --- a signing key and certificate like SNS's, and messages signed as SNS signs them ----------------

def _key_and_certificate():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(START - timedelta(days=1)).not_valid_after(START + timedelta(days=365))
                   .sign(key, hashes.SHA256()))
    return key, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signing():
    pytest.importorskip("cryptography")
    return _key_and_certificate()


@pytest.fixture(scope="module")
def stranger():
    """Someone else's key: signs well, but is not the key of the certificate at CERT_URL."""
    return _key_and_certificate()[0]


NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def sns(key, kind: str, message: str, *, topic: str = TOPIC, version: str = "1", cert_url: str = CERT_URL,
        subject: str | None = None, message_id: str | None = None, **fields) -> dict:
    """An SNS message as SNS posts it: the canonical string ("Key\\nValue\\n" for each signed key
    present) signed with SHA1withRSA (version 1) or SHA256withRSA (version 2)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    body = {"Type": kind, "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic, "Message": message,
            "Timestamp": "2026-12-01T09:00:00.000Z", "SignatureVersion": version, "SigningCertURL": cert_url,
            **fields}
    if subject is not None:
        body["Subject"] = subject
    if kind != "Notification":
        body.setdefault("Token", "2336412f37")
        body.setdefault("SubscribeURL", SUBSCRIBE_URL)
    keys = NOTIFICATION_KEYS if kind == "Notification" else CONFIRMATION_KEYS
    canonical = "".join(f"{name}\n{body[name]}\n" for name in keys if name in body).encode()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    body["Signature"] = base64.b64encode(key.sign(canonical, padding.PKCS1v15(), digest)).decode()
    return body


def ses_mail(source: str, message_id: str, recipient: str) -> dict:
    return {"timestamp": "2026-12-01T08:59:00.000Z", "messageId": "0102018c-ses-own-id", "source": source,
            "destination": [recipient],
            "headers": [{"name": "From", "value": "Trainingsbureau <guide@example.nl>"},
                        {"name": "Message-ID", "value": message_id}],
            "commonHeaders": {"from": ["guide@example.nl"], "to": [recipient], "messageId": message_id}}


def ses_bounce(source: str, message_id: str, recipient: str, *, bounce_type: str = "Permanent",
               status: str = "5.1.1", diagnostic: str = "smtp; 550 5.1.1 user unknown") -> str:
    return json.dumps({"notificationType": "Bounce", "mail": ses_mail(source, message_id, recipient),
                       "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                                  "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                                                         "status": status, "diagnosticCode": diagnostic}],
                                  "timestamp": "2026-12-01T09:00:00.000Z", "feedbackId": "0102-feedback"}})


def ses_complaint(source: str, message_id: str, recipient: str) -> str:
    return json.dumps({"notificationType": "Complaint", "mail": ses_mail(source, message_id, recipient),
                       "complaint": {"complainedRecipients": [{"emailAddress": recipient}],
                                     "complaintFeedbackType": "abuse", "timestamp": "2026-12-01T09:00:00.000Z",
                                     "feedbackId": "0102-complaint"}})


def ses_delay(source: str, message_id: str, recipient: str) -> str:
    return json.dumps({"eventType": "DeliveryDelay", "mail": ses_mail(source, message_id, recipient),
                       "deliveryDelay": {"delayType": "MailboxFull", "expirationTime": "2026-12-02T09:00:00.000Z",
                                         "delayedRecipients": [{"emailAddress": recipient, "status": "4.2.2",
                                                                "diagnosticCode": "smtp; 452 4.2.2 full"}]}})


def mailgun(event_data: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None,
            token: str | None = None) -> dict:
    timestamp = str(int(START.timestamp()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


def mailgun_failure(recipient: str, message_id: str, *, severity: str = "permanent", event_id: str | None = None,
                    code: int = 550, enhanced: str = "5.1.1") -> dict:
    return {"id": event_id or uuid.uuid4().hex[:22], "event": "failed", "severity": severity, "reason": "bounce",
            "timestamp": START.timestamp(), "recipient": recipient,
            "envelope": {"sender": "nieuws@mg.example.nl", "transport": "smtp"},
            "message": {"headers": {"to": recipient, "message-id": message_id.strip("<>"), "from": "guide@example.nl",
                                    "subject": "Je mini guide"}},
            "delivery-status": {"code": code, "enhanced-code": enhanced, "attempt-no": 1,
                                "message": f"{code} {enhanced} The email account does not exist", "description": ""}}


# --- the service, its leads and their mail -----------------------------------------------------------

@pytest.fixture
def built(make_services, database_url, smtp_server):
    return make_services(database_url, MAILER_MAIL_URL=smtp_server.url, MAILER_BOUNCE_ADDRESS=BOUNCE,
                         MAILER_SES_TOPIC_ARNS=f"arn:aws:sns:us-east-1:123456789012:other, {TOPIC}",
                         MAILER_MAILGUN_SIGNING_KEY=MAILGUN_KEY)


@pytest.fixture
def sent(built, smtp_server):
    """Two confirmed leads with consent, each sent a guide mail and with a drip mail waiting."""
    rows = {}
    with built.db.transaction() as session:
        for email in ("anne@gemeente.nl", "bert@provincie.nl"):
            lead = Lead(email=email, first_name="A", status=LeadStatus.CONFIRMED.value, magnet="mini-guide",
                        marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
            session.add(lead)
            session.flush()
            for kind, priority in ((MailKind.GUIDE, 0), (MailKind.DRIP, 10)):
                row = Outbox(kind=kind.value, lead_id=lead.id, recipient=email, magnet="mini-guide",
                             message_id=make_msgid(domain="example.nl"), priority=priority, status="queued",
                             attempts=0, unknown_outcomes=0, created_at=START, queued_at=START,
                             next_attempt_at=START if kind is MailKind.GUIDE else START + timedelta(days=3),
                             sequence="mini-guide" if kind is MailKind.DRIP else None,
                             step="dag-3" if kind is MailKind.DRIP else None)
                session.add(row)
                session.flush()
                rows[(email, kind)] = (row.id, row.message_id, lead.id)
    assert built.sender().dispatch_all().sent == 2
    return rows


class Edge:
    """The network edge of the SES hook: the certificate download and the SubscribeURL."""

    def __init__(self, pem: bytes):
        self.pem = pem
        self.certificates: list[str] = []
        self.confirmed: list[str] = []

    def certificate(self, url: str) -> bytes:
        self.certificates.append(url)
        assert url == CERT_URL  # only a URL that passed the host rule is ever fetched
        return self.pem

    def confirm(self, url: str) -> bytes:
        self.confirmed.append(url)
        return b"<ConfirmSubscriptionResponse/>"


@pytest.fixture
def edge(signing):
    return Edge(signing[1])


@pytest.fixture
def client(built, edge):
    """The web app over `built`, with the SES hook's certificate download and SubscribeURL
    replaced (the host rule stays AWS's own)."""
    app = create_app(services=built)
    app.config["TESTING"] = True
    app.extensions[EXTENSION] = Webhooks.build(built.settings, built.intake, built.clock,
                                               fetch_certificate=edge.certificate, confirm=edge.confirm)
    return app.test_client()


@pytest.fixture
def plain_client(built):
    """The web app as it is built in production (Mailgun needs no network)."""
    app = create_app(services=built)
    app.config["TESTING"] = True
    return app.test_client()


def _envelope_from(smtp_server, recipient: str) -> str:
    return next(e.mail_from for e in smtp_server.messages if e.rcpt_tos == [recipient])


def _lead(built, email: str) -> Lead:
    with built.db.read_only() as session:
        return session.scalar(select(Lead).where(Lead.email == email))


def _reports(built) -> list[BounceReport]:
    with built.db.read_only() as session:
        return list(session.scalars(select(BounceReport).order_by(BounceReport.id)))


def _status(built, row_id: int) -> str:
    with built.db.read_only() as session:
        return session.get(Outbox, row_id).status


def _post(client, provider: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = "text/plain; charset=UTF-8" if provider == "ses" else "application/json"
    response = client.post(f"/hooks/{provider}", data=data, content_type=content_type)
    return response.status_code, response.get_json(silent=True) or {}


def _anne(smtp_server, sent) -> tuple[str, str]:
    return _envelope_from(smtp_server, "anne@gemeente.nl"), sent[("anne@gemeente.nl", MailKind.GUIDE)][1]


def _nothing_changed(built, sent) -> None:
    assert _reports(built) == []
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.QUEUED


# --- Amazon SES through SNS ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_permanent_bounce_makes_the_lead_undeliverable(built, sent, smtp_server, client, signing, edge,
                                                              version):
    source, message_id = _anne(smtp_server, sent)
    body = sns(signing[0], "Notification", ses_bounce(source, message_id, "anne@gemeente.nl"), version=version,
               subject="Amazon SES Email Event Notification")
    code, answer = _post(client, "ses", body)
    assert code == 200, answer
    assert answer["events"][0]["kind"] == "hard"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.UNDELIVERABLE
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.CANCELLED
    assert _lead(built, "bert@provincie.nl").status == LeadStatus.CONFIRMED
    [report] = _reports(built)
    assert (report.source, report.kind, report.status, report.matched_by, report.recipient) == (
        "webhook:ses", "hard", "5.1.1", "verp", "anne@gemeente.nl")
    assert report.outbox_id == sent[("anne@gemeente.nl", MailKind.GUIDE)][0]
    assert edge.certificates == [CERT_URL]


def test_an_ses_bounce_without_the_envelope_sender_is_matched_by_our_message_id(built, sent, smtp_server, client,
                                                                                signing):
    _, message_id = _anne(smtp_server, sent)
    mail = json.loads(ses_bounce("guide@example.nl", message_id, "anne@gemeente.nl"))
    del mail["mail"]["headers"]  # "include original headers" off: only the common headers
    code, _ = _post(client, "ses", sns(signing[0], "Notification", json.dumps(mail)))
    assert code == 200
    assert [(r.kind, r.matched_by) for r in _reports(built)] == [("hard", "message-id")]


def test_an_ses_complaint_ends_all_marketing_mail_with_consent_evidence(built, sent, smtp_server, client, signing):
    source, message_id = _anne(smtp_server, sent)
    code, answer = _post(client, "ses", sns(signing[0], "Notification",
                                            ses_complaint(source, message_id, "anne@gemeente.nl")))
    assert code == 200 and answer["events"][0]["kind"] == "complaint"
    lead = _lead(built, "anne@gemeente.nl")
    assert (lead.status, lead.marketing_consent) == (LeadStatus.UNSUBSCRIBED, False)
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.CANCELLED
    with built.db.read_only() as session:
        event = session.scalars(select(ConsentEvent).where(ConsentEvent.lead_id == lead.id)
                                .order_by(ConsentEvent.id.desc())).first()
    assert (event.kind, event.form, event.marketing_consent) == ("unsubscribe", "complaint", False)


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_an_ses_transient_or_undetermined_bounce_is_counted_as_soft(built, sent, smtp_server, client, signing,
                                                                   bounce_type):
    source, message_id = _anne(smtp_server, sent)
    body = sns(signing[0], "Notification", ses_bounce(source, message_id, "anne@gemeente.nl",
                                                      bounce_type=bounce_type, status="4.2.2",
                                                      diagnostic="smtp; 452 4.2.2 mailbox full"))
    code, answer = _post(client, "ses", body)
    assert code == 200 and answer["events"][0]["kind"] == "soft"
    [report] = _reports(built)
    assert report.note.startswith("soft bounce 1 of 3")
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.QUEUED


def test_an_ses_delivery_delay_changes_nothing(built, sent, smtp_server, client, signing):
    source, message_id = _anne(smtp_server, sent)
    code, answer = _post(client, "ses", sns(signing[0], "Notification",
                                            ses_delay(source, message_id, "anne@gemeente.nl"), version="2"))
    assert code == 200 and answer["events"][0]["kind"] == "ignored"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.QUEUED


@pytest.mark.parametrize("message", [
    json.dumps({"notificationType": "Delivery", "mail": {}, "delivery": {"recipients": ["anne@gemeente.nl"]}}),
    "a test message from the SNS console",
    json.dumps(["not", "an", "object"]),
    json.dumps({"notificationType": "Bounce", "bounce": "no object"}),
])
def test_other_signed_notifications_are_taken_and_ignored(built, sent, client, signing, message):
    code, answer = _post(client, "ses", sns(signing[0], "Notification", message))
    assert (code, answer["result"]) == (200, "ignored")
    _nothing_changed(built, sent)


def test_the_same_sns_message_twice_is_stored_once(built, sent, smtp_server, client, signing):
    source, message_id = _anne(smtp_server, sent)
    body = sns(signing[0], "Notification", ses_bounce(source, message_id, "anne@gemeente.nl", bounce_type="Transient",
                                                      status="4.2.2"))
    assert _post(client, "ses", body)[0] == 200
    code, answer = _post(client, "ses", body)  # SNS delivers again: same MessageId
    assert code == 200 and answer["events"][0]["duplicate"] is True
    assert len(_reports(built)) == 1


def test_a_subscription_confirmation_is_verified_and_confirmed(built, client, signing, edge):
    body = sns(signing[0], "SubscriptionConfirmation",
               "You have chosen to subscribe to the topic " + TOPIC + ". To confirm, visit the SubscribeURL.")
    code, answer = _post(client, "ses", body)
    assert (code, answer["result"]) == (200, "subscription confirmed")
    assert edge.confirmed == [SUBSCRIBE_URL]
    assert _reports(built) == []


def test_an_unsubscribe_confirmation_is_taken_and_changes_nothing(built, client, signing, edge):
    code, answer = _post(client, "ses", sns(signing[0], "UnsubscribeConfirmation", "You have unsubscribed."))
    assert (code, answer["result"]) == (200, "unsubscribe noted")
    assert edge.confirmed == []


@pytest.mark.parametrize("url", [
    "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.eu-west-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    "https://evil.example/?Action=ConfirmSubscription",
])
def test_a_subscription_confirmation_elsewhere_is_refused_and_not_followed(built, client, signing, edge, url):
    code, _ = _post(client, "ses", sns(signing[0], "SubscriptionConfirmation", "confirm", SubscribeURL=url))
    assert code == 401
    assert edge.confirmed == []


def test_a_badly_signed_subscription_confirmation_is_not_followed(built, client, stranger, edge):
    code, _ = _post(client, "ses", sns(stranger, "SubscriptionConfirmation", "confirm"))
    assert code == 401
    assert edge.confirmed == []


def _tampered(body: dict) -> dict:
    message = json.loads(body["Message"])
    message["bounce"]["bouncedRecipients"][0]["emailAddress"] = "bert@provincie.nl"
    return {**body, "Message": json.dumps(message)}


@pytest.mark.parametrize("forge", [
    pytest.param(lambda key, stranger, msg: _tampered(sns(key, "Notification", msg)), id="tampered-message"),
    pytest.param(lambda key, stranger, msg: {**sns(key, "Notification", msg), "Timestamp": "2026-12-02T09:00:00Z"},
                 id="tampered-timestamp"),
    pytest.param(lambda key, stranger, msg: sns(stranger, "Notification", msg), id="wrong-key"),
    pytest.param(lambda key, stranger, msg: {**sns(key, "Notification", msg), "SignatureVersion": "2"},
                 id="wrong-version"),
    pytest.param(lambda key, stranger, msg: {**sns(key, "Notification", msg), "SignatureVersion": "3"},
                 id="unknown-version"),
    pytest.param(lambda key, stranger, msg: {k: v for k, v in sns(key, "Notification", msg).items()
                                             if k != "Signature"}, id="unsigned"),
    pytest.param(lambda key, stranger, msg: {**sns(key, "Notification", msg), "Signature": "not base64!"},
                 id="garbage-signature"),
    pytest.param(lambda key, stranger, msg: sns(key, "Notification", msg,
                                                topic="arn:aws:sns:eu-west-1:999999999999:theirs"),
                 id="unknown-topic"),
    pytest.param(lambda key, stranger, msg: sns(key, "Notification", msg, cert_url=CERT_URL.replace("https", "http")),
                 id="cert-over-http"),
    pytest.param(lambda key, stranger, msg: sns(key, "Notification", msg,
                                                cert_url="https://evil.example/SimpleNotificationService.pem"),
                 id="cert-on-other-host"),
    pytest.param(lambda key, stranger, msg: sns(key, "Notification", msg,
                                                cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/x.pem"),
                 id="cert-on-lookalike-host"),
    pytest.param(lambda key, stranger, msg: sns(key, "Notification", msg,
                                                cert_url="https://sns.eu-west-1.amazonaws.com/cert.txt"),
                 id="cert-not-pem"),
    pytest.param(lambda key, stranger, msg: sns(key, "Bounce", msg), id="unknown-type"),
])
def test_an_unsigned_or_badly_signed_sns_call_is_refused_and_changes_nothing(built, sent, smtp_server, client,
                                                                             signing, stranger, edge, forge):
    source, message_id = _anne(smtp_server, sent)
    body = forge(signing[0], stranger, ses_bounce(source, message_id, "anne@gemeente.nl"))
    code, answer = _post(client, "ses", body)
    assert (code, answer) == (401, {"status": "refused"})
    _nothing_changed(built, sent)
    assert set(edge.certificates) <= {CERT_URL}  # a certificate elsewhere is never fetched


def test_ses_without_a_configured_topic_refuses_everything(make_services, database_url, signing, edge):
    built = make_services(database_url)
    app = create_app(services=built)
    app.extensions[EXTENSION] = Webhooks.build(built.settings, built.intake, built.clock,
                                               fetch_certificate=edge.certificate, confirm=edge.confirm)
    code, _ = _post(app.test_client(), "ses", sns(signing[0], "SubscriptionConfirmation", "confirm"))
    assert code == 401 and edge.confirmed == []


def test_a_certificate_that_cannot_be_fetched_asks_sns_to_try_again(built, sent, smtp_server, signing):
    from mailer.bounces.providers import Unavailable

    def unreachable(url):
        raise Unavailable("timed out")

    app = create_app(services=built)
    app.extensions[EXTENSION] = Webhooks.build(built.settings, built.intake, built.clock,
                                               fetch_certificate=unreachable)
    source, message_id = _anne(smtp_server, sent)
    response = app.test_client().post("/hooks/ses", data=json.dumps(
        sns(signing[0], "Notification", ses_bounce(source, message_id, "anne@gemeente.nl"))))
    assert response.status_code == 503 and response.headers["Retry-After"]
    _nothing_changed(built, sent)


# --- Mailgun -------------------------------------------------------------------------------------------------

def test_a_mailgun_permanent_failure_makes_the_lead_undeliverable(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    code, answer = _post(plain_client, "mailgun", mailgun(mailgun_failure("anne@gemeente.nl", message_id)))
    assert code == 200 and answer["events"][0]["kind"] == "hard"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.UNDELIVERABLE
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.CANCELLED
    [report] = _reports(built)
    assert (report.source, report.kind, report.status, report.matched_by, report.recipient) == (
        "webhook:mailgun", "hard", "5.1.1", "message-id", "anne@gemeente.nl")
    assert report.diagnostic.startswith("550 ")


def test_a_mailgun_temporary_failure_is_soft(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    event = mailgun_failure("anne@gemeente.nl", message_id, severity="temporary", code=452, enhanced="4.2.2")
    code, answer = _post(plain_client, "mailgun", mailgun(event))
    assert code == 200 and answer["events"][0]["kind"] == "soft"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


def test_a_mailgun_complaint_ends_all_marketing_mail(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    event = {"id": "cmpl-1", "event": "complained", "recipient": "anne@gemeente.nl",
             "message": {"headers": {"message-id": message_id}}}
    code, answer = _post(plain_client, "mailgun", mailgun(event))
    assert code == 200 and answer["events"][0]["kind"] == "complaint"
    lead = _lead(built, "anne@gemeente.nl")
    assert (lead.status, lead.marketing_consent) == (LeadStatus.UNSUBSCRIBED, False)


def test_other_mailgun_events_are_taken_and_ignored(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    event = {**mailgun_failure("anne@gemeente.nl", message_id), "event": "delivered"}
    code, answer = _post(plain_client, "mailgun", mailgun(event))
    assert (code, answer["result"]) == (200, "ignored")
    _nothing_changed(built, sent)


def test_the_same_mailgun_event_twice_is_stored_once(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    event = mailgun_failure("anne@gemeente.nl", message_id, severity="temporary", enhanced="4.2.2",
                            event_id="evt-twice")
    body = mailgun(event)
    assert _post(plain_client, "mailgun", body)[0] == 200
    code, answer = _post(plain_client, "mailgun", body)  # a replay within the 15 minutes
    assert code == 200 and answer["events"][0]["duplicate"] is True
    assert _post(plain_client, "mailgun", mailgun(event))[1]["events"][0]["duplicate"] is True  # a retry, new token
    assert len(_reports(built)) == 1


@pytest.mark.parametrize("forge", [
    pytest.param(lambda body: {**body, "signature": {**body["signature"], "signature": "0" * 64}}, id="bad-signature"),
    pytest.param(lambda body: {**body, "signature": {**body["signature"], "token": "other-token"}}, id="other-token"),
    pytest.param(lambda body: {k: v for k, v in body.items() if k != "signature"}, id="unsigned"),
    pytest.param(lambda body: {**body, "signature": "text"}, id="signature-not-an-object"),
    pytest.param(lambda body: {**body, "signature": {**body["signature"], "signature": "é" * 64}}, id="non-ascii"),
])
def test_a_badly_signed_mailgun_call_is_refused(built, sent, smtp_server, plain_client, forge):
    _, message_id = _anne(smtp_server, sent)
    body = forge(mailgun(mailgun_failure("anne@gemeente.nl", message_id)))
    code, answer = _post(plain_client, "mailgun", body)
    assert (code, answer) == (401, {"status": "refused"})
    _nothing_changed(built, sent)


@pytest.mark.parametrize("minutes", [-16, 16])
def test_a_mailgun_call_with_a_stale_or_future_timestamp_is_refused(built, sent, smtp_server, plain_client, minutes):
    _, message_id = _anne(smtp_server, sent)
    timestamp = int((START + timedelta(minutes=minutes)).timestamp())
    code, _ = _post(plain_client, "mailgun", mailgun(mailgun_failure("anne@gemeente.nl", message_id),
                                                     timestamp=timestamp))
    assert code == 401
    _nothing_changed(built, sent)


def test_a_mailgun_timestamp_within_the_window_is_taken(built, sent, smtp_server, plain_client):
    _, message_id = _anne(smtp_server, sent)
    timestamp = int((START - timedelta(minutes=14)).timestamp())
    code, _ = _post(plain_client, "mailgun", mailgun(mailgun_failure("anne@gemeente.nl", message_id),
                                                     timestamp=timestamp))
    assert code == 200


def test_mailgun_without_a_signing_key_refuses_everything(make_services, database_url):
    built = make_services(database_url)
    client = create_app(services=built).test_client()
    code, _ = _post(client, "mailgun", mailgun(mailgun_failure("anne@gemeente.nl", "<x@example.nl>")))
    assert code == 401


# --- bad input breaks nothing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["ses", "mailgun"])
@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"[" * 100_000])
def test_malformed_json_is_a_400_and_changes_nothing(built, sent, client, provider, body):
    code, answer = _post(client, provider, body)
    assert (code, answer) == (400, {"status": "malformed"})
    _nothing_changed(built, sent)


@pytest.mark.parametrize("provider", ["ses", "mailgun"])
def test_a_body_over_the_limit_is_a_413(built, client, provider):
    code, answer = _post(client, provider, b"{" + b" " * (1024 * 1024 + 1) + b"}")
    assert (code, answer) == (413, {"status": "too large"})


def test_no_other_provider_and_no_get(client):
    assert client.post("/hooks/postmark", data=b"{}").status_code == 404
    assert client.get("/hooks/ses").status_code == 405


def test_a_database_outage_asks_the_provider_to_try_again(make_services):
    pytest.importorskip("psycopg")
    built = make_services("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2",
                          MAILER_MAILGUN_SIGNING_KEY=MAILGUN_KEY)
    client = create_app(services=built).test_client()
    response = client.post("/hooks/mailgun", json=mailgun(mailgun_failure("anne@gemeente.nl", "<x@example.nl>")))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json() == {"status": "try again later"}


# --- the network edge itself ----------------------------------------------------------------------------------

def test_certificates_are_fetched_once_per_url():
    from mailer.bounces.providers import CertificateCache

    calls = []
    cache = CertificateCache(lambda url: calls.append(url) or b"pem of " + url.encode())
    assert cache(CERT_URL) == cache(CERT_URL) == b"pem of " + CERT_URL.encode()
    assert calls == [CERT_URL]


@pytest.mark.parametrize("url", ["http://sns.eu-west-1.amazonaws.com/x.pem", "file:///etc/passwd"])
def test_the_default_fetcher_fetches_nothing_but_https(url):
    from mailer.bounces.providers import Unavailable, fetch_url

    with pytest.raises(Unavailable):
        fetch_url(url)
