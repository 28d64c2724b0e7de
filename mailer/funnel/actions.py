"""Subscribe, confirm, download, ask for a new link, unsubscribe: each a state change plus its
mail (or the cancelling of mail), in one transaction.

Every answer a visitor sees is the same whatever the address's state, so the form cannot
be used to learn who is on the list; the differences live only in what gets mailed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.content.files import Content, Notice
from mailer.content.newsletters import CLICK_SEQUENCE_PREFIX, PLAIN_LINK
from mailer.delivery.enqueue import enqueue
from mailer.errors import InvalidLink
from mailer.funnel.tokens import ClickLink, LeadLink, fingerprint
from mailer.store import queries
from mailer.store.tables import Click, ConsentEvent, ConsentKind, Download, Lead, LeadStatus, MailKind

def click_target(session: Session | None, content: Content, clicked: ClickLink) -> str | None:
    """The address a tracked link goes to, never from the request: a named link's from the
    organisation's [links] now; a newsletter's plain link url-N from the mail the lead the token
    names got, as its campaign froze it; for a mail sent in no campaign (a test, or a row queued
    before campaigns froze their mail) or without a database (session None), the Nth plain link
    of the file."""
    plain = PLAIN_LINK.match(clicked.link)
    if clicked.sequence.startswith(CLICK_SEQUENCE_PREFIX) and plain:
        slug = clicked.sequence.removeprefix(CLICK_SEQUENCE_PREFIX)
        links = queries.frozen_links(session, clicked.lead_id, slug) if session is not None else None
        if links is not None:
            return dict(json.loads(links)).get(clicked.link)
        newsletter = content.newsletters.get(slug)
        if newsletter is not None:
            from mailer.content.markdown import plain_links

            found = plain_links(newsletter.body)
            number = int(plain[1])
            return found[number - 1] if number <= len(found) else None
    return content.organisation.links.get(clicked.link)


# Link timestamps have whole seconds; a lead's updated_at has microseconds.
LINK_CLOCK_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Evidence:
    """How a request reached us, kept as consent evidence."""

    ip: str | None
    user_agent: str | None
    form: str


@dataclass(frozen=True)
class Signup:
    magnet: str
    email: str  # already validated and normalised
    first_name: str
    marketing: bool


class Funnel:
    def __init__(self, *, mail_domain: str, mails_per_day: int, notice: Notice, drip=None):
        self.mail_domain = mail_domain
        self.mails_per_day = mails_per_day
        self.notice = notice
        self.drip = drip  # enrols leads who confirm with marketing consent
        self._notice_row_id: int | None = None  # per process; notices are never deleted

    def subscribe(self, session: Session, signup: Signup, evidence: Evidence, now: datetime) -> None:
        """Record a signup (a consent event every time) and queue what the address's state calls for.

        new: a pending lead and the confirmation mail; pending: the confirmation again;
        confirmed: the guide again, with no change to the lead, or (box ticked, no marketing
        consent yet) a mail asking to confirm that consent; unsubscribed: the confirmation,
        and the address is confirmed again only by it; undeliverable: nothing. Confirmation and
        guide mails are capped at `mails_per_day` per address.
        """
        lead_id = queries.insert_lead_if_new(
            session, email=signup.email, first_name=signup.first_name, magnet=signup.magnet, now=now
        )
        if lead_id is not None:
            # A new address, the common case: three INSERTs and nothing else, because on
            # SQLite this runs under the database's one write lock.
            self._event(session, lead_id, ConsentKind.SIGNUP, signup.magnet, signup.marketing, evidence, now)
            enqueue(session, kind=MailKind.CONFIRM, lead_id=lead_id, recipient=signup.email,
                    magnet=signup.magnet, now=now, domain=self.mail_domain)
            return
        lead = queries.find_lead(session, signup.email)
        self._event(session, lead.id, ConsentKind.SIGNUP, signup.magnet, signup.marketing, evidence, now)
        if lead.status != LeadStatus.CONFIRMED:
            lead.first_name = signup.first_name or lead.first_name
            lead.updated_at = now
        self._resend(session, lead, signup.magnet, now, marketing=signup.marketing)

    def request_link(self, session: Session, magnet: str, email: str, now: datetime) -> None:
        """A fresh link for someone whose link expired: the confirmation if not confirmed; if
        confirmed, the consent mail again when the latest signup ticked the box and that consent
        is not confirmed yet, else the guide."""
        lead = queries.find_lead(session, email)
        if lead is not None:
            if lead.status == LeadStatus.PENDING:
                lead.updated_at = now  # a fresh confirmation link: not purged before it expires
            latest = self._latest_signup(session, lead.id)
            self._resend(session, lead, magnet, now, marketing=bool(latest and latest.marketing_consent))

    def confirm(self, session: Session, link: LeadLink, evidence: Evidence, now: datetime) -> Lead:
        """Confirm the address; the marketing choice is the one made on the latest signup form.

        The lead's row is locked (PostgreSQL; SQLite's write lock covers it already), so a
        double click confirms once and sends one guide.
        """
        lead = self.lead_for(session, link, lock=True)
        if lead.status == LeadStatus.CONFIRMED:
            return lead  # a second click: nothing new to record or send
        if lead.status != LeadStatus.PENDING and link.issued_at < lead.updated_at - LINK_CLOCK_SLACK:
            # An unsubscribed (or undeliverable) address is confirmed again only by a link sent
            # after that happened, i.e. in answer to a new signup; an old mail cannot undo it.
            raise InvalidLink("superseded", magnet=link.magnet)
        latest = self._latest_signup(session, lead.id)
        marketing = bool(latest and latest.marketing_consent)
        lead.status = LeadStatus.CONFIRMED.value
        lead.confirmed_at = now
        lead.updated_at = now
        lead.marketing_consent = marketing
        # The evidence names the notice the person saw with that signup, not whatever is in
        # force when the button is pressed.
        self._event(session, lead.id, ConsentKind.CONFIRM, link.magnet, marketing, evidence, now,
                    notice_id=latest.notice_id if latest else None)
        self._mail(session, lead, MailKind.GUIDE, link.magnet, now)
        if marketing and self.drip is not None:
            self.drip.enroll(session, lead.id, link.magnet, now)
        return lead

    def confirm_consent(self, session: Session, link: LeadLink, evidence: Evidence, now: datetime) -> Lead:
        """A confirmed lead gives marketing consent later: it ticked the box on a new signup and
        now presses the button in the mail that asked to confirm it (double opt-in). The lead
        gets marketing consent and enters the sequence from today; the evidence names the notice
        shown with that signup. A second click changes nothing; a link from before the lead
        unsubscribed or changed otherwise is refused (InvalidLink)."""
        lead = self.lead_for(session, link, lock=True)
        if lead.status == LeadStatus.CONFIRMED and lead.marketing_consent:
            return lead
        latest = self._latest_signup(session, lead.id)
        if (lead.status != LeadStatus.CONFIRMED or latest is None or not latest.marketing_consent
                or link.issued_at < lead.updated_at - LINK_CLOCK_SLACK):
            raise InvalidLink("superseded", magnet=link.magnet)
        lead.marketing_consent = True
        lead.updated_at = now
        self._event(session, lead.id, ConsentKind.CONFIRM, link.magnet, True, evidence, now,
                    notice_id=latest.notice_id)
        if self.drip is not None:
            self.drip.enroll(session, lead.id, link.magnet, now)
        return lead

    def unsubscribe(self, session: Session, link: LeadLink, evidence: Evidence, now: datetime) -> Lead:
        """No more marketing mail: the lead is unsubscribed (an undeliverable address stays
        so), its enrollments stop, its queued marketing mail is cancelled, and a consent event
        records how. Repeating it changes nothing and records nothing more."""
        lead = self.lead_for(session, link, lock=True)
        self.unsubscribe_lead(session, lead, link.magnet, evidence, now)
        return lead

    def unsubscribe_lead(self, session: Session, lead: Lead, magnet: str, evidence: Evidence, now: datetime) -> bool:
        """Unsubscribe a lead whose row the caller has locked; False if there was nothing to do."""
        if lead.status in (LeadStatus.UNSUBSCRIBED, LeadStatus.UNDELIVERABLE) and not lead.marketing_consent:
            return False
        if lead.status != LeadStatus.UNDELIVERABLE:
            lead.status = LeadStatus.UNSUBSCRIBED.value
        lead.marketing_consent = False
        lead.updated_at = now
        queries.stop_marketing(session, lead_id=lead.id, reason="not sent: the lead unsubscribed", now=now)
        self._event(session, lead.id, ConsentKind.UNSUBSCRIBE, magnet, False, evidence, now)
        return True

    def end_newsletter(self, session: Session, link: LeadLink, evidence: Evidence, now: datetime) -> Lead:
        """No more newsletters, the rest stays: status, marketing consent and the follow-up
        sequence are untouched; the lead's waiting newsletter mail is cancelled and a consent
        event records how. Nothing changes and nothing is recorded when it was ended already,
        or when the lead gets no marketing mail at all (unsubscribed, undeliverable without
        consent): that stays as it is."""
        lead = self.lead_for(session, link, lock=True)
        if lead.newsletter_ended_at is not None or (
                lead.status in (LeadStatus.UNSUBSCRIBED, LeadStatus.UNDELIVERABLE) and not lead.marketing_consent):
            return lead
        lead.newsletter_ended_at = now
        lead.updated_at = now
        queries.stop_kind(session, lead_id=lead.id, kind=MailKind.NEWSLETTER.value,
                          reason="not sent: the lead ended the newsletter")
        self._event(session, lead.id, ConsentKind.NEWSLETTER_END, link.magnet, lead.marketing_consent, evidence, now)
        return lead

    def record_download(self, session: Session, link: LeadLink, now: datetime) -> Lead:
        lead = self.lead_for(session, link)
        session.add(Download(lead_id=lead.id, magnet=link.magnet, at=now))
        return lead

    @staticmethod
    def record_click(session: Session, clicked: ClickLink, now: datetime) -> bool:
        """Count a click on a tracked link; False (nothing counted) when the lead it names is
        gone, or is another lead now (an erased lead's id is never reused, its address is)."""
        lead = session.get(Lead, clicked.lead_id)
        if lead is None or fingerprint(lead.email) != clicked.fingerprint:
            return False
        session.add(Click(lead_id=lead.id, sequence=clicked.sequence, step=clicked.step, link=clicked.link, at=now))
        return True

    def lead_for(self, session: Session, link: LeadLink, lock: bool = False) -> Lead:
        """The lead a link names, or InvalidLink if it is gone (erased, purged) or was replaced."""
        # FOR NO KEY UPDATE on PostgreSQL: it still serialises confirm and unsubscribe clicks,
        # but lets the drip job insert outbox rows that reference this lead meanwhile (their
        # foreign key takes a KEY SHARE lock, which FOR UPDATE would block: a deadlock).
        lead = session.get(Lead, link.lead_id, with_for_update={"key_share": True} if lock else None)
        if lead is None or fingerprint(lead.email) != link.fingerprint:
            raise InvalidLink("unknown", magnet=link.magnet)
        return lead

    @staticmethod
    def _latest_signup(session: Session, lead_id: int) -> ConsentEvent | None:
        return session.scalar(
            select(ConsentEvent)
            .where(ConsentEvent.lead_id == lead_id, ConsentEvent.kind == ConsentKind.SIGNUP)
            .order_by(ConsentEvent.id.desc())
            .limit(1)
        )

    def _resend(self, session: Session, lead: Lead, magnet: str, now: datetime, marketing: bool = False) -> None:
        if lead.status == LeadStatus.CONFIRMED and marketing and not lead.marketing_consent:
            # Consent given later: it counts once confirmed, like the first (confirm_consent).
            self._mail(session, lead, MailKind.CONSENT, magnet, now)
        elif lead.status == LeadStatus.CONFIRMED:
            self._mail(session, lead, MailKind.GUIDE, magnet, now)
        elif lead.status in (LeadStatus.PENDING, LeadStatus.UNSUBSCRIBED):
            # An unsubscribed address that signs up again confirms again before it gets anything.
            self._mail(session, lead, MailKind.CONFIRM, magnet, now)
        # undeliverable: the server refused this mailbox; mailing it again only hurts our reputation

    def resend_guide(self, session: Session, lead: Lead, now: datetime) -> bool:
        """An operator's "send the guide again" to a confirmed lead: its magnet's guide mail,
        within the same daily cap as a new signup; False when the cap held it back."""
        return self._mail(session, lead, MailKind.GUIDE, lead.magnet, now)

    def _mail(self, session: Session, lead: Lead, kind: MailKind, magnet: str, now: datetime) -> bool:
        """Queue a mail unless this lead already got `mails_per_day` of this kind today."""
        since = now - timedelta(days=1)
        if queries.recent_mail_count(session, lead_id=lead.id, kind=kind.value, since=since) >= self.mails_per_day:
            return False
        enqueue(session, kind=kind, lead_id=lead.id, recipient=lead.email, magnet=magnet, now=now,
                domain=self.mail_domain)
        return True

    def _event(self, session: Session, lead_id: int, kind: ConsentKind, magnet: str, marketing: bool,
               evidence: Evidence, now: datetime, notice_id: int | None = None) -> None:
        """One consent event; `notice_id` the notice it refers to (default: the one in force)."""
        queries.insert_consent_event(
            session, lead_id=lead_id, kind=kind.value, now=now, magnet=magnet, marketing=marketing,
            ip=evidence.ip, user_agent=(evidence.user_agent or "")[:400] or None, form=evidence.form,
            notice_id=notice_id or self._notice_id(session, now),
        )

    def _notice_id(self, session: Session, now: datetime) -> int:
        """The stored row for the current notice text, created the first time it is needed.

        Only an id found by a query is cached: a row this transaction inserts is gone again
        if the transaction rolls back, and a cached id would then point at nothing.
        """
        if self._notice_row_id is None:
            notice = self.notice
            found, inserted = queries.notice_id(session, version=notice.version, text=notice.full_text, now=now)
            if inserted:
                return found
            self._notice_row_id = found
        return self._notice_row_id
