"""The composition root: settings in, every collaborator wired once and handed what it needs.

Web, worker and CLI share one Services. Its parts are built when first used, so a command
that only reads the database (export, stats) starts without the mail templates; `check()`
builds and checks everything a long-running process needs before it serves.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cached_property

from mailer.clock import SystemClock
from mailer.content.files import Content, load_content
from mailer.resources import content_dirs, template_dirs
from mailer.settings import Settings
from mailer.store.database import Database

log = logging.getLogger("mailer")


class Services:
    def __init__(self, settings: Settings, clock=None):
        self.settings = settings
        self.clock = clock or SystemClock()
        # The privacy statement in the content quotes the retention settings (content/files.py).
        self.content: Content = load_content(content_dirs(settings.content_path), settings)
        self.content_loaded_at = self.clock.now()  # a newer process applies sequence changes (drip/job.py)
        self.db = Database(settings.database_url, settings.sqlite_busy_timeout_ms)

    def check(self) -> "Services":
        """Build the mail side now, so a broken template or DKIM key stops the start-up."""
        self.composer  # noqa: B018  (built and checked on first use)
        if self.content.sequences and not self.settings.is_https and not self.settings.embedded:
            log.warning("MAILER_BASE_URL is not https: marketing mail goes out without one-click unsubscribe "
                        "(RFC 8058), which Gmail and Yahoo require of bulk senders")
        if self.content.sequences and not self.settings.reply_to and not self.settings.embedded:
            log.warning("MAILER_REPLY_TO is not set: replies to the mails (the last drip mail invites them) "
                        "go to MAILER_FROM; set it to a mailbox a person reads")
        self._check_notice_version()
        return self

    def _check_notice_version(self) -> None:
        """Warn when the privacy notice's text changed but its version label did not. Skipped
        when the database cannot answer (not migrated yet, unreachable): that is not this check's
        to report."""
        from sqlalchemy.exc import SQLAlchemyError

        from mailer.store.queries import notice_version_reused

        notice = self.content.organisation.notice
        try:
            with self.db.read_only() as session:
                reused = notice_version_reused(session, version=notice.version, text=notice.full_text)
        except SQLAlchemyError as exc:
            log.debug("notice version not checked: %s", exc)
            return
        if reused:
            log.warning("the privacy notice text changed (the box's label, the notice or the privacy statement "
                        "with its figures from the settings) but organisation.toml [privacy] version is still "
                        "%r: consent evidence now holds two texts under that label; give the new text a new "
                        "version", notice.version)

    @cached_property
    def signer(self):
        from mailer.funnel.tokens import Signer

        return Signer(self.settings.secret_keys, self.clock)

    @cached_property
    def links(self):
        from mailer.funnel.links import Links

        return Links(self.settings.base_url, self.signer)

    @cached_property
    def drip(self):
        from mailer.drip.job import Drip

        settings = self.settings

        def campaigns_ahead(session, lead_ids, now, gap):
            # imported when the drip job runs (a worker), not where a request enrols a lead
            from mailer.operator.campaigns import campaigns_ahead

            return campaigns_ahead(session, lead_ids, now, gap, zone=settings.drip_window.zone)

        return Drip(content=self.content, window=settings.drip_window,
                    gap=timedelta(hours=settings.drip_min_gap_hours), batch_size=settings.drip_batch_size,
                    mail_domain=settings.mail_domain, loaded_at=self.content_loaded_at,
                    campaigns_ahead=campaigns_ahead)

    @cached_property
    def funnel(self):
        from mailer.funnel.actions import Funnel

        return Funnel(mail_domain=self.settings.mail_domain, mails_per_day=self.settings.confirm_mails_per_day,
                      notice=self.content.organisation.notice, drip=self.drip)

    @cached_property
    def renderer(self):
        from mailer.delivery.rendering import MailRenderer

        settings = self.settings
        renderer = MailRenderer(template_dirs(settings.templates_path), self.content, self.links,
                                settings.confirm_max_age_days, list_domain=settings.mail_domain,
                                click_tracking=settings.click_tracking, one_click=settings.is_https)
        renderer.check()
        return renderer

    @cached_property
    def composer(self):
        from mailer.delivery.composer import Composer
        from mailer.delivery.dkim import DKIMSigner

        settings = self.settings
        dkim = None
        if settings.dkim_selector:
            # Sign for the From domain unless told otherwise (DMARC alignment wants them equal).
            dkim = DKIMSigner.from_settings(settings.dkim_selector, settings.dkim_domain or settings.mail_domain,
                                            settings.dkim_key_file)
        return Composer(self.renderer, settings.mail_from, settings.marketing_from, self.clock, dkim,
                        dkim_fixed_domain=bool(settings.dkim_domain), reply_to=settings.reply_to,
                        bounces=self.bounce_addresses)

    @cached_property
    def intake(self):
        """Takes in the reports that come back (bounces, complaints)."""
        from mailer.bounces.intake import Intake

        settings = self.settings
        return Intake(self.db, self.funnel, self.clock, self.bounce_addresses,
                      soft_limit=settings.soft_bounce_limit, soft_days=settings.soft_bounce_days)

    @cached_property
    def bounce_addresses(self):
        """The per-mail envelope senders of MAILER_BOUNCE_ADDRESS, or None without it."""
        from mailer.delivery.verp import BounceAddresses

        address = self.settings.bounce_address
        return BounceAddresses(address, self.settings.secret_keys) if address else None

    def page_loader(self):
        """The web pages' templates: the operator's copy first, then the shipped ones."""
        from jinja2 import FileSystemLoader

        return FileSystemLoader([directory / "pages" for directory in template_dirs(self.settings.templates_path)])

    def transport(self):
        """A new transport for one sender (a connection is not shared between threads)."""
        from mailer.delivery.transports import make_transport

        return make_transport(self.settings.mail)

    def sender(self, transport=None, worker: str | None = None, throttle=None):
        """A sender with its collaborators: the database, a transport, the composer, the clock."""
        from mailer.delivery.kinds import KINDS
        from mailer.delivery.sender import Sender, SenderConfig

        settings = self.settings
        config = SenderConfig(
            lease=timedelta(seconds=settings.lease_seconds), batch_size=settings.send_batch_size,
            window=settings.drip_window,
            retry={"transactional": settings.retry_transactional, "marketing": settings.retry_marketing},
            lifetimes={name: kind.lifetime(settings) for name, kind in KINDS.items() if kind.lifetime_setting},
            log_mail=settings.log_mail,
        )
        return Sender(self.db, transport or self.transport(), self.composer, self.clock, config,
                      worker=worker, throttle=throttle)

    def senders(self) -> list:
        """MAILER_SEND_CONCURRENCY senders, each with its own transport, sharing one throttle."""
        from mailer.delivery.sender import worker_name
        from mailer.delivery.throttle import SendThrottle

        settings = self.settings
        throttle = None
        if settings.send_rate:
            relay = f"{settings.mail.host}:{settings.mail.port}" if settings.mail.is_smtp else settings.mail.scheme
            throttle = SendThrottle(settings.send_rate, settings.ratelimit_storage_url, relay)
        count = settings.send_concurrency
        return [self.sender(worker=worker_name() + (f"/{n}" if count > 1 else ""), throttle=throttle)
                for n in range(1, count + 1)]


def build_services(settings: Settings | None = None, clock=None, defaults: dict[str, str] | None = None) -> Services:
    """Services from the environment (or the settings given), checked for a long-running process."""
    return Services(settings or Settings.from_env(defaults=defaults), clock).check()
