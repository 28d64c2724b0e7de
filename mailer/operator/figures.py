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

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from mailer.content.files import Content
from mailer.errors import InvalidRequest
from mailer.operator.bounces import RateWarning, warning_figures
from mailer.operator.outbox import Overview as OutboxState
from mailer.operator.outbox import waiting
from mailer.store.database import Database
from mailer.store.tables import (
    CONSENT_GIVEN,
    BounceKind,
    BounceReport,
    Click,
    ConsentEvent,
    ConsentKind,
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
    day = _signup_day(session)
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


def _signup_day(session: Session):
    """The signup day as text, YYYY-MM-DD in UTC (the column holds naive UTC on both)."""
    if session.bind.dialect.name == "postgresql":
        return func.to_char(Lead.created_at, "YYYY-MM-DD")
    return func.substr(Lead.created_at, 1, 10)


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
# overview counts events on the day they happened, each from its own time column, so that every
# query reads only the rows of the period through an index on that column (migration 0010):
# the page costs the same on a list of ten thousand leads as on one of a million.
#
#   signups       leads.created_at (erased leads included: erased_tallies keeps their signup day)
#   confirmed     leads.confirmed_at: the confirmation button (a repeat confirmation after a
#                 new signup moves it to the new day)
#   downloads     downloads.at: every download of the guide (one person downloading twice counts twice)
#   marketing     consent_events.at of a CONSENT_GIVEN event (confirm, import) with marketing consent
#   unsubscribed  consent_events.at of an unsubscribe event (link, one-click, a complaint, an
#                 operator); ending only the newsletter (newsletter-end) is not counted
#   hard, soft,   bounce_reports.received_at by kind; bounce reports name no magnet, so with a
#   complaints    magnet chosen they count through the lead they matched (lead_id -> leads.magnet)
#
# A day is a UTC day (as `mailer stats` and erased_tallies count); the magnet of an event is the
# one recorded with it (a consent event's and a download's own magnet column). Erased people
# count only as signups: their other events went with them.

DAILY_METRICS = ("signups", "confirmed", "downloads", "marketing", "unsubscribed", "hard", "soft", "complaints")
BOUNCE_KINDS = {BounceKind.HARD: "hard", BounceKind.SOFT: "soft", BounceKind.COMPLAINT: "complaints"}
MAX_DAYS = 366


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


def daily(db: Database, content: Content, *, magnet: str | None, since: date, until: date) -> Daily:
    """The overview's figures per day. Each query is a range on an indexed time column
    (ix_leads_created, ix_leads_confirmed, ix_downloads_at, ix_consent_events_kind_at,
    ix_bounce_reports_kind_at), grouped by day in SQL."""
    if magnet and magnet not in content.magnets:
        raise UnknownMagnet(magnet, content.magnets)
    if until < since:
        raise InvalidRequest(f"the period ends ({until}) before it starts ({since})", "until")
    if (until - since).days >= MAX_DAYS:
        raise InvalidRequest(f"a period is at most {MAX_DAYS} days", "since")
    start = datetime.combine(since, time(0), timezone.utc)
    end = datetime.combine(until, time(0), timezone.utc) + _DAY
    found: dict[str, Counter] = {metric: Counter() for metric in DAILY_METRICS}

    def per_day(metric: str, column, *where, magnet_column=None, join=None) -> None:
        day = _day_of(session, column)
        query = select(day, func.count()).select_from(column.table)
        if join is not None:
            query = query.join(*join)
        conditions = [column >= start, column < end, *where]
        if magnet:
            conditions.append(magnet_column == magnet)
        for on, count in session.execute(query.where(*conditions).group_by(day)):
            found[metric][on] += count

    with db.read_only() as session:
        per_day("signups", Lead.created_at, magnet_column=Lead.magnet)
        per_day("confirmed", Lead.confirmed_at, magnet_column=Lead.magnet)
        per_day("downloads", Download.at, magnet_column=Download.magnet)
        per_day("marketing", ConsentEvent.at, ConsentEvent.kind.in_([kind.value for kind in CONSENT_GIVEN]),
                ConsentEvent.marketing_consent.is_(True), magnet_column=ConsentEvent.magnet)
        per_day("unsubscribed", ConsentEvent.at, ConsentEvent.kind == ConsentKind.UNSUBSCRIBE.value,
                magnet_column=ConsentEvent.magnet)
        received = _day_of(session, BounceReport.received_at)
        bounces = (select(received, BounceReport.kind, func.count())
                   .where(BounceReport.kind.in_([kind.value for kind in BOUNCE_KINDS]),
                          BounceReport.received_at >= start, BounceReport.received_at < end)
                   .group_by(received, BounceReport.kind))
        if magnet:
            bounces = bounces.join(Lead, Lead.id == BounceReport.lead_id).where(Lead.magnet == magnet)
        for on, kind, count in session.execute(bounces):
            found[BOUNCE_KINDS[BounceKind(kind)]][on] += count
        erased = [ErasedTally.metric == "signups", ErasedTally.day >= since.isoformat(),
                  ErasedTally.day <= until.isoformat()]
        if magnet:
            erased.append(ErasedTally.magnet == magnet)
        for on, count in session.execute(select(ErasedTally.day, func.sum(ErasedTally.count))
                                         .where(*erased).group_by(ErasedTally.day)):
            found["signups"][on] += int(count)
    days = tuple(since + timedelta(days=offset) for offset in range((until - since).days + 1))
    keys = [day.isoformat() for day in days]
    series = {metric: tuple(found[metric].get(key, 0) for key in keys) for metric in DAILY_METRICS}
    series["bounces"] = tuple(hard + soft for hard, soft in zip(series["hard"], series["soft"], strict=True))
    return Daily(magnet, since, until, days, series)


@dataclass(frozen=True)
class Overview:
    """The dashboard's first page: the period's figures, the outbox, the bounce warnings."""

    daily: Daily
    outbox: OutboxState  # the waiting statuses (outbox.WAITING) and the marketing pause
    warnings: list[RateWarning]


def overview(db: Database, content: Content, *, magnet: str | None, since: date, until: date,
             now: datetime) -> Overview:
    return Overview(daily(db, content, magnet=magnet, since=since, until=until), waiting(db),
                    warning_figures(db, now=now))
