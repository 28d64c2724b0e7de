"""The hot-path SQL, written once, each statement with the reason for its shape."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from .models import Outbox, UTCDateTime

# Claim due rows for one worker in one statement. A row is due when it is queued or deferred
# and its time has come, or when it is 'sending' under a lease that ran out (its worker died).
# PostgreSQL: FOR UPDATE SKIP LOCKED lets several workers claim side by side without waiting
# on each other or taking the same row. SQLite has no row locks; the caller's transaction
# began with BEGIN IMMEDIATE (see db.py), so the whole statement runs under the write lock.
_CLAIM = """
UPDATE outbox SET status = 'sending', claimed_until = :lease, claimed_by = :worker
WHERE id IN (
    SELECT id FROM outbox
    WHERE (status IN ('queued', 'deferred') AND next_attempt_at <= :now)
       OR (status = 'sending' AND claimed_until < :now)
    ORDER BY priority, next_attempt_at
    LIMIT :limit
    {lock}
)
RETURNING id
"""
CLAIM_POSTGRES = text(_CLAIM.format(lock="FOR UPDATE SKIP LOCKED")).bindparams(
    bindparam("now", type_=UTCDateTime()), bindparam("lease", type_=UTCDateTime())
)
CLAIM_SQLITE = text(_CLAIM.format(lock="")).bindparams(
    bindparam("now", type_=UTCDateTime()), bindparam("lease", type_=UTCDateTime())
)


def claim_due(session: Session, *, now: datetime, lease_until: datetime, worker: str, limit: int) -> list[int]:
    """Mark up to `limit` due rows as 'sending' for this worker; return their ids."""
    statement = CLAIM_POSTGRES if session.bind.dialect.name == "postgresql" else CLAIM_SQLITE
    rows = session.execute(statement, {"now": now, "lease": lease_until, "worker": worker, "limit": limit})
    return sorted(row.id for row in rows)


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
    return {status: count for status, count in rows}


def recent_mail_count(session: Session, *, lead_id: int, kind: str, since: datetime) -> int:
    """How many mails of a kind a lead was sent recently (uses ix_outbox_lead_kind)."""
    return session.scalar(
        select(func.count())
        .select_from(Outbox)
        .where(Outbox.lead_id == lead_id, Outbox.kind == kind, Outbox.created_at >= since)
    )
