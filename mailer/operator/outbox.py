"""What an operator does with the outbox: look, put failed mail back, cancel, resume marketing.

Each function opens its own transaction and returns plain data; the CLI and the dashboard
only show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import Lead, LeadStatus, Outbox, OutboxStatus, Pause

RETRYABLE = (OutboxStatus.FAILED, OutboxStatus.CANCELLED)  # cancelled ones only when named by id
CANCELLABLE = (OutboxStatus.QUEUED, OutboxStatus.DEFERRED, OutboxStatus.FAILED)
NEEDS_A_LOOK = (OutboxStatus.DEFERRED, OutboxStatus.FAILED)  # what `outbox list` shows by default


@dataclass(frozen=True)
class Overview:
    counts: dict[OutboxStatus, int]  # every status, zeros included, in the order of the enum
    marketing_paused: Pause | None


@dataclass(frozen=True)
class Changed:
    """What a retry or cancel did: rows changed, and the ids asked for that could not be."""

    count: int
    refused: tuple[int, ...] = ()


def overview(db: Database) -> Overview:
    with db.read_only() as session:
        found = queries.outbox_counts(session)
        pause = session.get(Pause, queries.MARKETING)
    return Overview({status: found.get(status, 0) for status in OutboxStatus}, pause)


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
