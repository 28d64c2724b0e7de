"""The reports that came back, for an operator: `mailer bounces list|show`, the bounce and
complaint rates in `mailer stats`, and the warning in `mailer outbox` (and the dashboard later).
Taking one in is mailer/bounces/intake.py; this module only reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, distinct, func, select

from mailer.errors import InvalidRequest
from mailer.store.database import Database
from mailer.store.tables import BounceKind, BounceReport, CampaignMail, Lead, MailKind, Outbox, OutboxStatus

KINDS = tuple(kind.value for kind in BounceKind if kind is not BounceKind.DELAYED)  # what is stored


def _summary(report: BounceReport, email: str | None) -> dict:
    return {"id": report.id, "kind": report.kind, "email": email, "status": report.status,
            "received_at": report.received_at.isoformat(), "source": report.source, "format": report.format,
            "recipient": report.recipient, "matched_by": report.matched_by, "note": report.note}


def reports(db: Database, kind: str | None = None, limit: int = 100) -> list[dict]:
    """The newest reports first (of one kind if given): what they were, about whom, what they did.
    `email` is the lead's address now (null when unmatched, or when the lead is gone)."""
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"{kind!r} is not a kind of report ({', '.join(KINDS)})", "--kind")
    query = (select(BounceReport, Lead.email).outerjoin(Lead, Lead.id == BounceReport.lead_id)
             .order_by(BounceReport.id.desc()).limit(limit))
    if kind is not None:
        query = query.where(BounceReport.kind == kind)
    with db.read_only() as session:
        return [_summary(report, email) for report, email in session.execute(query)]


def report(db: Database, report_id: int) -> dict:
    """One report whole: its summary, the action and diagnostic, the outbox row it matched, and
    the report as received (cut to the size kept)."""
    with db.read_only() as session:
        found = session.execute(select(BounceReport, Lead.email).outerjoin(Lead, Lead.id == BounceReport.lead_id)
                                .where(BounceReport.id == report_id)).first()
        if found is None:
            raise InvalidRequest(f"there is no report {report_id}", "ID")
        shown, email = found
        return {**_summary(shown, email), "action": shown.action, "diagnostic": shown.diagnostic,
                "outbox_id": shown.outbox_id, "raw_size": shown.raw_size, "raw": shown.raw}


# --- rates: `mailer stats`, and the warning in `mailer outbox` --------------------------------

COMPLAINT_WARNING = 0.001  # 0.1 %: Gmail and Yahoo (2024) act at 0.3 %; warn well before
HARD_BOUNCE_WARNING = 0.02  # 2 %
WARNING_DAYS = 7


@dataclass(frozen=True)
class Rates:
    """Of the mails sent (in a period, of one stream), how many came back as a hard bounce, a
    soft bounce or a complaint (each mail counted once per kind)."""

    stream: str  # "overall", "newsletter SLUG (campaign N)", "SEQUENCE / STEP", or a mail kind
    sent: int
    hard: int
    soft: int
    complaints: int

    def rate(self, count: int) -> float | None:
        return count / self.sent if self.sent else None

    def as_dict(self) -> dict:
        return {"stream": self.stream, "sent": self.sent, "hard": self.hard, "soft": self.soft,
                "complaints": self.complaints, "hard_rate": self.rate(self.hard),
                "complaint_rate": self.rate(self.complaints)}


def rates(db: Database, *, since: datetime | None = None) -> list[Rates]:
    """Bounce and complaint rates of the mail sent since `since` (all when None): overall first,
    then per newsletter campaign, per drip step and per transactional kind. One grouped query."""
    def counted(kind: BounceKind):
        return func.count(distinct(case((BounceReport.kind == kind.value, BounceReport.outbox_id))))

    query = (select(Outbox.kind, Outbox.sequence, Outbox.step, CampaignMail.campaign_id,
                    func.count(distinct(Outbox.id)), counted(BounceKind.HARD), counted(BounceKind.SOFT),
                    counted(BounceKind.COMPLAINT))
             .outerjoin(CampaignMail, CampaignMail.id == Outbox.campaign_mail_id)
             .outerjoin(BounceReport, BounceReport.outbox_id == Outbox.id)
             .where(Outbox.status == OutboxStatus.SENT.value)
             .group_by(Outbox.kind, Outbox.sequence, Outbox.step, CampaignMail.campaign_id))
    if since is not None:
        query = query.where(Outbox.sent_at >= since)
    streams: dict[str, list[int]] = {}
    with db.read_only() as session:
        for kind, sequence, step, campaign_id, *counts in session.execute(query):
            if kind == MailKind.NEWSLETTER:
                name = f"newsletter {step}" + (f" (campaign {campaign_id})" if campaign_id else "")
            elif kind == MailKind.DRIP:
                name = f"{sequence} / {step}"
            else:
                name = kind
            total = streams.setdefault(name, [0, 0, 0, 0])
            for index, count in enumerate(counts):
                total[index] += count
    overall = [sum(values[index] for values in streams.values()) for index in range(4)]
    return [Rates("overall", *overall)] + [Rates(name, *values) for name, values in sorted(streams.items())]


def overall(db: Database, *, since: datetime) -> Rates:
    """rates(since=...)[0] without the streams: the mail sent since then counted from the index
    on (status, sent_at) alone, and the reports about it found from their own side (received
    since then, through ix_bounce_reports_kind_at), so neither reads the other's whole range."""
    with db.read_only() as session:
        sent = session.scalar(select(func.count()).select_from(Outbox)
                              .where(Outbox.status == OutboxStatus.SENT.value, Outbox.sent_at >= since))
        counts = dict(session.execute(
            select(BounceReport.kind, func.count(distinct(BounceReport.outbox_id)))
            .join(Outbox, Outbox.id == BounceReport.outbox_id)
            .where(BounceReport.kind.in_([BounceKind.HARD.value, BounceKind.SOFT.value, BounceKind.COMPLAINT.value]),
                   BounceReport.received_at >= since,  # a report comes after its mail
                   Outbox.status == OutboxStatus.SENT.value, Outbox.sent_at >= since)
            .group_by(BounceReport.kind)).all())
    return Rates("overall", sent, counts.get(BounceKind.HARD.value, 0), counts.get(BounceKind.SOFT.value, 0),
                 counts.get(BounceKind.COMPLAINT.value, 0))


@dataclass(frozen=True)
class RateWarning:
    """A rate over its threshold in the last WARNING_DAYS days: kind "complaints" or "hard"."""

    kind: str
    count: int
    sent: int
    rate: float
    threshold: float
    days: int = WARNING_DAYS


def warning_figures(db: Database, *, now: datetime) -> list[RateWarning]:
    """The complaint rate of the last WARNING_DAYS days over 0.1 %, the hard-bounce rate over
    2 %: as figures, for a face to say in its own words (the dashboard's overview)."""
    sent = overall(db, since=now - timedelta(days=WARNING_DAYS))
    found = []
    for kind, count, threshold in (("complaints", sent.complaints, COMPLAINT_WARNING),
                                   ("hard", sent.hard, HARD_BOUNCE_WARNING)):
        rate = sent.rate(count)
        if rate is not None and rate > threshold:
            found.append(RateWarning(kind, count, sent.sent, rate, threshold))
    return found


def warnings(db: Database, *, now: datetime) -> list[str]:
    """What an operator must hear about: the complaint rate of the last WARNING_DAYS days over
    0.1 %, or the hard-bounce rate over 2 % (shown by `mailer outbox`; the dashboard says
    warning_figures in Dutch)."""
    found = []
    for warning in warning_figures(db, now=now):
        if warning.kind == "complaints":
            found.append(f"complaints: {warning.count} of {warning.sent} mails sent in the last {WARNING_DAYS} "
                         f"days ({warning.rate:.2%}, above {COMPLAINT_WARNING:.1%}); mailbox providers start "
                         "refusing all our mail at 0.3 %")
        else:
            found.append(f"hard bounces: {warning.count} of {warning.sent} mails sent in the last {WARNING_DAYS} "
                         f"days ({warning.rate:.2%}, above {HARD_BOUNCE_WARNING:.0%}); check where these "
                         "addresses came from")
    return found
