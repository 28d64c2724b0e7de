"""What an operator does with the outbox: look, put failed mail back, cancel, resume marketing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import queries
from .models import Lead, LeadStatus, Outbox, OutboxStatus, Pause

RETRYABLE = (OutboxStatus.FAILED, OutboxStatus.CANCELLED)  # cancelled ones only when named by id
CANCELLABLE = (OutboxStatus.QUEUED, OutboxStatus.DEFERRED, OutboxStatus.FAILED)


@dataclass(frozen=True)
class Overview:
    counts: dict[str, int]
    marketing_paused: Pause | None


def overview(session: Session) -> Overview:
    return Overview(queries.outbox_counts(session), session.get(Pause, queries.MARKETING))


def rows(session: Session, statuses: list[str], limit: int) -> list[Outbox]:
    """The newest rows in these statuses, each with its last reply."""
    return list(session.scalars(
        select(Outbox).where(Outbox.status.in_(statuses)).order_by(Outbox.id.desc()).limit(limit)
    ))


def requeue(session: Session, ids: list[int] | None, now: datetime) -> int:
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
    return session.execute(statement.where(Outbox.lead_id.not_in(undeliverable)).values(
        status=OutboxStatus.QUEUED.value, queued_at=now, next_attempt_at=now,
    )).rowcount


def cancel(session: Session, ids: list[int], reason: str) -> int:
    """Cancel rows that have not gone out; a row being sent right now is left to finish."""
    return session.execute(
        update(Outbox).where(Outbox.id.in_(ids), Outbox.status.in_(CANCELLABLE))
        .values(status=OutboxStatus.CANCELLED.value, last_error=reason)
    ).rowcount
