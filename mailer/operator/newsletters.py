"""Newsletters before anyone gets them: a starting file, a preview, a test send, and the
audience (who would get it). Nothing here queues mail or changes a lead; a test send is
recorded with the content hash it was sent for (`send` asks for one). Sending to the audience
is mailer/operator/campaigns.py."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timezone
from email.utils import make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, and_, exists, func, select

from mailer.content.files import Content
from mailer.content.newsletters import SLUG, Audience, Newsletter, load_newsletter, starter
from mailer.delivery.composer import FrozenMail
from mailer.delivery.kinds import MailRef, newsletter_ref
from mailer.delivery.rendering import Recipient, RenderedMail
from mailer.errors import InvalidRequest, MailerError, RefusedRequest
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import Click, Download, Enrollment, EnrollmentStatus, Lead, LeadStatus, TestSend

TEST_PREFIX = "[TEST] "
SAMPLE_SIZE = 10
NEWSLETTER_FOLDER = "newsletters"


@dataclass(frozen=True)
class Written:
    path: Path
    newsletter: Newsletter


@dataclass(frozen=True)
class AudienceView:
    newsletter: str
    filters: Audience  # the file's, with the command's on top
    count: int
    sample: tuple[str, ...]  # the first addresses (by lead id) of exactly the rows counted


@dataclass(frozen=True)
class TestSent:
    ref: MailRef
    address: str
    reply: tuple[int, str]


def find(content: Content, slug: str) -> Newsletter:
    newsletter = content.newsletters.get(slug)
    if newsletter is None:
        known = ", ".join(content.newsletters) or "none (no newsletters/ in the content folder)"
        raise RefusedRequest(f"{slug!r} is not a newsletter. Newsletters: {known}", "SLUG", "unknown-newsletter")
    return newsletter


def write_new(content_path: Path | None, content: Content, slug: str) -> Written:
    """Write newsletters/SLUG.md into the operator's content folder (MAILER_CONTENT_PATH), never
    into the installed package; the file is loaded back to prove it valid as written."""
    if content_path is None:
        raise MailerError("MAILER_CONTENT_PATH is not set: newsletters live in your own content folder. "
                          "Run `mailer init DIR` first and set the settings it prints.")
    if not SLUG.match(slug):
        raise InvalidRequest(f"{slug!r} is not a slug (lowercase letters, digits, dashes)", "SLUG")
    folder = content_path / NEWSLETTER_FOLDER
    path = folder / f"{slug}.md"
    if path.exists():
        raise InvalidRequest(f"{path} exists already", "SLUG")
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as handle:
        handle.write(starter(slug, content.organisation.links))
    return Written(path, load_newsletter(path, content.organisation.links, content.magnets))


def _recipient(db: Database, content: Content, email: str | None) -> tuple[str, Recipient]:
    """(magnet, recipient) a preview or test is addressed as: the named lead's magnet and first
    name, but links that name no lead, so a test mailbox's one-click unsubscribe (or a shared
    preview file) cannot unsubscribe a real lead."""
    first_name, magnet = "Voorbeeld", content.organisation.default_magnet
    if email is not None:
        with db.read_only() as session:
            lead = queries.require_lead(session, email)
            first_name, magnet = lead.first_name, lead.magnet
    if magnet not in content.magnets:  # a lead of a magnet since removed
        magnet = content.organisation.default_magnet
    return magnet, Recipient(0, "voorbeeld@example.nl", first_name)


def render(db: Database, renderer, content: Content, slug: str, lead_email: str | None = None) -> RenderedMail:
    """The newsletter as the recipient sees it."""
    find(content, slug)
    magnet, recipient = _recipient(db, content, lead_email)
    return renderer.render(newsletter_ref(content, slug, magnet), recipient)


def content_hash(newsletter: Newsletter, subject: str | None = None) -> str:
    """What a test send and a campaign are for: subject (the file's, or a subject test's B),
    preheader and body (sha256)."""
    text = "\x00".join((subject.strip() if subject else newsletter.subject, newsletter.preheader, newsletter.body))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def send_test(db: Database, composer, transport, content: Content, slug: str, to: str,
              lead_email: str | None = None, now: datetime | None = None, subject: str | None = None) -> TestSent:
    """Send the newsletter to `to` now, marked [TEST], with the file's subject or `subject` (the B
    of a subject test); DeliveryError if the relay refuses. A test the relay accepted is
    recorded (test_sends) with the content hash it was for."""
    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise RefusedRequest(str(exc), "--to", "bad-address") from None
    if subject is not None and not subject.strip():
        raise RefusedRequest("the subject is empty", "--ab-subject", "ab-subject-empty")
    newsletter = find(content, slug)
    magnet, shown = _recipient(db, content, lead_email)
    ref = newsletter_ref(content, slug, magnet)
    frozen = FrozenMail(composer.renderer.prepare(ref, subject.strip()), newsletter.sender,
                        newsletter.reply_to) if subject else None
    envelope, _ = composer.compose(ref, Recipient(shown.lead_id, address, shown.first_name),
                                   make_msgid(domain=composer.domain(marketing=True)), subject_prefix=TEST_PREFIX,
                                   frozen=frozen)
    with transport:
        transport.send_messages([envelope])
    with db.transaction() as session:
        session.add(TestSend(slug=slug, content_hash=content_hash(newsletter, subject),
                             at=now or datetime.now(timezone.utc)))
    return TestSent(ref, address, transport.last_reply)


# --- the audience ------------------------------------------------------------------------

def narrowed(file: Audience, content: Content, **given) -> Audience:
    """The file's filters with the command's on top: a filter the command names replaces the
    file's (clicked and not_clicked add to it). Names are checked against the content."""
    changes = {name: value for name, value in given.items() if value not in (None, ())}
    for name in ("clicked", "not_clicked"):
        if name in changes:
            changes[name] = tuple(dict.fromkeys((*getattr(file, name), *changes[name])))
            for link in changes[name]:
                if link not in content.organisation.links:
                    raise InvalidRequest(f"{link!r} is not one of the [links] in organisation.toml "
                                         f"({', '.join(content.organisation.links)})", f"--{name.replace('_', '-')}")
    for magnet in changes.get("magnets", ()):
        if magnet not in content.magnets:
            raise InvalidRequest(f"{magnet!r} is not a lead magnet ({', '.join(content.magnets)})", "--magnet")
    return replace(file, **changes)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(timezone.utc)


def audience_query(audience: Audience, zone: ZoneInfo) -> Select:
    """The lead ids of the audience, as one SQL query: confirmed leads with marketing consent
    who have not ended the newsletter, narrowed by every filter (EXISTS for downloads, clicks and enrollments).

    A "finished" follow-up sequence is an active enrollment with every step handled
    (next_due_at IS NULL); "in" is an active enrollment with a step still to come. A stopped
    enrollment (unsubscribed, undeliverable, consent withdrawn) is neither."""
    where = [Lead.status == LeadStatus.CONFIRMED.value, Lead.marketing_consent.is_(True),
             Lead.newsletter_ended_at.is_(None)]
    if audience.magnets:
        where.append(Lead.magnet.in_(audience.magnets))
    if audience.signed_up_after:
        where.append(Lead.created_at >= _day_start(audience.signed_up_after, zone))
    if audience.signed_up_before:
        where.append(Lead.created_at < _day_start(audience.signed_up_before, zone))
    if audience.downloaded is not None:
        downloaded = exists().where(Download.lead_id == Lead.id)
        where.append(downloaded if audience.downloaded else ~downloaded)
    for link in audience.clicked:
        where.append(exists().where(and_(Click.lead_id == Lead.id, Click.link == link)))
    for link in audience.not_clicked:
        where.append(~exists().where(and_(Click.lead_id == Lead.id, Click.link == link)))
    if audience.sequence:
        due = Enrollment.next_due_at.is_(None) if audience.sequence == "finished" else Enrollment.next_due_at.isnot(None)
        where.append(exists().where(and_(Enrollment.lead_id == Lead.id,
                                         Enrollment.status == EnrollmentStatus.ACTIVE.value, due)))
    return select(Lead.id, Lead.email).where(*where)


def audience(db: Database, content: Content, slug: str, zone: ZoneInfo, sample_size: int = SAMPLE_SIZE,
             **given) -> AudienceView:
    """How many would get the newsletter now, and the first addresses of exactly those (one
    read transaction: the same query counted and sampled)."""
    filters = narrowed(find(content, slug).audience, content, **given)
    query = audience_query(filters, zone).subquery()
    with db.read_only() as session:
        count = session.scalar(select(func.count()).select_from(query))
        sample = tuple(session.scalars(select(query.c.email).order_by(query.c.id).limit(sample_size)))
    return AudienceView(slug, filters, count or 0, sample)
