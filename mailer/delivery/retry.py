"""SMTP answer -> sent, retry at T, or give up, and whom a refusal is about. Pure: no I/O, no clock.

Tested with a table of cases (tests/unit/test_retry_policy.py); the sender applies the decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mailer.timing import RetryPolicy

ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class Blame(StrEnum):
    RECIPIENT = "recipient"  # 5.1.x: the mailbox does not exist; stop mailing it
    SENDER = "sender"  # 5.7.x: policy about us (SPF, DMARC, reputation); the recipient is fine


@dataclass(frozen=True)
class Decision:
    retry_at: datetime | None  # None: give up, the row fails
    blame: Blame | None = None
    reason: str = ""

    @property
    def gives_up(self) -> bool:
        return self.retry_at is None


def decide(code: int | None, text: str, *, attempts: int, unknown_before: int, unknown: bool,
           queued_at: datetime, now: datetime, policy: RetryPolicy) -> Decision:
    """What to do after a failed attempt.

    5xx is permanent; an enhanced status 5.1.x blames the recipient's address, 5.7.x the
    sender. 4xx, timeouts and broken connections retry with the policy's growing delays
    until the give-up age. An unknown outcome (the connection broke after the data was sent)
    is retried once; a second one gives up, so a recipient gets at most one extra copy.
    """
    if code is not None and 500 <= code < 600:
        return Decision(None, _blame(text), "permanent refusal")
    if unknown and unknown_before >= 1:
        return Decision(None, None, "outcome unknown twice; not retried to avoid more copies")
    delay = policy.delays[min(max(attempts, 1), len(policy.delays)) - 1]
    retry_at = now + delay
    if retry_at - queued_at > policy.give_up_after:
        return Decision(None, None, f"still failing after {policy.give_up_after}")
    return Decision(retry_at)


def _blame(text: str) -> Blame | None:
    match = ENHANCED_STATUS.match(text or "")
    if not match:
        return None
    subject, detail = match.group(2), match.group(3)
    # 5.1.7 and 5.1.8 are about the sender's address, the rest of 5.1.x about the recipient's.
    if subject == "1" and detail not in ("7", "8"):
        return Blame.RECIPIENT
    if subject == "7":
        return Blame.SENDER
    return None
