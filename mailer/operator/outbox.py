"""What an operator does with the outbox: look, put failed mail back, cancel, pause and resume marketing.

Each function opens its own transaction and returns plain data; the CLI and the dashboard
only show it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import (
    DeliveryAttempt,
    Lead,
    LeadStatus,
    Outbox,
    OutboxStatus,
    Pause,
)

RETRYABLE = (OutboxStatus.FAILED, OutboxStatus.CANCELLED)  # cancelled ones only when named by id
CANCELLABLE = (OutboxStatus.QUEUED, OutboxStatus.DEFERRED, OutboxStatus.FAILED)
NEEDS_A_LOOK = (OutboxStatus.DEFERRED, OutboxStatus.FAILED)  # what `outbox list` shows by default


@dataclass(frozen=True)
class Overview:
    counts: dict[OutboxStatus, int]  # the statuses asked for, zeros included, in the order asked
    marketing_paused: Pause | None


@dataclass(frozen=True)
class Changed:
    """What a retry or cancel did: rows changed, and the ids asked for that could not be."""

    count: int
    refused: tuple[int, ...] = ()


def counts(session: Session, statuses: tuple[OutboxStatus, ...]) -> dict[OutboxStatus, int]:
    """Rows per status, for these statuses only (zeros included, in the order given). Each is a
    range of ix_outbox_due (status first), so a status left out is not read: the dashboard
    leaves out sent mail, most of the table."""
    found = queries.outbox_counts(session, [status.value for status in statuses])
    return {status: found.get(status.value, 0) for status in statuses}


def _overview(session: Session, statuses: tuple[OutboxStatus, ...]) -> Overview:
    return Overview(counts(session, statuses), session.get(Pause, queries.MARKETING))


def overview(db: Database, statuses: tuple[OutboxStatus, ...] = tuple(OutboxStatus)) -> Overview:
    """The counts of these statuses (`mailer outbox`: every one, sent mail too) and the marketing pause."""
    with db.read_only() as session:
        return _overview(session, statuses)


def rows(db: Database, statuses: tuple[OutboxStatus, ...] = NEEDS_A_LOOK, limit: int = 50) -> list[Outbox]:
    """The newest rows in these statuses, each with its last reply."""
    with db.read_only() as session:
        return list(session.scalars(
            select(Outbox).where(Outbox.status.in_(statuses)).order_by(Outbox.id.desc()).limit(limit)
        ))


def retry(db: Database, ids: list[int] | None, now: datetime) -> Changed:
    """Put rows back in the queue: the named failed or cancelled ones, or (`ids` None) every
    failed one. Never mail for an address proved undeliverable.

    Attempts and unknown outcomes are kept (the history stays readable, and a mail that may
    already have arrived twice is not tried a third time); the retry policy's clock restarts.
    """
    if ids is None:
        statement = update(Outbox).where(Outbox.status == OutboxStatus.FAILED)
    else:
        statement = update(Outbox).where(Outbox.status.in_(RETRYABLE), Outbox.id.in_(ids))
    undeliverable = select(Lead.id).where(Lead.status == LeadStatus.UNDELIVERABLE)
    with db.transaction() as session:
        changed = session.execute(
            statement.where(Outbox.lead_id.not_in(undeliverable))
            .values(status=OutboxStatus.QUEUED.value, queued_at=now, next_attempt_at=now)
            .returning(Outbox.id)
        ).scalars().all()
    return Changed(len(changed), tuple(sorted(set(ids or ()) - set(changed))))


def cancel(db: Database, ids: list[int], reason: str = "cancelled by an operator") -> Changed:
    """Cancel rows that have not gone out; a row being sent right now is left to finish."""
    with db.transaction() as session:
        changed = session.execute(
            update(Outbox).where(Outbox.id.in_(ids), Outbox.status.in_(CANCELLABLE))
            .values(status=OutboxStatus.CANCELLED.value, last_error=reason).returning(Outbox.id)
        ).scalars().all()
    return Changed(len(changed), tuple(sorted(set(ids) - set(changed))))


def resume(db: Database) -> bool:
    """Lift the marketing pause a relay's policy refusal (5.7.x) set; False if there was none."""
    with db.transaction() as session:
        return queries.resume_marketing(session)


# --- the dashboard: the overview's outbox state, the outbox page, the marketing pause ---------

WAITING = (OutboxStatus.QUEUED, OutboxStatus.DEFERRED, OutboxStatus.FAILED)  # the overview's counts
# The outbox page's counts: every status but sent (most of the table; shown per lead on the
# lead's page and in the figures).
UNSENT = tuple(status for status in OutboxStatus if status is not OutboxStatus.SENT)
PAGE = 50
REPLIES_SHOWN = 5  # a row's newest delivery attempts on the outbox page


def waiting(db: Database) -> Overview:
    """Mail that has not gone out (queued, deferred, failed; zeros included), and the pause: the
    dashboard's overview."""
    return overview(db, WAITING)


@dataclass(frozen=True)
class Reply:
    """One delivery attempt: when, the server's code and reply, and what it meant."""

    at: datetime
    code: int | None
    reply: str
    outcome: str


@dataclass(frozen=True)
class Row:
    id: int
    status: str
    kind: str
    sequence: str | None
    step: str | None
    recipient: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    replies: tuple[Reply, ...]  # the newest REPLIES_SHOWN attempts, oldest first


@dataclass(frozen=True)
class Page:
    """The outbox page: a page of rows, and the counts (every status but sent) and the pause."""

    rows: list[Row]
    older: int | None  # `before` for the next page; None: this is the last
    counts: dict[OutboxStatus, int]  # UNSENT
    marketing_paused: Pause | None


def page(db: Database, statuses: tuple[OutboxStatus, ...] = NEEDS_A_LOOK, *, before: int | None = None,
         limit: int = PAGE) -> Page:
    """Rows in these statuses, newest (highest id) first, `limit` at a time: keyset pagination
    by id (`before`: the last id of the page before). Each with its newest delivery attempts;
    with the counts of the UNSENT statuses and the marketing pause, read in the same transaction."""
    query = (select(Outbox).where(Outbox.status.in_([s.value for s in statuses]))
             .order_by(Outbox.id.desc()).limit(limit + 1))
    if before is not None:
        query = query.where(Outbox.id < before)
    with db.read_only() as session:
        found = list(session.scalars(query))
        more = len(found) > limit
        found = found[:limit]
        replies: dict[int, list[Reply]] = defaultdict(list)
        if found:
            for attempt in session.scalars(select(DeliveryAttempt)
                                           .where(DeliveryAttempt.outbox_id.in_([row.id for row in found]))
                                           .order_by(DeliveryAttempt.id)):
                replies[attempt.outbox_id].append(Reply(attempt.at, attempt.code, attempt.reply, attempt.outcome))
        rows = [Row(row.id, row.status, row.kind, row.sequence, row.step, row.recipient, row.attempts,
                    row.next_attempt_at, row.last_error, tuple(replies[row.id][-REPLIES_SHOWN:]))
                for row in found]
        state = _overview(session, UNSENT)
    return Page(rows, rows[-1].id if more else None, state.counts, state.marketing_paused)


def pause(db: Database, reason: str, now: datetime) -> bool:
    """Hold marketing mail back, as a relay's policy refusal does (the sender claims no
    marketing rows and the drip job queues none until `resume`). False if it was paused
    already: the first pause and its reason stay."""
    with db.transaction() as session:
        if session.get(Pause, queries.MARKETING) is not None:
            return False
        queries.pause_marketing(session, reason=reason, now=now)
        return True
