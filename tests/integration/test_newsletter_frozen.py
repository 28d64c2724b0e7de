"""What a campaign sends is frozen at its start, and a subject A/B test picks its winner by
clicks; on SQLite and PostgreSQL, through a real SMTP server.

Frozen: after the start an edit (or removal) of the newsletter's file changes nothing in
flight: later and retried mail is the mail the first recipients got, a plain link leads where
it led in that mail, and the archive shows what was sent. The subject test: half of a share of
the audience gets each subject, the rest waits for the winner (more unique clicks, ties: A)
until `--ab-hours` after the test mail began to go out, then gets the winner's subject."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner
from conftest import START, make_env
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from mailer.cli import main
from mailer.operator import campaigns
from mailer.resources import shipped
from mailer.store.tables import Campaign, CampaignMail, CampaignStatus, Lead, LeadStatus, MailKind, Outbox
from mailer.web import create_app

LETTER = '''+++
subject = "{subject}"
preheader = "Twee nieuwe trainingen."
public = true
+++
{body}

Lees [het verhaal]({first}) of [de agenda]({second}).

[Plan een kennismaking](link('gesprek'))
'''
FIRST, SECOND = "https://www.example.nl/verhaal", "https://www.example.nl/agenda"


def _write(folder, subject="Nieuws voor de zomer", body="Het nieuws van deze maand.", first=FIRST, second=SECOND):
    (folder / "newsletters" / "zomer.md").write_text(
        LETTER.format(subject=subject, body=body, first=first, second=second), encoding="utf-8")


@pytest.fixture
def content(tmp_path):
    folder = tmp_path / "content"
    shutil.copytree(shipped("content"), folder)
    _write(folder)
    return folder


@pytest.fixture
def build(make_services, database_url, content, smtp_server):
    """Services as a process started now builds them (after an edit of the file: a restart)."""
    return lambda: make_services(database_url, MAILER_CONTENT_PATH=str(content), MAILER_MAIL_URL=smtp_server.url,
                                 MAILER_BASE_URL="https://mail.example.nl")


@pytest.fixture
def built(build):
    return build()


@pytest.fixture
def cli(tmp_path, database_url, content, smtp_server, built):
    runner = CliRunner()

    def run(*args):
        environment = make_env(tmp_path, MAILER_DATABASE_URL=database_url, MAILER_CONTENT_PATH=str(content),
                               MAILER_MAIL_URL=smtp_server.url, MAILER_BASE_URL="https://mail.example.nl")
        return runner.invoke(main, list(args), env=environment, catch_exceptions=False)

    return run


def _leads(built, count: int) -> list[int]:
    with built.db.transaction() as session:
        rows = [Lead(email=f"lid{n}@example.nl", first_name="Lid", status=LeadStatus.CONFIRMED.value,
                     magnet="mini-guide", marketing_consent=True, created_at=START, confirmed_at=START,
                     updated_at=START) for n in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _start(built) -> list[str]:
    """The start-campaigns job at the clock's time, as `mailer tick` runs it."""
    return campaigns.start_due(built.db, built.content, built.renderer, zone=built.settings.drip_window.zone,
                               now=built.clock.now(), domain=built.settings.mail_domain)


def _send(built) -> None:
    report = built.sender().dispatch_all()
    assert not report.errors, report.errors


def _received(smtp_server) -> dict[str, object]:
    """The messages the server got, by recipient (the last one each)."""
    return {envelope.rcpt_tos[0]: message_from_bytes(envelope.content, policy=policy.default)
            for envelope in smtp_server.messages}


def _text(message) -> str:
    return message.get_body(("plain",)).get_content()


# --- frozen at the start ---------------------------------------------------------------------

def test_an_edit_after_the_start_changes_nothing_in_flight(built, build, content, smtp_server, cli):
    ids = _leads(built, 3)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    with built.db.transaction() as session:  # one sent now, one later, one retried later
        session.execute(update(Outbox).where(Outbox.lead_id.in_(ids[1:])).values(next_attempt_at=START + timedelta(days=1)))
    _send(built)
    # the operator edits the file: another subject, body and link, then restarts the workers
    _write(content, subject="Herzien onderwerp", body="Een heel andere tekst.", first="https://evil.example/")
    later = build()
    with later.db.transaction() as session:  # the third one was tried before and deferred
        session.execute(update(Outbox).where(Outbox.lead_id == ids[2]).values(status="deferred", attempts=1))
    later.clock.advance(days=1)
    _send(later)
    got = _received(smtp_server)
    assert set(got) == {"lid0@example.nl", "lid1@example.nl", "lid2@example.nl"}
    for message in got.values():
        assert message["Subject"] == "Nieuws voor de zomer"
        assert "Het nieuws van deze maand." in _text(message) and "heel andere" not in _text(message)
    first, third = (_text(got[address]) for address in ("lid0@example.nl", "lid2@example.nl"))
    strip = re.compile(r"https://mail\.example\.nl/\S+")  # each recipient's own signed links
    assert strip.sub("LINK", first) == strip.sub("LINK", third)
    status = json.loads(cli("newsletter", "status", "zomer", "--json").output)
    assert status["subject"] == "Nieuws voor de zomer" and status["sent"] == 3


def test_the_file_may_go_once_the_campaign_started(built, build, content, smtp_server):
    _leads(built, 2)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    (content / "newsletters" / "zomer.md").unlink()
    _send(build())
    assert len(smtp_server.messages) == 2


def test_the_mail_is_frozen_per_magnet_once_with_its_hash(built):
    _leads(built, 1)
    view = campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now() + timedelta(hours=2),
                              no_test=True, start_at=built.clock.now() + timedelta(hours=2))
    _start(built)  # not yet due: nothing frozen
    with built.db.read_only() as session:
        assert session.get(Campaign, view.id).frozen_at is None
    built.clock.advance(hours=2)
    _start(built)
    _start(built)  # again: still one per variant and magnet
    with built.db.read_only() as session:
        mails = session.scalars(select(CampaignMail).where(CampaignMail.campaign_id == view.id)).all()
        campaign = session.get(Campaign, view.id)
    assert sorted((mail.variant, mail.magnet) for mail in mails) == [("A", magnet) for magnet in
                                                                     sorted(built.content.magnets)]
    assert all(len(mail.sha256) == 64 and "MAILERNAMEMARK" in mail.html for mail in mails)
    assert (campaign.subject, campaign.public, campaign.frozen_at) == ("Nieuws voor de zomer", True, built.clock.now())


def test_a_plain_link_leads_where_it_led_in_the_mail_sent(built, build, content, smtp_server):
    _leads(built, 1)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    _send(built)
    [message] = _received(smtp_server).values()
    tracked = re.findall(r"https://mail\.example\.nl(/k/[^\s)>]+)", _text(message))
    _write(content, first=SECOND, second=FIRST)  # the two links swapped in the file afterwards
    client = create_app(services=build()).test_client()
    targets = [client.get(path).headers["Location"] for path in tracked]
    assert FIRST in targets and SECOND in targets
    assert targets.index(FIRST) < targets.index(SECOND)  # as in the mail: the story first


def test_the_archive_shows_what_was_sent_not_the_file(built, build, content, cli):
    _leads(built, 1)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    _write(content, subject="Herzien onderwerp", body="Een heel andere tekst.")
    (content / "newsletters" / "zomer.md").write_text(
        (content / "newsletters" / "zomer.md").read_text().replace("public = true", "public = false"))
    web = create_app(services=build()).test_client()
    page = web.get("/nieuwsbrief/zomer").get_data(as_text=True)
    assert "Nieuws voor de zomer" in page and "Het nieuws van deze maand." in page
    assert "Herzien" not in page and "heel andere" not in page
    assert cli("newsletter", "unpublish", "zomer").exit_code == 0
    (content / "newsletters" / "zomer.md").unlink()  # tidying up later publishes nothing again
    assert web.get("/nieuwsbrief/zomer").status_code == 404
    assert "zomer" not in web.get("/nieuwsbrief/feed.xml").get_data(as_text=True)
    assert cli("newsletter", "publish", "zomer").exit_code == 0
    assert web.get("/nieuwsbrief/zomer").status_code == 200


def test_publishing_a_newsletter_never_sent_is_refused(cli):
    result = cli("newsletter", "unpublish", "zomer")
    assert result.exit_code == 2 and "no campaign that started" in result.output


def test_a_campaign_from_before_freezing_shows_its_file_in_the_archive(built):
    """A campaign done before migration 0007 has no frozen copy: its file, while public."""
    with built.db.transaction() as session:
        session.add(Campaign(slug="zomer", status=CampaignStatus.DONE.value, start_at=START, content_hash="0" * 64,
                             filters="{}", checkpoint=9, queued=9, created_at=START, updated_at=START,
                             finished_at=START))
    page = create_app(services=built).test_client().get("/nieuwsbrief/zomer")
    assert page.status_code == 200 and "Het nieuws van deze maand." in page.get_data(as_text=True)


def test_a_click_in_an_older_campaigns_mail_leads_where_that_mail_said(built, build, content, smtp_server):
    ids = _leads(built, 2)
    with built.db.transaction() as session:  # only lid0 gets the first campaign
        session.get(Lead, ids[1]).marketing_consent = False
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    _send(built)
    campaigns.cancel(built.db, "zomer", now=built.clock.now())
    _write(content, first="https://www.example.nl/nieuw-1", second="https://www.example.nl/nieuw-2")
    again = build()  # the edited newsletter sent again: only lid1 is in its audience now
    with again.db.transaction() as session:
        session.get(Lead, ids[0]).newsletter_ended_at = again.clock.now()
        session.get(Lead, ids[1]).marketing_consent = True
    campaigns.schedule(again.db, again.content, "zomer", now=again.clock.now(), no_test=True)
    _start(again)
    _send(again)
    got = _received(smtp_server)
    client = create_app(services=again).test_client()

    def first_link(address: str) -> str:
        path = re.findall(r"https://mail\.example\.nl(/k/[^\s)>]+)", _text(got[address]))[0]
        return client.get(path).headers["Location"]

    assert first_link("lid0@example.nl") == FIRST  # the first campaign's mail, as sent
    assert first_link("lid1@example.nl") == "https://www.example.nl/nieuw-1"


def test_the_database_allows_one_live_campaign_per_newsletter(built):
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    with pytest.raises(IntegrityError):  # what a second `send` racing the first would write
        with built.db.transaction() as session:
            session.add(Campaign(slug="zomer", status=CampaignStatus.SCHEDULED.value, start_at=START,
                                 content_hash="0" * 64, filters="{}", created_at=START, updated_at=START))
    campaigns.cancel(built.db, "zomer", now=built.clock.now())
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)  # allowed again


# --- the subject A/B test ----------------------------------------------------------------------

def _by_subject(smtp_server) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for address, message in _received(smtp_server).items():
        found.setdefault(str(message["Subject"]), set()).add(address)
    return found


def _click(client, message, count: int = 1) -> None:
    """The recipient clicks the first tracked link of their mail `count` times."""
    path = re.findall(r"https://mail\.example\.nl(/k/[^\s)>]+)", _text(message))[0]
    for _ in range(count):
        assert client.get(path).status_code == 302


def test_the_subject_test_sends_both_then_the_winner_to_the_rest(built, smtp_server, cli):
    _leads(built, 400)
    test = campaigns.SubjectTest("Onderwerp B", share=20, hours=4)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True, ab=test)
    _start(built)
    _send(built)
    first = _by_subject(smtp_server)
    # 20 % of 400 (every 200 consecutive lead ids fill every bucket once): 40 each
    assert {subject: len(got) for subject, got in first.items()} == {"Nieuws voor de zomer": 40, "Onderwerp B": 40}
    assert _mail_count(built) == 80
    # B gets more unique clicks: 3 leads against 2, however often A's click
    client = create_app(services=built).test_client()
    received = _received(smtp_server)
    for address in sorted(first["Nieuws voor de zomer"])[:2]:
        _click(client, received[address], count=5)
    for address in sorted(first["Onderwerp B"])[:3]:
        _click(client, received[address])
    built.clock.advance(hours=3, minutes=59)
    assert _start(built) == [] and _mail_count(built) == 80  # the test runs 4 hours
    status = json.loads(cli("newsletter", "status", "zomer", "--json").output)
    assert status["status"] == "testing" and status["ab"]["winner"] is None
    assert {name: (v["sent"], v["clicks"]) for name, v in status["ab"]["variants"].items()} == {
        "A": (40, 2), "B": (40, 3)}
    built.clock.advance(minutes=1)
    lines = _start(built)
    assert lines[0].endswith("subject B won (2 against 3 unique clicks); the rest follows"), lines
    _send(built)
    final = _by_subject(smtp_server)
    assert len(final["Onderwerp B"]) == 360 and len(final["Nieuws voor de zomer"]) == 40
    assert _mail_count(built) == 400 == len(smtp_server.messages)  # everyone once
    status = json.loads(cli("newsletter", "status", "zomer", "--json").output)
    assert status["status"] == "done" and status["ab"]["winner"] == "B"
    assert status["ab"]["variants"]["B"]["sent"] == 360 and status["ab"]["variants"]["A"]["sent"] == 40
    assert "subject test: winner B" in cli("newsletter", "list").output


def test_a_tie_goes_to_the_files_subject(built, smtp_server):
    _leads(built, 200)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=1))
    _start(built)
    _send(built)
    built.clock.advance(hours=1)
    assert "subject A won (0 against 0 unique clicks)" in _start(built)[0]
    _send(built)
    assert {subject: len(got) for subject, got in _by_subject(smtp_server).items()} == {
        "Nieuws voor de zomer": 190, "Onderwerp B": 10}


def test_the_test_hours_count_from_when_its_mail_began_to_go_out(built, smtp_server):
    _leads(built, 200)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=1))
    _start(built)  # queued, but nothing sent yet (the window closed, say)
    built.clock.advance(hours=5)
    assert _start(built) == [] and _mail_count(built) == 20  # no winner on an unsent test
    _send(built)
    built.clock.advance(minutes=59)
    assert _start(built) == []
    built.clock.advance(minutes=1)
    assert "won" in _start(built)[0]


def test_pause_and_resume_during_the_test_keep_waiting_for_the_winner(built, cli):
    _leads(built, 200)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=1))
    _start(built)
    assert cli("newsletter", "pause", "zomer").exit_code == 0
    resumed = cli("newsletter", "resume", "zomer")
    assert "is testing" in resumed.output, resumed.output
    _send(built)
    built.clock.advance(hours=1)
    assert "won" in _start(built)[0]


def test_no_winner_while_a_worker_holds_the_whole_test_group(built):
    _leads(built, 200)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=1))
    _start(built)
    with built.db.transaction() as session:  # claimed by a worker, nothing sent yet
        session.execute(update(Outbox).values(status="sending", claimed_by="elders:1",
                                              claimed_until=built.clock.now() + timedelta(minutes=5)))
    built.clock.advance(hours=2)
    assert _start(built) == [] and _mail_count(built) == 20


def test_a_pause_during_the_test_adds_to_its_hours(built, cli):
    ids = _leads(built, 400)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=20, hours=4))
    _start(built)
    with built.db.transaction() as session:  # one test mail went out before the pause
        first = session.scalar(select(Outbox.id).where(Outbox.lead_id.in_(ids)).order_by(Outbox.id).limit(1))
        session.execute(update(Outbox).where(Outbox.id == first).values(status="sent", sent_at=built.clock.now()))
    built.clock.advance(hours=1)
    campaigns.pause(built.db, "zomer", now=built.clock.now())  # on the test's clock, unlike the CLI
    built.clock.advance(days=1)
    assert campaigns.resume(built.db, "zomer", now=built.clock.now()).status == "testing"
    assert _start(built) == []  # 1 hour ran before the pause: 3 to go
    _send(built)
    built.clock.advance(hours=2, minutes=59)
    assert _start(built) == [] and _mail_count(built) == 80
    built.clock.advance(minutes=1)
    assert "won" in _start(built)[0]
    status = json.loads(cli("newsletter", "status", "zomer", "--json").output)
    assert status["ab"]["decided_by"] == {"A": 0, "B": 0} and status["ab"]["winner"] == "A"


def test_a_test_group_that_all_failed_is_decided_without_waiting(built):
    _leads(built, 200)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=4))
    _start(built)
    with built.db.transaction() as session:
        session.execute(update(Outbox).values(status="failed", last_error="550 5.1.1 no such user"))
    assert "subject A won (0 against 0 unique clicks)" in _start(built)[0]
    assert _mail_count(built) == 200


def test_the_b_subject_needs_its_own_test_send(cli):
    refused = cli("newsletter", "send", "zomer", "--ab-subject", "Onderwerp B")
    assert refused.exit_code == 1 and "no test was sent of this content" in refused.output
    assert cli("newsletter", "test", "zomer", "--to", "ik@example.nl").exit_code == 0
    refused = cli("newsletter", "send", "zomer", "--ab-subject", "Onderwerp B")
    assert refused.exit_code == 1 and "no test was sent of the B subject" in refused.output
    tested = cli("newsletter", "test", "zomer", "--to", "ik@example.nl", "--ab-subject", "Onderwerp B")
    assert tested.exit_code == 0, tested.output
    sent = cli("newsletter", "send", "zomer", "--ab-subject", "Onderwerp B", "--ab-share", "30", "--ab-hours", "2")
    assert sent.exit_code == 0, sent.output
    assert "subject test: 30 % of the audience, winner after 2 h" in sent.output


@pytest.mark.parametrize("args, option", [
    (("--ab-subject", "B", "--ab-share", "1"), "--ab-share"),
    (("--ab-subject", "B", "--ab-share", "101"), "--ab-share"),
    (("--ab-subject", "B", "--ab-hours", "0"), "--ab-hours"),
    (("--ab-subject", "  "), "--ab-subject"),
    (("--ab-share", "20"), "--ab-subject"),
])
def test_a_bad_subject_test_is_refused_naming_the_option(cli, args, option):
    result = cli("newsletter", "send", "zomer", "--no-test", *args)
    assert result.exit_code == 2 and option in result.output, result.output


def test_the_test_mail_of_the_b_subject_arrives_with_it(cli, smtp_server):
    assert cli("newsletter", "test", "zomer", "--to", "ik@example.nl", "--ab-subject", "Onderwerp B").exit_code == 0
    [message] = _received(smtp_server).values()
    assert message["Subject"] == "[TEST] Onderwerp B"


def _mail_count(built) -> int:
    with built.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == MailKind.NEWSLETTER))
