"""The hot-path SQL, written once, each statement with the reason for its shape."""

from __future__ import annotations

import enum
import hashlib
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

from sqlalchemy import Connection, bindparam, case, delete, func, insert, select, text, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.errors import UnknownLead
from mailer.store.tables import (
    MARKETING_PRIORITY,
    NOT_STARTED,
    CampaignMail,
    Click,
    ConsentNotice,
    Download,
    Enrollment,
    EnrollmentStatus,
    Erasure,
    Lead,
    LeadStatus,
    MailKind,
    Outbox,
    OutboxStatus,
    Pause,
    SequenceState,
    UTCDateTime,
)

MARKETING = "marketing"  # the one pause scope
NO_PRIORITY_LIMIT = 1_000_000


def _literal(member: enum.StrEnum) -> str:
    """An enum's value as an SQL string literal, for formatting into a statement's text once."""
    return "'" + member.value.replace("'", "''") + "'"


# Statuses in the statements below are the enums' values, formatted into the text once, when
# this module is imported, rather than bound per call: they are constants of the schema, not
# inputs, so this costs nothing per call, keeps each call's parameters to what varies, and
# lets the planner see the values it matches against ix_outbox_due (status, next_attempt_at).
_PENDING = _literal(LeadStatus.PENDING)
_QUEUED = _literal(OutboxStatus.QUEUED)
_SENDING = _literal(OutboxStatus.SENDING)
_DEFERRED = _literal(OutboxStatus.DEFERRED)

# Claim due rows for one worker in one statement. A row is due when it is queued or deferred
# and its time has come, or when it is sending under a lease that ran out (its worker died).
# Rows of priority :max_priority and above are left alone (marketing, while it is paused or
# outside the send window);
# lower priority goes first, so transactional mail overtakes a marketing backlog.
# PostgreSQL: FOR UPDATE SKIP LOCKED lets several workers claim side by side without waiting
# on each other or taking the same row. SQLite has no row locks; the caller's transaction
# began with BEGIN IMMEDIATE (see store/database.py), so the whole statement runs under the write lock.
# Core text() with typed times, not driver SQL: it runs once a batch, not once a message, and
# SQLAlchemy caches its compiled form per dialect.
_CLAIM = f"""
UPDATE outbox SET status = {_SENDING}, claimed_until = :lease, claimed_by = :worker
WHERE id IN (
    SELECT id FROM outbox
    WHERE ((status IN ({_QUEUED}, {_DEFERRED}) AND next_attempt_at <= :now)
           OR (status = {_SENDING} AND claimed_until < :now))
      AND priority < :max_priority
    ORDER BY priority, next_attempt_at
    LIMIT :limit
    {{lock}}
)
RETURNING id
"""
CLAIM_POSTGRES = text(_CLAIM.format(lock="FOR UPDATE SKIP LOCKED")).bindparams(
    bindparam("now", type_=UTCDateTime()), bindparam("lease", type_=UTCDateTime())
)
CLAIM_SQLITE = text(_CLAIM.format(lock="")).bindparams(
    bindparam("now", type_=UTCDateTime()), bindparam("lease", type_=UTCDateTime())
)


def claim_due(session: Session, *, now: datetime, lease_until: datetime, worker: str, limit: int,
              marketing: bool = True) -> list[int]:
    """Mark up to `limit` due rows as sending (OutboxStatus.SENDING) for this worker; return
    their ids, most urgent first. Marketing rows only when `marketing` (the send window is
    open) and not paused."""
    statement = CLAIM_POSTGRES if session.bind.dialect.name == "postgresql" else CLAIM_SQLITE
    paused = not marketing or session.get(Pause, MARKETING) is not None
    rows = session.execute(statement, {
        "now": now, "lease": lease_until, "worker": worker, "limit": limit,
        "max_priority": MARKETING_PRIORITY if paused else NO_PRIORITY_LIMIT,
    })
    return [row.id for row in rows]


def release(db: Session | Connection, ids: list[int], worker: str) -> int:
    """Give claimed rows back unsent (a stopping worker): due again at once, for anyone."""
    result = db.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids), Outbox.claimed_by == worker, Outbox.status == OutboxStatus.SENDING)
        .values(
            status=case((Outbox.attempts == 0, OutboxStatus.QUEUED.value), else_=OutboxStatus.DEFERRED.value),
            claimed_by=None, claimed_until=None,
        )
    )
    return result.rowcount


# PostgreSQL does mark_undeliverable's three changes in one statement (data-modifying WITH): a
# hard bounce costs one round trip instead of three. They see one snapshot and commit together.
MARK_UNDELIVERABLE_POSTGRES = text(f"""
WITH lead AS (UPDATE leads SET status = {_literal(LeadStatus.UNDELIVERABLE)}, updated_at = :now WHERE id = :lead),
     stopped AS (UPDATE enrollments SET status = {_literal(EnrollmentStatus.STOPPED)}, next_due_at = NULL,
                 updated_at = :now WHERE lead_id = :lead)
UPDATE outbox SET status = {_literal(OutboxStatus.CANCELLED)}, last_error = :reply
WHERE lead_id = :lead AND status IN ({_literal(OutboxStatus.QUEUED)}, {_literal(OutboxStatus.DEFERRED)})
""").bindparams(bindparam("now", type_=UTCDateTime()))


def mark_undeliverable(db: Session | Connection, *, lead_id: int, reply: str, now: datetime) -> None:
    """The mailbox does not exist: the lead gets nothing more, its waiting mail is cancelled.
    Enrollments stop first, so no drip step is queued after the cancelling."""
    if _connection(db).dialect.name == "postgresql":
        db.execute(MARK_UNDELIVERABLE_POSTGRES, {"lead": lead_id, "now": now,
                                                 "reply": f"address undeliverable: {reply}"[:2000]})
        return
    db.execute(update(Lead).where(Lead.id == lead_id)
                    .values(status=LeadStatus.UNDELIVERABLE.value, updated_at=now))
    _stop_lead_enrollments(db, lead_id, now)
    db.execute(
        update(Outbox)
        .where(Outbox.lead_id == lead_id, Outbox.status.in_([OutboxStatus.QUEUED, OutboxStatus.DEFERRED]))
        .values(status=OutboxStatus.CANCELLED.value, last_error=f"address undeliverable: {reply}"[:2000])
    )


def stop_marketing(db: Session | Connection, *, lead_id: int, reason: str, now: datetime) -> int:
    """The lead wants no more marketing mail: its enrollments stop and its waiting marketing
    mail is cancelled. Rows a worker holds are left to it: the worker asks `marketing_claims`
    just before sending and cancels them itself, and a mail already on its way to the relay is
    recorded as what it was (sent, or not). Returns the rows cancelled."""
    _stop_lead_enrollments(db, lead_id, now)
    return db.execute(
        update(Outbox)
        .where(Outbox.lead_id == lead_id, Outbox.priority >= MARKETING_PRIORITY,
               Outbox.status.in_([OutboxStatus.QUEUED, OutboxStatus.DEFERRED]))
        .values(status=OutboxStatus.CANCELLED.value, last_error=reason)
    ).rowcount


def stop_kind(db: Session | Connection, *, lead_id: int, kind: str, reason: str) -> int:
    """Cancel the lead's waiting mail of one kind (a newsletter it ended); rows a worker holds
    are left to it, as in `stop_marketing`. Returns the rows cancelled."""
    return db.execute(
        update(Outbox)
        .where(Outbox.lead_id == lead_id, Outbox.kind == kind,
               Outbox.status.in_([OutboxStatus.QUEUED, OutboxStatus.DEFERRED]))
        .values(status=OutboxStatus.CANCELLED.value, last_error=reason)
    ).rowcount


def _stop_lead_enrollments(db: Session | Connection, lead_id: int, now: datetime) -> None:
    db.execute(update(Enrollment).where(Enrollment.lead_id == lead_id)
               .values(status=EnrollmentStatus.STOPPED.value, next_due_at=None, updated_at=now))


def marketing_claims(db: Session | Connection, *, row_ids: list[int], worker: str) -> dict[int, bool]:
    """Asked just before marketing mail goes out, for the next few rows at once: for each row
    still this worker's (not cancelled, not taken over after the lease ran out), whether its
    lead still wants marketing mail (confirmed, with consent, and for a newsletter: not ended
    the newsletter), so an unsubscribe after the claim stops it. A row missing from the answer
    is no longer ours. One read by primary keys."""
    rows = db.execute(
        select(Outbox.id, Lead.status, Lead.marketing_consent, Lead.newsletter_ended_at, Outbox.kind)
        .join(Outbox, Outbox.lead_id == Lead.id)
        .where(Outbox.id.in_(row_ids), Outbox.claimed_by == worker, Outbox.status == OutboxStatus.SENDING))
    return {row.id: row.status == LeadStatus.CONFIRMED and bool(row.marketing_consent)
            and not (row.kind == MailKind.NEWSLETTER and row.newsletter_ended_at is not None) for row in rows}


def pause_marketing(db: Session | Connection, *, reason: str, now: datetime) -> None:
    """Pause marketing (the first reason wins; several workers may see the refusal at once)."""
    sql = _sql(db)
    _connection(db).exec_driver_sql(sql.insert_pause, {"scope": MARKETING, "reason": reason[:2000],
                                                        "now": sql.time(now)})


def find_lead(session: Session, email: str, lock: str | None = None) -> Lead | None:
    """The lead with this address (compared as stored: trimmed, lowercase). lock="change":
    like a click (others may still add rows that point at it, FOR NO KEY UPDATE); lock="erase":
    nobody else may (FOR UPDATE)."""
    return _lead_where(session, Lead.email == email.strip().lower(), lock)


def find_lead_by_id(session: Session, lead_id: int, lock: str | None = None) -> Lead | None:
    """find_lead for the dashboard, which names a lead by its id."""
    return _lead_where(session, Lead.id == lead_id, lock)


def _lead_where(session: Session, condition, lock: str | None) -> Lead | None:
    statement = select(Lead).where(condition)
    if lock:
        statement = statement.with_for_update(key_share=lock == "change")
    return session.scalar(statement)


def require_lead(session: Session, email: str, lock: str | None = None) -> Lead:
    """find_lead, or UnknownLead: for an operator who names someone by address."""
    lead = find_lead(session, email, lock=lock)
    if lead is None:
        raise UnknownLead(email)
    return lead


def notice_id(session: Session, *, version: str, text: str, now: datetime) -> tuple[int, bool]:
    """The id of the stored consent notice with exactly this version label and this text,
    stored now if it is new; and whether this transaction stored it (then the id lives only as
    long as the transaction). A new label for the same text, or a changed text under the same
    label, is a new notice: the evidence shows both what was shown and what it was called.

    A savepoint guards the insert: another process may store the same notice at the same
    moment (version and hash are UNIQUE together), and then its row is the one.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()
    lookup = select(ConsentNotice.id).where(ConsentNotice.version == version, ConsentNotice.sha256 == digest)
    found = session.scalar(lookup)
    if found is not None:
        return found, False
    row = ConsentNotice(version=version, sha256=digest, text=text, created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return session.scalar(lookup), False
    return row.id, True


def notice_version_reused(session: Session, *, version: str, text: str) -> bool:
    """Whether a stored notice carries this version label with another text: the notice was
    edited but its version was not (Services.check warns). Uses the (version, sha256) index."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return session.scalar(select(ConsentNotice.id).where(ConsentNotice.version == version,
                                                         ConsentNotice.sha256 != digest).limit(1)) is not None


@contextmanager
def erasure(session: Session, lead_ids: list[int]) -> Iterator[None]:
    """Mark this transaction as erasing exactly these leads, for the statements inside the
    `with`: the database's DELETE trigger on consent_events (migration 0004) lets their
    events go, and only theirs. The marks are removed at the end of the block, inside the same
    transaction, so they are never committed; if the block fails, the caller's rollback takes
    them with everything else. (PostgreSQL: uncommitted rows are seen only by their own
    transaction, so no other transaction can use them. SQLite: one writer at a time.)"""
    if not lead_ids:
        yield
        return
    session.execute(insert(Erasure), [{"lead_id": lead_id} for lead_id in lead_ids])
    yield
    session.execute(delete(Erasure).where(Erasure.lead_id.in_(lead_ids)))


def resume_marketing(session: Session) -> bool:
    """Lift the marketing pause; return whether there was one."""
    pause = session.get(Pause, MARKETING)
    if pause is not None:
        session.delete(pause)
    return pause is not None


# The signup hot path: three INSERTs (lead, consent event, outbox row) in the visitor's
# request, on SQLite under the database's one write lock. They are driver SQL, identical on
# both dialects but for the parameter style: compiling a Core statement costs about 0.1 ms a
# call, a third of the database time of a signup (bench/form_posts.py measures the whole).
# So each is a text() compiled once per dialect by SQLAlchemy itself (see _DriverSQL), and
# run with exec_driver_sql: no compilation, no cache lookup, no type processing per call.
#
# The lead insert is ON CONFLICT DO NOTHING ... RETURNING instead of SELECT-then-INSERT: one
# statement, and two concurrent signups for one address cannot both insert; the UNIQUE index
# decides, without an error to recover from.
INSERT_LEAD = text(f"""
INSERT INTO leads (email, first_name, status, magnet, marketing_consent, created_at, updated_at)
VALUES (:email, :first_name, {_PENDING}, :magnet, :false, :now, :now)
ON CONFLICT (email) DO NOTHING
RETURNING id
""")
INSERT_EVENT = text("""
INSERT INTO consent_events (lead_id, kind, at, magnet, marketing_consent, ip, user_agent, form, notice_id)
VALUES (:lead_id, :kind, :now, :magnet, :marketing, :ip, :user_agent, :form, :notice_id)
""")
INSERT_OUTBOX = text(f"""
INSERT INTO outbox (kind, lead_id, recipient, magnet, message_id, priority, status,
                    attempts, unknown_outcomes, created_at, queued_at, next_attempt_at)
VALUES (:kind, :lead_id, :recipient, :magnet, :message_id, :priority, {_QUEUED}, 0, 0, :now, :now, :now)
""")

# The sender's per-message bookkeeping, committed as soon as the server has answered:
# the outcome (only while the row is still this worker's), and the attempt with the reply.
_RECORD_OUTCOME = f"""
UPDATE outbox SET status = :status, attempts = :attempts, claimed_until = NULL, claimed_by = NULL,
    last_error = :last_error, sent_at = COALESCE(:sent_at, sent_at),
    next_attempt_at = COALESCE(:retry_at, next_attempt_at), unknown_outcomes = :unknown_outcomes
WHERE id = :id AND claimed_by = :worker AND status = {_SENDING}
"""
_INSERT_ATTEMPT = """
INSERT INTO delivery_attempts (outbox_id, at, worker, code, reply, outcome)
VALUES (:id, :now, :worker, :code, :reply, :outcome)
"""
RECORD_OUTCOME = text(_RECORD_OUTCOME)
INSERT_ATTEMPT = text(_INSERT_ATTEMPT)
# PostgreSQL runs both in one statement (a data-modifying WITH): one round trip a message
# instead of two. SQLite has no INSERT inside WITH; it is a local call anyway.
RECORD_WITH_ATTEMPT_POSTGRES = text(f"WITH attempt AS ({_INSERT_ATTEMPT.strip()}) {_RECORD_OUTCOME.strip()}")
# The first reason wins: several workers may see the same refusal at once.
INSERT_PAUSE = text("""
INSERT INTO pauses (scope, reason, since) VALUES (:scope, :reason, :now) ON CONFLICT (scope) DO NOTHING
""")


class _DriverSQL:
    """The statements above as one dialect's DBAPI strings, and its way of storing a time.

    SQLAlchemy's compiler turns `:name` into the driver's parameter style (psycopg: pyformat,
    `%(name)s`, with any literal `%` doubled). The callers pass a dict, so the style must be a
    named one: pysqlite's default is qmark (`?`, positional), and sqlite3 takes `:name` with
    a dict as well, so for a positional style the statements are compiled by the same dialect
    set to "named". Built once per dialect (see _sql).
    """

    def __init__(self, dialect):
        compiler = dialect if dialect.paramstyle in ("named", "pyformat") else type(dialect)(paramstyle="named")

        def compiled(statement) -> str:
            return statement.compile(dialect=compiler).string

        self.insert_lead = compiled(INSERT_LEAD)
        self.insert_event = compiled(INSERT_EVENT)
        self.insert_outbox = compiled(INSERT_OUTBOX)
        self.record_outcome = compiled(RECORD_OUTCOME)
        self.insert_attempt = compiled(INSERT_ATTEMPT)
        self.record_with_attempt = (
            compiled(RECORD_WITH_ATTEMPT_POSTGRES) if dialect.name == "postgresql" else None
        )
        self.insert_pause = compiled(INSERT_PAUSE)
        self.time = UTCDateTime().bind_processor(dialect)


_driver_sql: dict[str, _DriverSQL] = {}


def _sql(db: Session | Connection) -> _DriverSQL:
    dialect = db.dialect if isinstance(db, Connection) else db.bind.dialect
    if dialect.name not in _driver_sql:
        _driver_sql[dialect.name] = _DriverSQL(dialect)
    return _driver_sql[dialect.name]


def _connection(db: Session | Connection) -> Connection:
    """The sender keeps one Connection for a batch; the web app works through a Session."""
    return db if isinstance(db, Connection) else db.connection()


def insert_lead_if_new(session: Session, *, email: str, first_name: str, magnet: str, now: datetime) -> int | None:
    """Insert a pending lead and return its id, or None when the address is already known."""
    sql = _sql(session)
    return session.connection().exec_driver_sql(sql.insert_lead, {
        "email": email, "first_name": first_name, "magnet": magnet, "false": False, "now": sql.time(now),
    }).scalar()


def insert_consent_event(session: Session, *, lead_id: int, kind: str, now: datetime, magnet: str,
                         marketing: bool, ip: str | None, user_agent: str | None, form: str,
                         notice_id: int) -> None:
    sql = _sql(session)
    session.connection().exec_driver_sql(sql.insert_event, {
        "lead_id": lead_id, "kind": kind, "now": sql.time(now), "magnet": magnet, "marketing": marketing,
        "ip": ip, "user_agent": user_agent, "form": form, "notice_id": notice_id,
    })


def insert_outbox(session: Session, *, kind: str, lead_id: int, recipient: str, magnet: str,
                  message_id: str, priority: int, now: datetime) -> None:
    """Queue one mail (no idempotency key: the request's own transaction is what cannot repeat)."""
    sql = _sql(session)
    session.connection().exec_driver_sql(sql.insert_outbox, {
        "kind": kind, "lead_id": lead_id, "recipient": recipient, "magnet": magnet,
        "message_id": message_id, "priority": priority, "now": sql.time(now),
    })


def record_result(db: Session | Connection, *, row_id: int, worker: str, status: str, attempts: int,
                  last_error: str | None, sent_at: datetime | None, retry_at: datetime | None,
                  unknown_outcomes: int, attempt: dict | None) -> None:
    """The outcome of one message (only while the row is still this worker's), and the attempt
    (`now`, `code`, `reply`, `outcome`) unless nothing was attempted."""
    sql = _sql(db)
    connection = _connection(db)
    outcome = {
        "id": row_id, "worker": worker, "status": status, "attempts": attempts, "last_error": last_error,
        "sent_at": sql.time(sent_at), "retry_at": sql.time(retry_at), "unknown_outcomes": unknown_outcomes,
    }
    if attempt is None:
        connection.exec_driver_sql(sql.record_outcome, outcome)
        return
    attempt = {**attempt, "now": sql.time(attempt["now"])}
    if sql.record_with_attempt:
        connection.exec_driver_sql(sql.record_with_attempt, {**outcome, **attempt})
    else:
        connection.exec_driver_sql(sql.record_outcome, outcome)
        connection.exec_driver_sql(sql.insert_attempt, {"id": row_id, "worker": worker, **attempt})


def renew_lease(db: Session | Connection, *, ids: list[int], worker: str, until: datetime) -> set[int]:
    """Extend this worker's lease on these rows; return the ids that are still its own."""
    rows = db.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids), Outbox.claimed_by == worker, Outbox.status == OutboxStatus.SENDING)
        .values(claimed_until=until).returning(Outbox.id)
    )
    return {row.id for row in rows}


def outbox_counts(session: Session, statuses: list[str] | None = None) -> dict[str, int]:
    """Rows per status; with `statuses`, only those are read (each a range of ix_outbox_due)."""
    query = select(Outbox.status, func.count()).group_by(Outbox.status)
    if statuses is not None:
        query = query.where(Outbox.status.in_(statuses))
    return {status: count for status, count in session.execute(query)}


def recent_mail_count(session: Session, *, lead_id: int, kind: str, since: datetime) -> int:
    """How many mails of a kind a lead was sent recently (uses ix_outbox_lead_kind)."""
    return session.scalar(
        select(func.count())
        .select_from(Outbox)
        .where(Outbox.lead_id == lead_id, Outbox.kind == kind, Outbox.created_at >= since)
    )


# --- drip sequences ----------------------------------------------------------------------

def upsert_enrollment(session: Session, *, lead_id: int, sequence: str, now: datetime, first_due: datetime) -> None:
    """Enrol a lead, or restart a stopped enrollment (it keeps its place; the drip job works
    out the next due time at its next pass). The caller holds the lead's row lock."""
    enrollment = session.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id,
                                                         Enrollment.sequence == sequence))
    if enrollment is None:
        session.add(Enrollment(lead_id=lead_id, sequence=sequence, status=EnrollmentStatus.ACTIVE.value,
                               anchor_at=now, position=NOT_STARTED, next_due_at=first_due,
                               created_at=now, updated_at=now))
    elif enrollment.status == EnrollmentStatus.STOPPED:
        enrollment.status, enrollment.anchor_at = EnrollmentStatus.ACTIVE.value, now
        enrollment.next_due_at, enrollment.updated_at = now, now


def marketing_paused(session: Session) -> bool:
    return session.get(Pause, MARKETING) is not None


def due_enrollments(session: Session, *, now: datetime, sequences: list[str], limit: int):
    """Up to `limit` enrollments of these sequences whose next_due_at has come, oldest first,
    with their lead.

    Reads ix_enrollments_due from its low end, so the cost is the due rows, not the list.
    PostgreSQL: SKIP LOCKED lets several workers run the drip job side by side, each on
    its own rows (the outbox's unique key would stop a double send anyway).
    """
    statement = (
        select(Enrollment.id, Enrollment.lead_id, Enrollment.sequence, Enrollment.anchor_at,
               Enrollment.position, Enrollment.last_sent_at, Lead.email, Lead.status, Lead.marketing_consent)
        .join(Lead, Lead.id == Enrollment.lead_id)
        .where(Enrollment.next_due_at <= now, Enrollment.sequence.in_(sequences))
        .order_by(Enrollment.next_due_at)
        .limit(limit)
        .with_for_update(of=Enrollment, skip_locked=True)
    )
    return session.execute(statement).all()


def drip_steps_had(session: Session, lead_ids: list[int]) -> dict[tuple[int, str], set[str]]:
    """(lead, sequence) -> the steps already in the outbox for it, in any status (ix_outbox_lead_kind)."""
    had: dict[tuple[int, str], set[str]] = {}
    rows = session.execute(select(Outbox.lead_id, Outbox.sequence, Outbox.step)
                           .where(Outbox.lead_id.in_(lead_ids), Outbox.kind == MailKind.DRIP.value))
    for lead_id, sequence, step in rows:
        had.setdefault((lead_id, sequence), set()).add(step)
    return had


def newsletters_since(session: Session, lead_ids: list[int], since: datetime) -> dict[int, datetime]:
    """lead -> the time of its latest newsletter mail since `since` that is sent or still
    waiting (sent_at, else when it was queued); for the drip job's per-lead marketing gap.
    One query per batch (ix_outbox_lead_kind)."""
    at = func.coalesce(Outbox.sent_at, Outbox.created_at)
    rows = session.execute(
        select(Outbox.lead_id, type_coerce(func.max(at), UTCDateTime())).where(
            Outbox.lead_id.in_(lead_ids), Outbox.kind == MailKind.NEWSLETTER.value,
            Outbox.status.in_([OutboxStatus.QUEUED.value, OutboxStatus.SENDING.value, OutboxStatus.DEFERRED.value,
                               OutboxStatus.SENT.value]),
            Outbox.created_at >= since)
        .group_by(Outbox.lead_id))
    return dict(rows.all())


def leads_who_downloaded(session: Session, lead_ids: list[int]) -> set[tuple[int, str]]:
    return set(session.execute(select(Download.lead_id, Download.magnet).where(Download.lead_id.in_(lead_ids))))


def leads_who_clicked(session: Session, lead_ids: list[int]) -> set[tuple[int, str]]:
    return set(session.execute(select(Click.lead_id, Click.sequence).where(Click.lead_id.in_(lead_ids))))


def upsert(session: Session, model):
    """An INSERT of the session's dialect, which has on_conflict_do_nothing/_do_update (the
    same ON CONFLICT clause on SQLite and PostgreSQL)."""
    return (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert(model)


def insert_drip_mails(session: Session, rows: list[dict]) -> None:
    if rows:
        session.execute(upsert(session, Outbox).on_conflict_do_nothing(index_elements=["idempotency_key"]), rows)


def move_enrollments(session: Session, moves: list[dict]) -> None:
    """Each enrollment's new place and due time (an executemany UPDATE by primary key)."""
    if moves:
        session.execute(update(Enrollment), moves)


def stop_enrollments(session: Session, ids: list[int], now: datetime) -> None:
    if ids:
        session.execute(update(Enrollment).where(Enrollment.id.in_(ids))
                        .values(status=EnrollmentStatus.STOPPED.value, next_due_at=None, updated_at=now))


def sequence_state(session: Session, sequence: str, steps: str, now: datetime) -> SequenceState:
    """The recorded steps of a sequence, locked for this transaction; `steps` is recorded first
    if there is no record yet (ON CONFLICT: two workers may start at the same moment)."""
    session.execute(upsert(session, SequenceState).values(sequence=sequence, steps=steps, applied_at=now)
                    .on_conflict_do_nothing(index_elements=["sequence"]))
    return session.get(SequenceState, sequence, with_for_update=True, populate_existing=True)


def bring_forward(session: Session, sequence: str, *, delay: int, now: datetime) -> int:
    """A step at `delay` seconds was added (or moved there): active enrollments that have not
    passed that place become due at the step's time, if they were due later (or never).

    A one-off scan of the sequence's enrollments when a change is applied; the drip job then
    meets each of them when it is due, so its ticks still cost only what is due.
    """
    step_at = _plus_seconds(session, Enrollment.anchor_at, delay)
    return session.execute(
        update(Enrollment)
        .where(Enrollment.sequence == sequence, Enrollment.status == EnrollmentStatus.ACTIVE,
               Enrollment.position < delay,
               Enrollment.next_due_at.is_(None) | (Enrollment.next_due_at > step_at))
        .values(next_due_at=step_at, updated_at=now)
    ).rowcount


def _plus_seconds(session: Session, column, seconds: int):
    """`column + seconds` in SQL, typed so SQLAlchemy reads the result back as a UTC datetime."""
    if session.bind.dialect.name == "postgresql":
        expression = column + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    else:  # the text form SQLAlchemy stores, which also sorts right against it
        expression = func.strftime("%Y-%m-%d %H:%M:%f", column, f"+{int(seconds)} seconds")
    return type_coerce(expression, UTCDateTime())


def cancel_removed_steps(session: Session, sequence: str, steps: list[str]) -> int:
    """Mail of steps removed from a sequence is never sent, even by a worker that has it claimed."""
    return session.execute(
        update(Outbox)
        .where(Outbox.kind == MailKind.DRIP.value, Outbox.sequence == sequence, Outbox.step.in_(steps),
               Outbox.status.in_([OutboxStatus.QUEUED, OutboxStatus.DEFERRED, OutboxStatus.SENDING]))
        .values(status=OutboxStatus.CANCELLED.value, last_error="not sent: the step was removed from the sequence",
                claimed_by=None, claimed_until=None)
    ).rowcount


def campaign_mails(session: Session, ids) -> list[CampaignMail]:
    """Campaigns' frozen mails by id (the sender keeps them: they never change)."""
    return list(session.scalars(select(CampaignMail).where(CampaignMail.id.in_(list(ids)))))


def frozen_links(session: Session, lead_id: int, slug: str) -> str | None:
    """The tracked links (JSON) of the newsletter mail this lead got from its newest campaign of
    `slug`, as frozen; None when it got none (a test mail names no lead)."""
    return session.scalar(
        select(CampaignMail.links).join(Outbox, Outbox.campaign_mail_id == CampaignMail.id)
        .where(Outbox.lead_id == lead_id, Outbox.kind == MailKind.NEWSLETTER.value, Outbox.step == slug)
        .order_by(Outbox.id.desc()).limit(1))
