"""Reading what comes back: each report in tests/data/bounces/ as an operator needs it, and bad input.

The corpus is written for these tests (no third-party samples); each file bounces a mail sent
From "Trainingsbureau <nieuws@example.nl>" with a VERP envelope sender, and the assertions name
the values that decide what happens to a lead: kind, recipient, action, status, and the two
Message-IDs that store the report once and match it to its mail.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailer.bounces.parse import MAX_BYTES, Failure, parse

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bounces"


def read(name: str):
    return parse((CORPUS / name).read_bytes())


def only(parsed) -> Failure:
    assert len(parsed.failures) == 1, parsed.failures
    return parsed.failures[0]


# --- standard delivery reports --------------------------------------------------------------------

def test_postfix_hard_bounce():
    p = read("postfix-hard-5.1.1.eml")
    assert p.kind == "dsn"
    assert p.message_id == "<20261201091203.4Rk2Lq0bXqz9sTV@mx.klant-voorbeeld.nl>"
    assert p.original_message_id == "<n12.1042.abcdef0123456789@example.nl>"
    assert only(p) == Failure("j.devries@klant-voorbeeld.nl", "failed", "5.1.1", 'X-Postfix; unknown user: "j.devries"')
    assert p.addressed_to == ("bounce+1042.k3j9xqpl@mail.example.nl",)
    assert p.subject == "Undelivered Mail Returned to Sender"
    assert p.feedback_type is None


def test_postfix_delay_warning_is_a_dsn_with_action_delayed():
    p = read("postfix-delayed.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("dsn", "info@bakkerij-voorbeeld.nl", "delayed", "4.4.1")
    # A folded Diagnostic-Code is unfolded.
    assert f.diagnostic == "X-Postfix; connect to mx.bakkerij-voorbeeld.nl[198.51.100.7]:25: Connection timed out"
    assert p.original_message_id == "<n12.1043.0123456789abcdef@example.nl>"


def test_exchange_ndr_with_a_report_part_is_read_from_the_report():
    p = read("exchange-ndr.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("dsn", "m.jansen@gemeente-voorbeeld.nl", "failed", "5.1.10")
    assert f.diagnostic.startswith("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound")
    assert p.original_message_id == "<n12.1045.a1b2c3d4e5f60718@example.nl>"  # from the message/rfc822 part
    assert p.subject == "Onbestelbaar: Je gids: Timemanagement in 5 stappen"


def test_gmail_hard_bounce():
    p = read("gmail-hard.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("dsn", "onbekend.adres.2026@gmail.com", "failed", "5.1.1")
    assert f.diagnostic.startswith("smtp; 550-5.1.1 The email account that you tried to reach does not exist.")
    assert p.message_id == "<67a1b2c3.050a0220.1f2e3d.4c5bSMTPIN_ADDED_BROKEN@mx.google.com>"
    assert p.original_message_id == "<n12.1047.1122334455667788@example.nl>"
    assert p.addressed_to == ("bounce+1047.hh6tn3wy@mail.example.nl",)


def test_a_full_mailbox_is_a_soft_failure():
    f = only(read("yahoo-soft-mailbox-full.eml"))
    assert (f.recipient, f.action, f.status) == ("oma.vlieger@yahoo.com", "failed", "4.2.2")
    assert f.diagnostic == "smtp; 452 4.2.2 Mailbox over quota: The recipient's mailbox is full"


def test_a_dsn_marked_auto_replied_is_still_a_bounce():
    p = read("dsn-marked-auto-replied.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("dsn", "secretariaat@stichting-voorbeeld.nl", "failed", "5.2.1")
    assert p.original_message_id == "<n12.1055.1a2b3c4d5e6f7a8b@example.nl>"


# --- complaints ----------------------------------------------------------------------------------

def test_arf_abuse_report():
    p = read("arf-abuse.eml")
    assert (p.kind, p.feedback_type) == ("arf", "abuse")
    assert p.failures == (Failure("l.vanderberg@yahoo.com", "failed", None, None),)
    assert p.message_id == "<1765905728.55512.arf@arf.mail.yahoo.com>"
    assert p.original_message_id == "<n12.1051.0f1e2d3c4b5a6978@example.nl>"
    assert p.addressed_to == ("fbl@mail.example.nl",)


def test_arf_without_original_rcpt_to_takes_the_attached_to():
    raw = (CORPUS / "arf-abuse.eml").read_bytes().replace(b"Original-Rcpt-To: <l.vanderberg@yahoo.com>\n", b"")
    p = parse(raw)
    assert (p.kind, p.failures) == ("arf", (Failure("l.vanderberg@yahoo.com", "failed", None, None),))


# --- non-standard bounces ------------------------------------------------------------------------

def test_exim_plain_text_bounce():
    p = read("exim-hard.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("nonstandard", "k.smit@hosting-voorbeeld.nl", "failed", "5.1.1")
    assert f.diagnostic.startswith("550 5.1.1 <k.smit@hosting-voorbeeld.nl>: Recipient address rejected")
    assert p.original_message_id == "<n12.1044.fedcba9876543210@example.nl>"  # quoted inline
    assert p.addressed_to == ("bounce+1044.qa7hhr2s@mail.example.nl",)


def test_qmail_bounce():
    p = read("qmail-hard.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("nonstandard", "p.visser@oudprovider-voorbeeld.nl", "failed", "5.1.1")
    assert f.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    assert p.original_message_id == "<n12.1049.5566778899aabbcc@example.nl>"
    assert p.message_id == "<20261214075503.28411.qmail@mail.oudprovider-voorbeeld.nl>"


def test_exchange_ndr_without_a_report_part():
    # flufl.bounce has no detector for this wording; the status line and the address above it do.
    p = read("exchange-ndr-plain.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("nonstandard", "s.dejong@advies-voorbeeld.nl", "failed", "5.1.1")
    assert f.diagnostic == "#550 5.1.1 RESOLVER.ADR.RecipientNotFound; not found ##"
    assert p.original_message_id == "<n12.1046.00ff11ee22dd33cc@example.nl>"


def test_plain_undeliverable_notice():
    p = read("plain-undeliverable.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.action, f.status) == ("nonstandard", "a.mulder@kantoor-voorbeeld.nl", "failed", "5.2.1")
    assert f.diagnostic == "Reason:    550 5.2.1 Mailbox disabled: this account has been closed."
    assert p.original_message_id == "<n12.1050.deadbeef01234567@example.nl>"  # an indented header line in the text


def test_a_temporary_plain_notice_is_delayed():
    raw = (CORPUS / "plain-undeliverable.eml").read_bytes().replace(b"550 5.2.1", b"452 4.2.2")
    f = only(parse(raw))
    assert (f.action, f.status) == ("delayed", "4.2.2")


# --- auto-replies --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, message_id", [
    ("autoreply-ooo.eml", "<AM0PR06MB4321.ooo.6f5e4d3c2b1a@AM0PR06MB4321.eurprd06.prod.outlook.com>"),
    ("autoreply-vacation-xautoreply.eml", "<vacation.20261218090001.4711@brouwer-voorbeeld.nl>"),
    ("challenge-response.eml", "<cr-9f8e7d6c5b4a@webmail-voorbeeld.nl>"),
])
def test_auto_replies_are_not_reports(name, message_id):
    p = read(name)
    assert (p.kind, p.failures, p.message_id) == ("autoreply", (), message_id)
    assert p.addressed_to[0].startswith("bounce+10")


def test_an_out_of_office_naming_a_colleague_is_no_hard_bounce():
    # flufl.bounce's LLNL detector reads ", p.deboer@zorg-voorbeeld.nl," in this mail as a
    # permanent failure; an auto-reply that does not look like a delivery notice stays one.
    from flufl.bounce import all_failures
    import email
    import email.policy

    raw = (CORPUS / "autoreply-ooo.eml").read_bytes()
    assert all_failures(email.message_from_bytes(raw, policy=email.policy.compat32))[1] == {b"p.deboer@zorg-voorbeeld.nl"}
    assert parse(raw).kind == "autoreply"


@pytest.mark.parametrize("headers", [
    b"Subject: Automatisch antwoord: Je gids\n",
    b"Subject: Abwesenheitsnotiz: Je gids\n",
    b"Subject: Out of Office: Je gids\n",
    b"Subject: Re: Je gids\nX-Autorespond: yes\n",
    b"Subject: Re: Je gids\nPrecedence: auto_reply\n",
    b"Subject: Re: Je gids\nAuto-Submitted: auto-generated\n",
])
def test_the_usual_auto_reply_markers(headers):
    raw = b"From: iemand@example.com\nTo: bounce+1.x@mail.example.nl\nMessage-ID: <a@b>\n" + headers + b"\nIk ben er niet.\n"
    assert parse(raw).kind == "autoreply"


def test_auto_submitted_no_is_an_ordinary_mail():
    raw = b"From: iemand@example.com\nSubject: Vraag over de gids\nAuto-Submitted: no\n\nWaar vind ik deel 2?\n"
    assert parse(raw).kind == "unknown"


# --- bad input -----------------------------------------------------------------------------------

def test_malformed_mime_still_gives_its_report():
    p = read("malformed-mime.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.status) == ("dsn", "e.bos@kapot-voorbeeld.nl", "5.1.1")
    assert p.message_id == "<20261221060707.BROKEN01@mx.kapot-voorbeeld.nl>"
    assert p.original_message_id == "<n12.1056.c0ffee00c0ffee00@example.nl>"
    assert p.subject.startswith("Onbestelbaar:")


def test_wrong_and_unknown_charsets():
    p = read("wrong-charset.eml")
    f = only(p)
    assert (p.kind, f.recipient, f.status) == ("dsn", "f.celik@tekens-voorbeeld.nl", "5.1.1")
    assert p.subject == "Onbestelbaar: Één bericht"  # raw Latin-1 in the header
    assert f.diagnostic == "smtp; 550 5.1.1 Geen postvak voor deze gebruiker (ongeldig adres, één fout)"
    assert p.original_message_id == "<n12.1057.facefeed12345678@example.nl>"  # from the x-unknown-8 part


def test_a_non_standard_bounce_in_a_wrong_charset():
    raw = (CORPUS / "exim-hard.eml").read_bytes().replace(b"charset=us-ascii", b'charset="x-unknown-8"')
    raw = raw.replace(b"User unknown", "Gebruiker onbekend – één".encode("latin-1", "replace"))
    f = only(parse(raw))
    assert (f.recipient, f.status) == ("k.smit@hosting-voorbeeld.nl", "5.1.1")


@pytest.mark.parametrize("raw", [
    b"",
    b"   \r\n\r\n",
    bytes(range(256)) * 64,
    b"\x00\xff\xfe" * 1000,
    b"\x89PNG\r\n\x1a\n" + bytes(4096),
    b"Content-Type: multipart/mixed; boundary=\"x\"\n\n--x\nContent-Type: message/rfc822\n\n--x\n",
    b"Subject: =?utf-8?b?!!!?=\nMessage-ID: \n\nbody\n",
])
def test_garbage_is_unknown_and_never_raises(raw):
    p = parse(raw)
    assert p.kind == "unknown"
    assert p.failures == ()


@pytest.mark.parametrize("raw", [
    b"Message-ID: <r@x>\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
    b"--b\nContent-Type: text/plain\n\nsorry\n--b--\n",
    b"Message-ID: <r@x>\nContent-Type: multipart/report; report-type=delivery-status\n\nno boundary at all\n",
])
def test_a_report_type_without_a_readable_status_part_is_a_dsn_without_failures(raw):
    p = parse(raw)
    assert (p.kind, p.failures, p.message_id) == ("dsn", (), "<r@x>")


def test_a_status_part_claiming_a_transfer_encoding_it_does_not_use_is_read_as_written():
    raw = (CORPUS / "postfix-hard-5.1.1.eml").read_bytes().replace(
        b"Content-Type: message/delivery-status\n", b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n")
    p = parse(raw)
    assert [(f.recipient, f.status) for f in p.failures] == [("j.devries@klant-voorbeeld.nl", "5.1.1")]


def test_a_status_part_the_parser_left_as_text_is_split_into_blocks():
    # A delivery-status part inside an attached multipart that the email package did not parse
    # into blocks (here: built by hand with a string payload) is read block by block.
    from email.message import Message

    from mailer.bounces.parse import _dsn_failures

    part = Message()
    part["Content-Type"] = "message/delivery-status"
    part.set_payload("Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; A@B.nl\nAction: failed\nStatus: 5.1.1\n")
    assert _dsn_failures(part) == [Failure("a@b.nl", "failed", "5.1.1", None)]


def test_every_corpus_file_truncated_anywhere_never_raises():
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes()
        for cut in range(0, len(raw), 97):
            assert parse(raw[:cut]).kind in ("dsn", "arf", "nonstandard", "autoreply", "unknown")


def test_a_huge_report_is_read_from_its_first_megabyte_quickly():
    raw = (CORPUS / "postfix-hard-5.1.1.eml").read_bytes()
    closing = b"--4Rk2Lq0bXqz9sTV.1764580323/mx.klant-voorbeeld.nl--\n"
    filler = (b"X" * 76 + b"\n") * (5 * 1024 * 1024 // 77)
    huge = raw.replace(closing, b"\n" + filler + closing)  # the original's headers, then 5 MB
    assert len(huge) > 5 * 1024 * 1024
    started = time.perf_counter()
    p = parse(huge)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    f = only(p)
    assert (p.kind, f.recipient, f.status) == ("dsn", "j.devries@klant-voorbeeld.nl", "5.1.1")
    assert p.original_message_id == "<n12.1042.abcdef0123456789@example.nl>"


def test_a_huge_unknown_message_is_quick_too():
    # No report: flufl.bounce's detectors run over the (truncated) text.
    huge = b"From: iemand@example.com\nSubject: Grote bijlage\n\n" + (b"blah, blah blah blah\n" * 300_000)
    started = time.perf_counter()
    p = parse(huge)
    assert time.perf_counter() - started < 2.0
    assert p.kind in ("unknown", "nonstandard")


def test_what_lies_beyond_the_first_megabyte_is_not_read():
    raw = (CORPUS / "postfix-hard-5.1.1.eml").read_bytes()
    head, sep, rest = raw.partition(b"--4Rk2Lq0bXqz9sTV.1764580323/mx.klant-voorbeeld.nl\nContent-Description: Delivery report")
    pushed = head + b"\n" + b"Y" * MAX_BYTES + b"\n" + sep + rest
    assert parse(pushed).failures == ()
