"""What an operator does with the outbox: look, put failed mail back, cancel, resume marketing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import queries
from .models import Outbox, OutboxStatus, Pause

RETRYABLE = (OutboxStatus.FAILED, OutboxStatus.CANCELLED)
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
    """Put failed or cancelled rows back in the queue (all of them when `ids` is None).

    Attempts are kept (the history stays readable); the retry policy's clock restarts.
    """
    statement = update(Outbox).where(Outbox.status.in_(RETRYABLE))
    if ids is not None:
        statement = statement.where(Outbox.id.in_(ids))
    return session.execute(statement.values(
        status=OutboxStatus.QUEUED.value, queued_at=now, next_attempt_at=now, unknown_outcomes=0,
    )).rowcount


def cancel(session: Session, ids: list[int], reason: str) -> int:
    """Cancel rows that have not gone out; a row being sent right now is left to finish."""
    return session.execute(
        update(Outbox).where(Outbox.id.in_(ids), Outbox.status.in_(CANCELLABLE))
        .values(status=OutboxStatus.CANCELLED.value, last_error=reason)
    ).rowcount
