"""SMTP answer -> retry at T, or give up. Pure: no I/O, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    delays: tuple[timedelta, ...]  # after attempt 1, 2, ...; the last one repeats
    give_up_after: timedelta  # counted from when the mail was queued


TRANSACTIONAL = RetryPolicy(
    delays=(timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10), timedelta(minutes=30), timedelta(hours=1)),
    give_up_after=timedelta(days=2),
)


@dataclass(frozen=True)
class Decision:
    retry_at: datetime | None  # None: give up, the row fails

    @property
    def gives_up(self) -> bool:
        return self.retry_at is None


def decide(code: int | None, attempts: int, queued_at: datetime, now: datetime, policy: RetryPolicy) -> Decision:
    """5xx is permanent; 4xx, timeouts and broken connections (code None) retry with growing delays."""
    if code is not None and 500 <= code < 600:
        return Decision(None)
    delay = policy.delays[min(max(attempts, 1), len(policy.delays)) - 1]
    retry_at = now + delay
    if retry_at - queued_at > policy.give_up_after:
        return Decision(None)
    return Decision(retry_at)
