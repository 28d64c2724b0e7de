"""Handling one report that came back: a bounce (RFC 3464 or not), a complaint (ARF), or what
only looks like one (an auto-reply). Every way in (`mailer bounces ingest`, and later the
mailbox job and the provider webhooks) hands its bytes to `Intake.handle`.

Safe against forgery: with MAILER_BOUNCE_ADDRESS each mail went out from bounce+TOKEN@DOMAIN,
TOKEN naming its outbox row and signed (delivery/verp.py), and a report counts only when it
arrived at a correctly signed address; nothing a stranger writes in the body is trusted, and
there is no falling back to the Message-ID. Without the setting, a report is matched by the
Message-ID of the mail it quotes (less strictly: a forger would need a real Message-ID).

Each report is stored once (`bounce_reports.dedupe_key`: its Message-ID, or a hash of its
bytes), in the same transaction as what it does, so a report handled twice (an MTA retry, a
mailbox job that died before deleting it) counts once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.bounces.parse import Failure, Parsed, parse
from mailer.delivery.verp import BounceAddresses
from mailer.funnel.actions import Evidence
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import BounceKind, BounceReport, Lead, LeadStatus, Outbox, UTCDateTime

log = logging.getLogger("mailer.bounces")

RAW_KEPT = 64 * 1024  # bytes of a report kept with it: the headers and the explanation, not an attachment
COMPLAINT_FORM = "complaint"  # consent_events.form of the unsubscribe a complaint makes
# ARF Feedback-Types that are a person's "this is spam" (RFC 5965); not-spam, auth-failure
# (RFC 6591, a DMARC report), virus and other are stored and change nothing.
COMPLAINT_TYPES = ("abuse", "fraud")


@dataclass(frozen=True)
class Handled:
    kind: str  # BounceKind
    report_id: int | None
    duplicate: bool = False  # stored before: nothing done again
    note: str = ""


@dataclass(frozen=True)
class ProviderEvent:
    """A bounce or complaint a provider's webhook reported (its signature already checked, so
    what it says is the provider's word): which of our mails (the Message-ID we gave it, or
    the envelope sender bounce+TOKEN@... it was sent from), about whom, and what happened."""

    source: str  # "webhook:ses", "webhook:mailgun"
    event_id: str  # the provider's own id of this event: each is stored once
    kind: BounceKind  # HARD, SOFT, COMPLAINT or DELAYED
    recipient: str | None
    message_id: str | None = None  # our Message-ID header of the mail
    envelope_from: str | None = None  # the envelope sender it went out from
    status: str | None = None  # "5.1.1"
    diagnostic: str | None = None
    raw: bytes = b""  # the provider's payload, kept like a report


@dataclass(frozen=True)
class _Mail:
    """The outbox row a report is about, and what the intake needs of its lead."""

    id: int
    recipient: str
    lead_id: int
    lead_status: str


@dataclass(frozen=True)
class _Outcome:
    kind: BounceKind
    failure: Failure | None
    row: _Mail | None
    matched_by: str | None
    note: str


def _mail_query(condition):
    return (select(Outbox.id, Outbox.recipient, Outbox.lead_id, Lead.status).join(Lead, Lead.id == Outbox.lead_id)
            .where(condition).order_by(Outbox.id.desc()).limit(1).with_for_update(of=Lead, key_share=True))


# Built once: these run for every report, and building a statement costs more than running it.
MAIL_BY_ID = _mail_query(Outbox.id == bindparam("key"))
MAIL_BY_MESSAGE_ID = _mail_query(Outbox.message_id == bindparam("key"))
# soft bounces of other mails of the lead: a provider retrying one mail reports each attempt
SOFT_SINCE = select(func.count(func.distinct(BounceReport.outbox_id))).select_from(BounceReport).where(
    BounceReport.lead_id == bindparam("lead"), BounceReport.kind == BounceKind.SOFT.value,
    BounceReport.outbox_id != bindparam("row"), BounceReport.received_at > bindparam("since", type_=UTCDateTime()))


class _StoredBefore(Exception):
    """The report's dedupe_key is taken: leave the transaction so its work is rolled back."""


def _mail(session, query, key) -> _Mail | None:
    """The newest outbox row `query` finds by `key`, with its lead locked against erasure
    (FOR KEY SHARE), in one query of plain columns (no ORM objects: this runs per report)."""
    found = session.execute(query, {"key": key}).first()
    return _Mail(*found) if found is not None else None


class Intake:
    def __init__(self, db: Database, funnel, clock, bounces: BounceAddresses | None, *, soft_limit: int,
                 soft_days: int):
        self.db = db
        self.funnel = funnel  # mailer.funnel.actions.Funnel: a complaint unsubscribes like a person would
        self.clock = clock
        self.bounces = bounces
        self.soft_limit = soft_limit
        self.soft_window = timedelta(days=soft_days)

    def handle(self, raw: bytes, *, source: str, envelope_to: str | None = None) -> Handled:
        """Store the report once and do what it says. Raises only when the database cannot be
        reached (OperationalError, InterfaceError), so the caller can have the report sent again."""
        parsed = parse(raw)
        key = (parsed.message_id or "")[:250] or "sha256:" + hashlib.sha256(raw).hexdigest()
        now = self.clock.now()
        try:
            # No looking first: the unique dedupe_key refuses a report stored before, and the work
            # this one did is rolled back with it (one round trip less for every new report).
            with self.db.transaction() as session:
                try:
                    # a savepoint: a statement that fails here (PostgreSQL then refuses the rest of
                    # the transaction) is undone alone, and the report is still stored below
                    with session.begin_nested():
                        outcome = self._understand(session, parsed, envelope_to)
                        note = outcome.note + self._act(session, outcome, now)
                except (OperationalError, InterfaceError):
                    raise
                except Exception as exc:  # a bug or odd data in one report must not stop the next
                    log.exception("bounce report %s could not be handled", key)
                    outcome = _Outcome(BounceKind.UNMATCHED, None, None, None, "")
                    note = f"could not be handled: {type(exc).__name__}: {exc}"
                report_id = self._store(session, key, raw, parsed, outcome, source, note, now)
                return Handled(outcome.kind.value, report_id, note=note)
        except _StoredBefore:  # the work it did is rolled back with the transaction
            return Handled(BounceKind.IGNORED.value, None, duplicate=True, note="handled before")

    def handle_event(self, event: ProviderEvent) -> Handled:
        """Store a provider's event once and do what it says, as for a report. Matched by the
        signed envelope sender when there is one, else by our Message-ID (the provider's
        signature vouches for the event, so its Message-ID may be trusted)."""
        key = f"{event.source}:{event.event_id}"[:300]
        now = self.clock.now()
        failure = Failure(event.recipient and event.recipient.lower(),
                          "delayed" if event.kind is BounceKind.DELAYED else "failed", event.status,
                          event.diagnostic and event.diagnostic[:1000])
        parsed = Parsed("provider", None, event.message_id, (failure,), None, (), "")
        try:
            with self.db.transaction() as session:
                row, matched_by, why = None, None, "no mail of ours has its Message-ID"
                if event.envelope_from and self.bounces is not None:
                    row_id = self.bounces.row_of(event.envelope_from)
                    if row_id is not None:
                        row, matched_by = _mail(session, MAIL_BY_ID, row_id), "verp"
                if row is None and event.message_id:
                    row, matched_by = _mail(session, MAIL_BY_MESSAGE_ID, event.message_id.strip()), "message-id"
                if row is not None and event.recipient and row.recipient.lower() != event.recipient.lower():
                    row, why = None, "its mail went to someone else"
                kind = event.kind if row is not None else BounceKind.UNMATCHED
                note = "" if row is not None else f"{event.kind.value}, but {why}; nothing changed"
                if kind is BounceKind.DELAYED:  # stored as ignored (with action delayed): it changes nothing
                    kind, note = BounceKind.IGNORED, "a delay notice: the receiving server is still trying"
                outcome = _Outcome(kind, failure, row, matched_by if row is not None else None, note)
                note = outcome.note + self._act(session, outcome, now)
                report_id = self._store(session, key, event.raw, parsed, outcome, event.source, note, now)
                return Handled(outcome.kind.value, report_id, note=note)
        except _StoredBefore:
            return Handled(BounceKind.IGNORED.value, None, duplicate=True, note="handled before")

    # --- what the report is, and about which mail ---------------------------------------

    def _understand(self, session, parsed: Parsed, envelope_to: str | None) -> _Outcome:
        if parsed.kind == "autoreply":
            return _Outcome(BounceKind.IGNORED, None, None, None, "an auto-reply, not a report")
        if parsed.kind == "unknown" or (parsed.kind != "arf" and not parsed.failures):
            return _Outcome(BounceKind.IGNORED, None, None, None, "no delivery failure in it")
        row, matched_by, why = self._match(session, parsed, envelope_to)
        failure = _failure_for(parsed.failures, row.recipient if row is not None else None)
        if parsed.kind == "arf" and (parsed.feedback_type or "abuse") not in COMPLAINT_TYPES:
            return _Outcome(BounceKind.IGNORED, failure, row, matched_by,
                            f"a feedback report of type {parsed.feedback_type}: not a complaint")
        kind = BounceKind.COMPLAINT if parsed.kind == "arf" else _kind(failure)
        if kind is BounceKind.IGNORED:
            why_not = (f"status {failure.status}: a policy refusal, about us rather than the address (see "
                       "mailer outbox and the relay's log)" if failure and (failure.status or "").startswith("5.7.")
                       else f"action {failure.action if failure else '-'}: not a failure")
            return _Outcome(kind, failure, row, matched_by, why_not)
        if kind is BounceKind.DELAYED:  # stored as ignored (with action delayed): it changes nothing
            return _Outcome(BounceKind.IGNORED, failure, row, matched_by,
                            "a delay notice: the receiving server is still trying")
        if row is None:
            return _Outcome(BounceKind.UNMATCHED, failure, None, None, f"{kind.value}, but {why}; nothing changed")
        return _Outcome(kind, failure, row, matched_by, "")

    def _match(self, session, parsed: Parsed, envelope_to: str | None) -> tuple[_Mail | None, str | None, str]:
        """The mail the report is about, how it was found, or why none was."""
        if self.bounces is not None:
            addresses = [a for a in (envelope_to, *parsed.addressed_to, parsed.original_return_path) if a]
            ours = [a for a in addresses if self.bounces.is_ours(a)]
            for address in ours:
                row_id = self.bounces.row_of(address)
                if row_id is not None:
                    row = _mail(session, MAIL_BY_ID, row_id)
                    return (row, "verp", "") if row is not None else (None, None, "its mail is gone (erased)")
            return None, None, ("its bounce address has a missing or wrongly signed token" if ours
                                else "it did not come to the bounce address")
        if parsed.original_message_id:
            row = _mail(session, MAIL_BY_MESSAGE_ID, parsed.original_message_id.strip())
            if row is not None:
                return row, "message-id", ""
            return None, None, "no mail of ours has the Message-ID it quotes"
        return None, None, "it quotes no Message-ID"

    # --- what it does -------------------------------------------------------------------------

    def _act(self, session, outcome: _Outcome, now: datetime) -> str:
        row = outcome.row
        if row is None or row.lead_id is None or outcome.kind not in (BounceKind.HARD, BounceKind.SOFT,
                                                                      BounceKind.COMPLAINT):
            return ""
        reply = _reply(outcome.failure)
        if outcome.kind is BounceKind.HARD:
            if row.lead_status == LeadStatus.UNDELIVERABLE:
                return "the lead was undeliverable already"
            queries.mark_undeliverable(session, lead_id=row.lead_id, reply=reply, now=now)
            return "the lead is now undeliverable; its waiting mail is cancelled"
        if outcome.kind is BounceKind.SOFT:
            earlier = session.scalar(SOFT_SINCE, {"lead": row.lead_id, "row": row.id, "since": now - self.soft_window})
            if earlier + 1 >= self.soft_limit and row.lead_status != LeadStatus.UNDELIVERABLE:
                queries.mark_undeliverable(session, lead_id=row.lead_id, reply=f"{earlier + 1} soft bounces: {reply}",
                                           now=now)
                return (f"soft bounce {earlier + 1} within {self.soft_window.days} days: the lead is now "
                        "undeliverable")
            return f"soft bounce {earlier + 1} of {self.soft_limit} within {self.soft_window.days} days"
        # the funnel changes the lead as an unsubscribe would, under the same lock
        lead = session.get(Lead, row.lead_id, with_for_update={"key_share": True}, populate_existing=True)
        changed = self.funnel.unsubscribe_lead(session, lead, lead.magnet, Evidence(None, None, COMPLAINT_FORM), now)
        return "all marketing mail to the lead ended" if changed else "the lead got no marketing mail already"

    def _store(self, session, key: str, raw: bytes, parsed: Parsed, outcome: _Outcome, source: str, note: str,
               now: datetime) -> int:
        failure, row = outcome.failure, outcome.row

        def cut(value: str | None, size: int | None = None) -> str | None:
            # a stranger's report may say anything, NUL characters too (PostgreSQL refuses them)
            return value.replace("\x00", "")[:size] if value else value

        insert = queries.upsert(session, BounceReport).on_conflict_do_nothing(index_elements=["dedupe_key"])
        stored = session.execute(insert.returning(BounceReport.id), dict(
            dedupe_key=cut(key, 300), received_at=now, source=source[:30], kind=outcome.kind.value,
            format=parsed.kind,
            recipient=cut((failure.recipient if failure else None) or (row.recipient if row else None), 320),
            action=cut(failure.action if failure else None, 20), status=cut(failure.status if failure else None, 20),
            diagnostic=cut(failure.diagnostic if failure else None), matched_by=outcome.matched_by,
            outbox_id=row.id if row else None, lead_id=row.lead_id if row else None, note=cut(note),
            raw=cut(raw[:RAW_KEPT].decode("utf-8", "replace")), raw_size=len(raw))).scalar()
        if stored is None:
            raise _StoredBefore(key)
        return stored


def _failure_for(failures: tuple[Failure, ...], recipient: str | None) -> Failure | None:
    """The report's line about our recipient, else its first."""
    if recipient:
        for failure in failures:
            if failure.recipient == recipient.lower():
                return failure
    return failures[0] if failures else None


def _kind(failure: Failure | None) -> BounceKind:
    if failure is None:
        return BounceKind.IGNORED
    if failure.action == "delayed":
        return BounceKind.DELAYED
    if failure.action != "failed":  # delivered, relayed, expanded
        return BounceKind.IGNORED
    status = failure.status or ""
    if status.startswith("4") or status == "5.2.2":  # temporary, or mailbox full
        return BounceKind.SOFT
    if status.startswith("5.7."):  # a policy refusal: about us (our reputation, our domain), not the address
        return BounceKind.IGNORED
    return BounceKind.HARD  # 5.x.x, or a permanent failure without a status


def _reply(failure: Failure | None) -> str:
    if failure is None:
        return "bounced"
    text = " ".join(part for part in (failure.status, failure.diagnostic) if part) or "bounced"
    return text.replace("\x00", "")  # it goes into outbox.last_error: PostgreSQL refuses NUL in text
