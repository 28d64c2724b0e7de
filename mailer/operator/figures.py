"""The funnel in figures, per lead magnet, for the leads who signed up in a period.

`counts()` is the one definition of every figure: `mailer stats` sums it over a cohort, and
erasure keeps what an erased lead counted for (erased_tallies), so erasure does not rewrite
history. Each figure counts leads (not events), but a drip step's "sent" counts mails.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session

from mailer.content.files import Content
from mailer.errors import InvalidRequest
from mailer.operator.bounces import RateWarning, warning_figures
from mailer.operator.outbox import Overview as OutboxState
from mailer.operator.outbox import waiting
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import (
    CONSENT_GIVEN,
    BounceKind,
    BounceReport,
    Click,
    ConsentEvent,
    ConsentKind,
    DailyFigure,
    DailyFigureDay,
    Download,
    ErasedTally,
    Lead,
    LeadStatus,
    MailKind,
    Outbox,
    OutboxStatus,
)

if TYPE_CHECKING:
    from mailer.drip.plan import SequencePlan
    from mailer.timing import SendWindow

_DAY = timedelta(days=1)
# Per lead: signed up, confirmed, downloaded the guide, gave marketing consent, unsubscribed,
# undeliverable. Per drip step (metric "drip-sent:SEQUENCE/STEP" and "clicked:SEQUENCE/STEP"):
# mails sent, and leads who clicked a link in it.
LEAD_METRICS = ("signups", "confirmed", "downloaded", "marketing", "unsubscribed", "undeliverable")
STEP_METRICS = {"drip-sent": "sent", "clicked": "clicked"}


class UnknownMagnet(InvalidRequest):
    def __init__(self, slug: str, known):
        super().__init__(f"{slug!r} is not one of {', '.join(known)}", "--magnet")


@dataclass
class MagnetFigures:
    magnet: str
    signups: int = 0
    confirmed: int = 0
    downloaded: int = 0
    marketing: int = 0
    unsubscribed: int = 0
    undeliverable: int = 0
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # "sequence/step" -> sent, clicked

    @property
    def confirm_rate(self) -> float | None:
        return self.confirmed / self.signups if self.signups else None

    def add(self, metric: str, count: int) -> None:
        if metric in LEAD_METRICS:
            setattr(self, metric, getattr(self, metric) + count)
            return
        kind, _, step = metric.partition(":")
        self.steps.setdefault(step, {"sent": 0, "clicked": 0})[STEP_METRICS[kind]] += count

    def as_dict(self) -> dict:
        return {"magnet": self.magnet, **{m: getattr(self, m) for m in LEAD_METRICS},
                "confirm_rate": None if self.confirm_rate is None else round(self.confirm_rate, 4),
                "drip_steps": [{"step": key, **values} for key, values in self.steps.items()]}


def counts(session: Session, cohort: list) -> Counter:
    """Every figure for the leads that match `cohort` (conditions on Lead), per magnet and
    signup day (UTC, YYYY-MM-DD): {(magnet, day, metric): count}."""
    day = _day_of(session, Lead.created_at)  # the signup day
    found: Counter = Counter()
    for magnet, on, signups, confirmed, unsubscribed, undeliverable in session.execute(
        select(Lead.magnet, day, func.count(), func.count(Lead.confirmed_at),
               func.sum(case((Lead.status == LeadStatus.UNSUBSCRIBED, 1), else_=0)),
               func.sum(case((Lead.status == LeadStatus.UNDELIVERABLE, 1), else_=0)))
        .where(*cohort).group_by(Lead.magnet, day)
    ):
        for metric, count in (("signups", signups), ("confirmed", confirmed), ("unsubscribed", unsubscribed),
                              ("undeliverable", undeliverable)):
            found[(magnet, on, metric)] += int(count or 0)
    for metric, joined in (
        ("downloaded", select(Lead.magnet, day, func.count(func.distinct(Download.lead_id)))
         .join(Download, Download.lead_id == Lead.id)),
        ("marketing", select(Lead.magnet, day, func.count(func.distinct(ConsentEvent.lead_id)))
         .join(ConsentEvent, ConsentEvent.lead_id == Lead.id)
         .where(ConsentEvent.kind.in_(CONSENT_GIVEN), ConsentEvent.marketing_consent)),
    ):
        for magnet, on, count in session.execute(joined.where(*cohort).group_by(Lead.magnet, day)):
            found[(magnet, on, metric)] += count
    for magnet, on, sequence, step, count in session.execute(
            select(Lead.magnet, day, Outbox.sequence, Outbox.step, func.count())
            .join(Outbox, Outbox.lead_id == Lead.id)
            .where(*cohort, Outbox.kind == MailKind.DRIP, Outbox.status == OutboxStatus.SENT)
            .group_by(Lead.magnet, day, Outbox.sequence, Outbox.step)):
        found[(magnet, on, f"drip-sent:{sequence}/{step}")] += count
    for magnet, on, sequence, step, count in session.execute(
            select(Lead.magnet, day, Click.sequence, Click.step, func.count(func.distinct(Click.lead_id)))
            .join(Click, Click.lead_id == Lead.id).where(*cohort)
            .group_by(Lead.magnet, day, Click.sequence, Click.step)):
        found[(magnet, on, f"clicked:{sequence}/{step}")] += count
    return found


def funnel_figures(db: Database, content: Content, *, magnet: str | None = None, since: date | None = None,
                   until: date | None = None) -> list[MagnetFigures]:
    """Figures per magnet for leads who signed up on `since` .. `until` (UTC days, inclusive),
    erased leads included; drip steps in the order of the sequence files."""
    if magnet and magnet not in content.magnets:
        raise UnknownMagnet(magnet, content.magnets)
    cohort = []
    if magnet:
        cohort.append(Lead.magnet == magnet)
    if since:
        cohort.append(Lead.created_at >= datetime.combine(since, time(0), timezone.utc))
    if until:
        cohort.append(Lead.created_at < datetime.combine(until, time(0), timezone.utc) + _DAY)
    figures: dict[str, MagnetFigures] = {}
    with db.read_only() as session:
        totals = _by_magnet(counts(session, cohort))
        for (name, metric), count in _erased(session, magnet, since, until).items():
            totals[name][metric] += count
    for name, metrics in totals.items():
        entry = figures.setdefault(name, MagnetFigures(name))
        for metric, count in metrics.items():
            entry.add(metric, count)
    order = [f"{s.slug}/{step.key}" for s in content.sequences.values() for step in s.steps]
    for entry in figures.values():
        entry.steps = dict(sorted(entry.steps.items(),
                                  key=lambda kv: (order.index(kv[0]) if kv[0] in order else 999, kv[0])))
    return sorted(figures.values(), key=lambda f: f.magnet)


def _by_magnet(found: Counter) -> dict[str, Counter]:
    totals: dict[str, Counter] = defaultdict(Counter)
    for (magnet, _day, metric), count in found.items():
        totals[magnet][metric] += count
    return totals


def _erased(session: Session, magnet: str | None, since: date | None, until: date | None) -> Counter:
    where = []
    if magnet:
        where.append(ErasedTally.magnet == magnet)
    if since:
        where.append(ErasedTally.day >= since.isoformat())
    if until:
        where.append(ErasedTally.day <= until.isoformat())
    totals: Counter = Counter()
    for name, metric, count in session.execute(
            select(ErasedTally.magnet, ErasedTally.metric, func.sum(ErasedTally.count))
            .where(*where).group_by(ErasedTally.magnet, ErasedTally.metric)):
        totals[(name, metric)] += int(count)
    return totals


# --- per sequence: its steps with their figures, and the changes waiting in its file ----------

@dataclass(frozen=True)
class StepFigures:
    key: str
    subject: str  # "" for a step no longer in the file
    days: float  # after the confirmation
    skip_if: str | None
    sent: int  # mails sent (every lead, erased ones too)
    clicked: int  # leads who clicked a link in it
    in_file: bool = True


@dataclass(frozen=True)
class SequenceFigures:
    slug: str
    name: str
    magnet: str
    steps: list[StepFigures]  # the file's, in order, then any step sent before and since removed
    plan: SequencePlan | None  # what `mailer drip plan` says about this file


def step_totals(db: Database) -> dict[str, Counter]:
    """Per drip step ("sequence/step"): the mails sent ("sent") and the leads who clicked a link
    in it ("clicked"), over all time and every lead, erased ones too: the figures of
    `funnel_figures` summed over its magnets, without its per-lead cohort. Three queries: the
    sent drip mail per step (a range of ix_outbox_kind_status_step), the clicking leads per step
    (ix_clicks_step), and the erased leads' share (erased_tallies); each reads its index only."""
    totals: dict[str, Counter] = defaultdict(Counter)
    with db.read_only() as session:
        for sequence, step, count in session.execute(
                select(Outbox.sequence, Outbox.step, func.count())
                .where(Outbox.kind == MailKind.DRIP.value, Outbox.status == OutboxStatus.SENT.value)
                .group_by(Outbox.sequence, Outbox.step)):
            totals[f"{sequence}/{step}"]["sent"] += count
        for sequence, step, count in session.execute(
                select(Click.sequence, Click.step, func.count(func.distinct(Click.lead_id)))
                .group_by(Click.sequence, Click.step)):
            totals[f"{sequence}/{step}"]["clicked"] += count
        for metric, count in session.execute(
                select(ErasedTally.metric, func.sum(ErasedTally.count))
                .where(or_(*(ErasedTally.metric.startswith(f"{kind}:") for kind in STEP_METRICS)))
                .group_by(ErasedTally.metric)):
            kind, _, step = metric.partition(":")
            totals[step][STEP_METRICS[kind]] += int(count)
    return totals


def sequence_figures(db: Database, content: Content, window: SendWindow, now: datetime) -> list[SequenceFigures]:
    """Every sequence of the content with each step's sends and clicks (all signups: step_totals)
    and what `mailer drip plan` says about it."""
    from mailer.drip.plan import plan_sequences

    totals = step_totals(db)
    plans = {plan.sequence: plan for plan in plan_sequences(db, content, window, now)}
    found = []
    for sequence in content.sequences.values():
        steps = [StepFigures(step.key, step.subject, step.delay / _DAY, step.skip_if,
                             totals[f"{sequence.slug}/{step.key}"]["sent"],
                             totals[f"{sequence.slug}/{step.key}"]["clicked"]) for step in sequence.steps]
        known = {step.key for step in sequence.steps}
        for name, values in sorted(totals.items()):
            slug, _, key = name.partition("/")
            if slug == sequence.slug and key not in known:
                steps.append(StepFigures(key, "", 0, None, values["sent"], values["clicked"], in_file=False))
        found.append(SequenceFigures(sequence.slug, sequence.name, sequence.magnet, steps, plans.get(sequence.slug)))
    return found


# --- the dashboard's overview: what happened on each day of a period --------------------------
#
# Unlike funnel_figures (a cohort: what became of the leads who signed up in a period), the
# overview counts events on the day they happened, each from its own time column, each query
# a range of an index on that column (migration 0010):
#
#   signups       leads.created_at (erased leads included: erased_tallies keeps their signup day)
#   confirmed     leads.confirmed_at: the confirmation button (a repeat confirmation after a
#                 new signup moves it to the new day; see "Stored days" for a stored old day)
#   downloads     downloads.at: every download of the guide (one person downloading twice counts twice)
#   marketing     consent_events.at of a CONSENT_GIVEN event (confirm, import) with marketing consent
#   unsubscribed  consent_events.at of an unsubscribe event (link, one-click, a complaint, an
#                 operator); ending only the newsletter (newsletter-end) is not counted
#   hard, soft,   bounce_reports.received_at by kind; bounce reports name no magnet, so they
#   complaints    count through the lead they matched (lead_id -> leads.magnet; '' for none,
#                 which only the view of every magnet includes)
#
# A day is a UTC day (as `mailer stats` and erased_tallies count); the magnet of an event is the
# one recorded with it (a consent event's and a download's own magnet column).
#
# Stored days. A day that is over (its end plus GRACE before now) is counted once, for every
# magnet, and its figures are kept in daily_figures (migration 0012), its date in
# daily_figure_days; later views read it from there and count live only the days not yet over
# (today, and yesterday for GRACE after midnight). So the page costs the same however many
# events a finished day held: on a million leads with a hundred times the traffic as on ten
# thousand. The first view that asks for a finished day not yet stored counts it and stores it:
# that GET then writes (a write transaction; on SQLite the write lock, BEGIN IMMEDIATE, for the
# count and the insert, a month of days at a time: STORE_SPAN). Two workers doing so at once
# insert the same rows (ON CONFLICT DO NOTHING); on PostgreSQL an advisory lock makes the
# second wait and find the days stored.
# A stored day keeps what it counted:
#   - erasure and the purge delete a person's confirmation, downloads, consent events and
#     bounce reports: a stored day still counts them, as erased_tallies keep the signups
#     (live, for today, only the signup stays);
#   - a repeat confirmation counts on its own day too (live, it moves the confirmation there).
# The one writer that dates rows in the past, `mailer import` (signed_up_at, consent_at),
# deletes the stored days from the earliest day it writes on, in its own transaction
# (forget_days): the next view counts them again. Every other writer stamps the time of the
# request (the services' clock); GRACE covers a transaction that began before midnight and
# commits just after.

DAILY_METRICS = ("signups", "confirmed", "downloads", "marketing", "unsubscribed", "hard", "soft", "complaints")
BOUNCE_KINDS = {BounceKind.HARD: "hard", BounceKind.SOFT: "soft", BounceKind.COMPLAINT: "complaints"}
MAX_DAYS = 366
GRACE = timedelta(minutes=10)  # a day is over this long after its end (a late commit is in)
# Days counted and stored per write transaction: on SQLite the count runs under the write lock
# (BEGIN IMMEDIATE), so a first view of a long period stores it a month at a time and signups
# wait for at most one month's count (tens of milliseconds on a busy list), not a year's.
STORE_SPAN = timedelta(days=31)
_STORE_LOCK = 0x64_61_69_6C  # PostgreSQL advisory lock key for storing and forgetting days ("dail")


@dataclass(frozen=True)
class Daily:
    """Each metric of DAILY_METRICS per UTC day of since .. until (inclusive), zeros included,
    and "bounces": hard and soft together."""

    magnet: str | None  # None: every magnet
    since: date
    until: date
    days: tuple[date, ...]
    series: dict[str, tuple[int, ...]]

    def total(self, metric: str) -> int:
        return sum(self.series[metric])

    def rate(self, metric: str) -> float | None:
        """A metric's total against the signups of the period (None without signups)."""
        signups = self.total("signups")
        return self.total(metric) / signups if signups else None


def _day_of(session: Session, column):
    """A UTC time column's day as text, YYYY-MM-DD (naive UTC is stored on both dialects)."""
    if session.bind.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.substr(column, 1, 10)


def last_finished_day(now: datetime) -> date:
    """The last UTC day whose end lies GRACE or more before `now`."""
    return (now.astimezone(timezone.utc) - GRACE).date() - _DAY


def daily(db: Database, content: Content, *, magnet: str | None, since: date, until: date,
          now: datetime) -> Daily:
    """The overview's figures per day: the finished days of the period from the store (counted
    and stored first if they are not yet there, see "Stored days" above), the others counted
    live. Each count is a range on an indexed time column (ix_leads_created, ix_leads_confirmed,
    ix_downloads_at, ix_consent_events_kind_at, bounce_reports.received_at), grouped by day and
    magnet in SQL; the stored ones a range of daily_figures' primary key."""
    if magnet and magnet not in content.magnets:
        raise UnknownMagnet(magnet, content.magnets)
    if until < since:
        raise InvalidRequest(f"the period ends ({until}) before it starts ({since})", "until")
    if (until - since).days >= MAX_DAYS:
        raise InvalidRequest(f"a period is at most {MAX_DAYS} days", "since")
    finished = min(until, last_finished_day(now))  # since .. finished from the store
    found: dict[str, Counter] = {metric: Counter() for metric in DAILY_METRICS}
    if finished >= since:
        with db.read_only() as session:
            missing = _missing_days(session, since, finished)
        while missing:  # a span of at most STORE_SPAN days per write transaction
            span = [day for day in missing if day < missing[0] + STORE_SPAN]
            _store_days(db, span, now)
            missing = missing[len(span):]
        with db.read_only() as session:
            stored = select(DailyFigure.day, DailyFigure.metric, func.sum(DailyFigure.count)).where(
                DailyFigure.day >= since.isoformat(), DailyFigure.day <= finished.isoformat())
            if magnet:
                stored = stored.where(DailyFigure.magnet == magnet)
            for on, metric, count in session.execute(stored.group_by(DailyFigure.day, DailyFigure.metric)):
                found[metric][on] += int(count)
    live_since = max(since, finished + _DAY)
    if live_since <= until:
        with db.read_only() as session:
            for (on, _magnet, metric), count in _count(session, live_since, until, magnet, per_magnet=False).items():
                found[metric][on] += count
    days = tuple(since + timedelta(days=offset) for offset in range((until - since).days + 1))
    keys = [day.isoformat() for day in days]
    series = {metric: tuple(found[metric].get(key, 0) for key in keys) for metric in DAILY_METRICS}
    series["bounces"] = tuple(hard + soft for hard, soft in zip(series["hard"], series["soft"], strict=True))
    return Daily(magnet, since, until, days, series)


def _missing_days(session: Session, since: date, until: date) -> list[date]:
    """The days of since .. until (inclusive) whose figures are not stored."""
    stored = set(session.scalars(select(DailyFigureDay.day).where(
        DailyFigureDay.day >= since.isoformat(), DailyFigureDay.day <= until.isoformat())))
    days = (since + timedelta(days=offset) for offset in range((until - since).days + 1))
    return [day for day in days if day.isoformat() not in stored]


def _store_days(db: Database, days: list[date], now: datetime) -> None:
    """Count finished `days` for every magnet over their span and store them with their markers,
    in one write transaction. Under the lock the stored days are looked up again: another
    worker may have stored them meanwhile (then nothing is counted twice)."""
    with db.transaction() as session:
        _lock_store(session)
        days = _missing_days(session, min(days), max(days))
        if not days:
            return
        wanted = {day.isoformat() for day in days}
        rows = [{"day": on, "magnet": name, "metric": metric, "count": count}
                for (on, name, metric), count in _count(session, min(days), max(days), None).items()
                if on in wanted and count]
        if rows:
            session.execute(queries.upsert(session, DailyFigure).on_conflict_do_nothing(
                index_elements=["day", "magnet", "metric"]), rows)
        session.execute(queries.upsert(session, DailyFigureDay).on_conflict_do_nothing(index_elements=["day"]),
                        [{"day": on, "counted_at": now} for on in sorted(wanted)])


def forget_days(session: Session, since: date) -> None:
    """Delete the stored figures from `since` on (inclusive), in the caller's write transaction:
    for a writer that dates events in the past (`mailer import`). The next overview counts
    those days again."""
    _lock_store(session)
    session.execute(delete(DailyFigureDay).where(DailyFigureDay.day >= since.isoformat()))
    session.execute(delete(DailyFigure).where(DailyFigure.day >= since.isoformat()))


def _lock_store(session: Session) -> None:
    """Storing and forgetting days take turns. On SQLite every write transaction holds the
    database's write lock from its start (BEGIN IMMEDIATE); on PostgreSQL a transaction-level
    advisory lock, and as transactions are READ COMMITTED, each statement after it sees what
    the other transaction committed (so a count never misses an import, nor an import a count)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_STORE_LOCK)))


def _count(session: Session, since: date, until: date, magnet: str | None, per_magnet: bool = True) -> Counter:
    """The events of since .. until (UTC days, inclusive), for one magnet or every magnet:
    {(day, magnet, metric): count}, bounce reports that matched no lead under magnet ''.
    Without `magnet` and `per_magnet` the bounce reports are all under magnet ''."""
    per_magnet = per_magnet or bool(magnet)
    start = datetime.combine(since, time(0), timezone.utc)
    end = datetime.combine(until, time(0), timezone.utc) + _DAY
    found: Counter = Counter()

    def per_day(metric: str, column, magnet_column, *where) -> None:
        day = _day_of(session, column)
        conditions = [column >= start, column < end, *where]
        if magnet:
            conditions.append(magnet_column == magnet)
        for on, name, count in session.execute(select(day, magnet_column, func.count()).where(*conditions)
                                               .group_by(day, magnet_column)):
            found[(on, name, metric)] += count

    per_day("signups", Lead.created_at, Lead.magnet)
    per_day("confirmed", Lead.confirmed_at, Lead.magnet)
    per_day("downloads", Download.at, Download.magnet)
    per_day("marketing", ConsentEvent.at, ConsentEvent.magnet,
            ConsentEvent.kind.in_([kind.value for kind in CONSENT_GIVEN]), ConsentEvent.marketing_consent.is_(True))
    per_day("unsubscribed", ConsentEvent.at, ConsentEvent.magnet, ConsentEvent.kind == ConsentKind.UNSUBSCRIBE.value)
    received = _day_of(session, BounceReport.received_at)
    # The magnet a bounce report reached through its lead: a lookup per report, which only the
    # counts per magnet need (live for every magnet together, the index alone answers).
    grouped = [received, BounceReport.kind, *([func.coalesce(Lead.magnet, "")] if per_magnet else [])]
    bounces = (select(*grouped, func.count()).select_from(BounceReport)
               .where(BounceReport.kind.in_([kind.value for kind in BOUNCE_KINDS]),
                      BounceReport.received_at >= start, BounceReport.received_at < end)
               .group_by(*grouped))
    if per_magnet:
        bounces = bounces.outerjoin(Lead, Lead.id == BounceReport.lead_id)
        if magnet:
            bounces = bounces.where(Lead.magnet == magnet)
    for on, kind, *name, count in session.execute(bounces):
        found[(on, name[0] if name else "", BOUNCE_KINDS[BounceKind(kind)])] += count
    erased = [ErasedTally.metric == "signups", ErasedTally.day >= since.isoformat(),
              ErasedTally.day <= until.isoformat()]
    if magnet:
        erased.append(ErasedTally.magnet == magnet)
    for on, name, count in session.execute(select(ErasedTally.day, ErasedTally.magnet, func.sum(ErasedTally.count))
                                           .where(*erased).group_by(ErasedTally.day, ErasedTally.magnet)):
        found[(on, name, "signups")] += int(count)
    return found


@dataclass(frozen=True)
class Overview:
    """The dashboard's first page: the period's figures, the outbox, the bounce warnings."""

    daily: Daily
    outbox: OutboxState  # the waiting statuses (outbox.WAITING) and the marketing pause
    warnings: list[RateWarning]


def overview(db: Database, content: Content, *, magnet: str | None, since: date, until: date,
             now: datetime) -> Overview:
    return Overview(daily(db, content, magnet=magnet, since=since, until=until, now=now), waiting(db),
                    warning_figures(db, now=now))
