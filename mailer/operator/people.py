"""The law's questions (AVG/GDPR): what we hold about a person, erasing it, and purging
signups that were never confirmed.

Erasure removes every row that names the person; what remains is a keyed hash of the
address on the suppression list (so an import cannot bring it back unnoticed) and the
person's share of the funnel figures as plain numbers (erased_tallies).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from .models import (
    Click, ConsentEvent, ConsentNotice, DeliveryAttempt, Download, Enrollment, ErasedTally, Lead, LeadStatus,
    MailKind, Outbox, OutboxStatus, Pause, Suppression,
)
from .queries import upsert

PURGE_BATCH = 500


def address_hash(key: str, email: str) -> str:
    """HMAC-SHA256 of the address: without the key, the list cannot be matched against a
    list of addresses someone else holds."""
    return hmac.new(key.encode(), email.encode(), hashlib.sha256).hexdigest()


class BeingSent(Exception):
    """A mail to this person is in a worker's hands right now; erasing must wait for it."""


def find_lead(session: Session, email: str, lock: str | None = None) -> Lead | None:
    """The lead with this address (compared as stored: lowercase). lock="change": like a
    click (others may still add rows that point at it); lock="erase": nobody else may."""
    statement = select(Lead).where(Lead.email == email.strip().lower())
    if lock:
        statement = statement.with_for_update(key_share=lock == "change")
    return session.scalar(statement)


def lead_record(session: Session, lead: Lead) -> dict:
    """Everything held about one lead, as plain data (right of access and portability)."""
    events = session.execute(
        select(ConsentEvent, ConsentNotice).outerjoin(ConsentNotice, ConsentNotice.id == ConsentEvent.notice_id)
        .where(ConsentEvent.lead_id == lead.id).order_by(ConsentEvent.id)
    ).all()
    mails = session.scalars(select(Outbox).where(Outbox.lead_id == lead.id).order_by(Outbox.id)).all()
    attempts: dict[int, list] = {}
    if mails:
        for attempt in session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.outbox_id.in_([m.id for m in mails])).order_by(DeliveryAttempt.id)):
            attempts.setdefault(attempt.outbox_id, []).append(attempt)
    return {
        "email": lead.email,
        "first_name": lead.first_name,
        "status": lead.status,
        "magnet": lead.magnet,
        "marketing_consent": lead.marketing_consent,
        "signed_up_at": _iso(lead.created_at),
        "confirmed_at": _iso(lead.confirmed_at),
        "consent_events": [{
            "kind": e.kind, "at": _iso(e.at), "magnet": e.magnet, "marketing_consent": e.marketing_consent,
            "ip": e.ip, "user_agent": e.user_agent, "form": e.form,
            "notice": {"version": n.version, "sha256": n.sha256, "text": n.text} if n else None,
        } for e, n in events],
        "mails": [{
            "kind": m.kind, "sequence": m.sequence, "step": m.step, "status": m.status,
            "queued_at": _iso(m.created_at), "sent_at": _iso(m.sent_at), "message_id": m.message_id,
            "attempts": [{"at": _iso(a.at), "code": a.code, "reply": a.reply, "outcome": a.outcome}
                         for a in attempts.get(m.id, [])],
        } for m in mails],
        "downloads": [{"magnet": d.magnet, "at": _iso(d.at)} for d in session.scalars(
            select(Download).where(Download.lead_id == lead.id).order_by(Download.id))],
        "clicks": [{"sequence": c.sequence, "step": c.step, "link": c.link, "at": _iso(c.at)}
                   for c in session.scalars(select(Click).where(Click.lead_id == lead.id).order_by(Click.id))],
        "enrollments": [{"sequence": e.sequence, "status": e.status, "since": _iso(e.anchor_at),
                         "next_due_at": _iso(e.next_due_at)} for e in session.scalars(
            select(Enrollment).where(Enrollment.lead_id == lead.id))],
    }


def erase(session: Session, lead: Lead, key: str, now: datetime) -> list[str]:
    """Remove the person everywhere (the caller holds the lead's row, locked for erasing); keep
    a keyed hash of the address and the figures. Return the Message-IDs of the mails that were
    handed over, so the caller can remove copies kept outside the database (the file
    transport's folder). BeingSent if a worker is sending one of its mails at this moment."""
    if session.scalar(select(exists().where(Outbox.lead_id == lead.id, Outbox.status == OutboxStatus.SENDING))):
        raise BeingSent(lead.email)
    message_ids = list(session.scalars(select(Outbox.message_id).where(Outbox.lead_id == lead.id,
                                                                      Outbox.attempts > 0)))
    session.execute(upsert(session, Suppression)
                    .values(address_hash=address_hash(key, lead.email), reason="erased on request", at=now)
                    .on_conflict_do_nothing(index_elements=["address_hash"]))
    # A relay's refusal quoted in a marketing pause may name the address.
    session.execute(update(Pause).values(reason=func.replace(Pause.reason, lead.email, "[erased]")))
    _remove(session, [lead.id])
    return message_ids


def purge_pending(db, older_than_days: int, now: datetime) -> int:
    """Erase signups never confirmed and untouched for `older_than_days` (no new signup or
    link request since), a batch per transaction; return how many. Their confirm links then
    name nobody and show the invalid-link page. Rows are locked and skipped if locked, so a
    confirm click at that moment and a second worker's purge each find their own rows; a lead
    with a mail in a worker's hands waits for the next run."""
    cutoff = now - timedelta(days=older_than_days)
    purged = 0
    while True:
        with db.transaction() as session:
            ids = session.scalars(
                select(Lead.id)
                .where(Lead.confirmed_at.is_(None), Lead.updated_at < cutoff,
                       ~exists().where(Outbox.lead_id == Lead.id, Outbox.status == OutboxStatus.SENDING))
                .order_by(Lead.id).limit(PURGE_BATCH).with_for_update(skip_locked=True)
            ).all()
            if ids:
                _remove(session, list(ids))
        purged += len(ids)
        if len(ids) < PURGE_BATCH:
            return purged


def _remove(session: Session, lead_ids: list[int]) -> None:
    _tally(session, lead_ids)
    outbox_ids = select(Outbox.id).where(Outbox.lead_id.in_(lead_ids)).scalar_subquery()
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.outbox_id.in_(outbox_ids)))
    for model in (Outbox, Click, Download, Enrollment, ConsentEvent):
        session.execute(delete(model).where(model.lead_id.in_(lead_ids)))
    session.execute(delete(Lead).where(Lead.id.in_(lead_ids)))


def _tally(session: Session, lead_ids: list[int]) -> None:
    """Add these leads' share of the funnel figures to erased_tallies (see mailer/stats.py)."""
    counts: Counter = Counter()
    leads = {row.id: row for row in session.execute(
        select(Lead.id, Lead.magnet, Lead.created_at, Lead.confirmed_at, Lead.status).where(Lead.id.in_(lead_ids)))}
    key = {i: (row.magnet, row.created_at.date().isoformat()) for i, row in leads.items()}
    downloaded = set(session.scalars(select(Download.lead_id).where(Download.lead_id.in_(lead_ids))))
    marketing = set(session.scalars(select(ConsentEvent.lead_id).where(
        ConsentEvent.lead_id.in_(lead_ids), ConsentEvent.kind.in_(("confirm", "import")), ConsentEvent.marketing_consent)))
    for lead_id, row in leads.items():
        facts = {"signups": True, "confirmed": row.confirmed_at is not None, "downloaded": lead_id in downloaded,
                 "marketing": lead_id in marketing, "unsubscribed": row.status == LeadStatus.UNSUBSCRIBED,
                 "undeliverable": row.status == LeadStatus.UNDELIVERABLE}
        for metric, holds in facts.items():
            if holds:
                counts[(*key[lead_id], metric)] += 1
    for lead_id, sequence, step in session.execute(
            select(Outbox.lead_id, Outbox.sequence, Outbox.step).where(
                Outbox.lead_id.in_(lead_ids), Outbox.kind == MailKind.DRIP.value, Outbox.status == OutboxStatus.SENT)):
        counts[(*key[lead_id], f"drip-sent:{sequence}/{step}")] += 1
    for lead_id, sequence, step in session.execute(
            select(Click.lead_id, Click.sequence, Click.step).where(Click.lead_id.in_(lead_ids)).distinct()):
        counts[(*key[lead_id], f"clicked:{sequence}/{step}")] += 1
    if not counts:
        return
    insert = upsert(session, ErasedTally)
    session.execute(
        insert.on_conflict_do_update(index_elements=["magnet", "day", "metric"],
                                     set_={"count": ErasedTally.count + insert.excluded["count"]}),
        [{"magnet": m, "day": d, "metric": metric, "count": n} for (m, d, metric), n in counts.items()],
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
