"""What an attempt's answer means for a delivery: delivered, tried again later, or failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Client errors that say "not now" rather than "never": tried again like a 5xx.
RETRIED_CLIENT_ERRORS = frozenset({408, 429})

Status = Literal["DELIVERED", "PENDING", "FAILED"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most `max_attempts`; before attempt n+1 wait base_s * 2^(n-1), at most max_s."""

    max_attempts: int
    base_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class Settled:
    """A delivery after an attempt: its status, and for PENDING how long until the next one."""

    status: Status
    retry_in_s: float | None = None


def backoff_s(policy: RetryPolicy, attempt: int, draw: float) -> float:
    """The wait after failed attempt `attempt` (from 1); `draw` in [0, 1) picks the jitter.

    Half the exponential step is fixed and half random ("equal jitter"): deliveries that failed
    together, when a receiver went down, do not all come back at the same instant, and none
    comes back sooner than half its step.
    """
    step = min(policy.max_s, policy.base_s * 2.0 ** min(attempt - 1, 62))
    return step / 2 + step / 2 * draw


def worth_retrying(response_code: int | None) -> bool:
    """A 5xx, 408, 429, or no answer at all (None: time-out, refused or reset connection)."""
    if response_code is None:
        return True
    return response_code >= 500 or response_code in RETRIED_CLIENT_ERRORS


def settle(policy: RetryPolicy, attempt: int, response_code: int | None, draw: float) -> Settled:
    """What attempt `attempt` (from 1) answered with `response_code` makes of its delivery.

    A 2xx delivers. Any other answer is not retried unless worth_retrying (redirects are not
    followed: a receiver that moved is a subscription to change, not a request to repeat).
    """
    if response_code is not None and 200 <= response_code < 300:
        return Settled("DELIVERED")
    if not worth_retrying(response_code) or attempt >= policy.max_attempts:
        return Settled("FAILED")
    return Settled("PENDING", backoff_s(policy, attempt, draw))
