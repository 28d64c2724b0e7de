"""Sending a newsletter to its audience: a campaign (`mailer newsletter send|pause|resume|cancel`)
and the one periodic job that queues the campaigns whose start time has come.

A campaign keeps the newsletter's content hash and audience filters when it is scheduled. At its
start the job freezes the newsletter: the mail rendered once per subject variant and lead magnet
(campaign_mails, with the per-recipient markers) and the archive's copy (campaigns.subject,
page, ...); from then on an edit of the file changes nothing in flight, and a retry sends the
same mail. The job queues the audience by lead id in batches (keyset: lead id > checkpoint),
each batch one transaction that inserts the outbox rows (key `newsletter:<campaign id>:<lead
id>`, ON CONFLICT DO NOTHING, pointing at their frozen mail) and moves the checkpoint, so a crash
resumes after the last whole batch and never queues a lead twice. The sender then sends them as
marketing mail (window, pause, priority).

A subject A/B test (`send --ab-subject`) first queues a random share of the audience, half with
each subject (the test group), waits `ab_hours` from when that mail began to go out, then
queues the rest with the subject whose mail had more unique clicks (ties: A).

`figures` / `all_figures` are a campaign's figures (`mailer newsletter status|list`, `mailer stats`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Integer, Select, String, case, cast, func, literal, select, update
from sqlalchemy.exc import IntegrityError

from mailer.content.files import Content
from mailer.content.newsletters import Audience, Newsletter, click_sequence
from mailer.delivery.kinds import KINDS, newsletter_ref
from mailer.errors import Refused, RefusedRequest
from mailer.operator.archive import body_parts
from mailer.operator.newsletters import SAMPLE_SIZE, AudienceView, audience, audience_query, content_hash, find
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import (
    CAMPAIGN_HELD,
    LIVE_CAMPAIGN,
    Campaign,
    CampaignMail,
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

# Leads queued per transaction. SQLite pays a WAL checkpoint (with an fsync) after nearly every
# commit, so it gets larger batches; each holds its write lock for about 0.4 s per 100,000 rows
# on a 2-core machine, which a signup or a delivery result waits out (MAILER_SQLITE_BUSY_TIMEOUT_MS).
BATCH_SIZES = {"sqlite": 100_000, "postgresql": 10_000}
WAITING = (OutboxStatus.QUEUED.value, OutboxStatus.DEFERRED.value)
STILL_TO_GO = (*WAITING, OutboxStatus.SENDING.value)  # waiting, or claimed by a worker
# A subject test splits the audience into BUCKETS by a seeded hash of the lead id; a share of
# N % is the first 2N buckets, A the first N of those, B the next N.
BUCKETS = 200
HASH_MULTIPLIER = 2654435761  # odd and not a multiple of 5: lead ids spread over every bucket
AB_SHARE_DEFAULT, AB_HOURS_DEFAULT = 20, 4.0
AB_HOURS_MAX = 14 * 24


@dataclass(frozen=True)
class SubjectTest:
    """`send --ab-subject B --ab-share N --ab-hours H`: subject B against the file's subject."""

    subject: str
    share: int = AB_SHARE_DEFAULT  # percent of the audience in the test group, half each
    hours: float = AB_HOURS_DEFAULT  # from when the test group's mail began to go out

    @classmethod
    def from_options(cls, subject: str | None, share: int | None, hours: float | None) -> "SubjectTest | None":
        """The test the command's options ask for (defaults for share and hours), or None."""
        if subject is None:
            if share is not None or hours is not None:
                raise RefusedRequest("--ab-share and --ab-hours belong to a subject test: give --ab-subject too",
                                     "--ab-subject", "ab-without-subject")
            return None
        return cls(subject, AB_SHARE_DEFAULT if share is None else share, AB_HOURS_DEFAULT if hours is None else hours)

    def check(self) -> None:
        if not self.subject.strip():
            raise RefusedRequest("the B subject is empty", "--ab-subject", "ab-subject-empty")
        if not 2 <= self.share <= 100:
            raise RefusedRequest(f"{self.share} is not a share from 2 to 100 (percent of the audience)", "--ab-share",
                                 "ab-share")
        if not 0 < self.hours <= AB_HOURS_MAX:
            raise RefusedRequest(f"{self.hours} is not a number of hours from 0 to {AB_HOURS_MAX}", "--ab-hours",
                                 "ab-hours")


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
             no_test: bool = False, ab: SubjectTest | None = None) -> CampaignView:
    """Schedule the newsletter for its audience at start_at (default now), optionally with a
    subject test. Refused unless a test was sent for exactly this content (and for the B
    subject), or no_test; and while the slug has a live campaign (a partial unique index keeps
    that true when two operators send at once)."""
    newsletter = find(content, slug)
    if ab is not None:
        ab.check()
    digests = [content_hash(newsletter)] + ([content_hash(newsletter, ab.subject)] if ab else [])
    live_error = f"newsletter {slug} has a campaign already"
    try:
        with db.transaction() as session:
            for digest, what in zip(digests, ("this content", "the B subject")):
                if not no_test and session.scalar(select(TestSend.id).where(
                        TestSend.slug == slug, TestSend.content_hash == digest).limit(1)) is None:
                    option = " --ab-subject ..." if what == "the B subject" else ""
                    raise Refused(f"newsletter {slug}: no test was sent of {what}; run `mailer newsletter test "
                                  f"{slug} --to YOU{option}` first (or give --no-test)",
                                  "untested-b-subject" if option else "untested")
            live = session.scalar(select(Campaign).where(Campaign.slug == slug,
                                                         Campaign.status.in_([s.value for s in LIVE_CAMPAIGN])))
            if live is not None:
                raise Refused(f"{live_error} ({live.status}, starts {live.start_at.isoformat()}); cancel it first",
                              "live-campaign")
            campaign = Campaign(slug=slug, status=CampaignStatus.SCHEDULED.value,
                                start_at=(start_at or now).astimezone(timezone.utc),
                                content_hash=digests[0], filters=filters_json(newsletter.audience), checkpoint=0,
                                queued=0, created_at=now, updated_at=now)
            if ab is not None:
                campaign.ab_subject, campaign.ab_share, campaign.ab_hours = ab.subject.strip(), ab.share, ab.hours
                campaign.ab_seed = secrets.randbelow(BUCKETS)
            session.add(campaign)
            session.flush()
            return _view(campaign)
    except IntegrityError:  # another `send` of this slug committed first
        raise Refused(f"{live_error} (scheduled a moment ago); cancel it first", "live-campaign") from None


def _current(session, slug: str) -> Campaign:
    """The slug's newest campaign that is not cancelled, locked."""
    campaign = session.scalar(select(Campaign).where(Campaign.slug == slug,
                                                     Campaign.status != CampaignStatus.CANCELLED.value)
                              .order_by(Campaign.id.desc()).limit(1).with_for_update())
    if campaign is None:
        raise RefusedRequest(f"newsletter {slug!r} has no campaign (schedule one with `mailer newsletter send`)",
                             "SLUG", "no-campaign")
    return campaign


def _mine(campaign_id: int):
    """The campaign's outbox rows (their idempotency keys share one prefix)."""
    return Outbox.idempotency_key.like(f"newsletter:{campaign_id}:%")


def pause(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Queue no more and hold the campaign's waiting rows (next_attempt_at far away); a row a
    worker has claimed already goes out."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        if campaign.status == CampaignStatus.PAUSED:
            return _view(campaign)
        held = session.execute(update(Outbox).where(_mine(campaign.id), Outbox.status.in_(WAITING))
                               .values(next_attempt_at=CAMPAIGN_HELD)).rowcount
        campaign.paused_from, campaign.status, campaign.updated_at = campaign.status, CampaignStatus.PAUSED.value, now
        campaign.paused_at = now
        return _view(campaign, held)


def resume(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Go on where it was paused (queueing from the checkpoint, or waiting for a subject test's
    winner) and make its held rows due at once. A subject test that was running (its first
    mail sent, no winner yet) runs longer by the time it was paused, so its held test mail has
    its time to be read."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        if campaign.status != CampaignStatus.PAUSED:
            raise RefusedRequest(f"newsletter {slug}: its campaign is {campaign.status}, not paused", "SLUG",
                                 "not-paused")
        if campaign.ab_subject and campaign.ab_winner is None and campaign.paused_at is not None:
            first_sent = session.scalar(select(func.min(Outbox.sent_at)).where(_mine(campaign.id)))
            if first_sent is not None and first_sent < now:
                paused = (now - max(campaign.paused_at, first_sent)).total_seconds()
                campaign.ab_paused_seconds = (campaign.ab_paused_seconds or 0) + paused
        released = session.execute(update(Outbox).where(_mine(campaign.id), Outbox.status.in_(WAITING),
                                                        Outbox.next_attempt_at == CAMPAIGN_HELD)
                                   .values(next_attempt_at=now)).rowcount
        campaign.status = campaign.paused_from or CampaignStatus.SCHEDULED.value
        campaign.paused_from, campaign.paused_at, campaign.updated_at = None, None, now
        return _view(campaign, released)


def cancel(db: Database, slug: str, *, now: datetime) -> CampaignView:
    """Queue no more; its queued and deferred rows are cancelled, sent mail stays sent."""
    with db.transaction() as session:
        campaign = _current(session, slug)
        cancelled = session.execute(update(Outbox).where(_mine(campaign.id), Outbox.status.in_(WAITING))
                                    .values(status=OutboxStatus.CANCELLED.value,
                                            last_error="campaign cancelled")).rowcount
        campaign.status, campaign.updated_at, campaign.finished_at = CampaignStatus.CANCELLED.value, now, now
        return _view(campaign, cancelled)


# --- the start-campaigns job --------------------------------------------------------------

def freeze(db: Database, content: Content, renderer, campaign_id: int, *, now: datetime) -> str:
    """Render the newsletter once per subject variant and lead magnet and store it with the
    archive's copy, unless that was done already. "" when the campaign is frozen (now or
    before), else why it waits: its file changed since it was scheduled, or is gone."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
        if campaign is None or campaign.frozen_at is not None:
            return ""
        newsletter = content.newsletters.get(campaign.slug)
        if newsletter is None or content_hash(newsletter) != campaign.content_hash:
            return (f"campaign {campaign.id} ({campaign.slug}) waits: the newsletter file changed or is gone "
                    f"since it was scheduled (cancel and send again)")
        subjects = {"A": None, **({"B": campaign.ab_subject} if campaign.ab_subject else {})}
        default = content.organisation.default_magnet  # first: a lead of a removed magnet gets its mail
        for variant, subject in subjects.items():
            for magnet in sorted(content.magnets, key=lambda slug: slug != default):
                mail = renderer.prepare(newsletter_ref(content, campaign.slug, magnet), subject)
                digest = hashlib.sha256("\x00".join((mail.subject, mail.text, mail.html)).encode()).hexdigest()
                session.add(CampaignMail(
                    campaign_id=campaign.id, variant=variant, magnet=magnet, subject=mail.subject, text=mail.text,
                    html=mail.html, links=json.dumps(mail.links), sender=newsletter.sender,
                    reply_to=newsletter.reply_to, sha256=digest, created_at=now))
        campaign.subject, campaign.preheader, campaign.public = newsletter.subject, newsletter.preheader, newsletter.public
        campaign.page = json.dumps([[str(html), list(button) if button else None]
                                    for html, button in body_parts(content, newsletter)])
        campaign.frozen_at = campaign.updated_at = now
        return ""


def _bucket(seed: int):
    """The lead's bucket of a subject test: a seeded multiplicative hash of its id (random to
    anyone without the seed, and spread evenly: every 200 consecutive ids fill every bucket)."""
    return (cast(Lead.id, BigInteger) * literal(HASH_MULTIPLIER, BigInteger) + literal(seed, Integer)) % BUCKETS


def _testing(campaign: Campaign) -> bool:
    """Whether the job is queueing a subject test's test group (no winner yet)."""
    return bool(campaign.ab_subject) and campaign.ab_winner is None


def enqueue_batch(db: Database, campaign_id: int, *, zone: ZoneInfo, now: datetime, domain: str,
                  batch_size: int) -> int:
    """Queue the next batch of the campaign's audience (lead id > checkpoint) and move the
    checkpoint, in one transaction; the phase is done when a batch comes up short (a subject
    test's test group: the campaign then waits for the winner). The number of rows queued; -1
    when the campaign is not (any more) to be queued now."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
        if campaign is None or campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING):
            return -1
        audience = audience_query(filters_from_json(campaign.filters), zone).where(Lead.id > campaign.checkpoint)
        testing = _testing(campaign)
        if testing:
            audience = audience.where(_bucket(campaign.ab_seed) < 2 * campaign.ab_share)
        # the batch: the next batch_size leads by id; its count and last id move the checkpoint
        batch = audience.with_only_columns(Lead.id).order_by(Lead.id).limit(batch_size).subquery()
        found, last = session.execute(select(func.count(), func.max(batch.c.id))).one()
        queued = 0
        if found:
            insert = _insert_batch(session, campaign, audience.where(Lead.id <= last), now=now, domain=domain)
            if session.bind.dialect.name == "postgresql":  # psycopg's rowcount is -1 here: count what RETURNING gives
                queued = len(session.execute(insert.returning(Outbox.id)).all())
            else:
                queued = session.connection().execute(insert).rowcount
            campaign.checkpoint = last
        campaign.queued += queued
        campaign.updated_at = now
        if found == batch_size:
            campaign.status = CampaignStatus.SENDING.value
        elif testing:  # the test group is queued: the rest waits for the winner, from the first lead again
            campaign.status, campaign.checkpoint = CampaignStatus.TESTING.value, 0
        else:
            campaign.status, campaign.finished_at = CampaignStatus.DONE.value, now
        return queued


def _insert_batch(session, campaign: Campaign, leads: Select, *, now: datetime, domain: str):
    """One INSERT INTO outbox … SELECT … of the batch's leads (no row passes through Python),
    ON CONFLICT DO NOTHING on the idempotency key. Each row points at its frozen mail: by the
    lead's magnet (a magnet without one gets the first magnet's) and, in a subject test's test
    group, by the lead's bucket. The Message-ID is made in SQL:
    <n CAMPAIGN.LEAD.TOKEN@DOMAIN>, unique by campaign and lead id, with a random token per
    batch so it cannot be guessed from the ids."""
    kind, token = KINDS[MailKind.NEWSLETTER], secrets.token_hex(8)
    column = Outbox.__table__.c

    def value(data, name: str):
        return literal(data, column[name].type)

    mails: dict[str, dict[str, int]] = {}
    for variant, magnet, mail_id in session.execute(
            select(CampaignMail.variant, CampaignMail.magnet, CampaignMail.id)
            .where(CampaignMail.campaign_id == campaign.id).order_by(CampaignMail.id)):
        mails.setdefault(variant, {})[magnet] = mail_id
    fallback = next(iter(mails["A"]))  # the default magnet's, frozen first

    def by_magnet(variant: str):  # the footer names the guide the lead asked for
        ids = mails[variant]
        return case(*((Lead.magnet == magnet, value(ids[magnet], "campaign_mail_id")) for magnet in ids),
                    else_=value(ids[fallback], "campaign_mail_id"))

    if _testing(campaign):
        mail = case((_bucket(campaign.ab_seed) < campaign.ab_share, by_magnet("A")), else_=by_magnet("B"))
    else:
        mail = by_magnet(campaign.ab_winner or "A")
    magnet = case((Lead.magnet.in_(list(mails["A"])), Lead.magnet), else_=value(fallback, "magnet"))
    lead_id = cast(Lead.id, String)
    rows = leads.with_only_columns(
        value(MailKind.NEWSLETTER.value, "kind"), Lead.id, Lead.email, magnet,
        value(click_sequence(campaign.slug), "sequence"), value(campaign.slug, "step"),
        value(f"newsletter:{campaign.id}:", "idempotency_key") + lead_id,
        value(f"<n{campaign.id}.", "message_id") + lead_id + value(f".{token}@{domain}>", "message_id"),
        value(kind.priority, "priority"), value(OutboxStatus.QUEUED.value, "status"), value(0, "attempts"),
        value(0, "unknown_outcomes"), value(now, "created_at"), value(now, "queued_at"),
        value(now, "next_attempt_at"), mail)
    names = ["kind", "lead_id", "recipient", "magnet", "sequence", "step", "idempotency_key", "message_id",
             "priority", "status", "attempts", "unknown_outcomes", "created_at", "queued_at", "next_attempt_at",
             "campaign_mail_id"]
    return (queries.upsert(session, Outbox).from_select(names, rows)
            .on_conflict_do_nothing(index_elements=["idempotency_key"]))


def _variant_clicks(session, campaign_id: int, slug: str) -> dict[str, dict[str, int]]:
    """Per subject variant: its rows queued and sent, and the leads who clicked any link of the
    newsletter after their mail was sent (unique clicks)."""
    mine = select(Outbox.lead_id, Outbox.status, Outbox.sent_at, CampaignMail.variant).join(
        CampaignMail, CampaignMail.id == Outbox.campaign_mail_id).where(_mine(campaign_id)).subquery()
    found = {variant: {"queued": 0, "sent": 0, "clicks": 0} for variant in ("A", "B")}
    for variant, status, count in session.execute(select(mine.c.variant, mine.c.status, func.count())
                                                  .group_by(mine.c.variant, mine.c.status)):
        found[variant]["queued"] += count
        if status == OutboxStatus.SENT:
            found[variant]["sent"] += count
    for variant, count in session.execute(
            select(mine.c.variant, func.count(func.distinct(Click.lead_id)))
            .join(mine, mine.c.lead_id == Click.lead_id)
            .where(mine.c.status == OutboxStatus.SENT.value, Click.sequence == click_sequence(slug),
                   Click.at >= mine.c.sent_at).group_by(mine.c.variant)):
        found[variant]["clicks"] = count
    return found


def decide_at(session, campaign: Campaign) -> datetime | None:
    """When a subject test's winner is chosen: ab_hours after its test group's first mail was
    sent, plus the time it was paused after that (None while none was sent, so a test that
    starts outside the send window is not judged on the night); at once when none of the test
    group's mail was sent or is still to go (an empty group, or all of it failed)."""
    first_sent, waiting = session.execute(
        select(func.min(Outbox.sent_at), func.count().filter(Outbox.status.in_(STILL_TO_GO))).where(
            _mine(campaign.id))).one()
    if first_sent is None:  # nothing sent yet: wait, unless nothing is left to send
        return None if waiting else campaign.start_at
    return first_sent + timedelta(hours=campaign.ab_hours, seconds=campaign.ab_paused_seconds or 0)


def choose_winner(db: Database, campaign_id: int, *, now: datetime) -> str:
    """A testing campaign whose time has come gets its winner (more unique clicks; ties: A) and
    goes on sending to the rest. The line to log, or "" when it is not time yet."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
        if campaign is None or campaign.status != CampaignStatus.TESTING:
            return ""
        when = decide_at(session, campaign)
        if when is None or when > now:
            return ""
        clicks = _variant_clicks(session, campaign.id, campaign.slug)
        winner = "B" if clicks["B"]["clicks"] > clicks["A"]["clicks"] else "A"
        campaign.ab_winner, campaign.ab_decided_at = winner, now
        campaign.ab_clicks = json.dumps({name: found["clicks"] for name, found in clicks.items()})
        campaign.status, campaign.checkpoint, campaign.updated_at = CampaignStatus.SENDING.value, 0, now
        return (f"campaign {campaign.id} ({campaign.slug}): subject {winner} won "
                f"({clicks['A']['clicks']} against {clicks['B']['clicks']} unique clicks); the rest follows")


def campaigns_ahead(session, lead_ids: list[int], now: datetime, gap: timedelta, *,
                    zone: ZoneInfo) -> dict[int, datetime]:
    """For the drip job's one-marketing-mail-per-gap rule: lead -> when a live campaign will
    queue its newsletter, for the given leads that are in the audience of a campaign that
    starts within `gap` (scheduled), is queueing (sending), or waits for its subject test's
    winner (testing: the rest follows at the decision), and have no row of it yet (a row is
    counted as a newsletter already). Campaigns that started more than `gap` ago are not
    looked at. One query per such campaign; none when there is none."""
    live = session.scalars(select(Campaign).where(
        Campaign.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value,
                             CampaignStatus.TESTING.value]),
        Campaign.start_at <= now + gap, Campaign.start_at > now - gap)).all()
    ahead: dict[int, datetime] = {}
    for campaign in live:
        # a scheduled campaign at its start time (one that waits past it, its file changed,
        # holds the steps for one gap after its start, not for ever); one queueing now
        when = campaign.start_at if campaign.status == CampaignStatus.SCHEDULED else now
        if campaign.status == CampaignStatus.TESTING:
            when = max(decide_at(session, campaign) or now + timedelta(hours=campaign.ab_hours), now)
        queued = select(Outbox.id).where(Outbox.idempotency_key == literal(f"newsletter:{campaign.id}:")
                                         + cast(Lead.id, String))
        leads = (audience_query(filters_from_json(campaign.filters), zone)
                 .with_only_columns(Lead.id).where(Lead.id.in_(lead_ids), ~queued.exists()))
        for lead_id in session.scalars(leads):
            ahead[lead_id] = max(ahead.get(lead_id, when), when)
    return ahead


def start_due(db: Database, content: Content, renderer, *, zone: ZoneInfo, now: datetime, domain: str,
              batch_size: int | None = None, max_batches: int | None = None) -> list[str]:
    """The start-campaigns job: freeze and queue every campaign whose start time has come
    (scheduled) or that is part-way (sending), batch by batch, and choose the winner of a
    subject test whose time has come. Nothing is queued while marketing is paused. A campaign
    whose newsletter changed between its scheduling and its start is not started: it waits, and
    the line says so. One line per campaign that did something."""
    with db.read_only() as session:
        if queries.marketing_paused(session):
            return []
        due = session.execute(select(Campaign.id, Campaign.slug, Campaign.status).where(
            Campaign.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value,
                                 CampaignStatus.TESTING.value]),
            Campaign.start_at <= now).order_by(Campaign.start_at, Campaign.id)).all()
    lines = []
    batch_size = batch_size or BATCH_SIZES.get(db.engine.dialect.name, 10_000)
    for campaign in due:
        if campaign.status == CampaignStatus.TESTING:
            decided = choose_winner(db, campaign.id, now=now)
            if not decided:
                continue
            lines.append(decided)
        waits = freeze(db, content, renderer, campaign.id, now=now)
        if waits:
            lines.append(waits)
            continue
        total, batches = 0, 0
        while max_batches is None or batches < max_batches:
            queued = enqueue_batch(db, campaign.id, zone=zone, now=now, domain=domain,
                                   batch_size=batch_size)
            batches += 1
            if queued < 0:  # done or testing (the last batch came up short), paused or cancelled
                break
            total += queued
        lines.append(f"campaign {campaign.id} ({campaign.slug}): queued {total}")
    return lines


# --- figures: `mailer newsletter status|list`, `mailer stats` ---------------------------------

FAILURES_SHOWN = 100


@dataclass(frozen=True)
class VariantFigures:
    subject: str | None  # A: the file's, known once the campaign froze it
    queued: int  # rows made with this subject (the test group's half, and the rest for the winner)
    sent: int
    clicks: int  # unique: leads who clicked any link after their mail was sent


@dataclass(frozen=True)
class SubjectTestFigures:
    share: int
    hours: float
    variants: dict[str, VariantFigures]  # "A", "B"
    decide_at: datetime | None  # when the winner is (or was to be) chosen; None: not yet known
    winner: str | None
    decided_at: datetime | None
    decided_by: dict[str, int] | None  # the unique clicks per variant when the winner was chosen

    def as_dict(self) -> dict:
        return {"share": self.share, "hours": self.hours, "winner": self.winner,
                "decide_at": self.decide_at and self.decide_at.isoformat(),
                "decided_at": self.decided_at and self.decided_at.isoformat(), "decided_by": self.decided_by,
                "variants": {name: vars(variant) for name, variant in self.variants.items()}}


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
    subject: str | None = None  # as frozen at the start (None before)
    ab: SubjectTestFigures | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "slug": self.slug, "status": self.status, "start_at": self.start_at.isoformat(),
                "finished_at": self.finished_at and self.finished_at.isoformat(), "audience": self.audience,
                "audience_from": self.audience_from, "queued": self.queued, "sent": self.sent,
                "deferred": self.deferred, "failed": self.failed, "cancelled": self.cancelled,
                "waiting": self.waiting, "clicks": dict(self.clicks), "unsubscribes": self.unsubscribes,
                "failures": [{"recipient": r, "reply": reply} for r, reply in self.failures],
                "subject": self.subject, "ab": self.ab and self.ab.as_dict()}


def _figures(session, campaign: Campaign, zone: ZoneInfo, with_failures: bool) -> CampaignFigures:
    mine = _mine(campaign.id)
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
    ab = None
    if campaign.ab_subject:
        found = _variant_clicks(session, campaign.id, campaign.slug)
        subjects = {"A": campaign.subject, "B": campaign.ab_subject}
        ab = SubjectTestFigures(
            campaign.ab_share, campaign.ab_hours,
            {name: VariantFigures(subjects[name], **found[name]) for name in ("A", "B")},
            campaign.ab_decided_at or (decide_at(session, campaign) if campaign.frozen_at else None),
            campaign.ab_winner, campaign.ab_decided_at, campaign.ab_clicks and json.loads(campaign.ab_clicks))
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
        count(OutboxStatus.QUEUED) + count(OutboxStatus.SENDING), clicks, int(unsubscribes or 0), failures,
        campaign.subject, ab)


def figures(db: Database, slug: str, *, zone: ZoneInfo) -> CampaignFigures:
    """The figures of the slug's newest campaign (a cancelled one too), with its failed rows."""
    with db.read_only() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc()).limit(1))
        if campaign is None:
            raise RefusedRequest(f"newsletter {slug!r} has no campaign (schedule one with `mailer newsletter send`)",
                                 "SLUG", "no-campaign")
        return _figures(session, campaign, zone, with_failures=True)


def all_figures(db: Database, *, zone: ZoneInfo) -> list[CampaignFigures]:
    """Every campaign's figures, newest start first (failed rows not listed)."""
    with db.read_only() as session:
        return [_figures(session, campaign, zone, with_failures=False) for campaign in
                session.scalars(select(Campaign).order_by(Campaign.start_at.desc(), Campaign.id.desc()))]


# --- the dashboard: every newsletter with its campaigns ---------------------------------------

@dataclass(frozen=True)
class NewsletterSummary:
    slug: str
    subject: str | None  # the file's; None when the file is gone (only campaigns remain)
    public: bool | None
    campaign: CampaignFigures | None  # the newest campaign (highest id), whatever its status
    campaigns: int


@dataclass(frozen=True)
class NewsletterIndex:
    newsletters: list[NewsletterSummary]  # the content's, then slugs that only campaigns name
    campaigns: list[CampaignFigures]  # every campaign, newest start first (as `mailer newsletter list`)


def newsletter_index(db: Database, content: Content, *, zone: ZoneInfo) -> NewsletterIndex:
    """Every newsletter of the content with its newest campaign, and every campaign."""
    every = all_figures(db, zone=zone)
    newest: dict[str, CampaignFigures] = {}
    counted: dict[str, int] = {}
    for view in every:
        counted[view.slug] = counted.get(view.slug, 0) + 1
        if view.slug not in newest or view.id > newest[view.slug].id:
            newest[view.slug] = view
    summaries = [NewsletterSummary(slug, newsletter.subject, newsletter.public, newest.get(slug), counted.get(slug, 0))
                 for slug, newsletter in sorted(content.newsletters.items())]
    summaries += [NewsletterSummary(slug, None, None, view, counted[slug])
                  for slug, view in sorted(newest.items()) if slug not in content.newsletters]
    return NewsletterIndex(summaries, every)


@dataclass(frozen=True)
class NewsletterDetail:
    newsletter: Newsletter
    audience: AudienceView  # the file's filters with the asked ones on top, counted now
    campaigns: list[CampaignFigures]  # newest first; the newest with its failed rows
    tested_at: datetime | None  # the last test send of exactly this content (the file's subject)
    waits_for_file: bool  # the newest campaign has not started and the file changed since it was scheduled

    @property
    def campaign(self) -> CampaignFigures | None:
        return self.campaigns[0] if self.campaigns else None

    @property
    def live(self) -> bool:
        return self.campaign is not None and self.campaign.status in {s.value for s in LIVE_CAMPAIGN}


def newsletter_detail(db: Database, content: Content, slug: str, *, zone: ZoneInfo, sample_size: int = SAMPLE_SIZE,
                      **given) -> NewsletterDetail:
    """One newsletter: its audience (narrowed by `given`, the filters of `mailer newsletter
    audience`), its campaigns in figures, and whether this content had a test send.
    InvalidRequest for an unknown slug or filter."""
    newsletter = find(content, slug)
    view = audience(db, content, slug, zone, sample_size, **given)
    digest = content_hash(newsletter)
    with db.read_only() as session:
        rows = session.scalars(select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc())).all()
        found = [_figures(session, campaign, zone, with_failures=index == 0) for index, campaign in enumerate(rows)]
        tested_at = session.scalar(select(TestSend.at).where(TestSend.slug == slug, TestSend.content_hash == digest)
                                   .order_by(TestSend.at.desc()).limit(1))
    waits = bool(rows) and rows[0].status in {s.value for s in LIVE_CAMPAIGN} and rows[0].frozen_at is None \
        and rows[0].content_hash != digest
    return NewsletterDetail(newsletter, view, found, tested_at, waits)
