"""The sender: dispatch the outbox from a worker (mailer/delivery/enqueue.py puts mail in).

A request only ever writes a row. The sender claims due rows with a lease, hands each
message to the transport and records the server's answer at once, one transaction per
message, so a crash loses at most the messages in flight and never a recorded result.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailer.delivery import retry
from mailer.delivery.composer import Composer, FrozenMail
from mailer.delivery.kinds import KINDS, MailRef
from mailer.delivery.rendering import Prepared, Recipient
from mailer.delivery.transports import Transport
from mailer.errors import DeliveryError
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import Lead, Outbox, OutboxStatus
from mailer.timing import RetryPolicy, SendWindow

log = logging.getLogger("mailer.delivery")
T = TypeVar("T")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class DispatchReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.deferred + self.failed + self.cancelled

    def count(self, status: OutboxStatus, recipient: str, code: int | None, reply: str) -> None:
        """Count one outcome; keep a line on anything not sent."""
        setattr(self, status.value, getattr(self, status.value) + 1)  # sent, deferred, failed, cancelled
        if status is not OutboxStatus.SENT:
            self.errors.append(f"{recipient}: {code or '-'} {reply}")

    def add(self, other: "DispatchReport") -> None:
        for name in ("sent", "deferred", "failed", "cancelled", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors

    def line(self) -> str:
        return (f"sent {self.sent}, deferred {self.deferred}, failed {self.failed}, "
                f"cancelled {self.cancelled}")


@dataclass(frozen=True)
class _Work:
    id: int
    ref: MailRef
    message_id: str
    attempts: int
    unknown_outcomes: int
    queued_at: datetime
    recipient: Recipient
    frozen: int | None = None  # a campaign's row: the id of its frozen mail (campaign_mails)

    @property
    def marketing(self) -> bool:
        kind = KINDS.get(self.ref.kind)  # an unknown kind is released unsent (see _deliver)
        return kind is not None and kind.marketing


@dataclass(frozen=True)
class SenderConfig:
    """What a sender needs to know from the settings (built by the composition root)."""

    lease: timedelta  # MAILER_LEASE_SECONDS
    batch_size: int  # MAILER_SEND_BATCH_SIZE
    window: SendWindow  # marketing mail is claimed only while it is open
    retry: dict[str, RetryPolicy]  # by a kind's retry policy name
    lifetimes: dict[str, timedelta]  # kind -> the age after which its mail is cancelled, not sent
    log_mail: bool = False  # log each mail's plain text (the embedded default)


# Marketing rows checked together just before they go out (still ours, lead still wants mail):
# one read per this many instead of one per mail; at ~500 mails a second, an unsubscribe
# reaches the check at most about a tenth of a second before the mail would have gone.
MARKETING_CHECK_AHEAD = 50

# How long a sender leaves the relay alone after it could not connect (or log in) at all.
RELAY_PAUSE = timedelta(seconds=30)

# Waits between tries to record a result while the database is unreachable (a restart): the
# message went out, so the result must not be lost; ~60 s in all, capped at a third of the lease.
RECORD_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


class Sender:
    """Delivers due outbox rows through one transport; safe to run in several processes."""

    def __init__(self, db: Database, transport: Transport, composer: Composer, clock, config: SenderConfig,
                 worker: str | None = None, throttle=None):
        self.db = db
        self.transport = transport
        self.composer = composer
        self.clock = clock
        self.config = config
        self.lease = config.lease
        self.worker = worker or worker_name()
        self.throttle = throttle  # a SendThrottle shared by the senders, or None: no rate limit
        self._stopping = threading.Event()
        self._lease_renewed_at = clock.now()
        self._relay_unavailable_until = clock.now()
        self._marketing_paused = False  # set for the rest of a batch by a 5.7.x refusal
        self._connection: Connection | None = None
        self._frozen: dict[int, FrozenMail] = {}  # campaign mails never change once stored
        self._wanted: dict[int, bool] = {}  # the last marketing check's answers, by row id

    def stop(self) -> None:
        """Finish the message in flight, give the rest of the claim back, claim nothing more."""
        self._stopping.set()

    def dispatch(self, limit: int | None = None) -> DispatchReport:
        """Claim one batch of due rows and deliver it; return what happened."""
        report = DispatchReport()
        now = self.clock.now()
        if self._stopping.is_set() or now < self._relay_unavailable_until:
            return report
        self._marketing_paused = False  # the claim itself leaves paused marketing alone
        self._wanted = {}
        with self.db.transaction() as session:
            ids = queries.claim_due(
                session, now=now, lease_until=now + self.lease, worker=self.worker,
                limit=limit or self.config.batch_size,
                # Marketing mail goes out in the send window only, retries and backlogs too.
                marketing=self.config.window.contains(now),
            )
            work = self._load(session, ids) if ids else []
        self._lease_renewed_at = now
        if not work:
            return report
        try:
            self.transport.open()
        except DeliveryError as exc:
            # The relay, not any message, is the problem (down, refusing us, a wrong password):
            # no attempt counts against the mail; give the batch back and wait a little.
            log.error("cannot connect to the mail relay: %s; retrying in %s s", exc, RELAY_PAUSE.seconds)
            self._relay_unavailable_until = now + RELAY_PAUSE
            self._release(work, report)
            self._close_bookkeeping()
            return report
        position = 0
        try:
            lost: set[int] = set()
            for position, item in enumerate(work):
                if self._stopping.is_set() or not self._await_turn(item):
                    self._release(work[position:], report)
                    break
                if self._marketing_paused and item.marketing:
                    continue  # a 5.7.x in this batch paused marketing: leave the row to release below
                lost |= self._keep_claim(work, position)
                if item.id not in lost:
                    self._deliver(item, report, work, position)
        except BaseException:
            # Whatever went wrong (the rate-limit store is down, say), the rows not yet handled
            # go back to the queue now rather than waiting out the lease.
            self._release_quietly(work[position + 1:], report)
            raise
        finally:
            self.transport.close()
            if self._marketing_paused:
                self._release_quietly([i for i in work if i.marketing], report)
            self._close_bookkeeping()
        return report

    def dispatch_all(self) -> DispatchReport:
        """Dispatch batches until nothing is due (used by the scheduler and `mailer tick`)."""
        total = DispatchReport()
        while True:
            report = self.dispatch()
            total.add(report)
            if report.handled == 0 or self._stopping.is_set():
                return total

    def _load(self, session: Session, ids: list[int]) -> list[_Work]:
        rows = session.execute(
            select(Outbox, Lead.first_name).join(Lead, Lead.id == Outbox.lead_id)
            .where(Outbox.id.in_(ids)).order_by(Outbox.priority, Outbox.next_attempt_at, Outbox.id)
        )
        work = [
            _Work(
                id=row.id, ref=MailRef(row.kind, row.magnet, row.sequence, row.step), message_id=row.message_id,
                attempts=row.attempts, unknown_outcomes=row.unknown_outcomes, queued_at=row.queued_at,
                recipient=Recipient(row.lead_id, row.recipient, first_name), frozen=row.campaign_mail_id,
            )
            for row, first_name in rows
        ]
        missing = {item.frozen for item in work if item.frozen is not None} - self._frozen.keys()
        for mail in queries.campaign_mails(session, missing) if missing else ():
            self._frozen[mail.id] = FrozenMail(
                Prepared(mail.subject, mail.text, mail.html, tuple(map(tuple, json.loads(mail.links)))),
                mail.sender, mail.reply_to)
        return work

    def _still_wanted(self, work: list[_Work], position: int) -> bool | None:
        """The marketing check of work[position] (see queries.marketing_claims): None when the row
        is no longer ours; read for the next MARKETING_CHECK_AHEAD marketing rows at once."""
        item = work[position]
        if item.id not in self._wanted:
            ids = [other.id for other in work[position:] if other.marketing][:MARKETING_CHECK_AHEAD]
            self._wanted = self._write(lambda db: queries.marketing_claims(db, row_ids=ids, worker=self.worker))
            if item.id not in self._wanted:
                return None
        return self._wanted.pop(item.id)

    def _deliver(self, item: _Work, report: DispatchReport, work: list[_Work], position: int) -> None:
        expired = self._purpose_expired(item)
        if expired:
            self._record(item, OutboxStatus.CANCELLED, None, expired, report, attempted=False)
            return
        if item.frozen is None and not self.composer.knows(item.ref):
            # Queued by a process with newer content (a rolling restart): leave it to one.
            log.warning("outbox row %s: %s is not in this process's content; released", item.id, item.ref.describe())
            self._release([item], report)
            return
        if item.marketing:
            wanted = self._still_wanted(work, position)
            if wanted is None:  # no longer ours: cancelled meanwhile, or another worker has it
                report.count(OutboxStatus.CANCELLED, item.recipient.email, None, "cancelled before sending")
                return
            if not wanted:  # the lead unsubscribed (or proved undeliverable) after the claim
                self._record(item, OutboxStatus.CANCELLED, None, "not sent: the lead unsubscribed", report,
                             attempted=False)
                return
        try:
            frozen = self._frozen[item.frozen] if item.frozen is not None else None
            envelope, mail = self.composer.compose(item.ref, item.recipient, item.message_id, frozen=frozen,
                                                   row_id=item.id)
            self.transport.send_messages([envelope])
        except DeliveryError as exc:
            self._record_failure(item, exc, report)
            return
        except Exception as exc:  # a bug or bad data in this one row must not hold up the others
            log.exception("outbox row %s cannot be sent", item.id)
            self._record(item, OutboxStatus.FAILED, None, f"{type(exc).__name__}: {exc}", report)
            return
        code, text = self.transport.last_reply  # the relay's own words: its queue id, usually
        self._record(item, OutboxStatus.SENT, code, text, report)
        if self.config.log_mail:
            log.info("mail to %s: %s\n\n%s", item.recipient.email, mail.subject, mail.text)

    def _keep_claim(self, work: list[_Work], position: int) -> set[int]:
        """Renew the lease on the rest of the batch (from `position`) once a quarter lease has
        passed; return the ids that are no longer ours (our lease ran out and another worker
        took them): those are skipped, so only a message already in flight can go out twice."""
        now = self.clock.now()
        if now - self._lease_renewed_at <= self.lease / 4:
            return set()
        ids = [item.id for item in work[position:]]
        mine = self._write(lambda db: queries.renew_lease(db, ids=ids, worker=self.worker, until=now + self.lease))
        self._lease_renewed_at = now
        if len(mine) < len(ids):
            log.warning("lease ran out on %d row(s); another worker has them", len(ids) - len(mine))
        return set(ids) - mine

    def _await_turn(self, item: _Work) -> bool:
        """Wait for a slot under the sending rate; False means: give the rest of the batch back.

        Marketing mail never waits holding its claim, so transactional mail that falls due
        meanwhile is claimed first; nor does any wait longer than a third of the lease.
        """
        if self.throttle is None:
            return True
        while (wait := self.throttle.try_acquire()) > 0:
            if item.marketing or wait > self.lease.total_seconds() / 3:
                return False
            if self._stopping.wait(wait):
                return False
        return True

    def _purpose_expired(self, item: _Work) -> str:
        """Why this mail should no longer go out, or "": a confirmation that arrives after its
        link would have expired only confuses (the visitor can ask again)."""
        max_age = self.config.lifetimes.get(item.ref.kind)
        if max_age is not None and self.clock.now() - item.queued_at > max_age:
            return f"not sent: {KINDS[item.ref.kind].what} older than its link's {max_age.days} days"
        return ""

    def _record_failure(self, item: _Work, exc: DeliveryError, report: DispatchReport) -> None:
        policy = self.config.retry[KINDS[item.ref.kind].retry]
        decision = retry.decide(
            exc.code, exc.text, attempts=item.attempts + 1, unknown_before=item.unknown_outcomes,
            unknown=exc.unknown, queued_at=item.queued_at, now=self.clock.now(), policy=policy,
        )
        status = OutboxStatus.FAILED if decision.gives_up else OutboxStatus.DEFERRED
        reply = f"{exc.text} ({decision.reason})" if decision.reason else exc.text
        log.warning("outbox row %s to %s: %s (%s)", item.id, item.recipient.email, exc, status.value)
        self._record(item, status, exc.code, reply, report, retry_at=decision.retry_at,
                     blame=decision.blame, unknown=exc.unknown)

    def _record(self, item: _Work, status: OutboxStatus, code: int | None, reply: str,
                report: DispatchReport, *, retry_at: datetime | None = None, blame: retry.Blame | None = None,
                unknown: bool = False, attempted: bool = True) -> None:
        """Write one attempt and its outcome together.

        The outcome is written only while the row is still ours: if our lease ran out and
        another worker claimed the row, its result stands and ours is kept as an attempt.
        """
        now = self.clock.now()

        def write(db: Connection) -> None:
            queries.record_result(
                db, row_id=item.id, worker=self.worker, status=status.value,
                attempts=item.attempts + int(attempted),
                last_error=None if status is OutboxStatus.SENT else reply[:2000],
                sent_at=now if status is OutboxStatus.SENT else None, retry_at=retry_at,
                unknown_outcomes=item.unknown_outcomes + int(unknown),
                attempt={"now": now, "code": code, "reply": reply[:2000],
                         "outcome": "unknown" if unknown else status.value} if attempted else None,
            )
            if blame is retry.Blame.RECIPIENT:
                queries.mark_undeliverable(db, lead_id=item.recipient.lead_id, reply=reply, now=now)
            elif blame is retry.Blame.SENDER:
                queries.pause_marketing(db, reason=f"{code} {reply}", now=now)

        # A plain result is one statement on PostgreSQL; with a blame it is several, and those
        # must commit together.
        self._write(write, atomic=blame is not None)
        report.count(status, item.recipient.email, code, reply)
        if blame is retry.Blame.SENDER:
            self._marketing_paused = True
            log.error("marketing mail paused: the relay refused us (%s %s); `mailer outbox resume` "
                      "when the cause is fixed", code, reply)

    def _write(self, write: Callable[[Connection], T], atomic: bool = False) -> T:
        """Run `write` on the batch's connection, waiting out a database restart rather than
        losing a result; never longer than a third of the lease.

        On PostgreSQL that connection autocommits each statement (one round trip, no BEGIN
        and COMMIT); `atomic` writes of several statements get a transaction of their own.
        """
        budget = self.lease.total_seconds() / 3
        for delay in (*RECORD_RETRY_DELAYS, None):
            try:
                connection = self._bookkeeping()
                if atomic and connection.dialect.name == "postgresql":
                    with self.db.engine.begin() as transaction:
                        return write(transaction)
                with connection.begin():  # on SQLite: BEGIN IMMEDIATE ... COMMIT
                    return write(connection)
            except (OperationalError, InterfaceError) as exc:
                self._close_bookkeeping(broken=True)
                if delay is None or delay > budget:
                    raise
                budget -= delay
                log.warning("cannot record a delivery result (%s); retrying in %s s", type(exc).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _bookkeeping(self) -> Connection:
        """One connection for a batch's bookkeeping, so a message costs no pool checkout.

        On PostgreSQL it autocommits, and its commits do not wait for the WAL flush
        (synchronous_commit off): a result is committed and visible at once, and only a crash
        of the database server itself could lose the last fraction of a second of results;
        those rows return to the queue when their lease ends and get one more copy, which
        at-least-once allows. Signups keep full durability: the setting is reset, and the
        isolation level restored, before the connection goes back to the pool.
        """
        if self._connection is None:
            connection = self.db.engine.connect()
            try:
                if connection.dialect.name == "postgresql":
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                    connection.exec_driver_sql("SET synchronous_commit TO off")
                    connection.commit()  # ends SQLAlchemy's own (autobegun) transaction object
            except BaseException:
                connection.invalidate()
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _close_bookkeeping(self, broken: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if broken:
                connection.invalidate()
            elif connection.dialect.name == "postgresql":
                connection.exec_driver_sql("RESET synchronous_commit")
                connection.commit()
        except (OperationalError, InterfaceError):
            connection.invalidate()
        finally:
            connection.close()

    def _release(self, items: list[_Work], report: DispatchReport) -> None:
        ids = [item.id for item in items]
        if ids:
            report.released += self._write(lambda db: queries.release(db, ids, self.worker))

    def _release_quietly(self, items: list[_Work], report: DispatchReport) -> None:
        """Release on the way out of an error: only rows still claimed by us are touched, and a
        failure here leaves them to their lease rather than hiding the original error."""
        try:
            self._release(items, report)
        except Exception:
            log.exception("could not give %d claimed row(s) back; their lease will", len(items))
