"""The law's questions (AVG/GDPR): what we hold about a person, erasing it, and purging
signups that were never confirmed.

Erasure removes every row that names the person; what remains is a keyed hash of the
address on the suppression list (so an import cannot bring it back unnoticed) and the
person's share of the funnel figures as plain numbers (erased_tallies).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from mailer.errors import InvalidRequest, MailerError
from mailer.operator.figures import counts
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.queries import upsert
from mailer.store.tables import (
    BounceReport,
    Click,
    ConsentEvent,
    ConsentNotice,
    DeliveryAttempt,
    Download,
    Enrollment,
    ErasedTally,
    Lead,
    LeadStatus,
    Outbox,
    OutboxStatus,
    Pause,
    Suppression,
)

PURGE_BATCH = 500
MAX_ID = 2**63 - 1  # the largest id a database column holds; a larger number names no lead


class BeingSent(MailerError):
    """A mail to this person is in a worker's hands right now; erasing must wait for it."""

    def __init__(self, email: str):
        super().__init__(f"a mail to {email} is being sent right now; try again in a minute")


class UnknownLeadId(InvalidRequest):
    """No lead has this id (the dashboard names leads by id): never was, or erased since."""

    def __init__(self, lead_id: int):
        super().__init__(f"no lead with id {lead_id}", "lead")
        self.lead_id = lead_id


class AddressMismatch(InvalidRequest):
    """The address typed to confirm an erasure is not the lead's; nothing was erased."""

    def __init__(self, lead_id: int):
        super().__init__(f"the address typed is not the address of lead {lead_id}", "email")
        self.lead_id = lead_id


def address_hash(key: str, email: str) -> str:
    """HMAC-SHA256 of the address: without the key, the list cannot be matched against a
    list of addresses someone else holds."""
    return hmac.new(key.encode(), email.encode(), hashlib.sha256).hexdigest()


def record(db: Database, email: str) -> dict:
    """Everything held about the person with this address (`mailer lead show` and `export`)."""
    with db.read_only() as session:
        return lead_record(session, queries.require_lead(session, email))


def record_by_id(db: Database, lead_id: int) -> dict:
    """`record` for the lead with this id (the dashboard's lead page and its JSON export)."""
    with db.read_only() as session:
        return lead_record(session, _lead(session, lead_id))


def erase_person(db: Database, transport, email: str, key: str, now: datetime) -> int:
    """Erase the person with this address (see `erase`), then the copies of their mails the
    transport keeps (the embedded default's .eml files), through its own `discard`. Returns
    how many kept copies were removed. UnknownLead, or BeingSent (nothing changed)."""
    with db.transaction() as session:
        message_ids = erase(session, queries.require_lead(session, email, lock="erase"), key, now)
    return transport.discard(message_ids)


def erase_lead(db: Database, transport, lead_id: int, typed: str, key: str, now: datetime) -> int:
    """`erase_person` for the lead with this id, confirmed by its address as the operator typed
    it (compared as addresses are stored: trimmed, lower case). AddressMismatch, UnknownLeadId
    or BeingSent: nothing changed."""
    with db.transaction() as session:
        lead = _lead(session, lead_id, lock="erase")
        if typed.strip().lower() != lead.email:
            raise AddressMismatch(lead_id)
        message_ids = erase(session, lead, key, now)
    return transport.discard(message_ids)


def unsubscribe_person(db: Database, funnel, email: str, via: str, now: datetime) -> bool:
    """Unsubscribe someone who asked by phone, mail or letter; a consent event records the
    operator and the channel ("operator:phone"). False if they were unsubscribed already."""
    with db.transaction() as session:
        return _unsubscribe(session, funnel, queries.require_lead(session, email, lock="change"), via, now)


def unsubscribe_lead(db: Database, funnel, lead_id: int, via: str, now: datetime) -> bool:
    """`unsubscribe_person` for the lead with this id."""
    with db.transaction() as session:
        return _unsubscribe(session, funnel, _lead(session, lead_id, lock="change"), via, now)


def _unsubscribe(session: Session, funnel, lead: Lead, via: str, now: datetime) -> bool:
    from mailer.funnel.actions import Evidence

    return funnel.unsubscribe_lead(session, lead, lead.magnet, Evidence(None, None, f"operator:{via}"), now)


def resend_guide(db: Database, funnel, lead_id: int, now: datetime) -> str:
    """Queue the guide of the lead's magnet again, as the funnel does for a confirmed lead who
    signs up again (without asking for marketing consent): "queued"; "daily-limit" when the
    funnel's cap of guide mails per address per day held it back. Only a confirmed lead gets
    it: for another the answer is its status (pending, unsubscribed, undeliverable) and
    nothing is queued. UnknownLeadId."""
    with db.transaction() as session:
        lead = _lead(session, lead_id, lock="change")
        if lead.status != LeadStatus.CONFIRMED:
            return lead.status
        return "queued" if funnel.resend_guide(session, lead, now) else "daily-limit"


def _lead(session: Session, lead_id: int, lock: str | None = None) -> Lead:
    """The lead with this id, locked as queries.find_lead locks; UnknownLeadId if there is none."""
    lead = queries.find_lead_by_id(session, lead_id, lock) if 0 < lead_id <= MAX_ID else None
    if lead is None:
        raise UnknownLeadId(lead_id)
    return lead


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
        "newsletter_ended_at": _iso(lead.newsletter_ended_at),
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
        "bounces": [{"kind": b.kind, "at": _iso(b.received_at), "status": b.status, "diagnostic": b.diagnostic,
                     "source": b.source} for b in session.scalars(
            select(BounceReport).where(BounceReport.lead_id == lead.id).order_by(BounceReport.id))],
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
    # the reports that came back about them (bounces, complaints) hold their address too
    session.execute(delete(BounceReport).where(or_(BounceReport.lead_id.in_(lead_ids),
                                                   BounceReport.outbox_id.in_(outbox_ids))))
    for model in (Outbox, Click, Download, Enrollment):
        session.execute(delete(model).where(model.lead_id.in_(lead_ids)))
    # Consent evidence is append-only in the database: its trigger lets these leads' events
    # go only while this transaction is marked as erasing exactly them. The notices they
    # point at stay (they name nobody, and the database refuses to delete them).
    with queries.erasure(session, lead_ids):
        session.execute(delete(ConsentEvent).where(ConsentEvent.lead_id.in_(lead_ids)))
    session.execute(delete(Lead).where(Lead.id.in_(lead_ids)))


def _tally(session: Session, lead_ids: list[int]) -> None:
    """Add these leads' share of the funnel figures to erased_tallies (figures.counts defines them)."""
    rows = [{"magnet": m, "day": d, "metric": metric, "count": n}
            for (m, d, metric), n in counts(session, [Lead.id.in_(lead_ids)]).items() if n]
    if rows:
        insert = upsert(session, ErasedTally)
        session.execute(insert.on_conflict_do_update(index_elements=["magnet", "day", "metric"],
                                                     set_={"count": ErasedTally.count + insert.excluded["count"]}), rows)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
