"""APScheduler wiring only: a fixed handful of periodic jobs, never one job per lead.

`mailer serve` and `mailer worker` run these on a timer; `mailer tick` runs each once.
Gunicorn web workers import create_app() alone and so never start a scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.delivery.sender import Sender

log = logging.getLogger("mailer.scheduler")
PURGE_INTERVAL_SECONDS = 3600


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every_seconds: float
    run: Callable[[], str]  # does one pass; returns what it did, or "" when there was nothing to do


def periodic_jobs(services, senders: list[Sender]) -> list[PeriodicJob]:
    """The bounce mailbox's reader (with MAILER_BOUNCE_MAILBOX), the drip job, the purge, the
    newsletter campaigns' job (one for all campaigns), and one dispatch job per sender
    (MAILER_SEND_CONCURRENCY), each with its own connection."""

    def enqueue_drip() -> str:
        report = services.drip.run(services.db, services.clock.now())
        return report.line() if report.did_anything else ""

    def start_campaigns() -> str:
        from mailer.operator.campaigns import start_due

        lines = start_due(services.db, services.content, services.renderer, zone=services.settings.drip_window.zone,
                          now=services.clock.now(), domain=services.settings.mail_domain)
        return "\n  ".join(lines)

    def purge_pending() -> str:
        from mailer.operator.people import purge_pending as purge

        from mailer.operator.accounts import purge_sessions

        settings, now = services.settings, services.clock.now()
        days = settings.pending_max_age_days
        purged = purge(services.db, days, now)
        # dashboard sessions past their expiry: already refused, now gone from the table too
        ended = purge_sessions(services.db, now, timedelta(minutes=settings.admin_idle_minutes),
                               timedelta(hours=settings.admin_session_hours))
        return "; ".join(line for line in (
            f"erased {purged} signup(s) not confirmed within {days} days" if purged else "",
            f"deleted {ended} expired dashboard session(s)" if ended else "") if line)

    def dispatcher(sender: Sender) -> Callable[[], str]:
        def dispatch_outbox() -> str:
            report = sender.dispatch_all()
            if report.handled == 0:
                return ""
            return "\n  ".join([report.line(), *report.errors])

        return dispatch_outbox

    def read_bounce_mailbox() -> str:
        from mailer.bounces.mailbox import read_mailbox
        from mailer.errors import MailerError

        try:
            report = read_mailbox(services.intake, services.settings.bounce_mailbox)
        except MailerError as exc:
            # An unreachable mailbox or a refused login is the operator's to fix; it must not
            # stop the other jobs (`mailer tick` runs them after this one). The next pass retries.
            log.warning("read-bounce-mailbox: %s", exc)
            return f"not read: {exc}"
        return report.line()

    suffix = len(senders) > 1
    # first: a hard bounce read now makes its lead undeliverable before campaigns and the drip queue for it
    mailbox = ([PeriodicJob("read-bounce-mailbox", services.settings.bounce_mailbox_interval, read_bounce_mailbox)]
               if services.settings.bounce_mailbox else [])
    return [
        *mailbox,
        # before the drip (a lead's step then waits for the gap after the newsletter) and before
        # the dispatch (`mailer tick` starts a due campaign and sends its first batch)
        PeriodicJob("start-campaigns", services.settings.drip_interval, start_campaigns),
        PeriodicJob("enqueue-drip", services.settings.drip_interval, enqueue_drip),
        PeriodicJob("purge-pending", PURGE_INTERVAL_SECONDS, purge_pending),
        *(PeriodicJob(f"dispatch-outbox{f'-{n}' if suffix else ''}", services.settings.dispatch_interval,
                      dispatcher(sender))
          for n, sender in enumerate(senders, 1)),
    ]


def run_once(services) -> list[tuple[str, str]]:
    """Every periodic job once, in order, as of the services' clock (`mailer tick`): each job's
    name and what it did."""
    return [(job.name, job.run()) for job in periodic_jobs(services, services.senders())]


def build_scheduler(jobs: list[PeriodicJob]) -> BackgroundScheduler:
    # coalesce + max_instances=1: a slow pass is never run twice at once, and missed runs
    # collapse into one; misfire_grace_time=None: a late run still runs (late, never dropped).
    scheduler = BackgroundScheduler(
        timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    )
    for job in jobs:
        scheduler.add_job(_guarded(job), "interval", seconds=job.every_seconds, id=job.name, name=job.name)
    return scheduler


def _guarded(job: PeriodicJob) -> Callable[[], None]:
    def run() -> None:
        try:
            result = job.run()
        except (OperationalError, InterfaceError) as exc:
            # The database is restarting or unreachable: nothing was claimed, the next pass retries.
            log.warning("%s: database unavailable (%s); will retry", job.name, exc.__class__.__name__)
            return
        if result:
            log.info("%s: %s", job.name, result)

    return run


class Background:
    """The scheduler and the senders it drives, started together and stopped together."""

    def __init__(self, services):
        self.senders = services.senders()
        self.scheduler = build_scheduler(periodic_jobs(services, self.senders))
        self.scheduler.start()

    def stop(self) -> None:
        """Finish the mail in flight, give the rest of each claim back, end the scheduler."""
        log.info("stopping: finishing the mail in flight, giving the rest of the claim back")
        for sender in self.senders:
            sender.stop()
        self.scheduler.shutdown(wait=True)
