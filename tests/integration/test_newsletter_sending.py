"""Sending a newsletter to its audience (campaigns), on SQLite and PostgreSQL: the test-first
rule, a scheduled start through `mailer tick`, the keyset resume after a crash, pause, resume
and cancel, and a lead who ends the newsletter after the mail was queued."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from conftest import START
from test_newsletters import built, cli  # noqa: F401  (fixtures; they use this module's content)
from sqlalchemy import func, select

from mailer.operator import campaigns
from mailer.resources import shipped
from mailer.store.tables import CAMPAIGN_HELD, Campaign, CampaignStatus, Lead, LeadStatus, MailKind, Outbox

NEWSLETTER = '''+++
subject = "{subject}"
preheader = "Twee nieuwe trainingen."
public = false
+++
Het nieuws van deze maand.

[Plan een kennismaking](link('gesprek'))
'''


def _write(folder, subject="Nieuws voor de zomer"):
    (folder / "newsletters" / "zomer.md").write_text(NEWSLETTER.format(subject=subject), encoding="utf-8")


@pytest.fixture
def content(tmp_path):
    folder = tmp_path / "content"
    shutil.copytree(shipped("content"), folder)
    _write(folder)
    return folder


def _leads(built, count: int, **extra) -> list[int]:
    with built.db.transaction() as session:
        rows = [Lead(email=f"lid{n}@example.nl", first_name="Lid", status=LeadStatus.CONFIRMED.value,
                     magnet="mini-guide", marketing_consent=True, created_at=START, confirmed_at=START,
                     updated_at=START, **extra) for n in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _mail(built) -> dict[str, int]:
    """Newsletter outbox rows by status."""
    with built.db.read_only() as session:
        return dict(session.execute(select(Outbox.status, func.count()).where(Outbox.kind == MailKind.NEWSLETTER)
                                    .group_by(Outbox.status)).all())


def _campaign(built) -> Campaign:
    with built.db.read_only() as session:
        return session.scalars(select(Campaign).order_by(Campaign.id.desc())).first()


def _start(built, **options) -> list[str]:
    return campaigns.start_due(built.db, built.content, built.renderer, zone=built.settings.drip_window.zone,
                               now=built.clock.now(), domain=built.settings.mail_domain, **options)


# --- the test first ---------------------------------------------------------------------------

def test_send_is_refused_until_this_content_was_tested(cli, content, tmp_path):
    refused = cli("newsletter", "send", "zomer")
    assert refused.exit_code == 1 and "no test was sent of this content" in refused.output
    assert cli("newsletter", "test", "zomer", "--to", "ik@example.nl").exit_code == 0
    _write(content, subject="Nieuws voor de zomer, herzien")  # changed after the test
    again = cli("newsletter", "send", "zomer")
    assert again.exit_code == 1 and "no test was sent of this content" in again.output
    assert cli("newsletter", "test", "zomer", "--to", "ik@example.nl").exit_code == 0
    sent = cli("newsletter", "send", "zomer", "--at", "2026-12-02T09:00:00+01:00")
    assert sent.exit_code == 0, sent.output
    assert "scheduled for 2026-12-02T08:00:00+00:00" in sent.output
    second = cli("newsletter", "send", "zomer", "--no-test")
    assert second.exit_code == 1 and "has a campaign already" in second.output


def test_no_test_sends_without_a_test(cli):
    result = cli("newsletter", "send", "zomer", "--no-test")
    assert result.exit_code == 0, result.output


# --- a scheduled campaign -----------------------------------------------------------------------

def test_a_scheduled_campaign_goes_out_after_its_start_through_tick(cli, built):
    _leads(built, 5)
    with built.db.transaction() as session:  # outside the audience: no consent
        session.add(Lead(email="nee@example.nl", first_name="Nee", status=LeadStatus.CONFIRMED.value,
                         magnet="mini-guide", marketing_consent=False, created_at=START, updated_at=START))
    start = START + timedelta(hours=1)  # Tuesday 11:00 in Amsterdam: inside the window
    assert cli("newsletter", "send", "zomer", "--no-test", "--at", start.isoformat()).exit_code == 0
    before = cli("tick", "--now", (start - timedelta(minutes=1)).isoformat())
    assert "start-campaigns: nothing to do" in before.output and _mail(built) == {}
    after = cli("tick", "--now", start.isoformat())
    assert after.exit_code == 0, after.output
    assert "queued 5" in after.output
    assert _mail(built) == {"sent": 5}
    campaign = _campaign(built)
    assert (campaign.status, campaign.queued) == (CampaignStatus.DONE, 5)
    with built.db.read_only() as session:
        rows = session.execute(select(Outbox.sequence, Outbox.step, Outbox.priority, Outbox.magnet)
                               .where(Outbox.kind == MailKind.NEWSLETTER).distinct()).all()
    assert rows == [("newsletter:zomer", "zomer", 10, "mini-guide")]


def test_the_enqueue_resumes_after_a_crash_without_duplicates(built):
    ids = _leads(built, 7)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built, batch_size=3, max_batches=1)  # the process dies after one batch
    campaign = _campaign(built)
    assert (campaign.status, campaign.checkpoint, campaign.queued) == (CampaignStatus.SENDING, ids[2], 3)
    assert _mail(built) == {"queued": 3}
    with built.db.transaction() as session:  # a crash between the insert and a later checkpoint
        session.get(Campaign, campaign.id).checkpoint = ids[1]
    _start(built, batch_size=3)
    with built.db.read_only() as session:
        lead_ids = session.scalars(select(Outbox.lead_id).where(Outbox.kind == MailKind.NEWSLETTER)).all()
    assert sorted(lead_ids) == ids  # everyone once
    assert _campaign(built).status == CampaignStatus.DONE


# --- pause, resume, cancel -----------------------------------------------------------------------

def test_pause_holds_the_waiting_mail_and_resume_lets_it_go(built, cli):
    _leads(built, 4)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built, batch_size=2, max_batches=1)
    paused = cli("newsletter", "pause", "zomer")
    assert paused.exit_code == 0 and "is paused; 2 waiting mail(s) held" in paused.output
    assert cli("tick", "--now", built.clock.now().isoformat()).exit_code == 0
    assert _mail(built) == {"queued": 2}  # nothing sent, nothing more queued
    with built.db.read_only() as session:
        assert set(session.scalars(select(Outbox.next_attempt_at))) == {CAMPAIGN_HELD}
    resumed = cli("newsletter", "resume", "zomer")
    assert resumed.exit_code == 0 and "is sending; 2 waiting mail(s) due again" in resumed.output
    assert cli("tick", "--now", built.clock.now().isoformat()).exit_code == 0
    assert _mail(built) == {"sent": 4}
    assert _campaign(built).status == CampaignStatus.DONE


def test_cancel_leaves_sent_mail_sent_and_cancels_the_rest(built, cli):
    ids = _leads(built, 4)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built, batch_size=2, max_batches=1)
    with built.db.transaction() as session:
        session.execute(Outbox.__table__.update().where(Outbox.lead_id == ids[0]).values(status="sent"))
    result = cli("newsletter", "cancel", "zomer")
    assert result.exit_code == 0 and "is cancelled; 1 waiting mail(s) cancelled" in result.output
    assert cli("tick", "--now", built.clock.now().isoformat()).exit_code == 0
    assert _mail(built) == {"sent": 1, "cancelled": 1}  # and the other two never queued
    assert _campaign(built).status == CampaignStatus.CANCELLED
    assert cli("newsletter", "send", "zomer", "--no-test").exit_code == 0  # a cancelled one is not live


# --- ending the newsletter after the mail was queued ----------------------------------------------

def test_a_lead_who_ended_the_newsletter_after_the_enqueue_is_not_sent(built, cli):
    ids = _leads(built, 3)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built)
    assert _mail(built) == {"queued": 3}
    with built.db.transaction() as session:  # directly: the unsubscribe page would also cancel the row
        session.get(Lead, ids[1]).newsletter_ended_at = built.clock.now()
    assert cli("tick", "--now", built.clock.now().isoformat()).exit_code == 0
    assert _mail(built) == {"sent": 2, "cancelled": 1}
    with built.db.read_only() as session:
        cancelled = session.scalar(select(Outbox.lead_id).where(Outbox.status == "cancelled"))
    assert cancelled == ids[1]


def test_a_lead_erased_after_the_start_gets_nothing_more(built, cli):
    ids = _leads(built, 4)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True)
    _start(built, batch_size=2, max_batches=1)  # lid0 and lid1 queued, lid2 and lid3 still to come
    assert cli("lead", "erase", "lid1@example.nl", "--yes").exit_code == 0  # queued, not sent
    assert cli("lead", "erase", "lid3@example.nl", "--yes").exit_code == 0  # not queued yet
    assert cli("tick", "--now", built.clock.now().isoformat()).exit_code == 0
    with built.db.read_only() as session:
        sent = set(session.scalars(select(Outbox.lead_id).where(Outbox.kind == MailKind.NEWSLETTER)))
    assert sent == {ids[0], ids[2]} and _mail(built) == {"sent": 2}
    assert _campaign(built).status == CampaignStatus.DONE


# --- one marketing mail per lead per gap -----------------------------------------------------------

def test_on_a_newsletter_day_the_drip_step_waits_and_the_newsletter_does_not(built):
    from mailer.store.tables import Enrollment

    gets_newsletter, ended = _leads(built, 2)
    now = built.clock.now()
    with built.db.transaction() as session:
        session.get(Lead, ended).newsletter_ended_at = now - timedelta(days=30)
        session.add_all([Enrollment(lead_id=i, sequence="mini-guide", status="active", anchor_at=now - timedelta(days=2),
                                    position=-1, next_due_at=now, created_at=now, updated_at=now)
                         for i in (gets_newsletter, ended)])
    campaigns.schedule(built.db, built.content, "zomer", now=now, no_test=True)
    _start(built)
    built.drip.run(built.db, now)

    def drip_leads():
        with built.db.read_only() as session:
            return set(session.scalars(select(Outbox.lead_id).where(Outbox.kind == MailKind.DRIP)))

    assert drip_leads() == {ended}  # the newsletter's lead waits
    assert _mail(built) == {"queued": 1}  # the newsletter went on regardless
    built.drip.run(built.db, now + timedelta(hours=built.settings.drip_min_gap_hours, minutes=1))
    assert drip_leads() == {ended, gets_newsletter}  # the next allowed day


def _enrolled(built, *lead_ids) -> None:
    from mailer.store.tables import Enrollment

    now = built.clock.now()
    with built.db.transaction() as session:
        session.add_all([Enrollment(lead_id=i, sequence="mini-guide", status="active", anchor_at=now - timedelta(days=2),
                                    position=-1, next_due_at=now, created_at=now, updated_at=now) for i in lead_ids])


def _drip_leads(built) -> set[int]:
    with built.db.read_only() as session:
        return set(session.scalars(select(Outbox.lead_id).where(Outbox.kind == MailKind.DRIP)))


def test_a_drip_step_waits_for_a_campaign_that_starts_later_that_day(built):
    audience, other = _leads(built, 2)
    with built.db.transaction() as session:
        session.get(Lead, other).newsletter_ended_at = built.clock.now()
    _enrolled(built, audience, other)
    start = built.clock.now() + timedelta(hours=4)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), start_at=start, no_test=True)
    built.drip.run(built.db, built.clock.now())  # the step is due now; the newsletter comes at 4
    assert _drip_leads(built) == {other}
    built.clock.advance(hours=4)
    _start(built)
    assert _mail(built) == {"queued": 1}
    built.drip.run(built.db, start + timedelta(hours=built.settings.drip_min_gap_hours) - timedelta(minutes=1))
    assert _drip_leads(built) == {other}
    built.drip.run(built.db, start + timedelta(hours=built.settings.drip_min_gap_hours))
    assert _drip_leads(built) == {other, audience}


def test_during_a_subject_test_the_rest_of_the_audience_keeps_its_gap_for_the_winner(built):
    ids = _leads(built, 200)
    _enrolled(built, *ids)
    campaigns.schedule(built.db, built.content, "zomer", now=built.clock.now(), no_test=True,
                       ab=campaigns.SubjectTest("Onderwerp B", share=10, hours=4))
    _start(built)  # the test group (20) is queued; the other 180 get the winner in about 4 hours
    assert _campaign(built).status == CampaignStatus.TESTING
    built.drip.run(built.db, built.clock.now())
    assert _drip_leads(built) == set()  # nobody gets a drip step and then the newsletter that day
