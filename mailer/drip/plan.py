"""What the operator asks about sequences: what a changed file will do, and what a lead will get."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session

from mailer.content.files import Content, Sequence, Step
from mailer.drip.job import Facts, timeline
from mailer.errors import MailerError
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import Click, Download, Enrollment, EnrollmentStatus, Lead, MailKind, Outbox, SequenceState
from mailer.timing import SendWindow


@dataclass(frozen=True)
class StepChange:
    key: str
    change: str  # added, removed, moved
    old_delay: int | None  # seconds after confirming
    new_delay: int | None
    leads: int  # active enrollments it concerns
    overdue: int = 0  # of those, past its time already: they get it at the next window opening
    first: datetime | None = None  # the send dates of the others
    last: datetime | None = None


@dataclass
class SequencePlan:
    sequence: str
    name: str
    state: str  # new (never run), unchanged, changed
    active: int
    changes: list[StepChange] = field(default_factory=list)


class NoSequence(MailerError):
    pass


def plan_sequences(db: Database, content: Content, window: SendWindow, now: datetime) -> list[SequencePlan]:
    """`mailer drip plan`: what each changed sequence file will do (see `plan`)."""
    with db.read_only() as session:
        return plan(session, content, window, now)


def preview_timeline(db: Database, content: Content, window: SendWindow, gap: timedelta, now: datetime, days: int,
                     email: str | None = None, slug: str | None = None) -> Preview:
    """`mailer drip preview`: the timeline of the lead with this address (UnknownLead if there
    is none), or of someone who confirms now; in sequence `slug`, by default the one of the
    lead's magnet (or the default magnet). NoSequence if there is none."""
    with db.read_only() as session:
        lead = None if email is None else queries.require_lead(session, email)
        magnet = lead.magnet if lead else content.default_magnet.slug
        sequence = content.sequences.get(slug) if slug else content.sequence_for(magnet)
        if sequence is None:
            raise NoSequence(f"no sequence {slug!r}" if slug else f"magnet {magnet!r} has no sequence")
        return preview(session, sequence, window, gap, now, days, lead)


def plan(session: Session, content: Content, window: SendWindow, now: datetime) -> list[SequencePlan]:
    """Compare each sequence file with the steps its enrollments were last planned against."""
    plans = []
    for sequence in content.sequences.values():
        active = session.scalar(select(func.count()).select_from(Enrollment).where(
            Enrollment.sequence == sequence.slug, Enrollment.status == EnrollmentStatus.ACTIVE))
        state = session.get(SequenceState, sequence.slug)
        if state is None:
            plans.append(SequencePlan(sequence.slug, sequence.name, "new", active))
            continue
        old = {key: delay for key, delay in json.loads(state.steps)}
        result = SequencePlan(sequence.slug, sequence.name, "unchanged", active)
        for step in sequence.steps:
            if old.get(step.key) != step.delay_seconds:
                change = "added" if step.key not in old else "moved"
                result.changes.append(_ahead(session, sequence.slug, step, change, old.get(step.key), window, now))
        for key, delay in old.items():
            if sequence.step(key) is None:
                result.changes.append(StepChange(key, "removed", delay, None, _waiting(session, sequence.slug, delay)))
        result.state = "changed" if result.changes else "unchanged"
        plans.append(result)
    return plans


def _ahead(session: Session, sequence: str, step: Step, change: str, old_delay: int | None,
           window: SendWindow, now: datetime) -> StepChange:
    """Who will get `step`: active enrollments that have not passed its place and do not have it."""
    delay = step.delay
    cut = now - delay  # anchored at or before this: the step's time has passed
    had = exists().where(Outbox.lead_id == Enrollment.lead_id, Outbox.kind == MailKind.DRIP.value,
                         Outbox.sequence == sequence, Outbox.step == step.key)
    leads, overdue, first, last = session.execute(
        select(func.count(), func.coalesce(func.sum(case((Enrollment.anchor_at <= cut, 1), else_=0)), 0),
               func.min(case((Enrollment.anchor_at > cut, Enrollment.anchor_at))),
               func.max(case((Enrollment.anchor_at > cut, Enrollment.anchor_at))))
        .where(Enrollment.sequence == sequence, Enrollment.status == EnrollmentStatus.ACTIVE,
               Enrollment.position < step.delay_seconds, ~had)
    ).one()
    first_at = window.next_opening(first + delay) if first else None
    last_at = window.next_opening(last + delay) if last else None
    return StepChange(step.key, change, old_delay, step.delay_seconds, leads, overdue, first_at, last_at)


def _waiting(session: Session, sequence: str, delay: int) -> int:
    return session.scalar(select(func.count()).select_from(Enrollment).where(
        Enrollment.sequence == sequence, Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.position < delay))


@dataclass(frozen=True)
class PlannedMail:
    step: Step
    day: float  # days after confirming
    at: datetime | None  # sent (past) or planned; None when skipped
    note: str


@dataclass
class Preview:
    sequence: Sequence
    who: str
    status: str  # what the enrollment is doing
    mails: list[PlannedMail]


def preview(session: Session, sequence: Sequence, window: SendWindow, gap: timedelta,
            now: datetime, days: int, lead: Lead | None) -> Preview:
    """The timeline of one lead (or of someone who confirms now), with the window applied.

    A mail that a holiday or quiet date moves says so in its note (see `_moved`).
    """
    until = now + timedelta(days=days)
    day = lambda step: step.delay / timedelta(days=1)  # noqa: E731
    if lead is None:
        planned = _moved(window, lambda w: timeline(sequence, w, gap, anchor=now, position=-1, last_sent=None,
                                                    now=now, done=set(), facts=None, until=until))
        return Preview(sequence, "a lead who confirms now", "preview",
                       [PlannedMail(s, day(s), at, note) for s, at, note in planned])
    enrollment = session.scalar(select(Enrollment).where(Enrollment.lead_id == lead.id,
                                                         Enrollment.sequence == sequence.slug))
    sent = session.execute(
        select(Outbox.step, Outbox.status, Outbox.sent_at, Outbox.created_at)
        .where(Outbox.lead_id == lead.id, Outbox.kind == MailKind.DRIP.value, Outbox.sequence == sequence.slug)
        .order_by(Outbox.created_at)
    ).all()
    mails = [PlannedMail(sequence.step(step) or Step(step, timedelta(0), "(step removed)", ""),
                         day(sequence.step(step)) if sequence.step(step) else 0,
                         sent_at or created_at, status)
             for step, status, sent_at, created_at in sent]
    who = f"{lead.email} ({lead.status})"
    if enrollment is None:
        return Preview(sequence, who, "not enrolled (no marketing consent given)", mails)
    if enrollment.status == EnrollmentStatus.STOPPED:
        return Preview(sequence, who, "stopped: no more mail", mails)
    facts = Facts(
        downloaded=session.scalar(select(exists().where(and_(Download.lead_id == lead.id,
                                                              Download.magnet == sequence.magnet)))),
        clicked=session.scalar(select(exists().where(and_(Click.lead_id == lead.id,
                                                           Click.sequence == sequence.slug)))),
    )
    planned = _moved(window, lambda w: timeline(
        sequence, w, gap, anchor=enrollment.anchor_at, position=enrollment.position,
        last_sent=enrollment.last_sent_at, now=now, done={row.step for row in sent}, facts=facts, until=until))
    mails += [PlannedMail(s, day(s), at, note or "planned") for s, at, note in planned]
    return Preview(sequence, who, "active", mails)


def _moved(window: SendWindow, run) -> list[tuple[Step, datetime | None, str]]:
    """`run(window)`, the timeline, with a note on each mail that the window's holidays or quiet
    dates moved: the timeline is worked out once more without them, and a mail whose time
    differs says from which day (and why), or that the mail before it moved (one a day)."""
    planned = run(window)
    if window.holidays is None and not window.quiet:
        return planned
    plain = {step.key: at for step, at, _ in run(window.with_closed_days(holidays=None)) if at is not None}
    moved = []
    for step, at, note in planned:
        was = plain.get(step.key)
        if at is not None and was is not None and was != at:
            local = was.astimezone(window.zone).date()
            reason = window.closed_on(local)
            shift = (f"moved from {local:%a %d %b}: {reason}" if reason
                     else "moved: the mail before it moved")
            note = f"{note}, {shift}" if note else shift
        moved.append((step, at, note))
    return moved
