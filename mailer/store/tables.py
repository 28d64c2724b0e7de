"""Tables and status enums, each enum beside the transitions it allows."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class LeadStatus(enum.StrEnum):
    """pending -> confirmed: the visitor pressed the button of the confirmation mail.
    any -> undeliverable: the receiving server refused the mailbox (5.1.x); its queued mail
    is cancelled. unsubscribed | undeliverable -> confirmed: only through a confirmation link
    sent after a new signup (Funnel.confirm refuses older links). An undeliverable address is
    sent nothing, an unsubscribed one only the confirmation a new signup asks for."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    UNDELIVERABLE = "undeliverable"


class OutboxStatus(enum.StrEnum):
    """queued -> sending: claimed by a worker, with a lease in claimed_until.
    sending -> sent | deferred (a temporary failure, retried at next_attempt_at) | failed.
    deferred -> sending, when next_attempt_at comes.
    sending -> sending: claimed again by another worker once the lease ran out (its worker died).
    sending -> queued | deferred: released unsent by a worker that was asked to stop.
    sending | queued | deferred -> cancelled: the mail lost its purpose (its confirmation link
    would be dead, or its address proved undeliverable).
    failed | cancelled -> queued: an operator's `mailer outbox retry`."""

    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ConsentKind(enum.StrEnum):
    """What a consent event records. Append-only: a person's evidence is a list of these."""

    SIGNUP = "signup"  # the form was sent (with or without the marketing box ticked)
    CONFIRM = "confirm"  # the confirmation button: consent takes effect (marketing as on the latest signup)
    UNSUBSCRIBE = "unsubscribe"  # a link, one-click, or an operator on the person's request
    IMPORT = "import"  # brought over from an earlier tool, with the evidence it had
    # The newsletter alone ended (its link or one-click); the status and marketing consent stay,
    # so the follow-up sequence goes on. Its marketing_consent is the lead's, still true.
    NEWSLETTER_END = "newsletter-end"


# The consent events that give marketing consent, when their marketing_consent is true.
CONSENT_GIVEN = (ConsentKind.CONFIRM, ConsentKind.IMPORT)


class MailKind(enum.StrEnum):
    CONFIRM = "confirm"  # transactional
    GUIDE = "guide"  # transactional
    CONSENT = "consent"  # transactional: a confirmed lead confirms marketing consent given later
    DRIP = "drip"  # marketing: one step of a sequence (outbox.sequence, outbox.step)
    NEWSLETTER = "newsletter"  # marketing: a newsletter (content/newsletters/SLUG.md; its slug as step)


TRANSACTIONAL_PRIORITY = 0  # lower is sent first
MARKETING_PRIORITY = 10  # this and above: held back while marketing is paused


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # The overview's signups and confirmations per day (migration 0010), magnet included.
        Index("ix_leads_created", "created_at", "magnet"),
        Index("ix_leads_confirmed", "confirmed_at", "magnet"),
        # The dashboard's leads list (migration 0011): a filter's value then the id, for keyset
        # pages newest first; the search's prefixes as index ranges (byte-wise: on PostgreSQL a
        # second index on email, as the unique one has the database's collation).
        Index("ix_leads_status_id", "status", "id"),
        Index("ix_leads_magnet_id", "magnet", "id"),
        # Migration 0011 makes the two expression indexes COLLATE "C" on PostgreSQL, which its
        # reflection does not report (so the models cannot say it and still compare equal).
        Index("ix_leads_name_prefix", text("lower(first_name)")),
        Index("ix_leads_email_prefix", text("(email::text)")).ddl_if(dialect="postgresql"),
        # AUTOINCREMENT: an erased lead's id is never handed to a new lead, so old links stay dead.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(20), default=LeadStatus.PENDING.value)
    magnet: Mapped[str] = mapped_column(String(100))
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the lead ended the newsletter alone (None: gets it); never cleared by the code.
    newsletter_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsentNotice(Base):
    """The exact text a visitor saw next to the form, stored once per version and text: a new
    version label with the same text, or the same label with a changed text, is a new row.
    Append-only in the database: UPDATE and DELETE are refused by triggers (migration 0004)."""

    __tablename__ = "consent_notices"
    __table_args__ = (UniqueConstraint("version", "sha256", name="uq_consent_notices_version_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(50))
    sha256: Mapped[str] = mapped_column(String(64))  # of the text
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsentEvent(Base):
    """Append-only evidence: who agreed to what, when, how, having seen which text. The
    database refuses UPDATE, and DELETE but for the leads in `erasures` (migration 0004)."""

    __tablename__ = "consent_events"
    # The overview's consent and unsubscribes per day (migration 0010), covering its conditions.
    __table_args__ = (Index("ix_consent_events_kind_at", "kind", "at", "magnet", "marketing_consent"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # a ConsentKind
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    magnet: Mapped[str] = mapped_column(String(100))
    marketing_consent: Mapped[bool] = mapped_column(Boolean)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    form: Mapped[str] = mapped_column(String(100))
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("consent_notices.id"))


class Erasure(Base):
    """The leads whose erasure the current transaction is carrying out: the only leads whose
    consent events the database lets go (the DELETE trigger of migration 0004 looks here).
    Filled and emptied inside that one transaction (store/queries.erasure), so it is empty
    whenever nobody is erasing; no foreign key, as the lead goes in the same transaction."""

    __tablename__ = "erasures"

    lead_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class Download(Base):
    __tablename__ = "downloads"
    __table_args__ = (Index("ix_downloads_at", "at", "magnet"),)  # the overview's downloads per day

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    magnet: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Outbox(Base):
    """One mail to deliver. Written in the transaction that causes it; delivered by a worker."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The claim query: due rows by status and time, transactional first.
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_lead_kind", "lead_id", "kind", "created_at"),
        # A bounce report without a VERP token (MAILER_BOUNCE_ADDRESS unset) is matched by the
        # Message-ID of the mail it quotes.
        Index("ix_outbox_message_id", "message_id"),
        # The bounce and complaint warning: the mail sent in the last days.
        Index("ix_outbox_sent", "status", "sent_at"),
        # The sequences page: sent drip mail per step, counted from the index alone.
        Index("ix_outbox_kind_status_step", "kind", "status", "sequence", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    magnet: Mapped[str | None] = mapped_column(String(100))
    # Set where a retry of the *cause* could queue the same mail twice (a drip step: lead +
    # sequence + step); NULL for mail a request queues in its own transaction, which cannot
    # be repeated without repeating the request. UNIQUE, so a repeated cause inserts nothing.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # Random by construction (make_msgid); kept across retries. Indexed for bounce matching.
    message_id: Mapped[str] = mapped_column(String(250))
    priority: Mapped[int] = mapped_column(SmallInteger, default=TRANSACTIONAL_PRIORITY)
    status: Mapped[str] = mapped_column(String(20), default=OutboxStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When it last entered the queue (created, or put back by an operator): retry policies
    # give up, and confirmations expire, counted from here.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Attempts whose outcome is unknown (the connection broke after the data was sent).
    unknown_outcomes: Mapped[int] = mapped_column(Integer, default=0)
    # For a drip mail: which sequence and step (kind 'drip'); NULL for transactional mail.
    sequence: Mapped[str | None] = mapped_column(String(100))
    step: Mapped[str | None] = mapped_column(String(100))
    # A campaign's mail: the frozen mail it is sent as (campaign_mails), so a retry sends
    # exactly what the others got whatever happened to the newsletter's file since.
    campaign_mail_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_mails.id"))


class DeliveryAttempt(Base):
    """One row per hand-over attempt, with the server's answer, for the operator to read."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    worker: Mapped[str] = mapped_column(String(100))
    code: Mapped[int | None] = mapped_column(Integer)
    reply: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20))


class Pause(Base):
    """A kind of sending held back until an operator looks: `mailer outbox resume`."""

    __tablename__ = "pauses"

    scope: Mapped[str] = mapped_column(String(30), primary_key=True)  # "marketing"
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class EnrollmentStatus(enum.StrEnum):
    """active: the lead moves through the sequence; next_due_at is when the drip job looks
    at it next (NULL once every step is handled: an added step can still wake it, see
    docs/drip.md). active -> stopped: the lead unsubscribed, proved undeliverable or withdrew
    consent; next_due_at is NULL. stopped -> active: a new confirmation with marketing consent."""

    ACTIVE = "active"
    STOPPED = "stopped"


NOT_STARTED = -1  # Enrollment.position before any step


class Enrollment(Base):
    """One lead in one sequence. The drip job reads only rows whose next_due_at has come."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("lead_id", "sequence"),
        Index("ix_enrollments_due", "next_due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    sequence: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=EnrollmentStatus.ACTIVE.value)
    # Step delays count from here: the confirmation with marketing consent.
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The delay, in seconds after anchor_at, of the last step handled (sent or skipped):
    # the lead's place in the sequence, measured in sequence time so that adding or removing
    # steps elsewhere does not move it. NOT_STARTED before the first.
    position: Mapped[int] = mapped_column(Integer, default=NOT_STARTED)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SequenceState(Base):
    """The steps (key and delay) the enrollments of a sequence were last planned against;
    the drip job compares it with the sequence file to apply a change once."""

    __tablename__ = "sequence_states"

    sequence: Mapped[str] = mapped_column(String(100), primary_key=True)
    steps: Mapped[str] = mapped_column(Text)  # JSON: [[key, delay_seconds], ...]
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Click(Base):
    """A click on a link in a drip mail, through the signed redirect."""

    __tablename__ = "clicks"
    # The sequences page: the leads who clicked, per step (read from the index alone).
    __table_args__ = (Index("ix_clicks_step", "sequence", "step", "lead_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    sequence: Mapped[str] = mapped_column(String(100))
    step: Mapped[str] = mapped_column(String(100))
    link: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An erased address, kept only as a keyed hash (HMAC with the secret key), so an import
    cannot bring it back unnoticed. The address itself is gone."""

    __tablename__ = "suppressions"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ErasedTally(Base):
    """What erased and purged leads still count for in the figures: per lead magnet, signup day
    and metric (signups, confirmed, downloaded, marketing, unsubscribed, undeliverable,
    drip-sent:<sequence>/<step>, clicked:<sequence>/<step>), a number and nothing personal."""

    __tablename__ = "erased_tallies"

    magnet: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # signup date, YYYY-MM-DD (UTC)
    metric: Mapped[str] = mapped_column(String(220), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class DailyFigure(Base):
    """The dashboard overview's count of one metric on one finished UTC day for one lead magnet
    ('' for bounce reports that matched no lead), stored once (operator/figures.daily): the
    overview reads finished days from here and counts only the days not yet over. A metric that
    was zero on a stored day has no row. Nothing personal."""

    __tablename__ = "daily_figures"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    magnet: Mapped[str] = mapped_column(String(100), primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class DailyFigureDay(Base):
    """A UTC day whose figures are in daily_figures (so a day without events is known too).
    Deleting a day's row (and its figures) has it counted again on the next view: an import
    of leads dated in the past does that from its earliest day."""

    __tablename__ = "daily_figure_days"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignStatus(enum.StrEnum):
    """scheduled -> sending: the start-campaigns job reached start_at, froze the mail and queued
    a first batch. With a subject A/B test: scheduled -> (sending, while the test group is
    queued, if it takes more than one batch) -> testing (it waits for the winner: ab_hours after
    the test group's first mail was sent, plus any pause after that) -> sending (the winner's
    subject to the rest). sending -> done: every lead of the audience is queued (the mail itself may
    still be waiting). scheduled | sending | testing | done -> paused: `mailer newsletter
    pause`; no more is queued and its waiting rows are held (next_attempt_at set to
    CAMPAIGN_HELD). paused -> the status it had (paused_from): `resume`; its held rows are due
    again at once. any but cancelled -> cancelled: `cancel`; its queued and deferred rows are
    cancelled, sent mail stays sent. done and cancelled are final, and a new campaign of the
    same slug may be made after them."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    TESTING = "testing"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


# The campaigns of which at most one per slug may exist at a time (a partial unique index).
LIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.TESTING, CampaignStatus.PAUSED)
# next_attempt_at of a paused campaign's waiting rows: the claim never reaches it.
CAMPAIGN_HELD = datetime(9999, 1, 1, tzinfo=timezone.utc)
_LIVE_SQL = "status IN ({})".format(", ".join(f"'{status.value}'" for status in LIVE_CAMPAIGN))


class Campaign(Base):
    """One sending of a newsletter to its audience (`mailer newsletter send`). The start-campaigns
    job queues the audience in batches by lead id; `checkpoint` is the last lead id queued, moved
    in the same transaction as the batch's outbox rows (key `newsletter:<campaign id>:<lead id>`),
    so a crash resumes after the last whole batch without a second copy.

    At the start the newsletter is frozen: subject, preheader, whether it is public and the
    archive's body here (frozen_at), and the rendered mail per variant and magnet in
    campaign_mails. From then on the file no longer matters to the campaign."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_status_start", "status", "start_at"),
        # At most one live campaign per newsletter, also when two operators send at once.
        Index("ux_campaigns_live_slug", "slug", unique=True, sqlite_where=text(_LIVE_SQL),
              postgresql_where=text(_LIVE_SQL)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), default=CampaignStatus.SCHEDULED.value)
    paused_from: Mapped[str | None] = mapped_column(String(20))  # the status `resume` returns to
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of subject, preheader and body when scheduled
    filters: Mapped[str] = mapped_column(Text)  # JSON: the audience filters, frozen when scheduled
    checkpoint: Mapped[int] = mapped_column(Integer, default=0)  # the last lead id queued (in this phase)
    queued: Mapped[int] = mapped_column(Integer, default=0)  # outbox rows queued so far
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # done or cancelled
    # The frozen newsletter (set at the start): what the archive shows and the figures name.
    frozen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subject: Mapped[str | None] = mapped_column(Text)
    preheader: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool | None] = mapped_column(Boolean)
    page: Mapped[str | None] = mapped_column(Text)  # JSON: the archive's body parts, without personal parts
    # A subject A/B test (`send --ab-subject`): subject B, the share of the audience in the test
    # (percent, half each), the hours it runs, the seed of the random split, the time it was
    # paused while running (added to its hours), and once chosen the winner ("A" or "B") and the
    # unique clicks that decided it (JSON {"A": n, "B": n}).
    ab_subject: Mapped[str | None] = mapped_column(Text)
    ab_share: Mapped[int | None] = mapped_column(SmallInteger)
    ab_hours: Mapped[float | None] = mapped_column(Float)
    ab_seed: Mapped[int | None] = mapped_column(Integer)
    ab_paused_seconds: Mapped[float | None] = mapped_column(Float)
    ab_winner: Mapped[str | None] = mapped_column(String(1))
    ab_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ab_clicks: Mapped[str | None] = mapped_column(Text)


class CampaignMail(Base):
    """A campaign's mail as frozen at its start: one per subject variant and lead magnet (the
    footer names the guide the lead asked for), rendered once with the per-recipient markers
    (name, links) that the sender fills in. sha256 is of subject, text and HTML."""

    __tablename__ = "campaign_mails"
    __table_args__ = (UniqueConstraint("campaign_id", "variant", "magnet"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    variant: Mapped[str] = mapped_column(String(1))  # "A", or "B" of a subject test
    magnet: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    links: Mapped[str] = mapped_column(Text)  # JSON [[name, address], ...]: the tracked links
    sender: Mapped[str | None] = mapped_column(String(320))  # the newsletter's own From, if any
    reply_to: Mapped[str | None] = mapped_column(String(320))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TestSend(Base):
    """A `mailer newsletter test` that reached the relay, for exactly this content: `send` asks
    for one with the newsletter's current content hash."""

    __tablename__ = "test_sends"
    __table_args__ = (Index("ix_test_sends_slug_hash", "slug", "content_hash"),)
    __test__ = False  # not a pytest class

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class BounceKind(enum.StrEnum):
    """What a report did. hard: the mailbox does not exist (5.x.x, a provider's permanent
    bounce): the lead is undeliverable. soft: a temporary refusal (4.x.x, mailbox full),
    counted; MAILER_SOFT_BOUNCE_LIMIT of them within MAILER_SOFT_BOUNCE_DAYS make the lead
    undeliverable. complaint: marked as spam: all marketing mail ends. unmatched: a report we
    cannot tie to one of our mails by something a stranger cannot forge; changes nothing.
    ignored: not a report at all (an auto-reply), about no failure, or a delay notice (action
    delayed: delivery is still being tried); changes nothing. DELAYED is how a report or a
    provider's event is read, never what is stored: a delay notice is stored as ignored."""

    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"
    DELAYED = "delayed"
    UNMATCHED = "unmatched"
    IGNORED = "ignored"


class BounceReport(Base):
    """One report that came back (a bounce, a complaint, or what only looked like one), stored
    once: `dedupe_key` is its own Message-ID, or the sha256 of its bytes when it has none."""

    __tablename__ = "bounce_reports"
    __table_args__ = (Index("ix_bounce_reports_lead", "lead_id"), Index("ix_bounce_reports_kind_at", "kind", "received_at"),
                      Index("ix_bounce_reports_outbox", "outbox_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(30))  # "ingest", "imap", "webhook:ses", ...
    kind: Mapped[str] = mapped_column(String(20))  # BounceKind
    format: Mapped[str] = mapped_column(String(20))  # parse.Parsed.kind: dsn, arf, nonstandard, autoreply, unknown
    recipient: Mapped[str | None] = mapped_column(String(320))  # the address the report is about
    action: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str | None] = mapped_column(String(20))  # "5.1.1"
    diagnostic: Mapped[str | None] = mapped_column(Text)
    matched_by: Mapped[str | None] = mapped_column(String(20))  # "verp", "message-id", or None
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    note: Mapped[str] = mapped_column(Text, default="")  # why it changed nothing, or what it changed
    raw: Mapped[str] = mapped_column(Text)  # the report, cut to RAW_KEPT bytes
    raw_size: Mapped[int] = mapped_column(Integer)


class Role(enum.StrEnum):
    """What an operator of the dashboard may do; each role may do everything of the one before.
    viewer: read. editor: also retry, cancel, send tests, schedule and hold newsletters.
    owner: also erase people, export leads, manage operators, resume a paused marketing stream.
    Which action needs which role is operator/accounts.NEEDS."""

    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class Operator(Base):
    """Someone who logs in to the dashboard (`mailer operator add`)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(10))  # Role
    password_hash: Mapped[str] = mapped_column(String(200))  # Argon2id, with its parameters
    # The TOTP secret (base32) once the operator confirmed a code from the app; None: no second factor.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # A secret being set up (Mijn account), until a code from the app confirms it.
    totp_pending: Mapped[str | None] = mapped_column(String(64))
    # The time step (30 s) of the last code that logged in: a code is good once (RFC 6238 5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # sha256 of each unused recovery code, space-separated (each works once).
    recovery_codes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OperatorSession(Base):
    """A logged-in browser. The cookie holds a random token; only its sha256 is stored here, so
    a copy of the database logs nobody in. Logging out, a password change and removing the
    operator delete the rows: a copy of the old cookie then names nothing."""

    __tablename__ = "operator_sessions"
    __table_args__ = (Index("ix_operator_sessions_operator", "operator_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(String(45))


class AuditEntry(Base):
    """One thing an operator did (or tried and was refused), append-only: the database refuses
    UPDATE and DELETE (migration 0009). It names a lead by id, never by address, so an erased
    person's address does not live on here, and no lead's export includes it."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    operator_email: Mapped[str | None] = mapped_column(String(320))  # as typed at a failed login; kept after removal
    action: Mapped[str] = mapped_column(String(60))  # "outbox.retry", "login.locked", ...
    target: Mapped[str] = mapped_column(String(200), default="")  # "lead 12", "outbox 4 5 6", "newsletter juni"
    outcome: Mapped[str] = mapped_column(String(20))  # done, refused, failed
    detail: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str | None] = mapped_column(String(45))
