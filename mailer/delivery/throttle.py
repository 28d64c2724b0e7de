"""A sending rate that holds across every worker: messages per second, per hour, per relay.

Counted with the `limits` library in the storage named by MAILER_RATELIMIT_STORAGE_URL:
Redis makes the limit shared by all workers on all hosts; memory:// holds it per process.
"""

from __future__ import annotations

import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter


class SendThrottle:
    def __init__(self, rate: str, storage_url: str, relay: str):
        self.limits = parse_many(rate)
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_url))
        self.relay = relay

    def try_acquire(self) -> float:
        """Take one sending slot and return 0, or return the seconds until one frees up.

        hit() takes the slot atomically in the store, so two workers cannot both pass on the
        last one. With several limits a refused later one may leave an earlier one counted:
        that errs on the slow side, never the fast one.
        """
        for limit in self.limits:
            if not self.limiter.hit(limit, "send", self.relay):
                reset = self.limiter.get_window_stats(limit, "send", self.relay).reset_time
                return max(reset - time.time(), 0.01)
        return 0.0
