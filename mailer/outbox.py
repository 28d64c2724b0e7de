"""The transactional outbox: enqueue in the caller's transaction; dispatch from a worker.

A request only ever writes a row. The sender claims due rows with a lease, hands each
message to the transport and records the server's answer at once, one transaction per
message, so a crash loses at most the messages in flight and never a recorded result.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import queries, retry
from .errors import DeliveryError
from .models import DeliveryAttempt, Lead, Outbox, OutboxStatus, TRANSACTIONAL_PRIORITY
from .rendering import Recipient, build_message, envelope_sender
from .transports import Envelope, Transport

log = logging.getLogger("mailer.outbox")

LEASE = timedelta(minutes=5)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(session: Session, *, kind: str, lead_id: int, recipient: str, magnet: str, now: datetime,
            domain: str) -> None:
    """Add one mail for a lead to the outbox, inside the caller's transaction."""
    queries.insert_outbox(
        session, kind=kind, lead_id=lead_id, recipient=recipient, magnet=magnet,
        message_id=make_msgid(domain=domain), priority=TRANSACTIONAL_PRIORITY, now=now,
    )


@dataclass
class DispatchReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.deferred + self.failed

    def count(self, status: OutboxStatus, error: str) -> None:
        """Count one outcome; keep the error line of anything not sent."""
        setattr(self, status.value, getattr(self, status.value) + 1)  # sent, deferred or failed
        if status is not OutboxStatus.SENT:
            self.errors.append(error)

    def add(self, other: "DispatchReport") -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed
        self.errors += other.errors


@dataclass(frozen=True)
class _Work:
    id: int
    kind: str
    magnet: str
    message_id: str
    attempts: int
    created_at: datetime
    recipient: Recipient


class Sender:
    """Delivers due outbox rows through one transport; safe to run in several processes."""

    def __init__(self, services, transport: Transport, worker: str | None = None):
        self.services = services
        self.transport = transport
        self.worker = worker or worker_name()

    def dispatch(self, limit: int | None = None) -> DispatchReport:
        """Claim one batch of due rows and deliver it; return what happened."""
        services = self.services
        now = services.clock.now()
        with services.db.transaction() as session:
            ids = queries.claim_due(
                session, now=now, lease_until=now + LEASE, worker=self.worker,
                limit=limit or services.settings.send_batch_size,
            )
            work = self._load(session, ids) if ids else []
        report = DispatchReport()
        if not work:
            return report
        try:
            self.transport.open()
        except DeliveryError as exc:
            for item in work:
                self._record_failure(item, exc, report)
            return report
        try:
            for item in work:
                self._deliver(item, report)
        finally:
            self.transport.close()
        return report

    def dispatch_all(self) -> DispatchReport:
        """Dispatch batches until nothing is due (used by `mailer tick`)."""
        total = DispatchReport()
        while True:
            report = self.dispatch()
            total.add(report)
            if report.handled == 0:
                return total

    def _load(self, session: Session, ids: list[int]) -> list[_Work]:
        rows = session.execute(
            select(Outbox, Lead.first_name).join(Lead, Lead.id == Outbox.lead_id).where(Outbox.id.in_(ids))
        )
        return [
            _Work(
                id=row.id, kind=row.kind, magnet=row.magnet, message_id=row.message_id,
                attempts=row.attempts, created_at=row.created_at,
                recipient=Recipient(row.lead_id, row.recipient, first_name),
            )
            for row, first_name in rows
        ]

    def _deliver(self, item: _Work, report: DispatchReport) -> None:
        services = self.services
        sender = services.settings.mail_from
        try:
            mail = services.renderer.render(item.kind, item.recipient, item.magnet)
            data = build_message(
                sender=sender, recipient=item.recipient, mail=mail,
                message_id=item.message_id, date=services.clock.now(),
            )
            envelope = Envelope(envelope_sender(sender), (item.recipient.email,), data, item.message_id)
            self.transport.send_messages([envelope])
        except DeliveryError as exc:
            self._record_failure(item, exc, report)
            return
        except Exception as exc:  # a bug or bad data in this one row must not hold up the others
            log.exception("outbox row %s cannot be sent", item.id)
            self._record(item, OutboxStatus.FAILED, None, f"{type(exc).__name__}: {exc}", report)
            return
        self._record(item, OutboxStatus.SENT, 250, "accepted", report)
        if services.settings.log_mail:
            log.info("mail to %s: %s\n\n%s", item.recipient.email, mail.subject, mail.text)

    def _record_failure(self, item: _Work, exc: DeliveryError, report: DispatchReport) -> None:
        now = self.services.clock.now()
        decision = retry.decide(exc.code, item.attempts + 1, item.created_at, now, retry.TRANSACTIONAL)
        status = OutboxStatus.FAILED if decision.gives_up else OutboxStatus.DEFERRED
        log.warning("outbox row %s to %s: %s (%s)", item.id, item.recipient.email, exc, status.value)
        self._record(item, status, exc.code, exc.text, report, retry_at=decision.retry_at)

    def _record(self, item: _Work, status: OutboxStatus, code: int | None, reply: str,
                report: DispatchReport, retry_at: datetime | None = None) -> None:
        """Write one attempt and its outcome in one transaction, and extend the lease on the rest.

        The outcome is written only while the row is still ours: if our lease ran out and
        another worker claimed the row, its result stands and ours is kept as an attempt.
        """
        now = self.services.clock.now()
        values = {
            "status": status.value, "attempts": item.attempts + 1,
            "claimed_until": None, "claimed_by": None,
            "last_error": None if status is OutboxStatus.SENT else reply,
        }
        if status is OutboxStatus.SENT:
            values["sent_at"] = now
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        with self.services.db.transaction() as session:
            session.execute(update(Outbox).where(*self._still_mine(item.id)).values(**values))
            # The rest of this batch waits behind this message: keep its lease from running out.
            session.execute(update(Outbox).where(*self._still_mine()).values(claimed_until=now + LEASE))
            session.add(DeliveryAttempt(
                outbox_id=item.id, at=now, worker=self.worker, code=code, reply=reply[:2000],
                outcome=status.value,
            ))
        report.count(status, f"{item.recipient.email}: {code or '-'} {reply}")

    def _still_mine(self, row_id: int | None = None) -> tuple:
        conditions = (Outbox.claimed_by == self.worker, Outbox.status == OutboxStatus.SENDING)
        return conditions if row_id is None else (Outbox.id == row_id, *conditions)
