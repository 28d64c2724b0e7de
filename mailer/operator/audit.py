"""The audit log: who did what in the dashboard, when, on which lead or row, from which IP.

Append-only (the database refuses UPDATE and DELETE, migration 0009). A lead is named by its
id, never its address; nothing of a lead's record or export reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from mailer.store.database import Database
from mailer.store.tables import AuditEntry

PAGE = 100


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where: an operator's address (or the address typed at a failed login)."""

    email: str | None
    ip: str | None


def record(db: Database, actor: Actor, action: str, now: datetime, *, target: str = "", outcome: str = "done",
           detail: str = "") -> None:
    with db.transaction() as session:  # each column cut to its size: a long value never loses the row
        session.add(AuditEntry(at=now, operator_email=actor.email and actor.email[:320], action=action[:60],
                               target=target[:200], outcome=outcome[:20], detail=detail, ip=actor.ip and actor.ip[:45]))


def command_line() -> Actor:
    """The actor of a `mailer` command: whoever runs it on the server (no IP)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return Actor(f"command line ({user})", None)


def entries(db: Database, *, before: int | None = None, action: str | None = None, limit: int = PAGE
            ) -> list[AuditEntry]:
    """The newest entries first; `before` (an id) pages back through older ones."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    with db.read_only() as session:
        return list(session.scalars(query))
