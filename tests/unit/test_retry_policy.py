"""The retry policy: an SMTP answer -> retry at T, or give up, and whom a refusal is about."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailer import timing
from mailer.delivery import retry

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


POLICY = timing.parse_policy("MAILER_RETRY_TRANSACTIONAL", timing.TRANSACTIONAL)


@pytest.mark.parametrize("code, text, attempts, age, expected, blame", [
    (550, "5.1.1 User unknown", 1, timedelta(0), None, retry.Blame.RECIPIENT),
    (550, "5.1.10 Null MX", 1, timedelta(0), None, retry.Blame.RECIPIENT),
    (553, "5.1.7 Bad sender address syntax", 1, timedelta(0), None, None),  # about us, not them
    (554, "5.7.1 Sender address rejected: SPF fail", 1, timedelta(0), None, retry.Blame.SENDER),
    (552, "5.3.4 Message too big", 1, timedelta(0), None, None),           # permanent, nobody's mailbox
    (550, "Mailbox unavailable", 1, timedelta(0), None, None),             # no enhanced code: no blame
    (421, "4.3.2 Try later", 1, timedelta(0), timedelta(seconds=30), None),
    (None, "timeout", 3, timedelta(0), timedelta(minutes=10), None),
    (451, "4.3.0", 9, timedelta(hours=1), timedelta(hours=1), None),       # the last delay repeats
    (451, "4.3.0", 9, timedelta(days=2), None, None),                      # too old: give up
])
def test_retry_policy(code, text, attempts, age, expected, blame):
    decision = retry.decide(code, text, attempts=attempts, unknown_before=0, unknown=False,
                            queued_at=T0 - age, now=T0, policy=POLICY)
    assert decision.retry_at == (None if expected is None else T0 + expected)
    assert decision.blame == blame


def test_an_unknown_outcome_is_retried_once_then_given_up():
    first = retry.decide(None, "reset", attempts=1, unknown_before=0, unknown=True, queued_at=T0, now=T0,
                         policy=POLICY)
    second = retry.decide(None, "reset", attempts=2, unknown_before=1, unknown=True, queued_at=T0, now=T0,
                          policy=POLICY)
    assert first.retry_at is not None and second.gives_up


def test_marketing_mail_retries_more_gently_than_transactional_mail():
    marketing = timing.parse_policy("MAILER_RETRY_MARKETING", timing.MARKETING)
    assert marketing.delays[0] > POLICY.delays[0] and marketing.give_up_after > POLICY.give_up_after


@pytest.mark.parametrize("value", ["", "30s", "30s/", "x/2d", "0s/1d", "30s,2q/1d"])
def test_a_bad_retry_setting_names_its_variable(value):
    from mailer.errors import SettingsError

    with pytest.raises(SettingsError, match="MAILER_RETRY_MARKETING must look like"):
        timing.parse_policy("MAILER_RETRY_MARKETING", value)


