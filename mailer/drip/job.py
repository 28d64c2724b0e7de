"""Drip sequences: enrol on confirmation, move due steps into the outbox, apply sequence changes.

The database holds time: each enrollment carries `next_due_at` (indexed), and the drip job
reads only the rows whose time has come, in batches. A tick therefore costs what is due,
not what is enrolled, and the scheduler holds one job whatever the number of leads.

A lead's place is `position`: the delay of the last step handled, in seconds of sequence
time. The next step is the first one with a larger delay in the *current* file, so an added
step reaches exactly the leads that have not passed its place, a removed step is never sent,
and the outbox's unique key (lead + sequence + step) keeps any step from going out twice.
docs/drip.md spells out what each kind of change does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy.orm import Session

from mailer.content.files import Content, Sequence, Step
from mailer.delivery.enqueue import drip_mail
from mailer.store import queries
from mailer.store.tables import NOT_STARTED, LeadStatus
from mailer.timing import SendWindow

log = logging.getLogger("mailer.drip")


@dataclass(frozen=True)
class Facts:
    """What a step's skip_if may ask about a lead, as of now."""

    downloaded: bool = False
    clicked: bool = False

    def holds(self, condition: str | None) -> bool:
        if condition is None:
            return False
        negated = condition.startswith("not-")
        value = getattr(self, condition.removeprefix("not-"))
        return value != negated


@dataclass(frozen=True)
class Move:
    """What to do with one enrollment now: send `step` (or nothing), then sit at `position`
    until `next_due_at` (None: every step handled)."""

    step: Step | None
    position: int
    next_due_at: datetime | None
    skipped: tuple[str, ...] = ()


def advance(sequence: Sequence, *, anchor: datetime, position: int, last_sent: datetime | None,
            now: datetime, gap: timedelta, done: frozenset[str] | set[str], facts: Facts) -> Move:
    """The next move of one enrollment as of `now` (a pure function; the drip job and the
    preview both use it).

    Steps whose time has come are handled in order: one the lead already got (`done`) or
    whose skip_if holds is passed over; the first other one is sent, and the next is due no
    sooner than `gap` later, so steps that piled up during downtime go out one a day, late,
    never bunched and never twice.
    """
    skipped: list[str] = []
    while (step := sequence.next_after(position)) is not None:
        due = anchor + step.delay
        if last_sent is not None:
            due = max(due, last_sent + gap)
        if due > now:
            return Move(None, position, due, tuple(skipped))
        position = step.delay_seconds
        if step.key in done or facts.holds(step.skip_if):
            skipped.append(step.key)
            continue
        following = sequence.next_after(position)
        next_due = None if following is None else max(anchor + following.delay, now + gap)
        return Move(step, position, next_due, tuple(skipped))
    return Move(None, position, None, tuple(skipped))


@dataclass
class DripReport:
    enqueued: int = 0
    skipped: int = 0
    stopped: int = 0
    rescheduled: int = 0
    note: str = ""  # why nothing ran, if so

    def line(self) -> str:
        if self.note:
            return self.note
        return (f"queued {self.enqueued} drip mail(s), skipped {self.skipped} step(s), "
                f"stopped {self.stopped}, rescheduled {self.rescheduled}")

    @property
    def did_anything(self) -> bool:
        return bool(self.enqueued or self.skipped or self.stopped or self.rescheduled)


@dataclass
class Drip:
    content: Content
    window: SendWindow
    gap: timedelta
    batch_size: int
    mail_domain: str
    loaded_at: datetime  # when this process read the sequence files (see apply_changes)
    # (session, lead ids, now, gap) -> lead: when a newsletter campaign still to queue its mail
    # will (operator/campaigns.campaigns_ahead, wired by the composition root); None: no campaigns.
    campaigns_ahead: Callable[[Session, list[int], datetime, timedelta], dict[int, datetime]] | None = None

    def enroll(self, session: Session, lead_id: int, magnet: str, now: datetime) -> None:
        """Start (or restart, after a new confirmation) the magnet's sequence for a lead.

        A restarted enrollment keeps its place: steps count from the new confirmation, and a
        step the lead already got is not sent again.
        """
        sequence = self.content.sequence_for(magnet)
        if sequence is None:
            return
        first = sequence.next_after(NOT_STARTED)
        queries.upsert_enrollment(session, lead_id=lead_id, sequence=sequence.slug, now=now,
                                  first_due=now + first.delay)

    def run(self, db, now: datetime) -> DripReport:
        """One pass of the drip job: every due enrollment, batch by batch, one transaction each."""
        if not self.window.contains(now):
            return DripReport(note=f"outside the send window ({self.window.spec})")
        with db.transaction() as session:
            if queries.marketing_paused(session):
                return DripReport(note="marketing mail is paused (mailer outbox resume)")
            current = self.apply_changes(session, now)
        report = DripReport()
        while current:
            with db.transaction() as session:
                handled = self._batch(session, now, current, report)
            if handled < self.batch_size:
                break
        return report

    def _batch(self, session: Session, now: datetime, sequences: list[str], report: DripReport) -> int:
        rows = queries.due_enrollments(session, now=now, sequences=sequences, limit=self.batch_size)
        if not rows:
            return 0
        lead_ids = [row.lead_id for row in rows]
        done = queries.drip_steps_had(session, lead_ids)
        downloaded = queries.leads_who_downloaded(session, lead_ids)
        clicked = queries.leads_who_clicked(session, lead_ids)
        gap = self.gap
        # One marketing mail per lead per gap: a newsletter sent or queued within it counts, and
        # so does one a campaign will queue within it (the step waits; the newsletter is never
        # delayed for a step).
        newsletters = queries.newsletters_since(session, lead_ids, now - gap)
        for lead_id, at in (self.campaigns_ahead(session, lead_ids, now, gap) if self.campaigns_ahead else {}).items():
            newsletters[lead_id] = max(at, newsletters.get(lead_id, at))
        mails, moves, stops = [], [], []
        for row in rows:
            sequence = self.content.sequences[row.sequence]
            if row.status != LeadStatus.CONFIRMED or not row.marketing_consent:
                stops.append(row.id)
                continue
            last_sent = max(filter(None, (row.last_sent_at, newsletters.get(row.lead_id))), default=None)
            move = advance(
                sequence, anchor=row.anchor_at, position=row.position, last_sent=last_sent, now=now,
                gap=gap, done=done.get((row.lead_id, row.sequence), set()),
                facts=Facts(downloaded=(row.lead_id, sequence.magnet) in downloaded,
                            clicked=(row.lead_id, row.sequence) in clicked),
            )
            report.skipped += len(move.skipped)
            if move.step is not None:
                mails.append(drip_mail(row.lead_id, row.email, sequence.magnet, sequence.slug,
                                               move.step.key, now, self.mail_domain))
                report.enqueued += 1
            else:
                report.rescheduled += 1
            moves.append({
                "id": row.id, "position": move.position, "next_due_at": move.next_due_at,
                "last_sent_at": now if move.step is not None else row.last_sent_at, "updated_at": now,
            })
        queries.insert_drip_mails(session, mails)
        queries.move_enrollments(session, moves)
        queries.stop_enrollments(session, stops, now)
        report.stopped += len(stops)
        return len(rows)

    def apply_changes(self, session: Session, now: datetime) -> list[str]:
        """Record each sequence's steps, apply a change to them once, and return the sequences
        this process may move leads through: those whose record matches its file.

        On a change, the enrollments that an added (or moved) step now lies ahead of are made
        due at that step's time, and queued mail of removed steps is cancelled. A process
        started before the record was last written holds an older file: it leaves the record,
        and that sequence's leads, to the newer processes (a rolling restart).
        """
        current = []
        for sequence in self.content.sequences.values():
            steps = [[s.key, s.delay_seconds] for s in sequence.steps]
            state = queries.sequence_state(session, sequence.slug, json.dumps(steps), now)
            recorded = json.loads(state.steps)
            if recorded != steps:
                if state.applied_at > self.loaded_at:
                    log.warning("sequence %s: the database holds a newer version than this process read; "
                                "leaving it to the processes that have it", sequence.slug)
                    continue
                self._apply(session, sequence, dict(recorded), now)
                state.steps, state.applied_at = json.dumps(steps), now
            current.append(sequence.slug)
        return current

    @staticmethod
    def _apply(session: Session, sequence: Sequence, recorded: dict[str, int], now: datetime) -> None:
        woken = sum(
            queries.bring_forward(session, sequence.slug, delay=step.delay_seconds, now=now)
            for step in sequence.steps if recorded.get(step.key) != step.delay_seconds
        )
        removed = [key for key in recorded if sequence.step(key) is None]
        cancelled = queries.cancel_removed_steps(session, sequence.slug, removed) if removed else 0
        log.info("sequence %s changed: %d enrollment(s) have a new step ahead, %d queued mail(s) of "
                 "removed steps cancelled", sequence.slug, woken, cancelled)


def timeline(sequence: Sequence, window: SendWindow, gap: timedelta, *, anchor: datetime, position: int,
             last_sent: datetime | None, now: datetime, done: set[str], facts: Facts | None,
             until: datetime) -> list[tuple[Step, datetime | None, str]]:
    """The steps a lead will be sent from `now` to `until`: (step, send time, note).

    The drip job's own `advance`, run forward in time, with each send moved to the next
    opening of the window. With `facts` None (a lead not yet known), steps with a skip_if are
    listed as sent, with a note saying when they are skipped.
    """
    planned: list[tuple[Step, datetime | None, str]] = []
    moment = window.next_opening(now)
    while moment <= until:
        move = advance(sequence, anchor=anchor, position=position, last_sent=last_sent, now=moment, gap=gap,
                       done=done, facts=facts or Facts())
        for key in move.skipped:
            step = sequence.step(key)
            planned.append((step, None, "already sent" if key in done else f"skipped: {step.skip_if}"))
        if move.step is not None:
            note = f"skipped if {move.step.skip_if}" if facts is None and move.step.skip_if else ""
            planned.append((move.step, moment, note))
            last_sent = moment
        position = move.position
        if move.next_due_at is None:
            break
        moment = window.next_opening(move.next_due_at)
    return planned

