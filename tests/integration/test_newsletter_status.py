"""A campaign in figures, on SQLite and PostgreSQL: `mailer newsletter status` (text and JSON),
`mailer newsletter list` and the campaigns in `mailer stats --json`. One campaign is sent to
five leads through `mailer tick`, one of whose mail failed; clicks count once per lead per link,
and a newsletter unsubscribe counts for the campaign whose mail the lead got."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import test_newsletter_sending as sending
from conftest import START
from sqlalchemy import update

from mailer.operator import campaigns
from mailer.store.tables import (
    Click,
    ConsentEvent,
    ConsentKind,
    Lead,
    Outbox,
    OutboxStatus,
)

content, built, cli = sending.content, sending.built, sending.cli  # the fixtures of the sending tests
_leads, _start = sending._leads, sending._start

SENT_AT = START + timedelta(hours=1)  # Tuesday 11:00 in Amsterdam: inside the send window
REPLY = "550 5.1.1 <lid4@example.nl>: user unknown"


@pytest.fixture
def sent(built, cli):
    """Five leads in the audience; the fifth one's mail failed, the other four were sent."""
    ids = _leads(built, 5)
    assert cli("newsletter", "send", "zomer", "--no-test", "--at", SENT_AT.isoformat()).exit_code == 0
    built.clock.now = lambda: SENT_AT
    _start(built)
    with built.db.transaction() as session:
        session.execute(update(Outbox).where(Outbox.lead_id == ids[4])
                        .values(status=OutboxStatus.FAILED.value, attempts=1, last_error=REPLY))
    ticked = cli("tick", "--now", SENT_AT.isoformat())
    assert ticked.exit_code == 0, ticked.output
    return ids


def _click(session, lead_id, link, minutes, sequence="newsletter:zomer"):
    session.add(Click(lead_id=lead_id, sequence=sequence, step="zomer", link=link,
                      at=SENT_AT + timedelta(minutes=minutes)))


def _ended(session, lead_id, minutes):
    session.add(ConsentEvent(lead_id=lead_id, kind=ConsentKind.NEWSLETTER_END.value, magnet="mini-guide",
                             marketing_consent=True, form="newsletter-page", at=SENT_AT + timedelta(minutes=minutes)))


def test_status_counts_the_mail_and_names_the_failure(sent, cli):
    result = cli("newsletter", "status", "zomer", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert {k: figures[k] for k in ("status", "audience", "audience_from", "queued", "sent", "deferred", "failed",
                                    "clicks", "unsubscribes")} == {
        "status": "done", "audience": 5, "audience_from": "queued", "queued": 5, "sent": 4, "deferred": 0,
        "failed": 1, "clicks": {}, "unsubscribes": 0}
    assert figures["start_at"] == SENT_AT.isoformat()
    assert figures["failures"] == [{"recipient": "lid4@example.nl", "reply": REPLY}]
    text = cli("newsletter", "status", "zomer")
    assert text.exit_code == 0, text.output
    assert "done, start 2026-12-01T10:00:00+00:00" in text.output
    assert f"lid4@example.nl: {REPLY}" in text.output
    assert re.search(r"audience +5  \(the number queued\)", text.output)


def test_a_campaign_still_to_start_counts_its_frozen_audience_now(built, cli):
    ids = _leads(built, 3)
    assert cli("newsletter", "send", "zomer", "--no-test", "--at", SENT_AT.isoformat()).exit_code == 0
    with built.db.transaction() as session:  # after the scheduling: counted now, when it ends the newsletter
        session.get(Lead, ids[0]).newsletter_ended_at = START
        session.add(Lead(email="later@example.nl", first_name="Later", status="confirmed", magnet="mini-guide",
                         marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START))
    figures = campaigns.figures(built.db, "zomer", zone=built.settings.drip_window.zone)
    assert (figures.status, figures.audience, figures.audience_from, figures.queued) == ("scheduled", 3, "filters", 0)
    assert "(its frozen filters, counted now)" in cli("newsletter", "status", "zomer").output


def test_clicks_count_once_per_lead_per_link(sent, built):
    with built.db.transaction() as session:
        _click(session, sent[0], "gesprek", 5)
        _click(session, sent[0], "gesprek", 9)  # the same lead again
        _click(session, sent[1], "gesprek", 7)
        _click(session, sent[0], "url-1", 8)
        _click(session, sent[4], "gesprek", 8)  # its mail failed: not this campaign's click
        _click(session, sent[2], "gesprek", 8, sequence="mini-guide")  # a drip mail's click
    figures = campaigns.figures(built.db, "zomer", zone=built.settings.drip_window.zone)
    assert figures.clicks == {"gesprek": 2, "url-1": 1}


def test_a_newsletter_unsubscribe_after_the_mail_is_attributed(sent, built, cli):
    with built.db.transaction() as session:
        _ended(session, sent[1], 30)
        _ended(session, sent[2], -30)  # before the mail was sent
        _ended(session, sent[4], 30)  # did not get the mail
        session.get(Lead, sent[3]).status = "unsubscribed"  # ended everything: not a newsletter-end event
    figures = json.loads(cli("newsletter", "status", "zomer", "--json").output)
    assert figures["unsubscribes"] == 1


def test_list_shows_each_campaign(sent, cli, built):
    assert cli("newsletter", "cancel", "zomer").exit_code == 0  # nothing waits: it stays as it is
    again = SENT_AT + timedelta(days=1)
    assert cli("newsletter", "send", "zomer", "--no-test", "--at", again.isoformat()).exit_code == 0
    result = cli("newsletter", "list")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"zomer  scheduled  {again.isoformat()}  queued 0, sent 0, failed 0",
        f"zomer  cancelled  {SENT_AT.isoformat()}  queued 5, sent 4, failed 1",
    ]


def test_list_without_campaigns(cli):
    assert cli("newsletter", "list").output == "no campaigns\n"


def test_status_of_a_newsletter_never_sent_is_refused(cli):
    result = cli("newsletter", "status", "zomer")
    assert result.exit_code != 0 and "has no campaign" in result.output


def test_stats_includes_the_campaigns(sent, built, cli):
    with built.db.transaction() as session:
        _click(session, sent[0], "gesprek", 5)
        _ended(session, sent[1], 30)
    result = cli("stats", "--json")
    assert result.exit_code == 0, result.output
    [campaign] = json.loads(result.output)["campaigns"]
    assert {k: campaign[k] for k in ("slug", "status", "audience", "queued", "sent", "deferred", "failed", "clicks",
                                     "unsubscribes")} == {
        "slug": "zomer", "status": "done", "audience": 5, "queued": 5, "sent": 4, "deferred": 0, "failed": 1,
        "clicks": {"gesprek": 1}, "unsubscribes": 1}
    text = cli("stats")
    assert "newsletter campaigns" in text.output and "zomer" in text.output
