"""Putting mail in the outbox, inside the caller's transaction.

This is all the request side needs to cause a mail: it imports neither the sender, nor the
transports, nor the rendering, so a signup stays cheap to import and to run.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid

from sqlalchemy.orm import Session

from mailer.delivery.kinds import KINDS
from mailer.store import queries
from mailer.store.tables import MailKind, OutboxStatus


def enqueue(session: Session, *, kind: str, lead_id: int, recipient: str, magnet: str, now: datetime,
            domain: str) -> None:
    """Add one mail for a lead to the outbox, inside the caller's transaction."""
    queries.insert_outbox(
        session, kind=kind, lead_id=lead_id, recipient=recipient, magnet=magnet,
        message_id=make_msgid(domain=domain), priority=KINDS[kind].priority, now=now,
    )


def drip_mail(lead_id: int, email: str, magnet: str, sequence: str, step: str, now: datetime, domain: str) -> dict:
    """One outbox row for a drip step; its key makes a second insert for the same step a no-op."""
    return {
        "kind": MailKind.DRIP.value, "lead_id": lead_id, "recipient": email, "magnet": magnet,
        "sequence": sequence, "step": step, "idempotency_key": f"drip:{lead_id}:{sequence}:{step}",
        "message_id": make_msgid(domain=domain), "priority": KINDS[MailKind.DRIP].priority,
        "status": OutboxStatus.QUEUED.value, "attempts": 0, "unknown_outcomes": 0,
        "created_at": now, "queued_at": now, "next_attempt_at": now,
    }
