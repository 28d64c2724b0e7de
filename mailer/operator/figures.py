"""The funnel in figures, per lead magnet, for the leads who signed up in a period.

`counts()` is the one definition of every figure: `mailer stats` sums it over a cohort, and
erasure keeps what an erased lead counted for (erased_tallies), so erasure does not rewrite
history. Each figure counts leads (not events), but a drip step's "sent" counts mails.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from mailer.content.files import Content
from mailer.errors import InvalidRequest
from mailer.store.database import Database
from mailer.store.tables import (
    CONSENT_GIVEN,
    Click,
    ConsentEvent,
    Download,
    ErasedTally,
    Lead,
    LeadStatus,
    MailKind,
    Outbox,
    OutboxStatus,
)

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
