"""Looking at a marketing mail before anyone gets it: render one drip step to a file, or send
it as a test through the configured transport. Neither changes a lead or the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import make_msgid

from email_validator import EmailNotValidError, validate_email

from mailer.content.files import Content, Sequence, Step
from mailer.delivery.kinds import MailRef
from mailer.delivery.rendering import Recipient, RenderedMail
from mailer.errors import InvalidRequest, RefusedRequest
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import MailKind

TEST_PREFIX = "[TEST] "


@dataclass(frozen=True)
class TestSent:
    ref: MailRef
    address: str
    reply: tuple[int, str]  # the relay's answer


def find_step(content: Content, name: str) -> tuple[Sequence, Step]:
    """STEP as `key` (when only one sequence has it) or `sequence/key`."""
    slug, _, key = name.rpartition("/")
    found = [(s, s.step(key)) for s in content.sequences.values() if (not slug or s.slug == slug) and s.step(key)]
    if len(found) != 1:
        known = ", ".join(f"{s.slug}/{step.key}" for s in content.sequences.values() for step in s.steps)
        problem = "names steps in several sequences; write SEQUENCE/STEP" if found else "is not a step"
        raise InvalidRequest(f"{name!r} {problem}. Steps: {known or 'none (no sequences)'}", "STEP")
    return found[0]


def example_recipient(db: Database, email: str | None) -> Recipient:
    """Who a rendered or test mail is addressed as: the named lead's first name, but links that
    name no lead, so a test mailbox's one-click unsubscribe (or a shared file) cannot
    unsubscribe a real lead."""
    first_name = "Voorbeeld"
    if email is not None:
        with db.read_only() as session:
            first_name = queries.require_lead(session, email).first_name
    return Recipient(0, "voorbeeld@example.nl", first_name)


def step_ref(content: Content, name: str) -> MailRef:
    sequence, step = find_step(content, name)
    return MailRef(MailKind.DRIP, sequence.magnet, sequence.slug, step.key)


def render_step(db: Database, renderer, content: Content, name: str, lead_email: str | None = None) -> RenderedMail:
    """One drip mail as the recipient sees it."""
    return renderer.render(step_ref(content, name), example_recipient(db, lead_email))


def send_test(db: Database, composer, transport, content: Content, name: str, to: str,
              lead_email: str | None = None) -> TestSent:
    """Send one drip step to `to` now, marked [TEST]; DeliveryError if the relay refuses."""
    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise RefusedRequest(str(exc), "--to", "bad-address") from None
    ref = step_ref(content, name)
    shown = example_recipient(db, lead_email)
    envelope, _ = composer.compose(ref, Recipient(shown.lead_id, address, shown.first_name),
                                   make_msgid(domain=composer.domain(marketing=True)), subject_prefix=TEST_PREFIX)
    with transport:
        transport.send_messages([envelope])
    return TestSent(ref, address, transport.last_reply)


@dataclass(frozen=True)
class StepMail:
    sequence: Sequence
    step: Step
    mail: RenderedMail


def step_mail(db: Database, renderer, content: Content, name: str) -> StepMail:
    """A drip step (`sequence/key`) with its mail as the recipient sees it (addressed to the
    example recipient); InvalidRequest if there is no such step."""
    sequence, step = find_step(content, name)
    return StepMail(sequence, step, render_step(db, renderer, content, name))
