"""The composition root: settings in, every collaborator wired once, shared by web, worker and CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr

from .clock import SystemClock
from .content import Content, load_content
from .db import Database
from .dkim_signing import DKIMSigner
from .drip import Drip
from .links import Links
from .rendering import MailRenderer, Recipient, RenderedMail, build_message, envelope_sender
from .settings import PROJECT_ROOT, Settings
from .signup import Funnel
from .tokens import Signer
from .transports import Envelope, Transport, make_transport

TEMPLATES = PROJECT_ROOT / "templates"
log = logging.getLogger("mailer")


@dataclass
class Services:
    settings: Settings
    db: Database
    content: Content
    signer: Signer
    links: Links
    renderer: MailRenderer
    funnel: Funnel
    drip: Drip
    clock: object
    dkim: DKIMSigner | None = None

    def envelope(self, recipient: Recipient, mail: RenderedMail, message_id: str, *, marketing: bool) -> Envelope:
        """One message as it goes to the relay: From is the marketing sender for marketing mail
        (when one is set), and with DKIM on it is signed for the From's domain (DMARC
        alignment) unless MAILER_DKIM_DOMAIN names another."""
        settings = self.settings
        sender = settings.marketing_from if marketing and settings.marketing_from else settings.mail_from
        data = build_message(sender=sender, recipient=recipient, mail=mail, message_id=message_id,
                             date=self.clock.now())
        if self.dkim is not None:
            data = self.dkim.sign(data, None if settings.dkim_domain else envelope_sender(sender).rpartition("@")[2])
        return Envelope(envelope_sender(sender), (recipient.email,), data, message_id)

    def transport(self) -> Transport:
        """A new transport for one sender (a connection is not shared between threads)."""
        return make_transport(self.settings.mail)

    def senders(self) -> list:
        """MAILER_SEND_CONCURRENCY senders, each with its own transport, sharing one throttle."""
        from .outbox import Sender, worker_name
        from .throttle import SendThrottle

        settings = self.settings
        throttle = None
        if settings.send_rate:
            relay = f"{settings.mail.host}:{settings.mail.port}" if settings.mail.is_smtp else settings.mail.scheme
            throttle = SendThrottle(settings.send_rate, settings.ratelimit_storage_url, relay)
        count = settings.send_concurrency
        return [
            Sender(self, self.transport(), worker=worker_name() + (f"/{n}" if count > 1 else ""), throttle=throttle)
            for n in range(1, count + 1)
        ]


def build_services(settings: Settings | None = None, clock=None, defaults: dict[str, str] | None = None) -> Services:
    settings = settings or Settings.from_env(defaults=defaults)
    content = load_content(settings.content_path)
    clock = clock or SystemClock()
    signer = Signer(settings.secret_keys, clock)
    links = Links(settings.base_url, signer)
    mail_domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    renderer = MailRenderer(TEMPLATES, content, links, settings.confirm_max_age_days,
                            list_domain=mail_domain, click_tracking=settings.click_tracking,
                            one_click=settings.is_https)
    if content.sequences and not settings.is_https and not settings.embedded:
        log.warning("MAILER_BASE_URL is not https: drip mail goes out without one-click unsubscribe "
                    "(RFC 8058), which Gmail and Yahoo require of bulk senders")
    renderer.check()
    drip = Drip(content=content, window=settings.drip_window, gap=timedelta(hours=settings.drip_min_gap_hours),
                batch_size=settings.drip_batch_size, mail_domain=mail_domain, loaded_at=clock.now())
    return Services(
        settings=settings,
        db=Database(settings.database_url, settings.sqlite_busy_timeout_ms),
        content=content,
        signer=signer,
        links=links,
        renderer=renderer,
        funnel=Funnel(
            mail_domain=mail_domain,
            mails_per_day=settings.confirm_mails_per_day,
            notice=content.organisation.notice,
            drip=drip,
        ),
        drip=drip,
        clock=clock,
        dkim=_dkim_signer(settings),
    )


def _dkim_signer(settings: Settings) -> DKIMSigner | None:
    if not settings.dkim_selector:
        return None
    # Sign for the From domain unless told otherwise (DMARC alignment wants them equal).
    domain = settings.dkim_domain or parseaddr(settings.mail_from)[1].rpartition("@")[2]
    return DKIMSigner.from_settings(settings.dkim_selector, domain, settings.dkim_key_file)
