"""A mail as it goes to the relay: rendered for its recipient by its kind, from the sender its
kind calls for, signed with DKIM when that is on."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.delivery.dkim import DKIMSigner
from mailer.delivery.kinds import KINDS, MailRef
from mailer.delivery.rendering import MailRenderer, Prepared, Recipient, RenderedMail, build_message, envelope_sender
from mailer.delivery.transports import Envelope
from mailer.delivery.verp import BounceAddresses


@dataclass(frozen=True)
class FrozenMail:
    """A campaign's mail as stored at its start (campaign_mails): the rendered mail and the
    newsletter's own From and Reply-To of that moment (None: the settings')."""

    prepared: Prepared
    sender: str | None = None
    reply_to: str | None = None


@dataclass
class Composer:
    renderer: MailRenderer
    mail_from: str
    marketing_from: str | None  # From of marketing mail; None: mail_from
    clock: object
    dkim: DKIMSigner | None = None
    # With DKIM on, each mail is signed for the domain of its own From (DMARC alignment),
    # unless MAILER_DKIM_DOMAIN names one domain for all.
    dkim_fixed_domain: bool = False
    reply_to: str | None = None  # Reply-To of every mail (MAILER_REPLY_TO); None: no such header
    # MAILER_BOUNCE_ADDRESS: an outbox row's mail goes out from bounce+TOKEN@DOMAIN (verp.py).
    bounces: BounceAddresses | None = None

    def knows(self, ref: MailRef) -> bool:
        """Whether this process can compose the mail: its kind is known and the content has it."""
        return self.renderer.knows(ref)

    def sender(self, marketing: bool) -> str:
        return self.marketing_from if marketing and self.marketing_from else self.mail_from

    def domain(self, marketing: bool) -> str:
        """The domain of the From a kind of mail is sent from: it names test Message-IDs, and
        DKIM signs for it unless MAILER_DKIM_DOMAIN is set."""
        return envelope_sender(self.sender(marketing)).rpartition("@")[2]

    def compose(self, ref: MailRef, recipient: Recipient, message_id: str, subject_prefix: str = "",
                frozen: FrozenMail | None = None, row_id: int | None = None) -> tuple[Envelope, RenderedMail]:
        """The message for the wire, and the mail it was built from (for the log): from the
        content as it is now, or from a campaign's frozen mail. An outbox row's mail (row_id)
        has the row's own envelope sender when MAILER_BOUNCE_ADDRESS is set."""
        mail = self.renderer.render(ref, recipient, frozen and frozen.prepared)
        if subject_prefix:
            mail = RenderedMail(subject_prefix + mail.subject, mail.text, mail.html, mail.headers)
        kind = KINDS[ref.kind]
        marketing = kind.marketing
        # A kind may name its own From and Reply-To for a mail (a newsletter's header).
        if frozen is not None:
            own_from, own_reply_to = frozen.sender, frozen.reply_to
        else:
            own_from, own_reply_to = kind.addresses(self.renderer.content, ref) if kind.addresses else (None, None)
        sender = own_from or self.sender(marketing)
        data = build_message(sender=sender, recipient=recipient, mail=mail, message_id=message_id,
                             date=self.clock.now(), reply_to=own_reply_to or self.reply_to)
        if self.dkim is not None:
            domain = envelope_sender(sender).rpartition("@")[2] if own_from else self.domain(marketing)
            data = self.dkim.sign(data, None if self.dkim_fixed_domain else domain)
        bounce_to = self.bounces.for_row(row_id) if self.bounces and row_id is not None else envelope_sender(sender)
        return Envelope(bounce_to, (recipient.email,), data, message_id), mail
