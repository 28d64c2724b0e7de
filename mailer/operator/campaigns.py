"""Sending a newsletter to its audience: a campaign (`mailer newsletter send|pause|resume|cancel`)
and the one periodic job that queues the campaigns whose start time has come.

A campaign freezes the newsletter's content hash and audience filters when it is scheduled.
The job queues its audience by lead id in batches (keyset: lead id > checkpoint), each batch one
transaction that inserts the outbox rows (key `newsletter:<campaign id>:<lead id>`, ON CONFLICT
DO NOTHING) and moves the checkpoint, so a crash resumes after the last whole batch and never
queues a lead twice. The sender then sends them as marketing mail (window, pause, priority).

`figures` / `all_figures` are a campaign's figures (`mailer newsletter status|list`, `mailer stats`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import Select, String, case, cast, func, literal, select, update

from mailer.content.files import Content
from mailer.content.newsletters import Audience, click_sequence
from mailer.delivery.kinds import KINDS
from mailer.errors import InvalidRequest, MailerError
from mailer.operator.newsletters import audience_query, content_hash, find
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import (
    CAMPAIGN_HELD,
    LIVE_CAMPAIGN,
    Campaign,
    CampaignStatus,
    Click,
    ConsentEvent,
    ConsentKind,
    Lead,
    MailKind,
    Outbox,
    OutboxStatus,
    TestSend,
)

BATCH_SIZE = 10_000
WAITING = (OutboxStatus.QUEUED.value, OutboxStatus.DEFERRED.value)


@dataclass(frozen=True)
class CampaignView:
    id: int
    slug: str
    status: str
    start_at: datetime
    content_hash: str
    queued: int
    changed_rows: int = 0  # rows held, released or cancelled by this command


def _view(campaign: Campaign, changed: int = 0) -> CampaignView:
    return CampaignView(campaign.id, campaign.slug, campaign.status, campaign.start_at, campaign.content_hash,
                        campaign.queued, changed)


def filters_json(audience: Audience) -> str:
    data = {name: (value.isoformat() if isinstance(value, date) else list(value) if isinstance(value, tuple) else value)
            for name, value in vars(audience).items()}
    return json.dumps(data, sort_keys=True)


def filters_from_json(text: str) -> Audience:
    data = json.loads(text)
    for name in ("signed_up_after", "signed_up_before"):
        if data.get(name):
            data[name] = date.fromisoformat(data[name])
    for name in ("magnets", "clicked", "not_clicked"):
        data[name] = tuple(data.get(name) or ())
    return Audience(**data)


def schedule(db: Database, content: Content, slug: str, *, now: datetime, start_at: datetime | None = None,
             no_test: bool = False) -> CampaignView:
    """Schedule the newsletter for its audience at start_at (default now). Refused unless a test
    was sent for exactly this content (or no_test), and while the slug has a live campaign."""
    newsletter = find(content, slug)
    digest = content_hash(newsletter)
    with db.transaction() as session:
        if not no_test and session.scalar(select(TestSend.id).where(
                TestSend.slug == slug, TestSend.content_hash == digest).limit(1)) is None:
            raise MailerError(f"newsletter {slug}: no test was sent of this content; run `mailer newsletter test "
                              f"{slug} --to YOU` first (or give --no-test)")
        live = session.scalar(select(Campaign).where(Campaign.slug == slug,
                                                     Campaign.status.in_([s.value for s in LIVE_CAMPAIGN])))
        if live is not None:
            raise MailerError(f"newsletter {slug} has a campaign already ({live.status}, starts "
                              f"{live.start_at.isoformat()}); cancel it first")
        campaign = Campaign(slug=slug, status=CampaignStatus.SCHEDULED.value,
                            start_at=(start_at or now).astimezone(timezone.utc),
                            content_hash=digest, filters=filters_json(newsletter.audience), checkpoint=0, queued=0,
                            created_at=now, updated_at=now)
        session.add(campaign)
        session.flush()
        return _view(campaign)


def _current(session, slug: str) -> Campaign:
    """The slug's newest campaign that is not cancelled, locked."""
    campaign = session.scalar(select(Campaign).where(Campaign.slug == slug,
                                                     Campaign.status != CampaignStatus.CANCELLED.value)
                              .order_by(Campaign.id.desc()).limit(1).with_for_update())
    if campaign is None:
        raise InvalidRequest(f"newsletter {slug!r} has no campaign (schedule one with `mailer newsletter send`)",
                             "SLUG")
    return campaign


def _rows(campaign_id: int):
    """The campaign's waiting rows (its idempotency keys share one prefix)."""
    return (Outbox.idempotency_key.like(f"newsletter:{campaign_id}:%"), Outbox.status.in_(WAITING))


def pause(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Queue no more and hold the campaign's waiting rows (next_attempt_at far away); a row a
    worker has claimed already goes out."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        if campaign.status == CampaignStatus.PAUSED:
            return _view(campaign)
        held = session.execute(update(Outbox).where(*_rows(campaign.id)).values(next_attempt_at=CAMPAIGN_HELD)).rowcount
        campaign.status, campaign.updated_at = CampaignStatus.PAUSED.value, now
        return _view(campaign, held)


def resume(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Queue on (from the checkpoint) and make its held rows due at once."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        if campaign.status != CampaignStatus.PAUSED:
            raise InvalidRequest(f"newsletter {slug}: its campaign is {campaign.status}, not paused", "SLUG")
        released = session.execute(update(Outbox).where(*_rows(campaign.id), Outbox.next_attempt_at == CAMPAIGN_HELD)
                                   .values(next_attempt_at=now)).rowcount
        started = campaign.checkpoint > 0 or campaign.queued > 0
        campaign.status = (CampaignStatus.SENDING if started else CampaignStatus.SCHEDULED).value
        campaign.updated_at = now
        return _view(campaign, released)


def cancel(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Queue no more; its queued and deferred rows are cancelled, sent mail stays sent."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        cancelled = session.execute(update(Outbox).where(*_rows(campaign.id))
                                    .values(status=OutboxStatus.CANCELLED.value,
                                            last_error="campaign cancelled")).rowcount
        campaign.status, campaign.updated_at, campaign.finished_at = CampaignStatus.CANCELLED.value, now, now
        return _view(campaign, cancelled)


# --- the start-campaigns job --------------------------------------------------------------

def enqueue_batch(db: Database, content: Content, campaign_id: int, *, zone: ZoneInfo, now: datetime, domain: str,
                  batch_size: int = BATCH_SIZE) -> int:
    """Queue the next batch of the campaign's audience (lead id > checkpoint) and move the
    checkpoint, in one transaction; the campaign is done when a batch comes up short. The
    number of rows queued; -1 when the campaign is not (any more) to be queued."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
        if campaign is None or campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING):
            return -1
        audience = audience_query(filters_from_json(campaign.filters), zone).where(Lead.id > campaign.checkpoint)
        # the batch: the next batch_size leads by id; its count and last id move the checkpoint
        batch = audience.with_only_columns(Lead.id).order_by(Lead.id).limit(batch_size).subquery()
        found, last = session.execute(select(func.count(), func.max(batch.c.id))).one()
        queued = 0
        if found:
            insert = _insert_batch(session, content, campaign, audience.where(Lead.id <= last), now=now, domain=domain)
            if session.bind.dialect.name == "postgresql":  # psycopg's rowcount is -1 here: count what RETURNING gives
                queued = len(session.execute(insert.returning(Outbox.id)).all())
            else:
                queued = session.connection().execute(insert).rowcount
            campaign.checkpoint = last
        campaign.queued += queued
        campaign.updated_at = now
        if found < batch_size:
            campaign.status, campaign.finished_at = CampaignStatus.DONE.value, now
        else:
            campaign.status = CampaignStatus.SENDING.value
        return queued


def _insert_batch(session, content: Content, campaign: Campaign, leads: Select, *, now: datetime, domain: str):
    """One INSERT INTO outbox … SELECT … of the batch's leads (no row passes through Python),
    ON CONFLICT DO NOTHING on the idempotency key. The Message-ID is made in SQL:
    <n CAMPAIGN.LEAD.TOKEN@DOMAIN>, unique by campaign and lead id, with a random token per
    batch so it cannot be guessed from the ids."""
    kind, token = KINDS[MailKind.NEWSLETTER], secrets.token_hex(8)
    column = Outbox.__table__.c

    def value(data, name: str):
        return literal(data, column[name].type)

    lead_id = cast(Lead.id, String)
    # the footer names the guide the lead asked for; a removed magnet's lead gets the default
    magnet = case((Lead.magnet.in_(list(content.magnets)), Lead.magnet),
                  else_=value(content.organisation.default_magnet, "magnet"))
    rows = leads.with_only_columns(
        value(MailKind.NEWSLETTER.value, "kind"), Lead.id, Lead.email, magnet,
        value(click_sequence(campaign.slug), "sequence"), value(campaign.slug, "step"),
        value(f"newsletter:{campaign.id}:", "idempotency_key") + lead_id,
        value(f"<n{campaign.id}.", "message_id") + lead_id + value(f".{token}@{domain}>", "message_id"),
        value(kind.priority, "priority"), value(OutboxStatus.QUEUED.value, "status"), value(0, "attempts"),
        value(0, "unknown_outcomes"), value(now, "created_at"), value(now, "queued_at"),
        value(now, "next_attempt_at"))
    names = ["kind", "lead_id", "recipient", "magnet", "sequence", "step", "idempotency_key", "message_id",
             "priority", "status", "attempts", "unknown_outcomes", "created_at", "queued_at", "next_attempt_at"]
    return (queries.upsert(session, Outbox).from_select(names, rows)
            .on_conflict_do_nothing(index_elements=["idempotency_key"]))


def start_due(db: Database, content: Content, *, zone: ZoneInfo, now: datetime, domain: str,
              batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> list[str]:
    """The start-campaigns job: queue every campaign whose start time has come (scheduled) or
    that is part-way (sending), batch by batch. Nothing is queued while marketing is paused.
    A campaign whose newsletter changed since it was scheduled is not started (the content hash
    differs): it waits, and the line says so. One line per campaign that did something."""
    with db.read_only() as session:
        if queries.marketing_paused(session):
            return []
        due = session.execute(select(Campaign.id, Campaign.slug, Campaign.content_hash, Campaign.status).where(
            Campaign.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value]),
            Campaign.start_at <= now).order_by(Campaign.start_at, Campaign.id)).all()
    lines = []
    for campaign in due:
        newsletter = content.newsletters.get(campaign.slug)
        if newsletter is None or content_hash(newsletter) != campaign.content_hash:
            lines.append(f"campaign {campaign.id} ({campaign.slug}) waits: the newsletter file changed or is gone "
                         f"since it was scheduled (cancel and send again)")
            continue
        total, batches = 0, 0
        while max_batches is None or batches < max_batches:
            queued = enqueue_batch(db, content, campaign.id, zone=zone, now=now, domain=domain,
                                   batch_size=batch_size)
            batches += 1
            if queued < 0:  # done (the last batch came up short), paused or cancelled
                break
            total += queued
        lines.append(f"campaign {campaign.id} ({campaign.slug}): queued {total}")
    return lines


# --- figures: `mailer newsletter status|list`, `mailer stats` ---------------------------------

FAILURES_SHOWN = 100


@dataclass(frozen=True)
class CampaignFigures:
    """One campaign in figures, from its outbox rows (key prefix `newsletter:<id>:`).

    audience: while the campaign is still queueing, the count of its frozen filters' audience
    now (audience_from "filters"); once it finished queueing (done, or cancelled), the number
    queued (audience_from "queued"). queued: rows made (every status); sent, deferred, failed,
    cancelled, waiting (queued or being sent): rows in that status now. clicks: per link name,
    leads who clicked it after their mail was sent. unsubscribes: leads who ended the newsletter
    (consent event `newsletter-end`) after this campaign's mail was sent to them."""

    id: int
    slug: str
    status: str
    start_at: datetime
    finished_at: datetime | None
    audience: int
    audience_from: str
    queued: int
    sent: int
    deferred: int
    failed: int
    cancelled: int
    waiting: int
    clicks: dict[str, int]
    unsubscribes: int
    failures: tuple[tuple[str, str], ...] = ()  # (recipient, last reply), at most FAILURES_SHOWN

    def as_dict(self) -> dict:
        return {"id": self.id, "slug": self.slug, "status": self.status, "start_at": self.start_at.isoformat(),
                "finished_at": self.finished_at and self.finished_at.isoformat(), "audience": self.audience,
                "audience_from": self.audience_from, "queued": self.queued, "sent": self.sent,
                "deferred": self.deferred, "failed": self.failed, "cancelled": self.cancelled,
                "waiting": self.waiting, "clicks": dict(self.clicks), "unsubscribes": self.unsubscribes,
                "failures": [{"recipient": r, "reply": reply} for r, reply in self.failures]}


def _figures(session, campaign: Campaign, zone: ZoneInfo, with_failures: bool) -> CampaignFigures:
    mine = Outbox.idempotency_key.like(f"newsletter:{campaign.id}:%")
    by_status = dict(session.execute(select(Outbox.status, func.count()).where(mine).group_by(Outbox.status)).all())
    # the leads this campaign's mail reached, and when
    got = select(Outbox.lead_id, Outbox.sent_at).where(mine, Outbox.status == OutboxStatus.SENT.value).subquery()
    clicks = dict(session.execute(
        select(Click.link, func.count(func.distinct(Click.lead_id)))
        .join(got, got.c.lead_id == Click.lead_id)
        .where(Click.sequence == click_sequence(campaign.slug), Click.at >= got.c.sent_at)
        .group_by(Click.link).order_by(Click.link)).all())
    unsubscribes = session.scalar(
        select(func.count(func.distinct(ConsentEvent.lead_id))).join(got, got.c.lead_id == ConsentEvent.lead_id)
        .where(ConsentEvent.kind == ConsentKind.NEWSLETTER_END.value, ConsentEvent.at >= got.c.sent_at))
    if campaign.finished_at is not None:
        audience, source = campaign.queued, "queued"
    else:
        frozen = audience_query(filters_from_json(campaign.filters), zone).subquery()
        audience, source = session.scalar(select(func.count()).select_from(frozen)), "filters"
    failures = ()
    if with_failures:
        failures = tuple((r, e or "") for r, e in session.execute(
            select(Outbox.recipient, Outbox.last_error).where(mine, Outbox.status == OutboxStatus.FAILED.value)
            .order_by(Outbox.id).limit(FAILURES_SHOWN)))

    def count(status: OutboxStatus) -> int:
        return int(by_status.get(status.value, 0))

    return CampaignFigures(
        campaign.id, campaign.slug, campaign.status, campaign.start_at, campaign.finished_at, int(audience or 0),
        source, sum(by_status.values()), count(OutboxStatus.SENT), count(OutboxStatus.DEFERRED),
        count(OutboxStatus.FAILED), count(OutboxStatus.CANCELLED),
        count(OutboxStatus.QUEUED) + count(OutboxStatus.SENDING), clicks, int(unsubscribes or 0), failures)


def figures(db: Database, slug: str, *, zone: ZoneInfo) -> CampaignFigures:
    """The figures of the slug's newest campaign (a cancelled one too), with its failed rows."""
    with db.read_only() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc()).limit(1))
        if campaign is None:
            raise InvalidRequest(f"newsletter {slug!r} has no campaign (schedule one with `mailer newsletter send`)",
                                 "SLUG")
        return _figures(session, campaign, zone, with_failures=True)


def all_figures(db: Database, *, zone: ZoneInfo) -> list[CampaignFigures]:
    """Every campaign's figures, newest start first (failed rows not listed)."""
    with db.read_only() as session:
        return [_figures(session, campaign, zone, with_failures=False) for campaign in
                session.scalars(select(Campaign).order_by(Campaign.start_at.desc(), Campaign.id.desc()))]
