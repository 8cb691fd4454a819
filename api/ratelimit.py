"""Per-key rate limits: a token bucket per key, held by each API process on its own.

A key with a rate of N a minute may send N requests at once, then one every 60/N seconds.
The buckets live in this process: with several API processes behind a balancer, a key gets
its rate from each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`capacity` tokens, refilled at `per_second`; a request takes one."""

    capacity: float
    per_second: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, per_minute: int, now: float) -> TokenBucket:
        return cls(float(per_minute), per_minute / 60.0, float(per_minute), now)

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
        self.updated = max(self.updated, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


def retry_after(wait_s: float) -> int:
    """A wait as Retry-After's whole seconds, never 0 (a client would retry at once)."""
    return max(1, math.ceil(wait_s))


class RateLimits:
    """One bucket per key id; a key's new rate (changed in the table) starts a full bucket."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key_id: str, per_minute: int, now: float) -> float:
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[key_id] = TokenBucket.full(per_minute, now)
        return bucket.take(now)
