"""The funnel in figures, per lead magnet, for the leads who signed up in a period.

Each figure counts leads (not events) of that cohort, plus what erased and purged leads of
the cohort left behind as plain numbers (erased_tallies), so erasure does not rewrite history.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from .models import Click, ConsentEvent, Download, ErasedTally, Lead, LeadStatus, MailKind, Outbox, OutboxStatus

_DAY = timedelta(days=1)
LEAD_METRICS = ("signups", "confirmed", "downloaded", "marketing", "unsubscribed", "undeliverable")


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

    def as_dict(self) -> dict:
        return {"magnet": self.magnet, **{m: getattr(self, m) for m in LEAD_METRICS},
                "confirm_rate": None if self.confirm_rate is None else round(self.confirm_rate, 4),
                "drip_steps": [{"step": key, **values} for key, values in self.steps.items()]}


def funnel(session: Session, *, magnet: str | None, since: date | None, until: date | None,
           step_order: list[str]) -> list[MagnetFigures]:
    """Figures per magnet for leads who signed up on `since` .. `until` (UTC days, inclusive)."""
    cohort = []
    if magnet:
        cohort.append(Lead.magnet == magnet)
    if since:
        cohort.append(Lead.created_at >= datetime.combine(since, time(0), timezone.utc))
    if until:
        cohort.append(Lead.created_at < datetime.combine(until, time(0), timezone.utc) + _DAY)
    figures: dict[str, MagnetFigures] = {}

    def of(name: str) -> MagnetFigures:
        return figures.setdefault(name, MagnetFigures(name))

    for row in session.execute(
        select(Lead.magnet, func.count(), func.count(Lead.confirmed_at),
               func.sum(case((Lead.status == LeadStatus.UNSUBSCRIBED, 1), else_=0)),
               func.sum(case((Lead.status == LeadStatus.UNDELIVERABLE, 1), else_=0)))
        .where(*cohort).group_by(Lead.magnet)
    ):
        entry = of(row[0])
        entry.signups, entry.confirmed, entry.unsubscribed, entry.undeliverable = row[1], row[2], row[3], row[4]
    for name, count in session.execute(
            select(Lead.magnet, func.count(func.distinct(Download.lead_id)))
            .join(Download, Download.lead_id == Lead.id).where(*cohort).group_by(Lead.magnet)):
        of(name).downloaded = count
    for name, count in session.execute(
            select(Lead.magnet, func.count(func.distinct(ConsentEvent.lead_id)))
            .join(ConsentEvent, and_(ConsentEvent.lead_id == Lead.id, ConsentEvent.kind.in_(("confirm", "import")),
                                     ConsentEvent.marketing_consent))
            .where(*cohort).group_by(Lead.magnet)):
        of(name).marketing = count
    for name, sequence, step, count in session.execute(
            select(Lead.magnet, Outbox.sequence, Outbox.step, func.count())
            .join(Outbox, Outbox.lead_id == Lead.id)
            .where(*cohort, Outbox.kind == MailKind.DRIP.value, Outbox.status == OutboxStatus.SENT)
            .group_by(Lead.magnet, Outbox.sequence, Outbox.step)):
        of(name).steps.setdefault(f"{sequence}/{step}", {"sent": 0, "clicked": 0})["sent"] += count
    for name, sequence, step, count in session.execute(
            select(Lead.magnet, Click.sequence, Click.step, func.count(func.distinct(Click.lead_id)))
            .join(Click, Click.lead_id == Lead.id).where(*cohort)
            .group_by(Lead.magnet, Click.sequence, Click.step)):
        of(name).steps.setdefault(f"{sequence}/{step}", {"sent": 0, "clicked": 0})["clicked"] += count
    _add_erased(session, of, magnet, since, until)
    for entry in figures.values():
        entry.steps = dict(sorted(entry.steps.items(),
                                  key=lambda kv: (step_order.index(kv[0]) if kv[0] in step_order else 999, kv[0])))
    return sorted(figures.values(), key=lambda f: f.magnet)


def _add_erased(session: Session, of, magnet: str | None, since: date | None, until: date | None) -> None:
    where = []
    if magnet:
        where.append(ErasedTally.magnet == magnet)
    if since:
        where.append(ErasedTally.day >= since.isoformat())
    if until:
        where.append(ErasedTally.day <= until.isoformat())
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for name, metric, count in session.execute(
            select(ErasedTally.magnet, ErasedTally.metric, func.sum(ErasedTally.count))
            .where(*where).group_by(ErasedTally.magnet, ErasedTally.metric)):
        totals[(name, metric)] += int(count)
    for (name, metric), count in totals.items():
        entry = of(name)
        if metric in LEAD_METRICS:
            setattr(entry, metric, getattr(entry, metric) + count)
        else:
            kind, _, step = metric.partition(":")
            column = "sent" if kind == "drip-sent" else "clicked"
            entry.steps.setdefault(step, {"sent": 0, "clicked": 0})[column] += count
