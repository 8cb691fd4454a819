"""The token bucket behind per-key rate limits, on a clock the test sets."""

from __future__ import annotations

import pytest

from api.ratelimit import RateLimits, TokenBucket, retry_after


def test_a_full_bucket_allows_a_burst_of_its_rate_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket.full(per_minute=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(20.0)
    assert bucket.take(105.0) == pytest.approx(15.0)


def test_tokens_come_back_at_the_rate_and_never_above_the_capacity() -> None:
    bucket = TokenBucket.full(per_minute=60, now=0.0)
    for _ in range(60):
        assert bucket.take(0.0) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) > 0
    bucket.take(1000.0)
    assert bucket.tokens == pytest.approx(59.0)


def test_a_clock_going_back_takes_nothing_from_the_bucket() -> None:
    bucket = TokenBucket.full(per_minute=1, now=50.0)
    assert bucket.take(50.0) == 0.0
    assert bucket.take(10.0) == pytest.approx(60.0)
    assert bucket.take(110.0) == 0.0


@pytest.mark.parametrize(("wait", "seconds"), [(0.01, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_after_is_whole_seconds_never_zero(wait: float, seconds: int) -> None:
    assert retry_after(wait) == seconds


def test_each_key_has_its_own_bucket_and_a_new_rate_starts_a_full_one() -> None:
    limits = RateLimits()
    assert limits.take("a", 1, 0.0) == 0.0
    assert limits.take("a", 1, 0.0) > 0
    assert limits.take("b", 1, 0.0) == 0.0
    assert limits.take("a", 2, 0.0) == 0.0
    assert limits.take("a", 2, 0.0) == 0.0
    assert limits.take("a", 2, 0.0) > 0
