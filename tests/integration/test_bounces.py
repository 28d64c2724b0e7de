"""Bounces and complaints taken in (`mailer bounces ingest`), on SQLite and PostgreSQL: the
signed envelope sender each mail goes out from, what a hard, soft, delayed bounce and a
complaint do, that a forged or unsigned report changes nothing, each report stored once, and
the reports in `mailer bounces list|show`, a lead's record and its erasure."""

from __future__ import annotations

import json
from datetime import timedelta
from email.utils import make_msgid

import pytest
from click.testing import CliRunner
from conftest import START, make_env
from sqlalchemy import select, update

from mailer.cli import main
from mailer.store.tables import BounceReport, ConsentEvent, Lead, LeadStatus, MailKind, Outbox, OutboxStatus

BOUNCE = "bounce@mail.example.nl"


def dsn(to: str, recipient: str, *, status: str = "5.1.1", action: str = "failed", message_id: str = "",
        own_id: str | None = None, diagnostic: str = "smtp; 550 5.1.1 user unknown") -> bytes:
    """An RFC 3464 report as Postfix writes one, delivered to `to`."""
    own_id = own_id or make_msgid(domain="mx.example.org")
    return f"""Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: {own_id}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic}

--B
Content-Type: text/rfc822-headers

From: Trainingsbureau <nieuws@example.nl>
To: {recipient}
Subject: Je mini guide
Message-ID: {message_id or '<none@example.nl>'}

--B--
""".replace("\n", "\r\n").encode()


def arf(to: str, recipient: str, message_id: str) -> bytes:
    return f"""Delivered-To: {to}
From: feedback@fbl.example.org
To: {to}
Subject: Complaint about message from 192.0.2.1
Message-ID: {make_msgid(domain="fbl.example.org")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: {recipient}

--F
Content-Type: message/rfc822

From: Trainingsbureau <nieuws@example.nl>
To: {recipient}
Subject: Nieuws
Message-ID: {message_id}

Hallo.
--F--
""".replace("\n", "\r\n").encode()


AUTOREPLY = b"""Delivered-To: %s
From: anne@gemeente.nl
To: %s
Subject: Afwezig: Je mini guide
Message-ID: <ooo-1@gemeente.nl>
Auto-Submitted: auto-replied

Ik ben tot 5 januari afwezig.
"""


@pytest.fixture
def built(make_services, database_url, smtp_server):
    return make_services(database_url, MAILER_MAIL_URL=smtp_server.url, MAILER_BOUNCE_ADDRESS=BOUNCE)


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


# --- the signed envelope sender ------------------------------------------------------------------

def test_each_mail_goes_out_from_its_own_signed_bounce_address(built, sent, smtp_server):
    anne = _envelope_from(smtp_server, "anne@gemeente.nl")
    bert = _envelope_from(smtp_server, "bert@provincie.nl")
    assert anne.startswith("bounce+") and anne.endswith("@mail.example.nl") and anne != bert
    assert built.bounce_addresses.row_of(anne) == sent[("anne@gemeente.nl", MailKind.GUIDE)][0]


def test_a_token_signed_with_an_older_key_is_still_read(make_services, database_url, built, sent, smtp_server):
    address = _envelope_from(smtp_server, "anne@gemeente.nl")
    rotated = make_services(database_url, MAILER_BOUNCE_ADDRESS=BOUNCE,
                            MAILER_SECRET_KEY="a-new-key-0123456789abcdef,test-secret-key-0123456789")
    assert rotated.bounce_addresses.row_of(address) == sent[("anne@gemeente.nl", MailKind.GUIDE)][0]


# --- what a report does ---------------------------------------------------------------------------

def test_a_hard_bounce_makes_the_lead_undeliverable_and_cancels_its_waiting_mail(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    handled = built.intake.handle(dsn(to, "anne@gemeente.nl"), source="ingest")
    assert handled.kind == "hard"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.UNDELIVERABLE
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.CANCELLED
    assert _lead(built, "bert@provincie.nl").status == LeadStatus.CONFIRMED
    [report] = _reports(built)
    assert (report.kind, report.status, report.matched_by, report.recipient) == (
        "hard", "5.1.1", "verp", "anne@gemeente.nl")
    assert report.outbox_id == sent[("anne@gemeente.nl", MailKind.GUIDE)][0]


@pytest.mark.parametrize("tamper", ["bounce@mail.example.nl", "bounce+1.0000000000@mail.example.nl", "other"])
def test_a_report_without_a_good_token_is_kept_as_unmatched_and_changes_nothing(built, sent, smtp_server, tamper):
    real = _envelope_from(smtp_server, "anne@gemeente.nl")
    to = real.replace(real.split("+")[1].split("@")[0], "zz.0123456789") if tamper == "other" else tamper
    message_id = sent[("anne@gemeente.nl", MailKind.GUIDE)][1]  # even quoting the right Message-ID
    handled = built.intake.handle(dsn(to, "anne@gemeente.nl", message_id=message_id), source="ingest")
    assert handled.kind == "unmatched"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.QUEUED
    assert _reports(built)[0].lead_id is None


def test_without_a_bounce_address_a_report_is_matched_by_the_message_id(make_services, database_url, smtp_server):
    built = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    with built.db.transaction() as session:
        lead = Lead(email="anne@gemeente.nl", first_name="A", status=LeadStatus.CONFIRMED.value, magnet="mini-guide",
                    marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
        session.add(lead)
        session.flush()
        session.add(Outbox(kind="guide", lead_id=lead.id, recipient=lead.email, magnet="mini-guide",
                           message_id="<g1@example.nl>", priority=0, status="sent", attempts=1, unknown_outcomes=0,
                           created_at=START, queued_at=START, next_attempt_at=START))
    assert built.intake.handle(dsn("nieuws@example.nl", "anne@gemeente.nl", message_id="<g1@example.nl>"),
                               source="ingest").kind == "hard"
    assert _reports(built)[0].matched_by == "message-id"
    assert built.intake.handle(dsn("nieuws@example.nl", "anne@gemeente.nl", message_id="<other@example.nl>"),
                               source="ingest").kind == "unmatched"


def _more_mail(built, email: str, count: int) -> list[int]:
    """More sent mails to the lead (rows a bounce can be about)."""
    with built.db.transaction() as session:
        lead = session.scalar(select(Lead).where(Lead.email == email))
        rows = [Outbox(kind="guide", lead_id=lead.id, recipient=email, magnet="mini-guide",
                       message_id=make_msgid(domain="example.nl"), priority=0, status="sent", attempts=1,
                       unknown_outcomes=0, created_at=START, queued_at=START, next_attempt_at=START)
                for _ in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _soft(built, row_id: int):
    to = built.bounce_addresses.for_row(row_id)
    return built.intake.handle(dsn(to, "anne@gemeente.nl", status="4.2.2", diagnostic="smtp; 452 mailbox full"),
                               source="ingest")


def test_soft_bounces_count_and_the_limit_within_the_days_makes_the_lead_undeliverable(built, sent):
    first, second, third, fourth = _more_mail(built, "anne@gemeente.nl", 4)
    assert _soft(built, first).kind == "soft"
    built.clock.advance(days=31)  # the first falls out of the 30 days
    assert _soft(built, second).note.startswith("soft bounce 1 of 3")
    assert _soft(built, third).note.startswith("soft bounce 2 of 3")
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED
    assert "now undeliverable" in _soft(built, fourth).note
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.UNDELIVERABLE


def test_soft_bounces_about_one_mail_count_once(built, sent):
    [row] = _more_mail(built, "anne@gemeente.nl", 1)
    for attempt in range(4):  # a provider reporting each of its retries, each its own report
        assert _soft(built, row).note.startswith("soft bounce 1 of 3")
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


def test_a_policy_refusal_is_about_us_and_changes_nothing(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    handled = built.intake.handle(dsn(to, "anne@gemeente.nl", status="5.7.1",
                                      diagnostic="smtp; 550 5.7.1 listed at a blocklist"), source="ingest")
    assert handled.kind == "ignored" and "policy refusal" in handled.note
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


def test_a_feedback_report_that_is_no_complaint_changes_nothing(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    report = arf(to, "anne@gemeente.nl", sent[("anne@gemeente.nl", MailKind.GUIDE)][1])
    handled = built.intake.handle(report.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"),
                                  source="ingest")
    assert handled.kind == "ignored"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


def test_a_feedback_loop_report_is_matched_by_the_signed_return_path_of_the_original(built, sent, smtp_server):
    """Feedback loops send to a registered address; the complained-about mail carries its token."""
    token = _envelope_from(smtp_server, "anne@gemeente.nl")
    report = arf("fbl@example.nl", "anne@gemeente.nl", sent[("anne@gemeente.nl", MailKind.GUIDE)][1])
    report = report.replace(b"Content-Type: message/rfc822\r\n\r\n",
                            b"Content-Type: message/rfc822\r\n\r\nReturn-Path: <" + token.encode() + b">\r\n")
    assert built.intake.handle(report, source="ingest").kind == "complaint"
    forged = report.replace(token.encode(), token.encode()[:-20] + b"0123456789@mail.example.nl")
    assert built.intake.handle(forged.replace(b"Message-ID: <", b"Message-ID: <x"), source="ingest").kind == \
        "unmatched"


def test_nul_characters_in_a_report_are_stored_without_them(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    report = dsn(to, "anne@gemeente.nl", own_id="<a\x00b@mx.example.org>", diagnostic="smtp; 550 5.1.1 bad\x00 user")
    assert built.intake.handle(report, source="ingest").kind == "hard"
    [stored] = _reports(built)
    assert "\x00" not in stored.raw and "\x00" not in (stored.diagnostic or "")


def test_a_delay_notice_changes_nothing(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    handled = built.intake.handle(dsn(to, "anne@gemeente.nl", status="4.4.1", action="delayed"), source="ingest")
    assert handled.kind == "ignored" and "delay notice" in handled.note
    assert _reports(built)[0].action == "delayed"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


def test_a_complaint_ends_all_marketing_mail_with_consent_evidence(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    message_id = sent[("anne@gemeente.nl", MailKind.GUIDE)][1]
    assert built.intake.handle(arf(to, "anne@gemeente.nl", message_id), source="ingest").kind == "complaint"
    lead = _lead(built, "anne@gemeente.nl")
    assert (lead.status, lead.marketing_consent) == (LeadStatus.UNSUBSCRIBED, False)
    assert _status(built, sent[("anne@gemeente.nl", MailKind.DRIP)][0]) == OutboxStatus.CANCELLED
    with built.db.read_only() as session:
        event = session.scalars(select(ConsentEvent).where(ConsentEvent.lead_id == lead.id)
                                .order_by(ConsentEvent.id.desc())).first()
    assert (event.kind, event.form, event.marketing_consent) == ("unsubscribe", "complaint", False)


def test_an_auto_reply_is_ignored(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    assert built.intake.handle(AUTOREPLY % (to.encode(), to.encode()), source="ingest").kind == "ignored"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.CONFIRMED


# --- bad input loses nothing and breaks nothing -----------------------------------------------------

def test_the_same_report_twice_counts_once(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    report = dsn(to, "anne@gemeente.nl", status="4.2.2")
    assert built.intake.handle(report, source="ingest").kind == "soft"
    again = built.intake.handle(report, source="imap")
    assert again.duplicate and len(_reports(built)) == 1


def test_a_report_about_an_erased_lead_is_unmatched(built, sent, smtp_server, cli):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    assert cli("lead", "erase", "anne@gemeente.nl", "--yes").exit_code == 0
    handled = built.intake.handle(dsn(to, "anne@gemeente.nl"), source="ingest")
    assert handled.kind == "unmatched" and "gone" in handled.note


def test_a_report_before_the_mails_result_is_recorded_still_counts(built, sent, smtp_server):
    row_id = sent[("anne@gemeente.nl", MailKind.GUIDE)][0]
    with built.db.transaction() as session:  # as if the worker had not recorded "sent" yet
        session.execute(update(Outbox).where(Outbox.id == row_id).values(status="sending", claimed_by="w:1"))
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    assert built.intake.handle(dsn(to, "anne@gemeente.nl"), source="ingest").kind == "hard"
    assert _lead(built, "anne@gemeente.nl").status == LeadStatus.UNDELIVERABLE


@pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage \x80", b"Subject: hi\r\n\r\nnothing to see"])
def test_garbage_is_stored_as_ignored(built, raw):
    assert built.intake.handle(raw, source="ingest").kind == "ignored"
    assert len(_reports(built)) == 1


def test_a_huge_report_is_stored_cut(built, sent, smtp_server):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    huge = dsn(to, "anne@gemeente.nl").replace(b"--B--", b"--B\r\nContent-Type: text/plain\r\n\r\n"
                                                + b"x" * (3 * 1024 * 1024) + b"\r\n--B--")
    assert built.intake.handle(huge, source="ingest").kind == "hard"
    [report] = _reports(built)
    assert report.raw_size == len(huge) and len(report.raw) <= 64 * 1024


# --- the command ---------------------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, database_url):
    runner = CliRunner()

    def run(*args, input=None, **env):
        environment = make_env(tmp_path, **{"MAILER_DATABASE_URL": database_url, "MAILER_BOUNCE_ADDRESS": BOUNCE,
                                            **env})
        return runner.invoke(main, list(args), env=environment, input=input, catch_exceptions=False)

    return run


def test_ingest_list_and_show(built, sent, smtp_server, cli):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    result = cli("bounces", "ingest", input=dsn(to, "anne@gemeente.nl"))
    assert result.exit_code == 0 and ": hard;" in result.output, result.output
    assert cli("bounces", "ingest", input=AUTOREPLY % (b"x@y.nl", b"x@y.nl")).exit_code == 0
    listed = json.loads(cli("bounces", "list", "--json").output)
    assert [(r["kind"], r["email"]) for r in listed] == [("ignored", None), ("hard", "anne@gemeente.nl")]
    assert {"kind", "email", "status", "received_at"} <= set(listed[0])
    hard = json.loads(cli("bounces", "list", "--kind", "hard", "--json").output)
    assert len(hard) == 1 and hard[0]["status"] == "5.1.1"
    shown = cli("bounces", "show", str(hard[0]["id"]))
    assert "Final-Recipient: rfc822; anne@gemeente.nl" in shown.output
    assert cli("bounces", "list", "--kind", "zacht").exit_code == 2


def test_ingest_says_try_again_later_when_the_database_is_unreachable(cli, tmp_path):
    result = cli("bounces", "ingest", input=b"Subject: x\r\n\r\ny",
                 MAILER_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert result.exit_code == 75


def test_ingest_says_try_again_later_when_a_setting_is_wrong(cli):
    result = cli("bounces", "ingest", input=b"Subject: x\r\n\r\ny", MAILER_BOUNCE_ADDRESS="no address")
    assert result.exit_code == 75 and "MAILER_BOUNCE_ADDRESS" in result.output


def test_the_lead_record_has_its_bounces_and_erasure_removes_them(built, sent, smtp_server, cli):
    to = _envelope_from(smtp_server, "anne@gemeente.nl")
    built.intake.handle(dsn(to, "anne@gemeente.nl", status="4.2.2"), source="ingest")
    record = json.loads(cli("lead", "export", "anne@gemeente.nl").output)
    assert [(b["kind"], b["status"]) for b in record["bounces"]] == [("soft", "4.2.2")]
    assert cli("lead", "erase", "anne@gemeente.nl", "--yes").exit_code == 0
    assert _reports(built) == []


# --- rates and the warning --------------------------------------------------------------------------

def test_stats_show_bounce_and_complaint_rates_per_stream(built, sent, smtp_server, cli):
    built.intake.handle(dsn(_envelope_from(smtp_server, "anne@gemeente.nl"), "anne@gemeente.nl"), source="ingest")
    bert = _envelope_from(smtp_server, "bert@provincie.nl")
    built.intake.handle(arf(bert, "bert@provincie.nl", sent[("bert@provincie.nl", MailKind.GUIDE)][1]), source="ingest")
    found = {r["stream"]: r for r in json.loads(cli("stats", "--json").output)["bounces"]}
    assert (found["overall"]["sent"], found["overall"]["hard"], found["overall"]["complaints"]) == (2, 1, 1)
    assert found["guide"]["hard_rate"] == 0.5 and found["guide"]["complaint_rate"] == 0.5
    text = cli("stats").output
    assert "bounces and complaints of the mail sent" in text and "50.00%" in text


def test_the_outbox_warns_when_complaints_or_hard_bounces_pass_their_limit(built, sent, smtp_server):
    from mailer.operator.bounces import overall, rates, warnings

    assert warnings(built.db, now=built.clock.now()) == []
    bert = _envelope_from(smtp_server, "bert@provincie.nl")
    built.intake.handle(arf(bert, "bert@provincie.nl", sent[("bert@provincie.nl", MailKind.GUIDE)][1]), source="ingest")
    [complaints] = warnings(built.db, now=built.clock.now())
    assert complaints.startswith("complaints: 1 of 2 mails sent in the last 7 days (50.00%")
    built.intake.handle(dsn(_envelope_from(smtp_server, "anne@gemeente.nl"), "anne@gemeente.nl"), source="ingest")
    assert len(warnings(built.db, now=built.clock.now())) == 2
    assert warnings(built.db, now=built.clock.now() + timedelta(days=8)) == []  # older than the 7 days
    # The warning's own count (from both sides' indexes) is the overall line of `mailer stats`.
    since = built.clock.now() - timedelta(days=7)
    assert overall(built.db, since=since) == rates(built.db, since=since)[0]
